package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/router"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
)

// Deadlines of the bring-up's waits (each also bounded by the lab's timeout).
const (
	nodeReadyTimeout = 90 * time.Second
	bgpTimeout       = 90 * time.Second
	matrixTimeout    = 60 * time.Second
	pollEvery        = 250 * time.Millisecond
)

// nodeArgs are the lab's tabby-node flags on top of test/fabric's (the last wins):
// network policy enforced (explicitly, whatever the default), readable logs at info
// level, and a resync that does not fill the logs. test/fabric gives each node its own
// --bpf-pin-dir (the nodes share one kernel) on a bpffs it mounts under the lab's
// fabric directory: a node's tabby-node runs under `ip netns exec`, which mounts a
// fresh sysfs on /sys, so no bpffs at /sys/fs/bpf would be visible to it.
var nodeArgs = []string{"--policy=true", "--log-level", "info", "--log-format", "console", "--resync-interval", "30s"}

// built is what the bring-up made and the supervisor holds.
type built struct {
	env   *k8senv.Env
	store datastore.Store
	f     *fabric.Cluster
	nodes []*fabric.Node
	tor   *router.Router
	pods  []*fabric.Pod
	vm    *labVM // nil without a guest
}

// Deadline of a policy demo's wait for every node's agent to program the change.
const policyTimeout = 30 * time.Second

// PodLabel is the label every lab pod carries, with its name as the value
// (app=pod-a1), for policies to select it by; tabby-cni copies a pod's labels to its
// WorkloadEndpoint.
const PodLabel = "app"

// build makes the lab, step by step, registering each teardown with s.cl as it goes
// and recording each part in state.json.
func (s *supervisor) build(ctx context.Context) error {
	o, p := s.o, s.p
	b := &built{}
	s.lab = b
	p.step("lab %q: %d nodes, %d pods per node, %s, %s; state in %s", o.Name, o.Nodes, o.PodsPerNode,
		o.torDescription(), o.bgpMode(), o.StateDir)
	binDir, err := findBinDir(o)
	if err != nil {
		return err
	}
	repo, err := findRepo(binDir)
	if err != nil {
		return err
	}
	cnitool, err := netnode.FindCnitool(ctx, repo)
	if err != nil {
		return fmt.Errorf("find cnitool: %w", err)
	}
	k8sBin, err := k8senv.BinDir(ctx)
	if err != nil {
		return fmt.Errorf("find kube-apiserver: %w", err)
	}
	s.mu.Lock()
	s.st.BinDir, s.st.K8sBinDir = binDir, k8sBin
	s.mu.Unlock()

	p.step("starting etcd and kube-apiserver on 127.0.0.1 (binaries in %s)", k8sBin)
	if err := s.startAPIServer(ctx, b, repo); err != nil {
		return err
	}
	if err := s.createObjects(ctx, b); err != nil {
		return err
	}

	fabDir := filepath.Join(o.StateDir, fabricDir)
	if err := os.MkdirAll(fabDir, 0o755); err != nil {
		return err
	}
	b.f, err = fabric.New(ctx, fabric.Options{Prefix: o.Name, Subnet: FabricNet, Uplinks: UplinksNet,
		Kubeconfig: b.env.Kubeconfig, APIServer: b.env.Config.Host, Store: b.store, BinDir: binDir,
		Cnitool: cnitool, Dir: fabDir, NodeArgs: nodeArgs, Logf: p.detail})
	if err != nil {
		return err
	}
	s.cl.Add("tear down the fabric, nodes and pods", b.f.Close)
	s.addNetns(b.f.Fabric)
	s.mu.Lock()
	s.st.Fabric = b.f.Fabric
	s.mu.Unlock()
	p.step("fabric %s: bridge br0 for %s", b.f.Fabric, FabricNet)

	for i := range o.Nodes {
		if err := s.addNode(ctx, b, i); err != nil {
			return err
		}
	}
	if err := s.startTor(ctx, b); err != nil {
		return err
	}
	if err := s.prepareVM(ctx, b); err != nil {
		return err
	}
	if err := s.startNodes(ctx, b); err != nil {
		return err
	}
	if o.RouteReflector {
		if err := makeReflector(ctx, b.store, b.nodes[0].Name); err != nil {
			return err
		}
		p.step("node %s is the route reflector (label %s=true, cluster ID %s)", b.nodes[0].Name, rrLabel, rrClusterID)
	}
	// The guest boots (seconds under TCG) while the pods are wired.
	vmErr := make(chan error, 1)
	go func() { vmErr <- s.startVM(ctx, b) }()
	if err := errors.Join(s.addPods(ctx, b), <-vmErr); err != nil {
		return err
	}
	s.waitBGP(ctx)
	s.waitMatrix(ctx)
	return ctx.Err()
}

// startAPIServer starts etcd and kube-apiserver under the state directory and writes
// the lab's kubeconfig.
func (s *supervisor) startAPIServer(ctx context.Context, b *built, repo string) error {
	env, err := k8senv.Start(ctx, k8senv.Options{CRDDir: filepath.Join(repo, "charts", "tabby", "crds"),
		Dir: filepath.Join(s.o.StateDir, k8sDir), Logf: s.p.detail})
	if err != nil {
		return err
	}
	b.env = env
	s.cl.Add("stop etcd and kube-apiserver", env.Stop)
	kc := filepath.Join(s.o.StateDir, kubeconfigFile)
	if err := netnode.WriteKubeconfig(env.Kubeconfig, env.Config.Host, kc); err != nil {
		return fmt.Errorf("write the kubeconfig: %w", err)
	}
	s.cl.Add("remove the kubeconfig", func() error { return os.Remove(kc) })
	version := "kube-apiserver"
	if dc, err := discovery.NewDiscoveryClientForConfig(env.Config); err == nil {
		if v, err := dc.ServerVersion(); err == nil {
			version += " " + v.GitVersion
		}
	}
	if b.store, err = datastore.NewKube(env.Config); err != nil {
		return err
	}
	s.mu.Lock()
	s.st.Kubeconfig, s.st.APIServer = kc, env.Config.Host
	s.mu.Unlock()
	if err := s.save(); err != nil {
		return err
	}
	s.p.step("%s ready at %s, Tabby CRDs installed; kubeconfig %s", version, env.Config.Host, kc)
	return nil
}

// createObjects writes the lab's namespace, IPPool, BGPConfiguration and BGPPeers.
func (s *supervisor) createObjects(ctx context.Context, b *built) error {
	o := s.o
	mesh := !o.RouteReflector
	asn := v1.ASNumber(NodeAS)
	objs := []datastore.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: PodNamespace}},
		&v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: PoolName}, Spec: v1.IPPoolSpec{CIDR: PoolNet.String(), BlockSize: PoolBlock}},
		&v1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"},
			Spec: v1.BGPConfigurationSpec{NodeToNodeMeshEnabled: &mesh, ASNumber: &asn}},
	}
	if _, ok := o.torKind(); ok {
		objs = append(objs, &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: TorPeerName},
			Spec: v1.BGPPeerSpec{PeerIP: torAddr().String(), ASNumber: TorAS}})
	}
	if o.RouteReflector {
		objs = append(objs, &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: rrPeerName},
			Spec: v1.BGPPeerSpec{NodeSelector: "all()", PeerSelector: rrLabel + " == 'true'"}})
	}
	for _, obj := range objs {
		if _, err := b.store.Create(ctx, obj); err != nil {
			k, _ := datastore.KindOf(obj)
			return fmt.Errorf("create %s %s: %w", k, obj.GetName(), err)
		}
	}
	s.p.step("created namespace %s, IPPool %s (%s, /%d blocks), BGPConfiguration default (AS %d, mesh %s)",
		PodNamespace, PoolName, PoolNet, PoolBlock, NodeAS, onOff(mesh))
	if _, ok := o.torKind(); ok {
		s.p.step("created BGPPeer %s: every node peers with the ToR %s (AS %d)", TorPeerName, torAddr(), TorAS)
	}
	if o.RouteReflector {
		s.p.step("created BGPPeer %s: every node peers with the nodes labelled %s=true", rrPeerName, rrLabel)
	}
	return nil
}

// torAddr is the ToR's address on the fabric: the first router test/fabric places, at
// the top of the subnet.
func torAddr() netip.Addr {
	a := FabricNet.Addr().As4()
	a[3] = 254
	return netip.AddrFrom4(a)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// addNode makes node i's namespaces, joins it to the fabric and records it.
func (s *supervisor) addNode(ctx context.Context, b *built, i int) error {
	n, err := b.f.AddNode(ctx, i)
	if err != nil {
		return err
	}
	b.nodes = append(b.nodes, n)
	s.addNetns(n.Net.Name, n.Net.Stub)
	s.mu.Lock()
	s.st.Nodes = append(s.st.Nodes, NodeState{Name: n.Name, Letter: string(rune('a' + i)), Netns: n.Net.Name,
		Stub: n.Net.Stub, IP: n.IP.String(), Socket: n.Socket, Log: n.Log, Network: n.Network, PinDir: n.PinDir})
	s.mu.Unlock()
	if err := s.save(); err != nil {
		return err
	}
	s.p.step("node %s: namespace, %s/%d on the fabric, a default route to its stub", n.Name, n.IP, FabricNet.Bits())
	return nil
}

// startTor starts the top-of-rack router, eBGP with every node.
func (s *supervisor) startTor(ctx context.Context, b *built) error {
	kind, ok := s.o.torKind()
	if !ok {
		return nil
	}
	if err := router.Available(kind); err != nil {
		return fmt.Errorf("--tor %s: %w (hack/deps.sh installs frr, bird2 and gobgpd; or use --tor none)", kind, err)
	}
	rns, err := b.f.AddRouter(ctx, "tor")
	if err != nil {
		return err
	}
	s.addNetns(rns.Netns)
	if rns.Addr != torAddr() {
		return fmt.Errorf("the ToR got %s on the fabric, want %s", rns.Addr, torAddr())
	}
	cfg := router.Config{Kind: kind, Netns: rns.Netns, Dir: rns.Dir, AS: TorAS, RouterID: rns.Addr,
		InstallKernel: kind != router.KindGoBGP, FastUpdates: true}
	for _, n := range b.nodes {
		cfg.Neighbors = append(cfg.Neighbors, router.Neighbor{Addr: n.IP, AS: NodeAS})
	}
	if b.tor, err = router.Start(ctx, cfg); err != nil {
		return err
	}
	// After the fabric's teardown was registered, so it runs before the namespace goes.
	s.cl.Add("stop the ToR router", b.tor.Stop)
	ts := &TorState{Kind: string(kind), Netns: rns.Netns, IP: rns.Addr.String(), AS: TorAS, Dir: b.tor.Dir,
		CLI: torCLI(kind, b.tor.Dir), PIDs: map[string]int{}}
	if procs, err := procsInNetns(rns.Netns); err == nil {
		for _, pr := range procs {
			ts.PIDs[pr.comm] = pr.pid
		}
	}
	s.mu.Lock()
	s.st.Tor = ts
	s.mu.Unlock()
	if err := s.save(); err != nil {
		return err
	}
	s.p.step("top-of-rack router %s: %s, AS %d, %s on the fabric, eBGP to %d nodes", rns.Netns, torName(kind), TorAS, rns.Addr, len(b.nodes))
	return nil
}

// torCLI is the router's command line client with its socket.
func torCLI(kind router.Kind, dir string) []string {
	switch kind {
	case router.KindFRR:
		return []string{"vtysh", "--vty_socket", dir}
	case router.KindBIRD:
		return []string{"birdc", "-s", filepath.Join(dir, "bird.ctl")}
	case router.KindGoBGP:
		return []string{"gobgp", "--target", "unix://" + filepath.Join(dir, "api.sock")}
	}
	return nil
}

func torName(kind router.Kind) string {
	switch kind {
	case router.KindFRR:
		return "FRR (zebra, bgpd)"
	case router.KindBIRD:
		return "BIRD 2"
	case router.KindGoBGP:
		return "gobgpd"
	}
	return string(kind)
}

// startNodes starts tabby-node on every node and waits until each is registered and
// ready.
func (s *supervisor) startNodes(ctx context.Context, b *built) error {
	for i, n := range b.nodes {
		var args []string
		if i == 0 && b.vm != nil {
			args = vmNodeArgs(s.o.Name) // node a follows libvirt for the lab's guest
		}
		if err := s.spawn.do(func() error { return n.Start(args...) }); err != nil {
			return err
		}
	}
	s.p.step("tabby-node started on %d nodes (logs: %s/<node>/tabby-node.log)", len(b.nodes), filepath.Join(s.o.StateDir, fabricDir))
	var wg sync.WaitGroup
	errs := make([]error, len(b.nodes))
	for i, n := range b.nodes {
		wg.Go(func() {
			c := localapi.NewClient(n.Socket, agentTimeout)
			errs[i] = poll(ctx, nodeReadyTimeout, func() error {
				if !n.Running() {
					return permanent(fmt.Errorf("tabby-node on %s exited; the end of its log:\n%s", n.Name, n.LogTail(20)))
				}
				st, err := c.Status(ctx)
				if err != nil {
					return err
				}
				if !st.Registered || !st.Ready {
					return fmt.Errorf("registered %v, ready %v %v", st.Registered, st.Ready, st.NotReady)
				}
				return nil
			})
			var pe *permanentError
			if errs[i] != nil && !errors.As(errs[i], &pe) {
				errs[i] = fmt.Errorf("tabby-node on %s not ready within %v: %w; the end of its log:\n%s", n.Name, nodeReadyTimeout, errs[i], n.LogTail(20))
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.p.step("nodes registered and ready: %s", strings.Join(nodeNames(b.nodes), ", "))
	return nil
}

func nodeNames(ns []*fabric.Node) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name
	}
	return out
}

// makeReflector gives node name the route reflector cluster ID and label, keeping what
// its agent wrote (read, change, compare-and-swap update; again on a conflict).
func makeReflector(ctx context.Context, store datastore.Store, name string) error {
	return poll(ctx, 30*time.Second, func() error {
		cur, err := datastore.Get[*v1.Node](ctx, store, "", name)
		if err != nil {
			return err
		}
		if cur.Spec.BGP == nil || cur.Spec.BGP.IPv4Address == "" {
			return fmt.Errorf("node %s has no spec.bgp.ipv4Address yet", name)
		}
		if cur.Labels == nil {
			cur.Labels = map[string]string{}
		}
		cur.Labels[rrLabel] = "true"
		cur.Spec.BGP.RouteReflectorClusterID = rrClusterID
		if _, err := datastore.Update(ctx, store, cur); err != nil {
			return fmt.Errorf("make %s a route reflector: %w", name, err)
		}
		return nil
	})
}

// addPods wires the pods, the nodes in parallel and each node's one after another, as
// kubelets would, and serves the probe port in each.
func (s *supervisor) addPods(ctx context.Context, b *built) error {
	if s.o.PodsPerNode == 0 {
		return nil
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	errs := make([]error, len(b.nodes))
	for i, n := range b.nodes {
		wg.Go(func() {
			for k := 1; k <= s.o.PodsPerNode; k++ {
				name := fmt.Sprintf("pod-%c%d", 'a'+i, k)
				t0 := time.Now()
				// Labelled for policies to select it; its port named for them too.
				pod, err := n.AddPodSpec(ctx, fabric.PodSpec{Namespace: PodNamespace, Name: name,
					Labels: map[string]string{PodLabel: name},
					Ports:  []corev1.ContainerPort{{Name: "http", ContainerPort: ProbePort, Protocol: corev1.ProtocolTCP}}})
				if err != nil {
					errs[i] = err // lab down's sweep by name finds a namespace made half-way
					return
				}
				s.addNetns(pod.Netns)
				if err := markRunning(ctx, b.env, pod); err != nil {
					errs[i] = err
					return
				}
				ps := PodState{Namespace: PodNamespace, Name: name, Node: n.Name, Netns: pod.Netns, IP: pod.IP.String()}
				srv, err := servePod(ps)
				if err != nil {
					errs[i] = err
					return
				}
				s.cl.Add("stop the probe server of pod "+name, srv.stop)
				mu.Lock()
				b.pods = append(b.pods, pod)
				mu.Unlock()
				s.mu.Lock()
				s.st.Pods = append(s.st.Pods, ps)
				s.mu.Unlock()
				s.p.step("pod %s/%s on %s: %s (tabby-cni ADD via cnitool in %v)", PodNamespace, name, n.Name, pod.IP,
					time.Since(t0).Round(time.Millisecond))
			}
		})
	}
	wg.Wait()
	s.mu.Lock()
	sortPods(s.st.Pods)
	s.mu.Unlock()
	if err := s.save(); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// addNetns records namespaces the lab made.
func (s *supervisor) addNetns(names ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range names {
		if n != "" {
			s.st.Netns = append(s.st.Netns, n)
		}
	}
}

// waitBGP waits until every node's expected sessions and the ToR's are Established; a
// timeout is a warning (the summary shows the sessions), not a failure.
func (s *supervisor) waitBGP(ctx context.Context) {
	t0 := time.Now()
	var last *Report
	err := poll(ctx, bgpTimeout, func() error {
		st := s.snapshot()
		last = collect(ctx, &st, s.lab, false)
		if len(last.Problems) > 0 {
			return errors.New(strings.Join(last.Problems, "; "))
		}
		return nil
	})
	if err != nil {
		s.p.step("warning: BGP not converged within %v: %v", bgpTimeout, err)
		return
	}
	n, tor := 0, 0
	for _, nr := range last.Nodes {
		n += len(nr.Sessions)
	}
	if last.Tor != nil {
		tor = len(last.Tor.Peers)
	}
	msg := fmt.Sprintf("BGP: all %d node sessions Established", n)
	if last.Tor != nil {
		msg += fmt.Sprintf(", and the ToR's %d", tor)
	}
	s.p.step("%s (%v)", msg, time.Since(t0).Round(100*time.Millisecond))
}

// waitMatrix probes every pair of workloads (the pods and the guest) until each
// answered once, re-trying only those that did not; a timeout is a warning.
func (s *supervisor) waitMatrix(ctx context.Context) {
	st := s.snapshot()
	ws, vmIdx := matrixWorkloads(&st)
	if len(ws) < 2 {
		return
	}
	t0 := time.Now()
	pending := allPairs(len(ws))
	total := len(pending)
	what := "pods"
	if vmIdx >= 0 {
		what = "workloads (the pods and the VM)"
	}
	err := poll(ctx, matrixTimeout, func() error {
		ok := probePairs(ctx, ws, vmIdx, s.lab.vm, pending)
		var still [][2]int
		for k, p := range pending {
			if !ok[k] {
				still = append(still, p)
			}
		}
		pending = still
		if len(pending) > 0 {
			return fmt.Errorf("%d of %d pairs of %s do not reach each other yet", len(pending), total, what)
		}
		return nil
	})
	if err != nil {
		s.p.step("warning: %v after %v", err, matrixTimeout)
		return
	}
	s.p.step("routes converged: all %d pairs of %s reach each other (%v)", total, what, time.Since(t0).Round(100*time.Millisecond))
}

// permanentError ends a poll at once.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// permanent marks err as one that waiting does not cure.
func permanent(err error) error { return &permanentError{err} }

// poll calls cond every pollEvery until it returns nil, or a permanent error, or
// timeout passes (its last error) or ctx ends.
func poll(ctx context.Context, timeout time.Duration, cond func() error) error {
	return pollEach(ctx, timeout, pollEvery, cond)
}

// pollEach is poll calling cond every every.
func pollEach(ctx context.Context, timeout, every time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		err := cond()
		var pe *permanentError
		if err == nil || errors.As(err, &pe) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-tick.C:
		}
	}
}

// markRunning writes the Pod's status as a kubelet would once its sandbox runs: phase
// Running, Ready, the pod's and the node's addresses (kubectl get pods -o wide shows
// them). There is no container: the pod is its network namespace.
func markRunning(ctx context.Context, env *k8senv.Env, pod *fabric.Pod) error {
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		return err
	}
	pods := cs.CoreV1().Pods(pod.Namespace)
	cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	now := metav1.Now()
	cur.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: pod.IP.String(), PodIPs: []corev1.PodIP{{IP: pod.IP.String()}},
		HostIP: pod.Node.IP.String(), HostIPs: []corev1.HostIP{{IP: pod.Node.IP.String()}}, StartTime: &now}
	for _, c := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		cur.Status.Conditions = append(cur.Status.Conditions, corev1.PodCondition{Type: c, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	for _, c := range cur.Spec.Containers {
		started := true
		cur.Status.ContainerStatuses = append(cur.Status.ContainerStatuses, corev1.ContainerStatus{Name: c.Name, Image: c.Image,
			Ready: true, Started: &started, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
	}
	if _, err := pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("write the status of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}
