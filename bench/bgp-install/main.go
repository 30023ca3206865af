// Command bgp-install measures how fast a Tabby node takes a big table from an external
// BGP router into its kernel: FRR originates 100,000 /32s and a running tabby-node gets
// them over eBGP; the reference is the same 100,000 going the other way, from Tabby's
// speaker to FRR, whose bgpd and zebra put them into FRR's kernel. Both are measured in
// the same run, one after the other, on the same machine; the goal is ours <= ref.
//
// Ours: a real tabby-node (test/fabric: node namespace, real kube-apiserver + etcd the
// benchmark starts, logs at info level and the default resync interval, as an operator
// runs it) and FRR 8.4 (test/router: zebra + bgpd, AS 65000) in a router namespace on the
// fabric, which originates the /32s (kernel blackholes redistributed, in its RIB before
// the round starts). The operator's way to take outside routes: tabby-node's import
// policy takes only IPPool prefixes by default, and the range is no pool of ours (an
// IPPool would hand its addresses to pods), so a BGPFilter accepts the range on import
// (importV4: cidr 10.82.0.0/15, In, Accept) and the BGPPeer (node-specific, peerIP
// FRR-A, AS 65000, all defaults: hold 90 s, graceful restart 120 s) names it. The round:
// create the BGPPeer, wait until tabby-node has configured the session with the filter
// (no problems reported), then add tabby-node as FRR's neighbor; FRR connects and sends
// its table; the speaker's best paths go to felix (the Learned hand-off), which writes
// them as protocol-117 routes.
//
// Ref: Tabby's own speaker (bgp.NewGoBGP, what tabby-node embeds) in this program, run
// as a child process inside its own router namespace (`ip netns exec`, so every socket
// gobgp opens from any thread is there), configured by controller.Calc from a Node, a
// BGPPeer and a BGPFilter exporting the range (exactly as tabby-node configures a
// BGPPeer), with the /32s originated by one Advertise each before the round; a second
// FRR (same config, InstallKernel: zebra writes protocol-186 routes) gets the speaker as
// its neighbor, and bgpd + zebra install the table.
//
// Timing, the same for both: from the moment the Tabby speaker's session entered
// Established (its PeerState.Since, gobgp's event time: tabby-node's local API for ours,
// the child's Peers() for the reference) until the last of the /32s shows up in the
// receiver's kernel, as seen by a netlink route subscription in the receiver's
// namespace (each prefix counted once; if the subscription overflows, dumps of the table
// every 100 ms take over and the figure is marked). Both FRRs run with FRR's fast update
// settings (coalesce-time 50 ms instead of 1 s, test/router's FastUpdates); gobgp sends
// at once. Also printed per round: when the first route and a quarter, half and three
// quarters of them were in the kernel, the rate, and the CPU time of every process in
// the two namespaces of the transfer (tabby-node + FRR-A's bgpd and zebra; the
// speaker + FRR-B's bgpd and zebra) and of this process (the observer). -rounds rounds
// alternate ours and ref (each peering removed and every route gone before the next);
// the medians are the RESULT.
//
// The receivers' RIBs are not polled by default (-rib does, every 250 ms): tabby-node's
// peer list (bgp.Peers, gobgp's ListPeer with advertised counts) walks every learned
// path and costs about 0.3 s of CPU at 100,000, which would slow the very thing
// measured. Instead the kernel arrivals are reported by quarter. When ours is slower
// (-breakdown auto; always, never) two more rounds of ours, not counted, show where its
// time goes: one under `perf record -g` (tabby-node's samples by function, in felix,
// Learned, gobgp, GC; -profile keeps the file), one with tabby-node restarted at debug
// level (UPDATEs received, Learned's hand-offs to felix and felix's applies from its
// log; debug logging formats every received prefix, so that round is slower).
// -keep-logs keeps the logs.
//
// Nothing is created in the host's namespace; every name starts with tbench-<pid>-, the
// fabric is 10.81.0.0/24 (uplinks 10.81.255.0/24) and the /32s are 10.82.0.0 upwards
// (inside 10.82.0.0/15), all inside the benchmark's namespaces. Everything is removed at
// the end, on failure and on SIGINT/SIGTERM/SIGHUP; what a killed run left is removed by
// the next one (its processes die with it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bench/internal/benchutil"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/router"
	"github.com/vishvananda/netlink"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Addresses only this benchmark uses, all inside its own namespaces.
var (
	fabricNet  = netip.MustParsePrefix("10.81.0.0/24")   // the node .1; FRR-A, the speaker, FRR-B from .254 down
	uplinksNet = netip.MustParsePrefix("10.81.255.0/24") // the node's /30 to its stub
	routesNet  = netip.MustParsePrefix("10.82.0.0/15")   // the /32s, from its first address
)

const (
	asFRR     = 65000 // both FRRs; Tabby's side has the default 64512
	goalRatio = 1.0
	maxRoutes = 1 << 17 // routesNet's size
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == speakerCmd {
		os.Exit(speakerMain(os.Args[2:]))
	}
	n := flag.Int("n", 100000, "number of /32s")
	rounds := flag.Int("rounds", 3, "rounds of ours and ref, alternating; the medians are compared")
	breakdown := flag.String("breakdown", "auto", "two more rounds of ours, not counted, to see where its time goes (perf record -g of tabby-node; tabby-node at debug level, split from its log): auto (when ours is slower), always or never")
	keep := flag.String("keep-logs", "", "copy the tabby-node, FRR and speaker logs into this directory before the teardown")
	rib := flag.Bool("rib", false, "also poll the receiver's RIB count every 250 ms in the rounds (costly for tabby-node: each poll walks every learned path)")
	profile := flag.String("profile", "", "keep the breakdown's perf profile of tabby-node in this file (perf report -i FILE)")
	flag.Parse()
	if *n < 1 || *n > maxRoutes || *rounds < 1 || !slices.Contains([]string{"auto", "always", "never"}, *breakdown) {
		benchutil.Fatal(fmt.Errorf("want 1 <= -n <= %d, -rounds >= 1, -breakdown auto|always|never", maxRoutes))
	}
	res := benchutil.Run("bgp-install", 20*time.Minute, func(ctx context.Context, cl *netnode.Cleanup) (*results, error) {
		return bench(ctx, cl, *n, *rounds, *rib, *breakdown, *keep, *profile)
	})
	res.print()
	ours, ref := median(res.ours), median(res.ref)
	benchutil.Result("bgp-install", ours.Seconds(), "s", ref.Seconds(), fmt.Sprintf("<=%.1f", goalRatio),
		ours.Seconds() <= goalRatio*ref.Seconds())
}

// results are the figures of one run.
type results struct {
	n, rounds      int
	version        string
	originate      time.Duration // FRR-A: start until its RIB held the /32s
	advertise      time.Duration // the reference speaker's Advertise calls
	oursSides      []*side
	refSides       []*side
	ours, ref      []time.Duration
	breakdown      *timeline // nil when not run
	breakdownSide  *side
	breakdownError error
	profileSide    *side
	profile        string // perf report's summary
	profileError   error
}

func (r *results) print() {
	fmt.Printf("bgp-install: %d /32s over eBGP (FRR AS %d <-> Tabby AS %d), %d rounds alternating, real kube-apiserver %s\n",
		r.n, asFRR, v1.DefaultASNumber, r.rounds, r.version)
	fmt.Printf("  timed from the Tabby speaker's Established (PeerState.Since) to the last route in the receiver's kernel (netlink subscription)\n")
	fmt.Printf("  setup: FRR-A originated them in %.2fs (start to RIB); the reference speaker advertised them in %.2fs (one Advertise each)\n",
		r.originate.Seconds(), r.advertise.Seconds())
	for i := range r.oursSides {
		fmt.Printf("  round %d ours (FRR -> tabby-node -> felix):  %s\n", i+1, r.oursSides[i].describe(r.n))
		fmt.Printf("  round %d ref  (Tabby speaker -> bgpd+zebra): %s\n", i+1, r.refSides[i].describe(r.n))
	}
	ours, ref := median(r.ours), median(r.ref)
	fmt.Printf("  median to kernel: ours %.3fs (%.0f routes/s), ref %.3fs (%.0f routes/s), ratio %.2f\n",
		ours.Seconds(), float64(r.n)/ours.Seconds(), ref.Seconds(), float64(r.n)/ref.Seconds(), ours.Seconds()/ref.Seconds())
	var calls []time.Duration
	for _, o := range r.oursSides {
		calls = append(calls, o.peersCall)
	}
	fmt.Printf("  one GET /bgp/peers on tabby-node's local API with the %d routes learned: %.0f ms (median; bgp.Peers -> gobgp ListPeer with advertised counts)\n",
		r.n, benchutil.Ms(median(calls)))
	switch {
	case r.profileError != nil:
		fmt.Printf("  profile round unavailable: %v\n", r.profileError)
	case r.profileSide != nil:
		fmt.Printf("  profile round (perf record -g -F 999 on tabby-node, not counted): %s\n%s", r.profileSide.describe(r.n), r.profile)
	}
	switch {
	case r.breakdownError != nil:
		fmt.Printf("  debug-log round unavailable: %v\n", r.breakdownError)
	case r.breakdown != nil:
		fmt.Printf("  debug-log round (tabby-node at debug level, which formats every received prefix: slower; not counted): %s\n", r.breakdownSide.describe(r.n))
		r.breakdown.print(r.breakdownSide, r.n)
	}
}

func median(ds []time.Duration) time.Duration { return benchutil.Percentile(ds, 50) }

// setup is what the rounds run on.
type setup struct {
	store      datastore.Store
	f          *fabric.Cluster
	node       *fabric.Node
	api        *localapi.Client
	rA, rS, rB *fabric.Router // FRR-A's, the reference speaker's and FRR-B's namespaces
	frrA, frrB *router.Router
	frrBNL     *netlink.Handle
	spk        *refSpeaker
	set        prefixSet
	peerName   string
	filterName string
	rib        bool // poll the receiver's RIB during the rounds
}

// bench sets everything up (registering its teardown with cl) and runs the rounds.
func bench(ctx context.Context, cl *netnode.Cleanup, n, rounds int, rib bool, breakdown, keep, profile string) (*results, error) {
	id, tmp, dirs, err := benchutil.NewRun(ctx, cl, namePrefix, func(f string, a ...any) { step(" "+f, a...) }, "bin", "fab")
	if err != nil {
		return nil, err
	}
	binDir, fabDir := dirs[0], dirs[1]
	res := &results{n: n, rounds: rounds, version: "?"}
	s := &setup{set: newPrefixSet(routesNet.Addr(), n), peerName: id + "-frr", filterName: id + "-range", rib: rib}

	step(" building tabby-node, tabby-cni and tabbyctl into %s", binDir)
	if err := fabric.BuildBinaries(ctx, binDir); err != nil {
		return nil, fmt.Errorf("build the binaries: %w", err)
	}
	cnitool, err := netnode.FindCnitool(ctx, ".")
	if err != nil {
		return nil, fmt.Errorf("%w (run from the repository root)", err)
	}
	c, err := benchutil.StartCluster(ctx, cl, tmp, fabric.Options{Prefix: id, Subnet: fabricNet, Uplinks: uplinksNet,
		BinDir: binDir, Cnitool: cnitool, Dir: fabDir})
	if err != nil {
		return nil, err
	}
	res.version, s.store, s.f = c.Version, c.Store, c.Fabric
	for _, r := range []struct {
		name string
		to   **fabric.Router
	}{{"frra", &s.rA}, {"spk", &s.rS}, {"frrb", &s.rB}} {
		if *r.to, err = s.f.AddRouter(ctx, r.name); err != nil {
			return nil, err
		}
	}

	// The reference speaker advertises its /32s while the rest starts.
	step(" starting the reference speaker in %s (%s), %d /32s", s.rS.Netns, s.rS.Addr, n)
	s.spk, err = startSpeaker(s.rS.Netns, filepath.Join(s.rS.Dir, "speaker.log"), "-addr", s.rS.Addr.String(),
		"-peer", s.rB.Addr.String(), "-peer-as", fmt.Sprint(asFRR), "-base", routesNet.Addr().String(),
		"-n", fmt.Sprint(n), "-range", routesNet.String())
	if err != nil {
		return nil, err
	}
	cl.Add("stop the reference speaker", s.spk.stop)

	step(" starting FRR-A in %s (%s) originating the /32s, FRR-B in %s (%s) installing", s.rA.Netns, s.rA.Addr, s.rB.Netns, s.rB.Addr)
	originated := time.Now()
	prefixes := make([]netip.Prefix, n)
	for i := range prefixes {
		prefixes[i] = s.set.at(i)
	}
	if s.frrA, err = startFRR(ctx, cl, s.rA, prefixes, false); err != nil {
		return nil, err
	}
	if s.frrB, err = startFRR(ctx, cl, s.rB, nil, true); err != nil {
		return nil, err
	}
	if s.frrBNL, err = openNetlink(s.rB.Netns, cl); err != nil {
		return nil, err
	}

	if s.node, err = s.f.AddNode(ctx, 0); err != nil {
		return nil, err
	}
	s.api = localapi.NewClient(s.node.Socket, 5*time.Second)
	if err := s.node.Start(nodeArgs("info")...); err != nil {
		return nil, err
	}
	if keep != "" {
		cl.Add("keep the logs in "+keep, func() error { return keepLogs(keep, s) })
	}
	// The operator's filter; the BGPPeer naming it is created in every round.
	if _, err := datastore.Create(ctx, s.store, &v1.BGPFilter{ObjectMeta: metav1.ObjectMeta{Name: s.filterName},
		Spec: v1.BGPFilterSpec{ImportV4: []v1.BGPFilterRule{{CIDR: routesNet.String(), MatchOperator: v1.MatchIn, Action: v1.BGPFilterAccept}}}}); err != nil {
		return nil, err
	}
	if err := s.waitNode(ctx); err != nil {
		return nil, err
	}
	if err := waitOriginated(ctx, s.frrA, n); err != nil {
		return nil, err
	}
	res.originate = time.Since(originated)
	if res.advertise, err = s.spk.waitReady(ctx, 5*time.Minute); err != nil {
		return nil, err
	}

	for i := range rounds {
		step(" round %d of %d: ours", i+1, rounds)
		o, err := s.ours(ctx)
		if err != nil {
			return nil, err
		}
		if err := s.resetOurs(ctx); err != nil {
			return nil, err
		}
		step(" round %d of %d: ref", i+1, rounds)
		r, err := s.ref(ctx)
		if err != nil {
			return nil, err
		}
		if err := s.resetRef(ctx); err != nil {
			return nil, err
		}
		res.oursSides, res.refSides = append(res.oursSides, o), append(res.refSides, r)
		res.ours, res.ref = append(res.ours, o.toKernel()), append(res.ref, r.toKernel())
	}
	if breakdown == "always" || (breakdown == "auto" && median(res.ours) > median(res.ref)) {
		if profile == "" {
			profile = filepath.Join(tmp, "perf.data")
		}
		res.profileSide, res.profile, res.profileError = s.profileRound(ctx, profile)
		// Last: it leaves tabby-node at debug level.
		res.breakdownSide, res.breakdown, res.breakdownError = s.debugRound(ctx)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	return res, nil
}

// nodeArgs are tabby-node's flags beyond the fabric's: the log level and the default
// resync interval (the fabric's 5 s would resync 100,000 routes during a round).
func nodeArgs(level string) []string {
	return []string{"--log-level", level, "--resync-interval", "90s"}
}

// startFRR starts FRR (zebra + bgpd, AS 65000, fast updates, no neighbor yet) in r.
func startFRR(ctx context.Context, cl *netnode.Cleanup, r *fabric.Router, originate []netip.Prefix, install bool) (*router.Router, error) {
	fr, err := router.Start(ctx, router.Config{Kind: router.KindFRR, Netns: r.Netns, Dir: r.Dir, AS: asFRR,
		RouterID: r.Addr, Originate: originate, InstallKernel: install, FastUpdates: true, ConnectRetry: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	cl.Add("stop FRR in "+r.Netns, fr.Stop)
	return fr, nil
}

// waitNode waits until tabby-node runs its BGP controller.
func (s *setup) waitNode(ctx context.Context) error {
	return netnode.Poll(ctx, 90*time.Second, 100*time.Millisecond, func() error {
		st, err := s.api.BGPPeers(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", s.node.Name, err, s.node.LogTail(20))
		}
		if !st.Enabled {
			return fmt.Errorf("%s: bgp not enabled", s.node.Name)
		}
		return nil
	})
}

// waitOriginated waits until FRR's BGP table holds the n originated prefixes.
func waitOriginated(ctx context.Context, fr *router.Router, n int) error {
	return netnode.Poll(ctx, 2*time.Minute, 100*time.Millisecond, func() error {
		out, err := fr.Exec(ctx, "show bgp ipv4 unicast statistics json")
		if err != nil {
			return err
		}
		want := fmt.Sprintf(`"totalPrefixes":%d,`, n)
		if !strings.Contains(out, want) {
			return fmt.Errorf("FRR in %s: not all %d prefixes in its RIB yet", fr.Netns, n)
		}
		return nil
	})
}

// keepLogs copies tabby-node's, the FRRs' and the speaker's logs into dir.
func keepLogs(dir string, s *setup) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := map[string]string{s.node.Log: "tabby-node.log", s.spk.log: "ref-speaker.log"}
	for name, fr := range map[string]*router.Router{"frr-a": s.frrA, "frr-b": s.frrB} {
		if fr == nil {
			continue
		}
		logs, _ := filepath.Glob(filepath.Join(fr.Dir, "*.log"))
		for _, l := range logs {
			files[l] = name + "-" + filepath.Base(l)
		}
	}
	var errs []error
	for src, dst := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o644); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func step(f string, a ...any) { fmt.Fprintf(os.Stderr, " "+f+"\n", a...) }
