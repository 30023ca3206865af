// Command wep-latency measures how fast a new WorkloadEndpoint reaches the kernel: 500
// WorkloadEndpoints are written to a real kube-apiserver one after another, and each is
// timed from just before its Create call to the moment its /32 route (protocol 116)
// appears in the node's network namespace, as a netlink route event seen by a
// subscription in that namespace (no polling). The next endpoint is written only after
// the previous route appeared, so each figure is one endpoint's latency, not a queue.
//
// felix runs in-process (felix.New with a netlink handle in the node namespace and
// datastore.NewKube), exactly as tabby-node runs it. The benchmark plays a node: a
// network namespace with one veth pair per endpoint (host side cali*, up; the workload
// side in a second namespace, up). Everything it creates is named tbwep-<pid>-..., every
// address is in 10.80.0.0/16, and everything is removed at the end, on failure and on
// SIGINT/SIGTERM/SIGHUP; namespaces of a run that was killed outright are removed by the
// next run. No reference implementation runs here, so ref is -.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bench/internal/benchutil"
	tabbycni "github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/tabbynet/tabby/test/netnode"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	goalP99    = 50 * time.Millisecond
	perWEPWait = 10 * time.Second // an endpoint whose route takes longer fails the run
)

var nowFunc = time.Now

// routeEvent is a new route seen in the node namespace, and when it was read.
type routeEvent struct {
	dst string
	at  time.Time
}

func main() {
	n := flag.Int("n", 500, "WorkloadEndpoints to measure")
	warmup := flag.Int("warmup", 20, "WorkloadEndpoints written first and not measured")
	flag.Parse()
	if *n < 1 || *warmup < 0 || *n+*warmup > 60000 {
		benchutil.Fatal(errors.New("-n must be at least 1 and -n + -warmup at most 60000"))
	}
	if os.Geteuid() != 0 {
		benchutil.Fatal(errors.New("wep-latency needs root (network namespaces): run make bench BENCH=wep-latency as root"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cl := &netnode.Cleanup{Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...) }}
	cl.OnSignal(cancel)

	lat, creates, err := bench(ctx, cl, *n, *warmup)
	_ = cl.Run() // each failed step is reported by Logf
	if err != nil {
		benchutil.Fatal(err)
	}
	p := func(ds []time.Duration, q float64) float64 { return benchutil.Ms(benchutil.Percentile(ds, q)) }
	fmt.Printf("wep-latency: %d WorkloadEndpoints (after %d unmeasured), each Create until its /32 is in the node's kernel; in-process felix, real kube-apiserver\n", *n, *warmup)
	fmt.Printf("  Create call alone:        p50=%.1fms p99=%.1fms max=%.1fms\n", p(creates, 50), p(creates, 99), p(creates, 100))
	p99 := benchutil.Percentile(lat, 99)
	fmt.Printf("  Create -> route in kernel: p50=%.1fms p99=%.1fms max=%.1fms\n", p(lat, 50), p(lat, 99), p(lat, 100))
	benchutil.Result("wep-latency", benchutil.Ms(p99), "ms", -1, "p99<50ms", p99 < goalP99)
}

func step(f string, a ...any) { fmt.Fprintf(os.Stderr, " "+f+"\n", a...) }

// bench sets everything up, writes warmup+n endpoints and returns the latencies of the
// last n: Create to route, and the Create call alone.
func bench(ctx context.Context, cl *netnode.Cleanup, n, warmup int) (lat, creates []time.Duration, err error) {
	if err := netnode.SweepNetns(ctx, namePrefix, step); err != nil {
		return nil, nil, err
	}
	id, err := netnode.RunID(namePrefix)
	if err != nil {
		return nil, nil, err
	}
	step("starting etcd and kube-apiserver")
	env, err := benchutil.StartKube(ctx)
	if err != nil {
		return nil, nil, err
	}
	cl.Add("stop the control plane", env.Stop)
	store, err := datastore.NewKube(env.Config)
	if err != nil {
		return nil, nil, err
	}
	if _, err := store.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: id}}); err != nil {
		return nil, nil, err
	}
	nd, err := newNode(ctx, id, cl)
	if err != nil {
		return nil, nil, err
	}
	total := warmup + n
	step("creating %d veth pairs in %s", total, nd.Name)
	start := time.Now()
	for i := range total {
		if err := nd.addVeth(veth(id, i), fmt.Sprintf("w%d", i)); err != nil {
			return nil, nil, err
		}
	}
	step("  done in %v", time.Since(start).Round(time.Millisecond))

	log, err := zap.NewProduction(zap.IncreaseLevel(zap.WarnLevel))
	if err != nil {
		return nil, nil, err
	}
	fx, err := felix.New(felix.Config{NodeName: nd.Name, Store: store, Logger: log, Registry: prometheus.NewRegistry(),
		NetlinkHandle: nd.Handle, NetNSPath: netnode.NSPath(nd.Name)})
	if err != nil {
		return nil, nil, err
	}
	fctx, stopFelix := context.WithCancel(ctx)
	felixDone := make(chan error, 1)
	go func() { felixDone <- fx.Run(fctx) }()
	cl.Add("stop felix", func() error {
		stopFelix()
		select {
		case err := <-felixDone:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("felix did not stop within 10s")
		}
	})
	step("waiting for felix to be ready")
	deadline := time.Now().Add(60 * time.Second)
	for !fx.Ready() {
		if time.Now().After(deadline) {
			return nil, nil, fmt.Errorf("felix not ready within 60s: %+v", fx.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	events, err := nd.subscribeRoutes(fctx, routes.ProtocolLocal)
	if err != nil {
		return nil, nil, err
	}

	step("writing %d WorkloadEndpoints one after another", total)
	for i := range total {
		ip := netip.AddrFrom4([4]byte{10, 80, byte(i / 250), byte(i%250 + 1)})
		t0 := nowFunc()
		if _, err := store.Create(ctx, wep(id, nd.Name, i, ip)); err != nil {
			return nil, nil, fmt.Errorf("create endpoint %d: %w", i, err)
		}
		created := nowFunc().Sub(t0)
		at, err := waitRoute(ctx, events, ip.String()+"/32")
		if err != nil {
			return nil, nil, fmt.Errorf("endpoint %d (%s): %w; felix: %+v", i, ip, err, fx.Status().Routes)
		}
		if i >= warmup {
			lat = append(lat, at.Sub(t0))
			creates = append(creates, created)
		}
	}
	return lat, creates, nil
}

// waitRoute waits for the route event of dst.
func waitRoute(ctx context.Context, events <-chan routeEvent, dst string) (time.Time, error) {
	timer := time.NewTimer(perWEPWait)
	defer timer.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return time.Time{}, errors.New("the route subscription ended")
			}
			if ev.dst == dst {
				return ev.at, nil
			}
		case <-timer.C:
			return time.Time{}, fmt.Errorf("no route to %s within %v", dst, perWEPWait)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

func veth(id string, i int) string { return tabbycni.VethName(id, fmt.Sprintf("pod-%d", i)) }

// wep is the endpoint of pod i, as the CNI plugin writes it.
func wep(namespace, node string, i int, ip netip.Addr) *v1.WorkloadEndpoint {
	pod := fmt.Sprintf("pod-%d", i)
	return &v1.WorkloadEndpoint{
		ObjectMeta: metav1.ObjectMeta{Name: tabbycni.WEPName(node, pod, "eth0"), Namespace: namespace,
			Labels: map[string]string{"app": "bench", tabbycni.LabelNamespace: namespace, tabbycni.LabelOrchestrator: tabbycni.OrchestratorK8s}},
		Spec: v1.WorkloadEndpointSpec{Orchestrator: v1.OrchestratorPod, Workload: pod, Node: node, Endpoint: "eth0",
			ContainerID: fmt.Sprintf("bench-%d", i), InterfaceName: veth(namespace, i),
			IPNetworks: []string{ip.String() + "/32"}, Profiles: []string{tabbycni.ProfilePrefix + namespace}},
	}
}
