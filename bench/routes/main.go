// Command routes measures felix's route reconciler against `ip -batch`: programming
// 10,000 local /32 routes (scope link, one veth, protocol 116) into an empty main table,
// each in a fresh network namespace of its own. Ours is dataplane.RouteTable (desired
// state set, then one Apply: a dump of the empty table, then one netlink request per
// route on one persistent handle); the reference is `ip -n NS -batch FILE` with one
// `route add ... dev X scope link proto 116` line per route, process start included.
// Several rounds alternate the two; the medians are compared. Needs root.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/tabbynet/tabby/bench/internal/benchutil"
	"github.com/tabbynet/tabby/felix/dataplane"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

const (
	goal  = 1.5          // ours/ref
	base  = "10.222.0.0" // the benchmark's own range, inside its own namespaces
	iface = "calibench0"
)

var cleanups []func()

func fail(err error) {
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	benchutil.Fatal(err)
}

func main() {
	n := flag.Int("n", 10000, "routes")
	rounds := flag.Int("rounds", 5, "rounds (each: ours and ip -batch, fresh namespaces)")
	flag.Parse()
	if os.Geteuid() != 0 {
		fail(errors.New("routes: needs root (network namespaces)"))
	}
	if _, err := exec.LookPath("ip"); err != nil {
		fail(err)
	}
	ips := make([]netip.Addr, *n)
	a := netip.MustParseAddr(base)
	for i := range ips {
		a = a.Next()
		ips[i] = a
	}
	dir, err := os.MkdirTemp("", "tabby-bench-routes-")
	if err != nil {
		fail(err)
	}
	cleanups = append(cleanups, func() { os.RemoveAll(dir) })
	batch := filepath.Join(dir, "routes.batch")
	var sb strings.Builder
	for _, ip := range ips {
		fmt.Fprintf(&sb, "route add %s/32 dev %s scope link proto %d\n", ip, iface, routes.ProtocolLocal)
	}
	if err := os.WriteFile(batch, []byte(sb.String()), 0o644); err != nil {
		fail(err)
	}

	fmt.Printf("routes: %d /32 routes, scope link via one veth, protocol %d, empty table, %d rounds\n",
		*n, routes.ProtocolLocal, *rounds)
	var ours, ref []time.Duration
	for r := range *rounds {
		o, err := runOurs(ips)
		if err != nil {
			fail(err)
		}
		b, err := runRef(batch, len(ips))
		if err != nil {
			fail(err)
		}
		ours, ref = append(ours, o), append(ref, b)
		fmt.Printf("  round %d: felix RouteTable %7.1f ms   ip -batch %7.1f ms   ratio %.2f\n",
			r+1, benchutil.Ms(o), benchutil.Ms(b), float64(o)/float64(b))
	}
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	om, rm := median(ours), median(ref)
	fmt.Printf("  median: ours %.1f ms (%.0f routes/s), ip -batch %.1f ms (%.0f routes/s)\n",
		benchutil.Ms(om), float64(*n)/om.Seconds(), benchutil.Ms(rm), float64(*n)/rm.Seconds())
	ratio := float64(om) / float64(rm)
	benchutil.Result("routes", benchutil.Ms(om), "ms", benchutil.Ms(rm), fmt.Sprintf("<=%.1f", goal), ratio <= goal)
}

// node makes a namespace with the veth up and returns its name (removed by del).
func node(tag string) (name string, del func(), err error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", nil, err
	}
	name = "tfx-bench-" + hex.EncodeToString(b) + "-" + tag
	del = func() { _ = exec.Command("ip", "netns", "del", name).Run() }
	for _, args := range [][]string{
		{"netns", "add", name},
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "add", iface, "type", "veth", "peer", "name", iface + "p"},
		{"-n", name, "link", "set", iface + "p", "up"},
		{"-n", name, "link", "set", iface, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			del()
			return "", nil, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return name, del, nil
}

// runOurs programs the routes with felix's reconciler in a fresh namespace.
func runOurs(ips []netip.Addr) (time.Duration, error) {
	name, del, err := node("ours")
	if err != nil {
		return 0, err
	}
	defer del()
	ns, err := netns.GetFromName(name)
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	rt := dataplane.NewRouteTable(h, nil)
	rt.SetAllowDeletes(true, true)
	b, err := dataplane.NewBatcher("/run/netns/" + name) // as felix runs it: new routes batched
	if err != nil {
		return 0, err
	}
	defer b.Close()
	rt.SetBatcher(b)
	start := time.Now()
	for _, ip := range ips {
		rt.Set(netip.PrefixFrom(ip, 32), dataplane.Target{Kind: dataplane.KindLocal, Interface: iface})
	}
	res := rt.Apply()
	took := time.Since(start)
	if res.Err != nil || res.Written != len(ips) {
		return 0, fmt.Errorf("apply: %d written, %d pending: %v", res.Written, res.Pending, res.Err)
	}
	return took, check(h, len(ips))
}

// runRef programs the same routes with ip -batch in a fresh namespace.
func runRef(batch string, n int) (time.Duration, error) {
	name, del, err := node("ref")
	if err != nil {
		return 0, err
	}
	defer del()
	start := time.Now()
	out, err := exec.Command("ip", "-n", name, "-batch", batch).CombinedOutput()
	took := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("ip -batch: %w: %s", err, out)
	}
	ns, err := netns.GetFromName(name)
	if err != nil {
		return 0, err
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	return took, check(h, n)
}

// check counts the routes marked ProtocolLocal in the namespace.
func check(h *netlink.Handle, want int) error {
	got := 0
	if err := routes.ListTabbys(h, func(netlink.Route) { got++ }); err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%d routes in the kernel, want %d", got, want)
	}
	return nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
