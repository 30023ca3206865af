package lab

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
)

func TestOptionsValidate(t *testing.T) {
	ok := Options{PodsPerNode: 2}.Defaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if ok.Name != DefaultName || ok.Nodes != 3 || ok.Tor != "frr" || ok.Timeout != DefaultTimeout {
		t.Errorf("defaults: %+v", ok)
	}
	for _, tc := range []struct {
		change func(*Options)
		want   string
	}{
		{func(o *Options) { o.Name = "Tabby" }, "lab name"},
		{func(o *Options) { o.Name = "averyveryverylongname" }, "lab name"},
		{func(o *Options) { o.Name = "1lab" }, "lab name"},
		{func(o *Options) { o.Nodes = 17 }, "--nodes 17"},
		{func(o *Options) { o.Nodes = -1 }, "--nodes -1"},
		{func(o *Options) { o.PodsPerNode = -1 }, "--pods-per-node -1"},
		{func(o *Options) { o.Tor = "cisco" }, `--tor "cisco"`},
		{func(o *Options) { o.Nodes, o.RouteReflector = 1, true }, "--route-reflector"},
		{func(o *Options) { o.StateDir = "relative/dir" }, "absolute"},
		{func(o *Options) { o.StateDir = "/run" }, "two levels"},
		{func(o *Options) { o.StateDir = "/run/../etc/x" }, "clean"},
		{func(o *Options) { o.StateDir = "/" + strings.Repeat("x", 70) + "/y" }, "60 bytes"},
	} {
		o := ok
		tc.change(&o)
		err := o.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want one about %q", o, err, tc.want)
		}
	}
	for _, tor := range []string{"none", "bird", "gobgpd", "gobgp", "frr"} {
		o := ok
		o.Tor = tor
		if err := o.Validate(); err != nil {
			t.Errorf("--tor %s: %v", tor, err)
		}
	}
}

func TestArgsRoundTrip(t *testing.T) {
	o := Options{Name: "x1", StateDir: "/run/x1", BinDir: "/opt/bin", Nodes: 4, PodsPerNode: 0, Tor: "bird",
		RouteReflector: true, VM: true, Timeout: time.Minute}
	got := strings.Join(o.Args(), " ")
	want := "--name x1 --state-dir /run/x1 --nodes 4 --pods-per-node 0 --tor bird --timeout 1m0s --bin-dir /opt/bin --route-reflector --vm=true"
	if got != want {
		t.Errorf("Args:\n got %s\nwant %s", got, want)
	}
}

func TestExpectedSessions(t *testing.T) {
	mesh := Options{Tor: "frr"}
	rr := Options{Tor: "none", RouteReflector: true}
	for _, tc := range []struct {
		o       Options
		i, n, w int
	}{
		{mesh, 0, 3, 3}, {mesh, 2, 3, 3}, {mesh, 0, 1, 1},
		{rr, 0, 4, 3}, {rr, 1, 4, 1}, {Options{Tor: "none"}, 0, 1, 0},
	} {
		if got := expectedSessions(tc.o, tc.i, tc.n); got != tc.w {
			t.Errorf("expectedSessions(%+v, %d, %d) = %d, want %d", tc.o, tc.i, tc.n, got, tc.w)
		}
	}
}

func TestNamesDir(t *testing.T) {
	dir := "/run/tabby-lab"
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"etcd", "--data-dir", "/run/tabby-lab/k8s/etcd"}, true},
		{[]string{"etcd", "--data-dir=/run/tabby-lab/k8s/etcd"}, true},
		{[]string{"tabbyctl", "lab", "run", "--state-dir", "/run/tabby-lab"}, true},
		{[]string{"x", "-c", "a,/run/tabby-lab/x"}, true},
		{[]string{"etcd", "--data-dir", "/run/tabby-lab2/k8s"}, false},
		{[]string{"cat", "/srv/run/tabby-lab/x"}, false},
		{[]string{"sleep", "10"}, false},
	} {
		if got := namesDir(tc.args, dir); got != tc.want {
			t.Errorf("namesDir(%q) = %v, want %v", tc.args, got, tc.want)
		}
	}
}

func TestSupervisorCommandLine(t *testing.T) {
	args := append([]string{"/x/bin/tabbyctl", "lab", "run", "--progress-fd", "3"}, Options{Name: "n1", StateDir: "/run/n1", Nodes: 2, Tor: "frr"}.Args()...)
	if !isSupervisor(args) || flagValue(args, "--name") != "n1" || flagValue(args, "--state-dir") != "/run/n1" {
		t.Errorf("supervisor %q not recognised", args)
	}
	for _, a := range [][]string{{"/x/bin/tabbyctl", "lab", "up", "--name", "n1"}, {"tabbyctl", "lab"}, {"sh", "lab", "run"}} {
		if isSupervisor(a) {
			t.Errorf("%q taken for a supervisor", a)
		}
	}
	if v := flagValue([]string{"a", "--name=z"}, "--name"); v != "z" {
		t.Errorf("flagValue --name=z: %q", v)
	}
}

func testState() *State {
	return &State{Name: "t1", Fabric: "t1-fabric",
		Nodes: []NodeState{{Name: "t1-a-node", Letter: "a", Netns: "t1-a-node"}, {Name: "t1-b-node", Letter: "b", Netns: "t1-b-node"}},
		Tor:   &TorState{Kind: "frr", Netns: "t1-tor"},
		Pods: []PodState{{Namespace: "demo", Name: "pod-a1", Node: "t1-a-node", Netns: "t1-a-pod-a1", IP: "10.91.0.1"},
			{Namespace: "demo", Name: "pod-b1", Node: "t1-b-node", Netns: "t1-b-pod-b1", IP: "10.91.0.65"}}}
}

func TestResolve(t *testing.T) {
	st := testState()
	for in, want := range map[string]Target{
		"pod-a1":      {"pod", "demo/pod-a1", "t1-a-pod-a1"},
		"demo/pod-b1": {"pod", "demo/pod-b1", "t1-b-pod-b1"},
		"a":           {"node", "t1-a-node", "t1-a-node"},
		"node-b":      {"node", "t1-b-node", "t1-b-node"},
		"t1-b-node":   {"node", "t1-b-node", "t1-b-node"},
		"tor":         {"tor", "t1-tor", "t1-tor"},
		"fabric":      {"fabric", "t1-fabric", "t1-fabric"},
	} {
		got, err := Resolve(st, in)
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := Resolve(st, "pod-c1"); err == nil || !strings.Contains(err.Error(), "pod-a1, pod-b1, t1-a-node, t1-b-node, tor, fabric") {
		t.Errorf("Resolve(pod-c1): %v, want an error listing the targets", err)
	}
}

func TestSortPods(t *testing.T) {
	ps := []PodState{{Node: "b", Name: "pod-b1"}, {Node: "a", Name: "pod-a10"}, {Node: "a", Name: "pod-a2"}, {Node: "a", Name: "pod-a1"}}
	sortPods(ps)
	var got []string
	for _, p := range ps {
		got = append(got, p.Name)
	}
	if want := []string{"pod-a1", "pod-a2", "pod-a10", "pod-b1"}; !slices.Equal(got, want) {
		t.Errorf("sortPods: %v, want %v", got, want)
	}
}

// TestReportProblemsAndPrint: a report with a failed cell, a session down and a node
// not ready lists each problem, and the printout shows the matrix and the problems.
func TestReportProblemsAndPrint(t *testing.T) {
	st := testState()
	st.StateDir, st.Options = "/run/t1", Options{Name: "t1", StateDir: "/run/t1", Tor: "frr", Nodes: 2, PodsPerNode: 1}
	m := newMatrix(st.Pods)
	m.Cells[0][1], m.Reachable = CellOK, 1
	r := &Report{Name: "t1", StateDir: "/run/t1", Options: st.Options, Kubeconfig: "/run/t1/kubeconfig", Pods: st.Pods, Matrix: m,
		Nodes: []NodeReport{
			{Name: "t1-a-node", IP: "10.90.0.1", Ready: true, Registered: true, Expected: 2,
				Policy:   &localapi.PolicyStatus{Enabled: true, Programmed: true, Enforced: 1},
				Sessions: []localapi.BGPPeer{{Address: "10.90.0.2", Type: "mesh", State: "Established"}, {Address: "10.90.0.254", Type: "global", State: "Active", LastError: "connection refused"}}},
			{Name: "t1-b-node", IP: "10.90.0.2", Registered: true, NotReady: []string{"felix not ready"}, Expected: 2},
		},
		Tor: &TorReport{Kind: "frr", Netns: "t1-tor", IP: "10.90.0.254", AS: TorAS, CLI: []string{"vtysh", "--vty_socket", "/x"},
			Peers: []TorPeer{{Addr: "10.90.0.1", Node: "t1-a-node", State: "Established", Prefixes: 1}}}}
	r.Problems = problems(r)
	want := []string{
		"node t1-a-node: BGP session with 10.90.0.254 (global) is Active: connection refused",
		"node t1-b-node: not ready: [felix not ready]",
		"node t1-b-node: 0 of 2 BGP sessions",
		"node t1-b-node: network policy is not enforced (tabby-node runs without --policy)",
		"ToR frr: sessions with 1 of 2 nodes",
		"pod-b1 (10.91.0.65) cannot reach pod-a1 (10.91.0.1)",
	}
	if !slices.Equal(r.Problems, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(r.Problems, "\n"), strings.Join(want, "\n"))
	}
	if r.Healthy() || m.Full() {
		t.Error("a report with problems is healthy")
	}
	var b strings.Builder
	if err := WriteReport(&b, r, Hints{Tabbyctl: "bin/tabbyctl"}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, s := range []string{
		"pod-a1 (10.91.0.1)   .       ok",
		"pod-b1 (10.91.0.65)  XX      .",
		"1 of 2 pairs reachable: 1 pairs UNREACHABLE",
		"PROBLEMS\n  - node t1-a-node: BGP session",
		"bin/tabbyctl lab --state-dir /run/t1 exec pod-a1 -- ping -c 3 10.91.0.65",
		"bin/tabbyctl lab --state-dir /run/t1 exec tor -- vtysh --vty_socket /x -c 'show bgp summary'",
		"bin/tabbyctl --kubeconfig /run/t1/kubeconfig get workloadendpoints -A -o wide",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("printout lacks %q:\n%s", s, out)
		}
	}
}

// TestStateAndLock: state.json round-trips; the lock says whether a supervisor runs;
// removeStateDir removes a lab's directory but not one holding other files.
func TestStateAndLock(t *testing.T) {
	dir := t.TempDir()
	st := testState()
	st.StateDir, st.Phase = dir, PhaseReady
	if err := writeState(st); err != nil {
		t.Fatal(err)
	}
	got, err := ReadState(dir)
	if err != nil || got.Name != "t1" || len(got.Pods) != 2 || got.Tor.Netns != "t1-tor" {
		t.Fatalf("ReadState: %+v, %v", got, err)
	}
	if Running(dir) {
		t.Fatal("Running before any lock")
	}
	l, err := takeLock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !Running(dir) {
		t.Error("not Running while locked")
	}
	if _, err := takeLock(dir); err != errLocked {
		t.Errorf("second lock: %v, want errLocked", err)
	}
	gone := unlocked(dir)
	select {
	case <-gone:
		t.Fatal("unlocked while locked")
	case <-time.After(50 * time.Millisecond):
	}
	l.release()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("not unlocked after release")
	}

	logf := func(string, ...any) {}
	if !isLabDir(dir) {
		t.Error("a lab's state directory not taken for one")
	}
	if err := removeStateDir(dir, logf); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state directory still there: %v", err)
	}
	other := t.TempDir()
	for _, f := range []string{stateFile, "precious.txt"} {
		if err := os.WriteFile(filepath.Join(other, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if isLabDir(other) {
		t.Error("a directory with a foreign file taken for a lab's")
	}
	if err := removeStateDir(other, logf); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(other, "precious.txt")); err != nil {
		t.Errorf("a file the lab did not make was removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(other, stateFile)); !os.IsNotExist(err) {
		t.Errorf("state.json left: %v", err)
	}
}
