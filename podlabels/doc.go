// Package podlabels keeps the labels of this node's pod WorkloadEndpoints equal to
// their Pods' labels after tabby-cni wrote them at ADD, so that policy follows
// `kubectl label pod` as in Calico.
//
// It owns one controller, run by tabby-node: it watches the Pods of this node
// (a field selector on spec.nodeName, so the API server sends only those)
// and the WorkloadEndpoints of orchestrator k8s, and when a local endpoint's labels
// differ from Labels(pod) it rewrites them with a compare-and-swap update, re-reading
// and retrying on a conflict. It is level-triggered: a full resync when both watches
// have synced (at start and after every restart of the watches) and every
// Config.ResyncPeriod, plus one per event. An endpoint whose Pod is gone, or on
// another node, is never touched: tabby-cni's DEL owns deletion.
//
// Labels is the one place, outside tabby-cni's ADD (cni/wep.go), that says which
// labels a pod's WorkloadEndpoint carries; it uses the plugin's label keys.
//
// It imports api/v1, datastore and cni (for those keys); it does no kernel I/O.
package podlabels
