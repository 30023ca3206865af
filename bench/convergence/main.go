// Command convergence measures how fast a new pod's address becomes reachable from the
// other nodes over BGP: three nodes (tabby-node with its embedded BGP speaker, in the
// node-to-node mesh) on a fabric, 200 pods added on node A one after another, each timed
// from just before its `cnitool add` on A to the moment its route (protocol 117) is in
// node B's kernel, as a netlink route event seen by a subscription in B's namespace (no
// polling). The pool has /32 blocks, so every pod claims a block of its own and brings
// one new route to every other node. The next pod is added only after its route is in
// both B's and C's kernels, so each figure is one pod's latency, not a queue. B's figure
// is the RESULT; C's, and the part after the ADD returned, are printed too, and so is a
// breakdown of the way (exec, IPAM, A's controller, the wire, B's hand-off, felix) from
// the nodes' debug logs; -keep-logs keeps those logs.
//
// It uses test/fabric as the BGP suites do: a fabric namespace with a bridge, a network
// namespace per node, the real kube-apiserver + etcd the benchmark starts, cnitool
// (hack/cnitool.sh) as the runtime. Nothing is created in the host's namespace; every
// name starts with tbench-<pid>-, the fabric and uplinks are in 10.76.0.0/16 and the
// pool is 10.77.0.0/16. Everything is removed at the end, on failure and on
// SIGINT/SIGTERM/SIGHUP too; namespaces left by a run that was killed outright are
// removed by the next run. No reference implementation runs here, so ref is -.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bench/internal/benchutil"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/netnode"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Addresses only this benchmark uses, all inside its own namespaces.
var (
	fabricNet  = netip.MustParsePrefix("10.76.0.0/24")   // nodes .1, .2, .3
	uplinksNet = netip.MustParsePrefix("10.76.255.0/24") // the nodes' /30s to their stubs
	poolNet    = netip.MustParsePrefix("10.77.0.0/16")   // the pods' IPPool
)

const (
	blockSize  = 32 // every pod claims a block of its own: one new route per pod
	nodeCount  = 3  // A adds the pods; B (the RESULT) and C learn them
	goalP99    = 100 * time.Millisecond
	perPodWait = 10 * time.Second // a pod whose route takes longer fails the run
)

// results are the timings of one run, one entry per measured pod.
type results struct {
	add            []time.Duration // the cnitool add on A
	toB, toC       []time.Duration // just before the ADD -> the route in B's (C's) kernel
	afterB, afterC []time.Duration // the ADD returned -> the route in B's (C's) kernel
	version        string          // the kube-apiserver's
	stages         []stage         // the breakdown from the logs (nil when unavailable)
	stagesErr      error
}

func main() {
	n := flag.Int("n", 200, "pods to measure")
	warmup := flag.Int("warmup", 5, "pods added first and not measured")
	keep := flag.String("keep-logs", "", "copy the nodes' tabby-node and tabby-cni logs (debug level) into this directory before the teardown")
	flag.Parse()
	if *n < 1 || *warmup < 0 || *n+*warmup > 1000 {
		benchutil.Fatal(errors.New("-n must be at least 1 and -n + -warmup at most 1000"))
	}
	res := benchutil.Run("convergence", 30*time.Minute, func(ctx context.Context, cl *netnode.Cleanup) (*results, error) {
		return bench(ctx, cl, *n, *warmup, *keep)
	})
	fmt.Printf("convergence: %d pods (after %d unmeasured) added one after another on node A of %d (iBGP mesh, AS %d), real kube-apiserver %s\n",
		*n, *warmup, nodeCount, v1.DefaultASNumber, res.version)
	fmt.Printf("  pool %s with /%d blocks (one new route per pod); timed from just before the exec of cnitool add on A\n", poolNet, blockSize)
	fmt.Printf("  cnitool add on A:             %s\n", summary(res.add))
	fmt.Printf("  ADD start -> route in B:      %s\n", summary(res.toB))
	fmt.Printf("  ADD start -> route in C:      %s\n", summary(res.toC))
	fmt.Printf("  ADD returned -> route in B:   %s\n", summary(res.afterB))
	fmt.Printf("  ADD returned -> route in C:   %s\n", summary(res.afterC))
	fmt.Printf("  ADD start -> route in B by quarter of the run (the pool's blocks grow by one per pod): p50 %s\n", quarters(res.toB))
	if res.stagesErr != nil {
		fmt.Printf("  breakdown from the debug logs unavailable: %v\n", res.stagesErr)
	} else {
		printBreakdown(res.stages)
	}
	p99 := benchutil.Percentile(res.toB, 99)
	benchutil.Result("convergence", benchutil.Ms(p99), "ms", -1, fmt.Sprintf("p99<%dms", goalP99.Milliseconds()), p99 < goalP99)
}

// bench sets everything up (registering its teardown with cl), adds warmup+n pods on
// node A and returns the timings of the last n.
func bench(ctx context.Context, cl *netnode.Cleanup, n, warmup int, keep string) (*results, error) {
	id, tmp, dirs, err := benchutil.NewRun(ctx, cl, namePrefix, func(f string, a ...any) { step(" "+f, a...) }, "bin", "fabric")
	if err != nil {
		return nil, err
	}
	binDir, fabDir := dirs[0], dirs[1]

	step(" building tabby-node, tabby-cni and tabbyctl into %s", binDir)
	if err := fabric.BuildBinaries(ctx, binDir); err != nil {
		return nil, fmt.Errorf("build the binaries: %w", err)
	}
	cnitool, err := netnode.FindCnitool(ctx, ".")
	if err != nil {
		return nil, fmt.Errorf("%w (run from the repository root)", err)
	}
	step(" cnitool: %s", cnitool)

	// The control plane's directory goes inside ours, so that what a killed run leaves
	// is all under one tbench-<pid>- name the next run removes.
	c, err := benchutil.StartCluster(ctx, cl, tmp, fabric.Options{Prefix: id, Subnet: fabricNet, Uplinks: uplinksNet,
		BinDir: binDir, Cnitool: cnitool, Dir: fabDir})
	if err != nil {
		return nil, err
	}
	res := &results{version: c.Version}
	store, f := c.Store, c.Fabric

	podNS := id
	step(" creating namespace %s and IPPool %s (%s, /%d blocks)", podNS, id, poolNet, blockSize)
	if _, err := datastore.Create(ctx, store, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: podNS}}); err != nil {
		return nil, err
	}
	if _, err := datastore.Create(ctx, store, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: id},
		Spec: v1.IPPoolSpec{CIDR: poolNet.String(), BlockSize: blockSize}}); err != nil {
		return nil, err
	}

	nodes := make([]*fabric.Node, nodeCount)
	for i := range nodes {
		if nodes[i], err = f.AddNode(ctx, i); err != nil {
			return nil, err
		}
		if err := nodes[i].Start(); err != nil {
			return nil, err
		}
	}
	if keep != "" {
		cl.Add("keep the logs in "+keep, func() error { return keepLogs(keep, nodes) })
	}
	step(" %d nodes on the fabric %s; waiting for the mesh", nodeCount, fabricNet)
	for _, nd := range nodes {
		if err := waitMesh(ctx, nd, nodeCount-1); err != nil {
			return nil, fmt.Errorf("%w\ntabby-node log of %s:\n%s", err, nd.Name, nd.LogTail(40))
		}
	}
	a, others := nodes[0], nodes[1:]

	// The route subscriptions in B and C, ended first at teardown.
	sctx, stopSubs := context.WithCancel(ctx)
	cl.Add("stop the route subscriptions", func() error { stopSubs(); return nil })
	arr := make([]*arrivals, len(others))
	for i, o := range others {
		if arr[i], err = subscribe(sctx, o); err != nil {
			return nil, err
		}
	}

	// The Pod objects and one new network namespace per pod, made before the clock runs.
	total := warmup + n
	step(" creating %d pods on %s and their network namespaces", total, a.Name)
	pods, netnss := make([]string, total), make([]string, total)
	for i := range pods {
		pods[i] = fmt.Sprintf("pod-%03d", i)
		if _, err := datastore.Create(ctx, store, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pods[i], Namespace: podNS},
			Spec: corev1.PodSpec{NodeName: a.Name, Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}}}}); err != nil {
			return nil, err
		}
		if netnss[i], err = a.Net.NewPodNS(ctx, fmt.Sprintf("p%03d", i)); err != nil {
			return nil, err
		}
	}

	step(" ADD x%d (%d unmeasured), each until its route is in %s and %s", total, warmup, others[0].Name, others[1].Name)
	seen := map[netip.Addr]string{}
	var ms []measured
	for i, pod := range pods {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		t0 := time.Now()
		out, stderr, err := a.Runtime.Run(ctx, "add", a.Network, netnss[i], netnode.K8sArgs(podNS, pod))
		tRet := time.Now()
		if err != nil {
			return nil, fmt.Errorf("cnitool add %s/%s: %w\n%s\n%s", podNS, pod, err, out, stderr)
		}
		ip, err := resultIP(out)
		if err != nil {
			return nil, fmt.Errorf("cnitool add %s/%s: %w", podNS, pod, err)
		}
		if !poolNet.Contains(ip) {
			return nil, fmt.Errorf("pod %s got %s, outside the pool %s", pod, ip, poolNet)
		}
		if other, dup := seen[ip]; dup {
			return nil, fmt.Errorf("pods %s and %s both got %s", other, pod, ip)
		}
		seen[ip] = pod
		block := netip.PrefixFrom(ip, blockSize).Masked()
		var at [2]time.Time
		for k, ar := range arr {
			if at[k], err = ar.wait(ctx, block, perPodWait); err != nil {
				return nil, fmt.Errorf("pod %s (%s): %w\ntabby-node log of %s:\n%s", pod, ip, err, others[k].Name, others[k].LogTail(40))
			}
		}
		if i < warmup {
			continue
		}
		res.add = append(res.add, tRet.Sub(t0))
		res.toB, res.afterB = append(res.toB, at[0].Sub(t0)), append(res.afterB, at[0].Sub(tRet))
		res.toC, res.afterC = append(res.toC, at[1].Sub(t0)), append(res.afterC, at[1].Sub(tRet))
		ms = append(ms, measured{pod: pod, block: block, t0: t0, b: at[0]})
	}
	b := others[0]
	res.stages, res.stagesErr = breakdown(filepath.Join(a.Dir, "cni.log"), a.Log, b.Log, podNS, ms)
	return res, nil
}

// waitMesh waits until n's speaker has want sessions, all Established.
func waitMesh(ctx context.Context, n *fabric.Node, want int) error {
	c := localapi.NewClient(n.Socket, 5*time.Second)
	return netnode.Poll(ctx, 90*time.Second, 100*time.Millisecond, func() error {
		st, err := c.BGPPeers(ctx)
		if err != nil {
			return fmt.Errorf("%s: bgp peers: %w", n.Name, err)
		}
		up := 0
		for _, p := range st.Peers {
			if p.State == "Established" {
				up++
			}
		}
		if len(st.Peers) != want || up != want {
			return fmt.Errorf("%s: %d sessions, %d Established, want %d: %+v", n.Name, len(st.Peers), up, want, st.Peers)
		}
		return nil
	})
}

// resultIP is the one address of a CNI result.
func resultIP(out string) (netip.Addr, error) {
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return netip.Addr{}, fmt.Errorf("decode the result: %w\n%s", err, out)
	}
	if len(res.IPs) != 1 {
		return netip.Addr{}, fmt.Errorf("want one address in the result, have %d\n%s", len(res.IPs), out)
	}
	p, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("result address: %w", err)
	}
	return p.Addr(), nil
}

// quarters is the p50 of each quarter of ds, in order.
func quarters(ds []time.Duration) string {
	out := ""
	for q := range 4 {
		part := ds[q*len(ds)/4 : (q+1)*len(ds)/4]
		if len(part) == 0 {
			continue
		}
		if out != "" {
			out += " / "
		}
		out += fmt.Sprintf("%.1f", benchutil.Ms(benchutil.Percentile(part, 50)))
	}
	return out + " ms"
}

// summary is p50/p90/p99/max of ds in milliseconds.
func summary(ds []time.Duration) string {
	ms := func(p float64) float64 { return benchutil.Ms(benchutil.Percentile(ds, p)) }
	return fmt.Sprintf("p50=%.1fms p90=%.1fms p99=%.1fms max=%.1fms (n=%d)", ms(50), ms(90), ms(99), ms(100), len(ds))
}

func step(f string, a ...any) { fmt.Fprintf(os.Stderr, " "+f+"\n", a...) }
