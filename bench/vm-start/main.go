// Command vm-start measures how fast a libvirt guest's tap becomes a routed and policed
// workload endpoint: the time from libvirt's STARTED lifecycle event for the domain to
// the moment the node's tabby-node reports the endpoint on that tap programmed (its /32
// route and proxy ARP) and policy enforced (Tabby's programs on the tap, its policy in
// the maps), p50 over 20 starts (after 2 unmeasured ones). Goal: p50 under 100 ms.
//
// Set-up: the real kube-apiserver + etcd, an IPPool, one node namespace on a
// test/fabric fabric with tabby-node (--vm-endpoints=true, --vm-tap-prefix set to this
// run's own prefix so that the shared libvirtd's other guests are ignored, BGP off:
// one node has no peer), the machine's shared libvirtd (test/vmguest; started if it
// does not run) and one guest defined from the vmguest artifacts (TCG, direct kernel
// boot, one virtio NIC on a tap libvirt makes). Each start is vmguest's: the domain is
// started paused, a hook moves the tap into the node namespace and sets it up (what a
// libvirtd running on the node would have done), then the guest is resumed. libvirt
// (Debian 12's) sends STARTED and SUSPENDED when the paused domain is created, before
// the hook, and RESUMED after it: the figure from STARTED includes the hook, and the
// time from the hook's end is printed too (Tabby's part alone). The benchmark follows
// lifecycle events itself (its own connection, the default event loop registered
// first) and polls the agent's local API (GET /endpoints, every 2 ms) for the endpoint
// on the tap. A breakdown comes from tabby-node's debug log (millisecond timestamps):
// when the watcher wrote the WorkloadEndpoint (event, domain read, IPAM, the write)
// and when felix applied it (its watch, the route, sysctls, BPF).
// Then the domain is destroyed and the next start waits until the endpoint is gone.
//
// Every name starts with tbench-<pid>-; the fabric is 10.84.0.0/24, the uplinks
// 10.84.255.0/24, the pool 10.85.0.0/16. Everything is removed at the end, on failure
// and on SIGINT/SIGTERM/SIGHUP too (benchutil.Run); a libvirtd the run started is
// stopped unless other domains live on it. No reference runs here, so ref is -.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bench/internal/benchutil"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/vmguest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Addresses only this benchmark uses, all inside its own namespaces.
var (
	fabricNet  = netip.MustParsePrefix("10.84.0.0/24")
	uplinksNet = netip.MustParsePrefix("10.84.255.0/24")
	poolNet    = netip.MustParsePrefix("10.85.0.0/16")
)

const (
	namePrefix = "tbench-"
	goalP50    = 100 * time.Millisecond
	pollEvery  = 2 * time.Millisecond
	perStart   = 30 * time.Second // a start whose endpoint takes longer fails the run
)

// results are the timings of one run, one entry per measured start.
type results struct {
	total   []time.Duration // STARTED -> programmed and policy enforced (the RESULT)
	resumed []time.Duration // RESUMED -> STARTED (libvirt's own order and gap)
	wep     []time.Duration // STARTED -> the watcher logged the WorkloadEndpoint written
	applied []time.Duration // WorkloadEndpoint written -> felix logged the apply with its route
	report  []time.Duration // felix's apply -> GET /endpoints showed it programmed and policed
	hook    []time.Duration // the hook: tap into the node namespace, up
	tapIn   []time.Duration // the hook done (tap up in the node) -> programmed and policed
	destroy []time.Duration // libvirt's destroy call (not in the RESULT)
	gone    []time.Duration // destroy returned -> the endpoint gone (not in the RESULT)
	early   int             // starts whose endpoint was ready before STARTED arrived
	// earlyWEP counts starts whose WorkloadEndpoint was written before STARTED arrived
	// (the watcher read the domain, already active, for an earlier event); their
	// written -> applied is counted from STARTED.
	earlyWEP int
}

func main() {
	n := flag.Int("n", 20, "starts to measure")
	warmup := flag.Int("warmup", 2, "starts made first and not measured")
	flag.Parse()
	if *n < 1 || *warmup < 0 || *n+*warmup > 500 {
		benchutil.Fatal(errors.New("-n must be at least 1 and -n + -warmup at most 500"))
	}
	res := benchutil.Run("vm-start", 20*time.Minute, func(ctx context.Context, cl *netnode.Cleanup) (*results, error) {
		return bench(ctx, cl, *n, *warmup)
	})
	fmt.Printf("vm-start: %d starts (after %d unmeasured) of one TCG guest on one node, shared libvirtd, real kube-apiserver\n", *n, *warmup)
	fmt.Printf("  STARTED -> programmed and policed: %s\n", summary(res.total))
	fmt.Printf("  breakdown from tabby-node's log (ms timestamps):\n")
	fmt.Printf("    STARTED -> WorkloadEndpoint written: %s  (watcher: domain read, IPAM, the write)\n", summary(res.wep))
	fmt.Printf("    written -> felix applied:            %s  (felix's watch, route, sysctls, BPF maps and programs)\n", summary(res.applied))
	fmt.Printf("    applied -> seen on GET /endpoints:   %s  (the status and the 2 ms poll)\n", summary(res.report))
	fmt.Printf("  tap up in the node -> programmed and policed: %s  (the hook's end; Tabby's part alone)\n", summary(res.tapIn))
	fmt.Printf("  STARTED -> RESUMED event:          %s  (libvirt sends STARTED at the paused start, before the hook)\n", summary(res.resumed))
	fmt.Printf("  start hook (tap into node netns):  %s\n", summary(res.hook))
	fmt.Printf("  destroy call:                      %s\n", summary(res.destroy))
	fmt.Printf("  destroy returned -> endpoint gone: %s\n", summary(res.gone))
	if res.earlyWEP > 0 {
		fmt.Printf("  %d starts had the WorkloadEndpoint written before the STARTED event arrived (counted from STARTED)\n", res.earlyWEP)
	}
	if res.early > 0 {
		fmt.Printf("  %d starts had the endpoint ready before the STARTED event arrived (counted as 0)\n", res.early)
	}
	p50 := benchutil.Percentile(res.total, 50)
	benchutil.Result("vm-start", benchutil.Ms(p50), "ms", -1, fmt.Sprintf("p50<%dms", goalP50.Milliseconds()), p50 < goalP50)
}

// bench sets everything up (registering its teardown with cl), starts the guest
// warmup+n times and returns the timings of the last n.
func bench(ctx context.Context, cl *netnode.Cleanup, n, warmup int) (*results, error) {
	id, tmp, dirs, err := benchutil.NewRun(ctx, cl, namePrefix, func(f string, a ...any) { step(" "+f, a...) }, "bin", "fabric", "guest")
	if err != nil {
		return nil, err
	}
	binDir, fabDir, guestDir := dirs[0], dirs[1], dirs[2]
	// QEMU (uid 64055) reads the guest's kernel and initramfs from guestDir.
	if err := os.Chmod(tmp, 0o711); err != nil {
		return nil, err
	}
	if err := os.Chmod(guestDir, 0o755); err != nil {
		return nil, err
	}

	step(" building tabby-node, tabby-cni and tabbyctl into %s", binDir)
	if err := fabric.BuildBinaries(ctx, binDir); err != nil {
		return nil, fmt.Errorf("build the binaries: %w", err)
	}
	cnitool, err := netnode.FindCnitool(ctx, ".")
	if err != nil {
		return nil, fmt.Errorf("%w (run from the repository root)", err)
	}
	step(" guest kernel and initramfs (test/vmguest, cached)")
	art, err := vmguest.Build(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("guest artifacts: %w", err)
	}

	c, err := benchutil.StartCluster(ctx, cl, tmp, fabric.Options{Prefix: id, Subnet: fabricNet, Uplinks: uplinksNet,
		BinDir: binDir, Cnitool: cnitool, Dir: fabDir})
	if err != nil {
		return nil, err
	}
	store, f := c.Store, c.Fabric
	step(" IPPool %s (%s)", id, poolNet)
	if _, err := datastore.Create(ctx, store, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: id},
		Spec: v1.IPPoolSpec{CIDR: poolNet.String()}}); err != nil {
		return nil, err
	}

	step(" the shared libvirtd")
	lv, err := vmguest.StartLibvirtd(ctx, "")
	if err != nil {
		return nil, err
	}
	cl.Add("stop libvirtd if this run started it", lv.Stop)
	ev, err := watchLifecycle(ctx, cl)
	if err != nil {
		return nil, err
	}

	// Taps are named <prefix><n>: the node follows only this run's prefix.
	tapPrefix := fmt.Sprintf("tvs%d", os.Getpid()%100000)
	tap := tapPrefix + "g"
	node, err := f.AddNode(ctx, 0)
	if err != nil {
		return nil, err
	}
	if err := node.Start("--bgp=false", "--vm-endpoints=true", "--libvirt-uri="+vmguest.URI,
		"--vm-tap-prefix="+tapPrefix, "--vm-namespace=default"); err != nil {
		return nil, err
	}
	api := localapi.NewClient(node.Socket, 5*time.Second)
	step(" tabby-node on %s; waiting until it is ready and follows libvirt", node.Name)
	if err := netnode.Poll(ctx, 90*time.Second, 50*time.Millisecond, func() error {
		st, err := api.Status(ctx)
		switch {
		case err != nil:
			return err
		case !st.Ready:
			return fmt.Errorf("not ready: %v", st.NotReady)
		case st.VMs == nil || !st.VMs.Connected:
			return fmt.Errorf("libvirt watcher not connected: %+v", st.VMs)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("%w\ntabby-node log:\n%s", err, node.LogTail(40))
	}

	name := id + "-vm"
	d, err := vmguest.Define(ev.conn, vmguest.Options{Name: name, MAC: "52:54:00:84:00:0a", Tap: tap,
		Artifacts: art, Dir: guestDir})
	if err != nil {
		return nil, err
	}
	cl.Add("destroy and undefine "+name, d.Close)
	uuid, err := domainUUID(ev.conn, name)
	if err != nil {
		return nil, err
	}

	res := &results{}
	logs := &logTail{path: node.Log}
	if _, err := logs.next(tap); err != nil {
		return nil, err
	}
	step(" %d starts of %s (%d unmeasured), tap %s into %s", warmup+n, name, warmup, tap, node.Name)
	for i := range warmup + n {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ev.reset()
		var hookStart, hookEnd time.Time
		hook := func() error {
			hookStart = time.Now()
			if _, err := netnode.Run(ctx, "ip", "link", "set", tap, "netns", node.Name); err != nil {
				return err
			}
			if _, err := node.Net.IP(ctx, "link", "set", tap, "up"); err != nil {
				return err
			}
			hookEnd = time.Now()
			return nil
		}
		tStart := time.Now()
		if err := d.Start(ctx, hook); err != nil {
			return nil, err
		}
		w, err := waitEndpoint(ctx, api, tap)
		if err != nil {
			return nil, fmt.Errorf("start %d: %w\ntabby-node log:\n%s", i, err, node.LogTail(40))
		}
		started, resumed, err := ev.started(ctx, uuid)
		if err != nil {
			return nil, fmt.Errorf("start %d: %w", i, err)
		}
		tDestroy := time.Now()
		if err := d.Destroy(); err != nil {
			return nil, err
		}
		destroyed := time.Now()
		if err := waitGone(ctx, api, tap); err != nil {
			return nil, fmt.Errorf("start %d: %w\ntabby-node log:\n%s", i, err, node.LogTail(40))
		}
		gone := time.Since(destroyed)
		marks, err := logs.next(tap)
		if err != nil {
			return nil, err
		}
		if i < warmup {
			step("  warm-up start %d: events %s (from the start call; hook %+.1fms..%+.1fms)", i,
				ev.sequence(uuid, tStart), benchutil.Ms(hookStart.Sub(tStart)), benchutil.Ms(hookEnd.Sub(tStart)))
			continue
		}
		total := w.policed.Sub(started)
		if total < 0 {
			res.early++
			total = 0
		}
		res.total = append(res.total, total)
		res.resumed = append(res.resumed, resumed.Sub(started))
		res.tapIn = append(res.tapIn, w.policed.Sub(hookEnd))
		if !marks.wepCreated.IsZero() && !marks.applied.IsZero() {
			written := marks.wepCreated
			if written.Before(started) {
				res.earlyWEP++
				written = started
			}
			res.wep = append(res.wep, written.Sub(started))
			res.applied = append(res.applied, marks.applied.Sub(written))
			res.report = append(res.report, w.policed.Sub(marks.applied))
		}
		res.hook = append(res.hook, hookEnd.Sub(hookStart))
		res.gone = append(res.gone, gone)
		res.destroy = append(res.destroy, destroyed.Sub(tDestroy))
		step("  start %2d: %6.1f ms (WorkloadEndpoint written %+.0f ms, felix applied %+.0f ms; hook %.1f ms)", i-warmup,
			benchutil.Ms(total), benchutil.Ms(marks.wepCreated.Sub(started)), benchutil.Ms(marks.applied.Sub(started)),
			benchutil.Ms(hookEnd.Sub(hookStart)))
	}
	return res, nil
}

// summary is p50/p90/max of ds in milliseconds.
func summary(ds []time.Duration) string {
	ms := func(p float64) float64 { return benchutil.Ms(benchutil.Percentile(ds, p)) }
	return fmt.Sprintf("p50=%.1fms p90=%.1fms max=%.1fms (n=%d)", ms(50), ms(90), ms(100), len(ds))
}

func step(f string, a ...any) { fmt.Fprintf(os.Stderr, " "+f+"\n", a...) }
