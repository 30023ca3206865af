package cni_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	tabbycni "github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/tabbynet/tabby/ipam"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
)

var env *k8senv.Env

func TestMain(m *testing.M) {
	k8senv.Main(m, k8senv.Options{CRDDir: "../../charts/tabby/crds"}, &env)
}

// The pool every pod of the suite draws from, and addresses the static-IP tests use.
const (
	poolCIDR  = "10.65.0.0/16"
	staticIP  = "10.65.200.9"
	outsideIP = "10.67.0.9" // in no pool
	tinyCIDR  = "10.68.0.0/30"
)

// TestCNI runs every scenario against one node namespace, one apiserver and one build
// of the plugin.
func TestCNI(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: root, a kube-apiserver and cnitool")
	}
	h := newHarness(t, env)
	podNamespace := "tabbyt-" + h.id
	h.createNamespace(t, podNamespace)
	h.createPool(t, "tabbyt-"+h.id+"-pool", poolCIDR, 26)

	for _, v := range tabbycni.SupportedVersions {
		t.Run("spec-"+v, func(t *testing.T) { testLifecycle(t, h, podNamespace, v) })
	}
	t.Run("status", func(t *testing.T) { testStatus(t, h) })
	t.Run("gc", func(t *testing.T) { testGC(t, h, podNamespace) })
	t.Run("pool-exhausted", func(t *testing.T) { testPoolExhausted(t, h, podNamespace) })
	t.Run("datastore-down", func(t *testing.T) { testDatastoreDown(t, h, podNamespace) })
	t.Run("static-ip", func(t *testing.T) { testStaticIP(t, h, podNamespace) })
	t.Run("bad-input", func(t *testing.T) { testBadInput(t, h, podNamespace) })
	t.Run("check-finds-drift", func(t *testing.T) { testCheckDrift(t, h, podNamespace) })
	t.Run("rollback-after-veth", func(t *testing.T) { testRollbackAfterVeth(t, h, podNamespace) })
	h.checkNodeClean(t)
}

// addWithCnitool ADDs a pod through cnitool and registers a DEL for cleanup.
func addWithCnitool(t *testing.T, h *harness, network, cniVersion, ns, pod, podNS string) attached {
	t.Helper()
	args := netnode.K8sArgs(ns, pod)
	t.Cleanup(func() { _, _, _ = h.cnitoolRun("del", network, podNS, args) })
	start := time.Now()
	out, stderr, err := h.cnitoolRun("add", network, podNS, args)
	t.Logf("cnitool add %s/%s (%s): %v", ns, pod, cniVersion, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("cnitool add %s/%s: %v\nstdout: %s\nstderr: %s", ns, pod, err, out, stderr)
	}
	ip := resultIP(t, out, cniVersion)
	if !netip.MustParsePrefix(poolCIDR).Contains(ip) {
		t.Fatalf("address %s is outside the pool %s", ip, poolCIDR)
	}
	return attached{ns: ns, pod: pod, podNS: podNS, containerID: cnitoolContainerID(netnode.NSPath(podNS)), ip: ip}
}

func cnitoolOK(t *testing.T, h *harness, cmd, network, podNS, args string) {
	t.Helper()
	if out, stderr, err := h.cnitoolRun(cmd, network, podNS, args); err != nil {
		t.Fatalf("cnitool %s: %v\nstdout: %s\nstderr: %s", cmd, err, out, stderr)
	}
}

// testLifecycle: ADD two pods, CHECK, ping through the node, verify everything, DEL
// twice, and nothing is left.
func testLifecycle(t *testing.T, h *harness, ns, cniVersion string) {
	tag := "v" + strings.ReplaceAll(cniVersion, ".", "")
	network := h.network(t, tag, cniVersion, h.kubeconfig)
	podA, podB := "web-a-"+tag, "web-b-"+tag
	h.createPod(t, ns, podA, nil)
	h.createPod(t, ns, podB, nil)
	nsA, nsB := h.n.PodNS(t, "a"+tag), h.n.PodNS(t, "b"+tag)

	a := addWithCnitool(t, h, network, cniVersion, ns, podA, nsA)
	b := addWithCnitool(t, h, network, cniVersion, ns, podB, nsB)
	if a.ip == b.ip {
		t.Fatalf("both pods got %s", a.ip)
	}
	cnitoolOK(t, h, "check", network, nsA, netnode.K8sArgs(ns, podA))
	cnitoolOK(t, h, "check", network, nsB, netnode.K8sArgs(ns, podB))
	h.ping(t, nsA, b.ip)
	h.ping(t, nsB, a.ip)
	h.checkWired(t, a)
	h.checkWired(t, b)

	for range 2 { // DEL is idempotent
		cnitoolOK(t, h, "del", network, nsA, netnode.K8sArgs(ns, podA))
		cnitoolOK(t, h, "del", network, nsB, netnode.K8sArgs(ns, podB))
	}
	h.checkGone(t, a)
	h.checkGone(t, b)
	h.checkNodeClean(t)
	// DEL of a pod whose namespace is gone and which no longer exists is fine too.
	if _, cerr, err := h.pluginRun("DEL", h.directConf(cniVersion, h.kubeconfig), a.containerID, "",
		netnode.K8sArgs(ns, "no-such-pod")); err != nil || cerr != nil {
		t.Fatalf("DEL without netns or pod: %v %v", err, cerr)
	}
}

func testStatus(t *testing.T, h *harness) {
	network := h.network(t, "status", "1.1.0", h.kubeconfig)
	cnitoolOK(t, h, "status", network, "unused", "")
	if _, cerr, err := h.pluginRun("STATUS", h.directConf("1.1.0", h.kubeconfig), "", "", ""); err != nil || cerr != nil {
		t.Fatalf("STATUS: %v %v", err, cerr)
	}
	down := h.unreachableKubeconfig(t)
	_, cerr, err := h.pluginRun("STATUS", h.directConf("1.1.0", down), "", "", "")
	if err != nil || cerr == nil || cerr.Code != 50 || !strings.Contains(cerr.Msg, "datastore") {
		t.Fatalf("STATUS with the apiserver unreachable: %+v %v, want code 50", cerr, err)
	}
	t.Logf("STATUS down: code %d: %s; %s", cerr.Code, cerr.Msg, cerr.Details)
	downNet := h.network(t, "status-down", "1.1.0", down)
	if _, stderr, err := h.cnitoolRun("status", downNet, "unused", ""); err == nil || !strings.Contains(stderr, "datastore") {
		t.Fatalf("cnitool status with the apiserver unreachable: %v %q", err, stderr)
	}
}

// testGC: an attachment the runtime forgot is collected, a valid one kept; an empty
// list collects everything of this node, stale IPAM handles included; other nodes'
// handles stay.
func testGC(t *testing.T, h *harness, ns string) {
	network := h.network(t, "gc", "1.1.0", h.kubeconfig)
	conf := h.directConf("1.1.0", h.kubeconfig)
	h.createPod(t, ns, "leftover", nil)
	h.createPod(t, ns, "keeper", nil)
	nsC, nsD := h.n.PodNS(t, "gc-c"), h.n.PodNS(t, "gc-d")

	// The leftover is added by a "runtime" that then forgets it (not in cnitool's cache).
	cidC := "tabbyt-" + h.id + "-leftover"
	t.Cleanup(func() { _, _, _ = h.pluginRun("DEL", conf, cidC, nsC, netnode.K8sArgs(ns, "leftover")) })
	out, cerr, err := h.pluginRun("ADD", conf, cidC, nsC, netnode.K8sArgs(ns, "leftover"))
	if err != nil || cerr != nil {
		t.Fatalf("ADD leftover: %v %+v", err, cerr)
	}
	c := attached{ns: ns, pod: "leftover", podNS: nsC, containerID: cidC, ip: resultIP(t, out, "1.1.0")}
	d := addWithCnitool(t, h, network, "1.1.0", ns, "keeper", nsD)
	h.checkWired(t, c)

	// A stale handle on this node with no endpoint, and one on another node.
	ctx := ctxT(t)
	ghost := ipam.PodHandle(ns, "ghost", "ghost-cid")
	other := ipam.PodHandle(ns, "elsewhere", "other-cid")
	for _, r := range []ipam.Request{
		{HandleID: ghost, Node: h.node, Attrs: map[string]string{ipam.AttrNode: h.node, ipam.AttrContainer: "ghost-cid", ipam.AttrType: "pod"}},
		{HandleID: other, Node: "tabbyt-" + h.id + "-other", Attrs: map[string]string{ipam.AttrNode: "tabbyt-" + h.id + "-other", ipam.AttrContainer: "other-cid", ipam.AttrType: "pod"}},
	} {
		if _, err := h.alloc.Assign(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _, _ = h.alloc.ReleaseHandle(context.Background(), other) })

	conf["cni.dev/valid-attachments"] = []map[string]string{{"containerID": d.containerID, "ifname": "eth0"}}
	if _, cerr, err := h.pluginRun("GC", conf, "", "", ""); err != nil || cerr != nil {
		t.Fatalf("GC: %v %+v", err, cerr)
	}
	h.checkGone(t, c)
	h.checkWired(t, d)
	cnitoolOK(t, h, "check", network, nsD, netnode.K8sArgs(ns, "keeper"))
	if held, _ := h.alloc.AddressesOf(ctx, ghost); len(held) != 0 {
		t.Errorf("stale handle %s still holds %v", ghost, held)
	}
	if held, _ := h.alloc.AddressesOf(ctx, other); len(held) != 1 {
		t.Errorf("another node's handle %s lost its address: %v", other, held)
	}

	conf["cni.dev/valid-attachments"] = []map[string]string{}
	if _, cerr, err := h.pluginRun("GC", conf, "", "", ""); err != nil || cerr != nil {
		t.Fatalf("GC with an empty list: %v %+v", err, cerr)
	}
	h.checkGone(t, attached{ns: d.ns, pod: d.pod, containerID: d.containerID, ip: d.ip})
	if hs := h.handlesOn(t, h.node); len(hs) != 0 {
		t.Errorf("handles left on the node: %v", hs)
	}
	cnitoolOK(t, h, "del", network, nsD, netnode.K8sArgs(ns, "keeper")) // the runtime's own DEL still works
	cnitoolOK(t, h, "gc", network, "unused", "")
	h.checkNodeClean(t)
}

// testPoolExhausted: with the only pool the pod may use full, ADD fails with code 101
// and leaves nothing behind.
func testPoolExhausted(t *testing.T, h *harness, ns string) {
	tiny := "tabbyt-" + h.id + "-tiny"
	h.createPool(t, tiny, tinyCIDR, 30)
	ctx := ctxT(t)
	var fill []string
	t.Cleanup(func() {
		for _, f := range fill {
			_, _ = h.alloc.ReleaseHandle(context.Background(), f)
		}
	})
	for i := 0; ; i++ {
		if i > 8 {
			t.Fatal("a /30 pool never filled up")
		}
		hd := "test.fill." + h.id + "." + string(rune('a'+i))
		_, err := h.alloc.Assign(ctx, ipam.Request{HandleID: hd, Node: h.node, Pools: []string{tiny}})
		if errors.Is(err, ipam.ErrNoFreeAddress) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		fill = append(fill, hd)
	}
	h.createPod(t, ns, "starved", map[string]string{tabbycni.AnnotationIPv4Pools: `["` + tiny + `"]`})
	podNS := h.n.PodNS(t, "starved")
	cid := "tabbyt-" + h.id + "-starved"
	_, cerr, err := h.pluginRun("ADD", h.directConf("1.1.0", h.kubeconfig), cid, podNS, netnode.K8sArgs(ns, "starved"))
	if err != nil || cerr == nil || cerr.Code != tabbycni.CodePoolExhausted {
		t.Fatalf("ADD in a full pool: %+v %v, want code 101", cerr, err)
	}
	if !strings.Contains(cerr.Msg, "exhausted") || !strings.Contains(cerr.Details, tiny) {
		t.Errorf("unclear error: %s; %s", cerr.Msg, cerr.Details)
	}
	t.Logf("pool exhausted: code %d: %s; %s", cerr.Code, cerr.Msg, cerr.Details)
	h.checkGone(t, attached{ns: ns, pod: "starved", podNS: podNS, containerID: cid})

	network := h.network(t, "tiny", "1.0.0", h.kubeconfig)
	if _, stderr, err := h.cnitoolRun("add", network, podNS, netnode.K8sArgs(ns, "starved")); err == nil || !strings.Contains(stderr, "exhausted") {
		t.Fatalf("cnitool add in a full pool: %v %q", err, stderr)
	}
	h.checkGone(t, attached{ns: ns, pod: "starved", podNS: podNS, containerID: cnitoolContainerID(netnode.NSPath(podNS))})
	h.checkNodeClean(t)
}

// testDatastoreDown: ADD with the apiserver unreachable fails with code 11 and creates
// nothing in the node.
func testDatastoreDown(t *testing.T, h *harness, ns string) {
	down := h.unreachableKubeconfig(t)
	h.createPod(t, ns, "lonely", nil)
	podNS := h.n.PodNS(t, "lonely")
	cid := "tabbyt-" + h.id + "-lonely"
	_, cerr, err := h.pluginRun("ADD", h.directConf("1.1.0", down), cid, podNS, netnode.K8sArgs(ns, "lonely"))
	if err != nil || cerr == nil || cerr.Code != 11 {
		t.Fatalf("ADD with the apiserver unreachable: %+v %v, want code 11", cerr, err)
	}
	t.Logf("datastore down: code %d: %s; %s", cerr.Code, cerr.Msg, cerr.Details)
	network := h.network(t, "down", "0.4.0", down)
	if _, stderr, err := h.cnitoolRun("add", network, podNS, netnode.K8sArgs(ns, "lonely")); err == nil || !strings.Contains(stderr, "try again later") {
		t.Fatalf("cnitool add with the apiserver unreachable: %v %q", err, stderr)
	}
	h.checkGone(t, attached{ns: ns, pod: "lonely", podNS: podNS, containerID: cid})
	h.checkNodeClean(t)
	_, cerr, err = h.pluginRun("DEL", h.directConf("1.1.0", down), cid, podNS, netnode.K8sArgs(ns, "lonely"))
	if err != nil || cerr == nil || cerr.Code != 11 {
		t.Fatalf("DEL with the apiserver unreachable: %+v %v, want code 11 so the runtime retries", cerr, err)
	}
}

// testStaticIP: tabby.dev/ipAddrs gives the pod that address; a second pod asking for
// it, or a pod asking for an address outside the pools, fails clearly.
func testStaticIP(t *testing.T, h *harness, ns string) {
	network := h.network(t, "static", "1.1.0", h.kubeconfig)
	ann := map[string]string{tabbycni.AnnotationIPAddrs: `["` + staticIP + `"]`}
	h.createPod(t, ns, "fixed", ann)
	h.createPod(t, ns, "copycat", ann)
	h.createPod(t, ns, "stray", map[string]string{tabbycni.AnnotationIPAddrs: `["` + outsideIP + `"]`})
	nsF, nsC, nsS := h.n.PodNS(t, "fixed"), h.n.PodNS(t, "copycat"), h.n.PodNS(t, "stray")

	f := addWithCnitool(t, h, network, "1.1.0", ns, "fixed", nsF)
	if f.ip != netip.MustParseAddr(staticIP) {
		t.Fatalf("static pod got %s, want %s", f.ip, staticIP)
	}
	h.checkWired(t, f)
	conf := h.directConf("1.1.0", h.kubeconfig)
	for _, tc := range []struct {
		pod, podNS string
		code       uint
		msg        string
	}{
		{"copycat", nsC, tabbycni.CodeAddressInUse, "already in use"},
		{"stray", nsS, tabbycni.CodeNotInPool, "not in any usable IP pool"},
	} {
		cid := "tabbyt-" + h.id + "-" + tc.pod
		_, cerr, err := h.pluginRun("ADD", conf, cid, tc.podNS, netnode.K8sArgs(ns, tc.pod))
		if err != nil || cerr == nil || cerr.Code != tc.code || !strings.Contains(cerr.Msg, tc.msg) {
			t.Fatalf("ADD %s: %+v %v, want code %d %q", tc.pod, cerr, err, tc.code, tc.msg)
		}
		t.Logf("%s: code %d: %s; %s", tc.pod, cerr.Code, cerr.Msg, cerr.Details)
		h.checkGone(t, attached{ns: ns, pod: tc.pod, podNS: tc.podNS, containerID: cid})
	}
	if _, _, err := h.cnitoolRun("add", network, nsC, netnode.K8sArgs(ns, "copycat")); err == nil {
		t.Fatal("cnitool add of a taken static address succeeded")
	}
	h.checkWired(t, f) // the failures did not disturb the owner
	cnitoolOK(t, h, "del", network, nsF, netnode.K8sArgs(ns, "fixed"))
	h.checkGone(t, f)
}

// testBadInput: a bad annotation, a missing pod and missing CNI_ARGS get their codes.
func testBadInput(t *testing.T, h *harness, ns string) {
	h.createPod(t, ns, "garbled", map[string]string{tabbycni.AnnotationIPAddrs: "10.65.0.1"})
	podNS := h.n.PodNS(t, "garbled")
	conf := h.directConf("1.0.0", h.kubeconfig)
	for _, tc := range []struct {
		name, args string
		code       uint
	}{
		{"bad annotation", netnode.K8sArgs(ns, "garbled"), tabbycni.CodeBadAnnotation},
		{"missing pod", netnode.K8sArgs(ns, "nobody"), tabbycni.CodePodNotFound},
		{"no CNI_ARGS", "", tabbycni.CodeInvalidEnv},
	} {
		_, cerr, err := h.pluginRun("ADD", conf, "tabbyt-"+h.id+"-bad", podNS, tc.args)
		if err != nil || cerr == nil || cerr.Code != tc.code {
			t.Errorf("%s: %+v %v, want code %d", tc.name, cerr, err, tc.code)
			continue
		}
		t.Logf("%s: code %d: %s; %s", tc.name, cerr.Code, cerr.Msg, cerr.Details)
	}
	h.createPod(t, ns, "homeless", nil)
	_, cerr, err := h.pluginRun("ADD", conf, "tabbyt-"+h.id+"-homeless", "tabbyt-"+h.id+"-no-such-netns", netnode.K8sArgs(ns, "homeless"))
	if err != nil || cerr == nil || cerr.Code != tabbycni.CodeInvalidNetNS {
		t.Errorf("missing netns: %+v %v, want code 8", cerr, err)
	} else {
		t.Logf("missing netns: code %d: %s; %s", cerr.Code, cerr.Msg, cerr.Details)
	}
	h.checkGone(t, attached{ns: ns, pod: "homeless", containerID: "tabbyt-" + h.id + "-homeless"})
	bad := h.directConf("1.0.0", "")
	if _, cerr, err := h.pluginRun("ADD", bad, "tabbyt-"+h.id+"-bad", podNS, netnode.K8sArgs(ns, "garbled")); err != nil || cerr == nil || cerr.Code != 7 {
		t.Errorf("no kubeconfig: %+v %v, want code 7", cerr, err)
	}
	h.checkGone(t, attached{ns: ns, pod: "garbled", podNS: podNS, containerID: "tabbyt-" + h.id + "-bad"})
	h.checkNodeClean(t)
}

// testCheckDrift: CHECK reports a route deleted behind the plugin's back.
func testCheckDrift(t *testing.T, h *harness, ns string) {
	network := h.network(t, "drift", "1.1.0", h.kubeconfig)
	h.createPod(t, ns, "drifter", nil)
	podNS := h.n.PodNS(t, "drifter")
	a := addWithCnitool(t, h, network, "1.1.0", ns, "drifter", podNS)
	cnitoolOK(t, h, "check", network, podNS, netnode.K8sArgs(ns, "drifter"))
	if err := routes.DelWorkload(h.nodeH, a.ip, 0); err != nil {
		t.Fatal(err)
	}
	_, cerr, err := h.pluginRun("CHECK", h.directConf("1.1.0", h.kubeconfig), a.containerID, podNS, netnode.K8sArgs(ns, "drifter"))
	if err != nil || cerr == nil || cerr.Code != tabbycni.CodeCheckFailed || !strings.Contains(cerr.Details, "no route") {
		t.Fatalf("CHECK after the route was deleted: %+v %v, want code 108 naming the route", cerr, err)
	}
	if _, stderr, err := h.cnitoolRun("check", network, podNS, netnode.K8sArgs(ns, "drifter")); err == nil || !strings.Contains(stderr, "route") {
		t.Fatalf("cnitool check after the route was deleted: %v %q", err, stderr)
	}
	cnitoolOK(t, h, "del", network, podNS, netnode.K8sArgs(ns, "drifter"))
	h.checkGone(t, a)
}
