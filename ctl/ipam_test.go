package ctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/ctl"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ipamStart is when the fixture's first allocation is made; each next one is a minute
// later. ipamNow is the clock of tabbyctl in these tests.
var (
	ipamStart = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	ipamNow   = ipamStart.Add(2 * time.Hour)
)

// ipamFix is what the fixture allocated.
type ipamFix struct {
	ips      map[string]netip.Addr // by pod name
	borrowed netip.Addr
	leaked   netip.Addr
}

// ipamFixture: pools main (10.10.0.0/16, /26 blocks) and tiny (10.20.0.0/29, two /30
// blocks); nodes node-a, node-b and node-c; pods web-0 and web-1 on node-a and db-0 on
// node-b in main; t-b0 on node-b and t-c0..t-c4 on node-c in tiny, so node-c fills its
// block and borrows the fifth address from node-b's; and ghost on node-c in main, whose
// Pod does not exist: a leak.
func ipamFixture(t *testing.T) (datastore.Store, ipamFix) {
	t.Helper()
	ctx := context.Background()
	s := datastore.NewMemory()
	create := func(o datastore.Object) {
		t.Helper()
		if _, err := s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	create(&v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "main"}, Spec: v1.IPPoolSpec{CIDR: "10.10.0.0/16", BlockSize: 26}})
	create(&v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "tiny"}, Spec: v1.IPPoolSpec{CIDR: "10.20.0.0/29", BlockSize: 30}})
	for _, n := range []string{"node-a", "node-b", "node-c"} {
		create(&v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}})
	}
	now := ipamStart
	a := ipam.New(s, ipam.Options{Now: func() time.Time { return now }})
	fix := ipamFix{ips: map[string]netip.Addr{}}
	assign := func(pod, node, pool string, podExists bool) ipam.Allocation {
		t.Helper()
		if podExists {
			create(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: "default"}})
		}
		al, err := a.Assign(ctx, ipam.Request{HandleID: ipam.PodHandle("default", pod, "c-"+pod), Node: node,
			Pools: []string{pool}, Attrs: map[string]string{ipam.AttrType: "pod", ipam.AttrNamespace: "default",
				ipam.AttrPod: pod, ipam.AttrContainer: "c-" + pod}})
		if err != nil {
			t.Fatalf("assign %s: %v", pod, err)
		}
		fix.ips[pod] = al.IP
		now = now.Add(time.Minute)
		return al
	}
	assign("web-0", "node-a", "main", true)
	assign("web-1", "node-a", "main", true)
	assign("db-0", "node-b", "main", true)
	assign("t-b0", "node-b", "tiny", true)
	for i := range 5 {
		al := assign(fmt.Sprintf("t-c%d", i), "node-c", "tiny", true)
		if al.Borrowed != (i == 4) {
			t.Fatalf("t-c%d: borrowed %v", i, al.Borrowed)
		}
		if al.Borrowed {
			fix.borrowed = al.IP
		}
	}
	fix.leaked = assign("ghost", "node-c", "main", false).IP
	return s, fix
}

// freeInBlock is the 11th address of ip's /26 block: free in the fixture.
func freeInBlock(ip netip.Addr) netip.Addr {
	a := netip.PrefixFrom(ip, 26).Masked().Addr()
	for range 10 {
		a = a.Next()
	}
	return a
}

// ipamctl runs tabbyctl on the fixed clock.
func ipamctl(t *testing.T, s datastore.Store, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := ctl.Run(args, ctl.Options{Stdout: &out, Stderr: &errb, Store: s, Now: func() time.Time { return ipamNow }})
	r := result{code: code, stdout: out.String(), stderr: errb.String()}
	t.Logf("tabbyctl %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

func TestIPAMShowGolden(t *testing.T) {
	s, fix := ipamFixture(t)
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"ipam-show.golden", []string{"ipam", "show"}},
		{"ipam-show-blocks.golden", []string{"ipam", "show", "--show-blocks"}},
		{"ipam-show-borrowed.golden", []string{"ipam", "show", "--show-borrowed"}},
		{"ipam-show-json.golden", []string{"ipam", "show", "-o", "json"}},
		{"ipam-show-ip-borrowed.golden", []string{"ipam", "show", "--ip", fix.borrowed.String()}},
		{"ipam-show-ip-yaml.golden", []string{"ipam", "show", "--ip", fix.borrowed.String(), "-o", "yaml"}},
		{"ipam-show-ip-free.golden", []string{"ipam", "show", "--ip", freeInBlock(fix.ips["web-0"]).String()}},
		{"ipam-show-ip-noblock.golden", []string{"ipam", "show", "--ip", "10.10.0.60"}},
		{"ipam-show-ip-outside.golden", []string{"ipam", "show", "--ip", "192.168.7.7"}},
		{"ipam-check.golden", []string{"ipam", "check", "--interval", "10ms"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			r := ipamctl(t, s, tc.args...)
			expectCode(t, r, 0)
			if r.stderr != "" {
				t.Errorf("stderr: %s", r.stderr)
			}
			golden(t, tc.golden, r.stdout)
		})
	}
}

func TestIPAMShow(t *testing.T) {
	s, fix := ipamFixture(t)
	r := ipamctl(t, s, "ipam", "show", "--show-borrowed", "-o", "json")
	expectCode(t, r, 0)
	var u ipam.Usage
	if err := json.Unmarshal([]byte(r.stdout), &u); err != nil {
		t.Fatal(err)
	}
	if len(u.Borrowed) != 1 || u.Borrowed[0].IP != fix.borrowed.String() || u.Borrowed[0].Node != "node-c" ||
		u.Borrowed[0].BlockNode != "node-b" || !u.Borrowed[0].Since.Equal(ipamStart.Add(8*time.Minute)) {
		t.Errorf("borrowed %+v", u.Borrowed)
	}
	r = ipamctl(t, s, "ipam", "show", "--ip", fix.ips["web-0"].String(), "-o", "json")
	expectCode(t, r, 0)
	var info ipam.AddressInfo
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
		t.Fatal(err)
	}
	if !info.Allocated || info.Borrowed || info.Pool != "main" || info.BlockNode != "node-a" ||
		info.Attrs[ipam.AttrPod] != "web-0" || info.Handle != ipam.PodHandle("default", "web-0", "c-web-0") {
		t.Errorf("info %+v", info)
	}

	r = ipamctl(t, s, "ipam", "show", "--ip", "10.10.0.300")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `error: --ip "10.10.0.300" is not an IP address`)
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}

	// An empty datastore.
	r = ipamctl(t, datastore.NewMemory(), "ipam", "show", "--show-blocks", "--show-borrowed")
	expectCode(t, r, 0)
	if want := "No IP pools found.\n\nNo blocks allocated.\n\nNo borrowed addresses.\n"; r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}

	// An IPv6 pool larger than Usage counts (2^62) shows its real size.
	v6 := datastore.NewMemory()
	if _, err := v6.Create(context.Background(), &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "v6"},
		Spec: v1.IPPoolSpec{CIDR: "fd00:10::/48", BlockSize: 122, Disabled: true}}); err != nil {
		t.Fatal(err)
	}
	r = ipamctl(t, v6, "ipam", "show")
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "v6 (disabled)", "fd00:10::/48", "2^80", "0 (0%)", "2^80 (100%)")
}

func TestIPAMCheckAndReleaseFromReport(t *testing.T) {
	s, fix := ipamFixture(t)
	report := filepath.Join(t.TempDir(), "report.json")
	r := ipamctl(t, s, "ipam", "check", "--interval", "10ms", "-o", report)
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "1 problem found:", "Report written to "+report+".\n")
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep ipam.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	ghost := ipam.PodHandle("default", "ghost", "c-ghost")
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != ipam.ProblemLeaked || rep.Problems[0].IP != fix.leaked.String() ||
		rep.Problems[0].Handle != ghost || rep.Interval != "10ms" || !rep.Time.Equal(ipamNow) || rep.InUse != 10 {
		t.Fatalf("report %+v", rep)
	}

	// A copy of the report whose allocation was since released and handed out again
	// (same address, another handle) must not be released.
	stale := writeFile(t, "stale.json", strings.ReplaceAll(string(b), ghost, "pod.default.other.c-other"))

	r = ipamctl(t, s, "ipam", "release", "--from-report", report)
	expectCode(t, r, 0)
	if want := fmt.Sprintf("released %s (%s)\nRepaired 1 of 1 problem; skipped 0.\n", fix.leaked, ghost); r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	clean := filepath.Join(t.TempDir(), "clean.json")
	r = ipamctl(t, s, "ipam", "check", "--interval", "10ms", "--report", clean)
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "9 addresses in use", "No problems found.\n")
	r = ipamctl(t, s, "ipam", "release", "--from-report", clean)
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "lists no problems; nothing to release")

	// Released already: the same report again skips it.
	r = ipamctl(t, s, "ipam", "release", "--from-report", report)
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "skipped leaked-allocation "+fix.leaked.String(), "changed since the report", "Repaired 0 of 1 problem; skipped 1.")

	// The address is handed out again to another pod: a stale report leaves it alone.
	a := ipam.New(s, ipam.Options{})
	al, err := a.Assign(context.Background(), ipam.Request{HandleID: "pod.default.other.c-other", Node: "node-c",
		IP: fix.leaked, Attrs: map[string]string{ipam.AttrNamespace: "default", ipam.AttrPod: "other"}})
	if err != nil || al.IP != fix.leaked {
		t.Fatalf("reassign: %+v %v", al, err)
	}
	r = ipamctl(t, s, "ipam", "release", "--from-report", stale)
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "changed since the report")
	if info, _ := a.Lookup(context.Background(), fix.leaked); !info.Allocated {
		t.Error("a stale report released a reallocated address")
	}

	// Not a report.
	r = ipamctl(t, s, "ipam", "release", "--from-report", writeFile(t, "usage.json", `{"pools": [], "blocks": []}`))
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "is not a report of tabbyctl ipam check")
	r = ipamctl(t, s, "ipam", "release", "--from-report", filepath.Join(t.TempDir(), "missing.json"))
	expectCode(t, r, 1)
}

func TestIPAMReleaseIP(t *testing.T) {
	s, fix := ipamFixture(t)
	web1, db0 := fix.ips["web-1"].String(), fix.ips["db-0"].String()
	r := ipamctl(t, s, "ipam", "release", "--ip", web1, "--ip", db0)
	expectCode(t, r, 0)
	want := fmt.Sprintf("%s is held by pod default/web-1 (handle pod.default.web-1.c-web-1, node node-a, since 2026-03-01T10:01:00Z)\nreleased %s\n", web1, web1) +
		fmt.Sprintf("%s is held by pod default/db-0 (handle pod.default.db-0.c-db-0, node node-b, since 2026-03-01T10:02:00Z)\nreleased %s\n", db0, db0)
	if r.stdout != want {
		t.Errorf("stdout %q, want %q", r.stdout, want)
	}
	r = ipamctl(t, s, "ipam", "show", "--ip", web1)
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "Status:      free")
	if _, err := s.Get(context.Background(), datastore.KindIPAMHandle, "", ipam.HandleName("pod.default.web-1.c-web-1")); err == nil {
		t.Error("the handle of the released address is still there")
	}

	// Not allocated: an error, but the other address is still released.
	r = ipamctl(t, s, "ipam", "release", "--ip", web1, "--ip", fix.ips["web-0"].String())
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "error: "+web1+" is not allocated; nothing to release")
	expectContains(t, "stdout", r.stdout, "released "+fix.ips["web-0"].String())

	r = ipamctl(t, s, "ipam", "release", "--ip", "nope")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `--ip "nope" is not an IP address`)
}

func TestIPAMUsageErrors(t *testing.T) {
	s, _ := ipamFixture(t)
	for _, args := range [][]string{
		{"ipam", "release"},
		{"ipam", "release", "--ip", "10.10.0.1", "--from-report", "r.json"},
		{"ipam", "release", "--bogus"},
		{"ipam", "release", "10.10.0.1"},
		{"ipam", "show", "--ip", "10.10.0.1", "--show-blocks"},
		{"ipam", "show", "-o", "wide"},
		{"ipam", "show", "extra"},
		{"ipam", "check", "--interval", "0s"},
		{"ipam", "check", "--interval", "soon"},
		{"ipam", "frobnicate"},
	} {
		r := ipamctl(t, s, args...)
		expectCode(t, r, 2)
		expectContains(t, "stderr", r.stderr, "error: ", "Run 'tabbyctl ipam")
	}
	r := ipamctl(t, s, "ipam")
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "show", "check", "release")
}

// TestKubeIPAMShowBorrowed: against the real API server, a node whose share of a pool
// is exhausted borrows, and "ipam show --show-borrowed" lists the borrowed address.
func TestKubeIPAMShowBorrowed(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	r := tabbyctlKube(t, "", "version", "--client") // skips without an API server
	expectCode(t, r, 0)
	s, err := datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const pool = "ctl-ipam-borrow"
	nodes := []string{"ctl-ipam-n1", "ctl-ipam-n2"}
	if _, err := s.Create(ctx, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: pool},
		Spec: v1.IPPoolSpec{CIDR: "10.231.0.0/29", BlockSize: 30}}); err != nil {
		t.Fatal(err)
	}
	a := ipam.New(s, ipam.Options{})
	var handles []string
	t.Cleanup(func() {
		ctx := context.Background()
		for _, h := range handles {
			if _, err := a.ReleaseHandle(ctx, h); err != nil {
				t.Errorf("cleanup: release %s: %v", h, err)
			}
		}
		for _, n := range nodes {
			for range 2 { // the first pass marks the blocks empty, the second releases them
				if _, err := a.ReleaseEmptyBlocks(ctx, n, 0); err != nil {
					t.Errorf("cleanup: blocks of %s: %v", n, err)
				}
			}
			_ = s.Delete(ctx, datastore.KindNode, "", n, datastore.DeleteOptions{})
		}
		_ = s.Delete(ctx, datastore.KindIPPool, "", pool, datastore.DeleteOptions{})
		blocks, err := datastore.List[*v1.IPAMBlock](ctx, s, datastore.ListOptions{})
		for _, b := range blocks {
			if strings.HasPrefix(b.Spec.CIDR, "10.231.") {
				t.Errorf("cleanup left block %s", b.Spec.CIDR)
			}
		}
		if err != nil {
			t.Errorf("cleanup: list blocks: %v", err)
		}
	})
	for _, n := range nodes {
		if _, err := s.Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	assign := func(node string, i int) ipam.Allocation {
		t.Helper()
		h := fmt.Sprintf("ctl-test.%s.%d", node, i)
		handles = append(handles, h)
		al, err := a.Assign(ctx, ipam.Request{HandleID: h, Node: node, Pools: []string{pool}})
		if err != nil {
			t.Fatalf("assign %s: %v", h, err)
		}
		return al
	}
	assign(nodes[0], 0) // n1 claims one of the two /30 blocks, n2 the other
	var borrowed ipam.Allocation
	for i := range 5 {
		if al := assign(nodes[1], i); al.Borrowed {
			borrowed = al
		}
	}
	if !borrowed.IP.IsValid() {
		t.Fatal("n2 did not borrow after filling its block")
	}

	r = tabbyctlKube(t, "", "ipam", "show", "--show-borrowed")
	expectCode(t, r, 0)
	var row string
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == borrowed.IP.String() {
			row = line
		}
	}
	if f := strings.Fields(row); len(f) < 5 || f[1] != borrowed.Block.String() || f[2] != nodes[0] || f[3] != nodes[1] {
		t.Errorf("borrowed %s (block %s) not listed as borrowed by %s from %s:\n%s", borrowed.IP, borrowed.Block, nodes[1], nodes[0], r.stdout)
	}
	expectContains(t, "stdout", r.stdout, "IP   ", "BORROWING NODE", pool, "10.231.0.0/29")
}
