// Command cni-add measures how long the Tabby CNI plugin takes to wire a pod: cnitool
// (the reference runtime) runs `cnitool add` for 200 pods, one after another, each in its
// own new network namespace, against the real kube-apiserver the benchmark starts. Each
// ADD is timed from just before the exec to its exit, so it includes the process starts,
// the veth pair, sysctls and routes, IPAM (block claims and compare-and-swap writes) and
// the WorkloadEndpoint write. Then every pod is deleted again (`cnitool del`, timed and
// reported, not the RESULT). No reference implementation runs here, so ref is -.
//
// Like test/cni, the benchmark plays a node: a "node" network namespace with forwarding
// on and a default route through a veth to a stub namespace, a loopback port inside it
// forwarded to the apiserver, and cnitool (so the plugin) running inside it. Nothing is
// created in the host's namespace; every name starts with tbench-<pid>- and every
// address is in 10.66.0.0/16. Everything is removed at the end, on failure and on
// SIGINT/SIGTERM/SIGHUP too; namespaces left by a run that was killed outright are
// removed by the next run.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bench/internal/benchutil"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/netnode"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
)

// Addresses only this benchmark uses, all inside its own namespaces.
const (
	poolCIDR   = "10.66.0.0/17"   // the pods' IPPool
	blockSize  = 26               // /26 blocks: 200 pods claim 4
	uplinkNode = "10.66.255.1/30" // node side of the node<->stub veth
	uplinkStub = "10.66.255.2"    // the node's default gateway
	cniVersion = "1.1.0"
	goalMs     = 100 // p50 of one ADD we hold ourselves to
)

func main() {
	n := flag.Int("n", 200, "pods to add (and delete)")
	flag.Parse()
	if *n < 1 {
		benchutil.Fatal(errors.New("-n must be at least 1"))
	}
	before, err := hostState()
	if err != nil {
		benchutil.Fatal(err)
	}
	st := benchutil.Run("cni-add", 30*time.Minute, func(ctx context.Context, cl *netnode.Cleanup) (*stats, error) {
		return bench(ctx, cl, *n)
	})
	after, err := hostState()
	if err != nil {
		benchutil.Fatal(err)
	}
	if extra := after.newSince(before); len(extra) > 0 {
		benchutil.Fatal(fmt.Errorf("the host namespace changed: %v", extra))
	}
	fmt.Println("  host namespace: no new cali* link, no new protocol-116 route; node, stub and pod namespaces removed")
	p50 := benchutil.Percentile(st.add, 50)
	benchutil.Result("cni-add", benchutil.Ms(p50), "ms", -1, fmt.Sprintf("p50<%dms", goalMs), benchutil.Ms(p50) < goalMs)
}

// stats are the timings of one run.
type stats struct{ add, del, addCPU, delCPU []time.Duration }

// bench sets everything up (registering its teardown with cl), adds and deletes n pods
// and prints the figures.
func bench(ctx context.Context, cl *netnode.Cleanup, n int) (*stats, error) {
	id, tmp, dirs, err := benchutil.NewRun(ctx, cl, namePrefix, func(f string, a ...any) { step(" "+f, a...) }, "bin", "conf")
	if err != nil {
		return nil, err
	}
	binDir, confDir := dirs[0], dirs[1]

	step(" building tabby-cni into %s", binDir)
	plugin := filepath.Join(binDir, "tabby-cni")
	if err := netnode.Build(ctx, binDir, "github.com/tabbynet/tabby/cmd/tabby-cni"); err != nil {
		return nil, fmt.Errorf("build tabby-cni: %w", err)
	}
	cnitool, err := netnode.FindCnitool(ctx, ".")
	if err != nil {
		return nil, fmt.Errorf("%w (run from the repository root)", err)
	}
	step(" cnitool: %s", cnitool)

	// The control plane's directory goes inside ours, so that what a killed run leaves
	// is all under one tbench-<pid>- name the next run removes.
	env, err := benchutil.StartKubeIn(ctx, tmp)
	if err != nil {
		return nil, err
	}
	cl.Add("stop the apiserver", env.Stop)
	store, err := datastore.NewKube(env.Config)
	if err != nil {
		return nil, err
	}
	version := "?"
	if dc, err := discovery.NewDiscoveryClientForConfig(env.Config); err == nil {
		if v, err := dc.ServerVersion(); err == nil {
			version = v.GitVersion
		}
	}

	// The node namespace, with forwarding on and a default route via the stub namespace
	// so proxy ARP answers for 169.254.1.1, as test/cni has it.
	node, err := netnode.New(ctx, netnode.Options{Prefix: id, UplinkCIDR: uplinkNode, Gateway: uplinkStub, Cleanup: cl})
	if err != nil {
		return nil, err
	}
	step(" node namespace %s, stub namespace %s, uplink %s via %s", node.Name, node.Stub, uplinkNode, uplinkStub)
	kubeconfig := filepath.Join(tmp, "kubeconfig")
	if err := node.ForwardKubeconfig(env.Kubeconfig, env.Config.Host, kubeconfig); err != nil {
		return nil, err
	}
	network := id + "-net"
	if err := writeConflist(confDir, network, node.Name, kubeconfig, filepath.Join(tmp, "cni.log")); err != nil {
		return nil, err
	}
	cl.Add("remove cnitool's cached results", func() error { return netnode.RemoveCNIResults(network) })
	tool := &runner{cnitool: cnitool, plugin: plugin, binDir: binDir, confDir: confDir, network: network, node: node.Name}

	// The Kubernetes side: a namespace, the pool, the pods. The apiserver and all it holds
	// go with env.Stop.
	podNS := id
	step(" creating namespace %s, IPPool %s (%s, /%d blocks) and %d pods", podNS, id, poolCIDR, blockSize, n)
	if _, err := datastore.Create(ctx, store, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: podNS}}); err != nil {
		return nil, err
	}
	if _, err := datastore.Create(ctx, store, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: id},
		Spec: v1.IPPoolSpec{CIDR: poolCIDR, BlockSize: blockSize}}); err != nil {
		return nil, err
	}
	pods := make([]string, n)
	for i := range pods {
		pods[i] = fmt.Sprintf("web-%03d", i)
		if _, err := datastore.Create(ctx, store, testPod(podNS, pods[i])); err != nil {
			return nil, err
		}
	}

	// One new network namespace per pod, made before the clock runs.
	step(" creating %d pod network namespaces", n)
	netnss := make([]string, n)
	for i := range netnss {
		if netnss[i], err = node.NewPodNS(ctx, fmt.Sprintf("pod%03d", i)); err != nil {
			return nil, err
		}
	}

	floor, err := tool.versionFloor(ctx, node, 20)
	if err != nil {
		return nil, err
	}

	fmt.Printf("cni-add: %d pods, cnitool add/del one after another (CNI %s), each in its own new netns, real kube-apiserver %s\n",
		n, cniVersion, version)
	fmt.Printf("  pool %s (/%d blocks), node namespace %s; timed from just before the exec of cnitool to its exit\n",
		poolCIDR, blockSize, node.Name)
	st := &stats{}
	pool := netip.MustParsePrefix(poolCIDR)
	seen := map[netip.Addr]string{}
	step(" ADD x%d", n)
	for i, pod := range pods {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, cpu, out, err := tool.cnitoolRun(ctx, "add", netnss[i], podNS, pod)
		if err != nil {
			return nil, fmt.Errorf("cnitool add %s/%s: %w%s", podNS, pod, err, logTail(filepath.Join(tmp, "cni.log")))
		}
		ip, err := resultIP(out)
		if err != nil {
			return nil, fmt.Errorf("cnitool add %s/%s: %w", podNS, pod, err)
		}
		if !pool.Contains(ip) {
			return nil, fmt.Errorf("pod %s got %s, outside the pool %s", pod, ip, poolCIDR)
		}
		if other, dup := seen[ip]; dup {
			return nil, fmt.Errorf("pods %s and %s both got %s", other, pod, ip)
		}
		seen[ip] = pod
		st.add, st.addCPU = append(st.add, d), append(st.addCPU, cpu)
	}
	if err := verify(ctx, store, node, podNS, n); err != nil {
		return nil, fmt.Errorf("after ADD: %w", err)
	}

	step(" DEL x%d", n)
	for i, pod := range pods {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		d, cpu, _, err := tool.cnitoolRun(ctx, "del", netnss[i], podNS, pod)
		if err != nil {
			return nil, fmt.Errorf("cnitool del %s/%s: %w%s", podNS, pod, err, logTail(filepath.Join(tmp, "cni.log")))
		}
		st.del, st.delCPU = append(st.del, d), append(st.delCPU, cpu)
	}
	if err := verify(ctx, store, node, podNS, 0); err != nil {
		return nil, fmt.Errorf("after DEL: %w", err)
	}

	fmt.Printf("  ADD: %s\n", summary(st.add))
	fmt.Printf("  DEL: %s\n", summary(st.del))
	fmt.Printf("  CPU (user+sys of cnitool and tabby-cni) per ADD: p50=%.1fms, per DEL: p50=%.1fms\n",
		benchutil.Ms(benchutil.Percentile(st.addCPU, 50)), benchutil.Ms(benchutil.Percentile(st.delCPU, 50)))
	fmt.Printf("  exec floor (tabby-cni VERSION, no datastore, same namespace): p50 %.1fms\n", benchutil.Ms(floor))
	fmt.Printf("  after ADD: %d distinct addresses in %s, %d WorkloadEndpoints, %d cali* veths and protocol-116 routes in the node namespace; after DEL: none left, no address allocated\n",
		n, poolCIDR, n, n)
	return st, nil
}

// summary is p50/p90/p99/max/mean of ds in milliseconds.
func summary(ds []time.Duration) string {
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	ms := func(p float64) float64 { return benchutil.Ms(benchutil.Percentile(ds, p)) }
	return fmt.Sprintf("p50=%.1fms p90=%.1fms p99=%.1fms max=%.1fms mean=%.1fms (n=%d)",
		ms(50), ms(90), ms(99), ms(100), benchutil.Ms(sum/time.Duration(len(ds))), len(ds))
}

// testPod is a pod like test/cni's: labels, a service account, named ports.
func testPod(namespace, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": "web", "tbench/pod": name}},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web-sa",
			Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/web:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9000}}}},
		},
	}
}

func step(f string, a ...any) { fmt.Fprintf(os.Stderr, " "+f+"\n", a...) }
