package lab_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/lab"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/router"
)

const suite = "test/lab" // in skip messages

// labRun is one lab under test: its name, state directory and tabbyctl.
type labRun struct {
	t        *testing.T
	name     string
	dir      string
	tabbyctl string
}

// run runs tabbyctl lab <args> with the lab's state directory and returns stdout,
// stderr and the exit code.
func (l *labRun) run(timeout time.Duration, args ...string) (string, string, int) {
	l.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"lab", "--state-dir", l.dir}, args...)
	cmd := exec.CommandContext(ctx, l.tabbyctl, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee) && ctx.Err() == nil:
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	l.t.Fatalf("tabbyctl %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(full, " "), err, stdout.String(), stderr.String())
	return "", "", -1
}

// TestLabUpDown: lab up with 2 nodes (2 pods each, FRR as the ToR, the mesh), the
// report, status, exec, the policy demo (deny, then allow), up again, then down twice
// and nothing left behind.
func TestLabUpDown(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: root, a kube-apiserver, cnitool, FRR and network namespaces")
	}
	netnode.RequireNetns(t, suite, "ip", "ping")
	netnode.Require(t, suite, "FRR (the ToR)", router.Available(router.KindFRR))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	_, err := k8senv.BinDir(ctx)
	netnode.Require(t, suite, "kube-apiserver (hack/k8s-bins.sh)", err)
	_, err = netnode.FindCnitool(ctx, "")
	netnode.Require(t, suite, "cnitool (hack/cnitool.sh)", err)

	wantVM := libvirtInstalled(t)

	binDir := t.TempDir()
	start := time.Now()
	if err := fabric.BuildBinaries(ctx, binDir); err != nil {
		t.Fatalf("build the binaries: %v", err)
	}
	t.Logf("built tabbyctl, tabby-node and tabby-cni in %v", time.Since(start).Round(time.Millisecond))
	id, err := netnode.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	l := &labRun{t: t, name: "tlab" + id, dir: filepath.Join(os.TempDir(), "tlab-"+id), tabbyctl: filepath.Join(binDir, "tabbyctl")}
	before := hostSnapshot(t)
	// Whatever happens, the lab goes.
	t.Cleanup(func() {
		if _, err := os.Stat(l.dir); err == nil {
			if t.Failed() {
				if b, err := os.ReadFile(filepath.Join(l.dir, "lab.log")); err == nil {
					t.Logf("lab.log:\n%s", b)
				}
			}
			out, errOut, code := l.run(3*time.Minute, "down", "--name", l.name)
			t.Logf("cleanup: lab down (exit %d):\n%s%s", code, out, errOut)
		}
	})

	// Up: exit 0, a healthy report with a full matrix.
	start = time.Now()
	out, errOut, code := l.run(4*time.Minute, "up", "--name", l.name, "--nodes", "2", "-o", "json")
	upTook := time.Since(start)
	t.Logf("lab up (exit %d) in %v; progress:\n%s", code, upTook.Round(time.Millisecond), errOut)
	if code != 0 {
		t.Fatalf("lab up exited %d\nstdout:\n%s", code, out)
	}
	var r lab.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("decode the report: %v\n%s", err, out)
	}
	checkReport(t, &r, 2, 4, wantVM)
	st, err := lab.ReadState(l.dir)
	if err != nil {
		t.Fatal(err)
	}

	// Status, live: the same picture.
	out, errOut, code = l.run(2*time.Minute, "status", "-o", "json")
	if code != 0 {
		t.Fatalf("lab status exited %d: %s\n%s", code, errOut, out)
	}
	var rs lab.Report
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("decode the status: %v\n%s", err, out)
	}
	checkReport(t, &rs, 2, 4, wantVM)
	full := fullMatrix(4, wantVM)
	out, _, code = l.run(2*time.Minute, "status")
	if code != 0 || !strings.Contains(out, full) {
		t.Errorf("lab status (table) exited %d:\n%s", code, out)
	}

	// Exec: into a pod, across nodes; exit codes pass through; bad targets fail.
	b1 := findPod(t, &r, "pod-b1")
	if out, errOut, code := l.run(time.Minute, "exec", "pod-a1", "--", "ping", "-c", "1", "-W", "2", b1.IP); code != 0 {
		t.Errorf("lab exec pod-a1 -- ping %s: exit %d\n%s%s", b1.IP, code, out, errOut)
	}
	if out, _, code := l.run(time.Minute, "exec", "a", "ip", "-o", "addr", "show", "fab0"); code != 0 || !strings.Contains(out, "10.90.0.1/24") {
		t.Errorf("lab exec a ip addr: exit %d\n%s", code, out)
	}
	if out, _, code := l.run(time.Minute, "exec", "a", "ip", "route", "show", "proto", "117"); code != 0 || !strings.Contains(out, "via 10.90.0.2") {
		t.Errorf("lab exec a ip route show proto 117: exit %d, want node b's block via 10.90.0.2:\n%s", code, out)
	}
	if _, _, code := l.run(time.Minute, "exec", "demo/pod-b1", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("lab exec pod-b1 -- sh -c 'exit 7': exit %d, want 7", code)
	}
	if _, errOut, code := l.run(time.Minute, "exec", "nosuchpod", "true"); code != 1 || !strings.Contains(errOut, "pod-a1") {
		t.Errorf("lab exec nosuchpod: exit %d, want 1 and the known targets: %s", code, errOut)
	}

	// The policy demo: a deny policy changes the matrix, removing it restores it.
	progs := pinnedPrograms(t, st)
	checkPolicyDemo(t, l, full)

	// Up again: the running lab is reported, nothing new is made.
	out, _, code = l.run(2*time.Minute, "up", "--name", l.name, "--nodes", "2", "-o", "json")
	var again lab.Report
	if code != 0 || json.Unmarshal([]byte(out), &again) != nil || !again.Existing || again.PID != r.PID {
		t.Errorf("lab up on a running lab: exit %d, want the same lab (pid %d) reported as existing:\n%s", code, r.PID, out)
	}

	// Down, twice.
	start = time.Now()
	// --name: with the state directory gone, down sweeps by name; never the default one.
	out, errOut, code = l.run(3*time.Minute, "down", "--name", l.name)
	t.Logf("lab down (exit %d) in %v:\n%s%s", code, time.Since(start).Round(time.Millisecond), out, errOut)
	if code != 0 {
		t.Fatalf("lab down exited %d", code)
	}
	out, errOut, code = l.run(time.Minute, "down", "--name", l.name)
	if code != 0 || !strings.Contains(out, "nothing to do") {
		t.Errorf("second lab down: exit %d, want 0 and nothing to do:\n%s%s", code, out, errOut)
	}
	checkNothingLeft(t, l, st, before)
	checkProgramsGone(t, progs)

	if wantVM {
		checkKilledVM(t, l, before)
	}
}

// libvirtInstalled reports whether libvirt and QEMU are installed, so that the lab
// must start its VM; under CI=true they must be (hack/deps.sh installs them).
// Without them the lab runs pods only and says why.
func libvirtInstalled(t *testing.T) bool {
	t.Helper()
	for _, bin := range []string{"qemu-system-x86_64", "libvirtd", "virtlogd", "virsh"} {
		if _, err := exec.LookPath(bin); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s: %s not installed (hack/deps.sh installs libvirt and QEMU)", suite, bin)
			}
			t.Logf("!!! %s: %s not installed: the lab runs without its VM (this would FAIL under CI=true)", suite, bin)
			return false
		}
	}
	return true
}

// fullMatrix is the status table's line of a full matrix of pods pods (and the VM).
func fullMatrix(pods int, vm bool) string {
	n := pods
	if vm {
		n++
	}
	return fmt.Sprintf("%d of %d pairs reachable", n*(n-1), n*(n-1))
}

// labDomains are the libvirt domains of the lab (named <name>-*). The lab may have
// started libvirtd itself and stopped it at down (a machine where it is not a
// service): then no daemon answers, and what would outlive it is read from disk: a
// persistent definition, a running domain's state file, or a QEMU process.
func labDomains(t *testing.T, l *labRun) []string {
	t.Helper()
	var out []string
	list, err := netnode.Run(context.Background(), "virsh", "-q", "-c", "qemu:///system", "list", "--all", "--name")
	if err == nil {
		for _, d := range strings.Fields(list) {
			if strings.HasPrefix(d, l.name+"-") {
				out = append(out, d)
			}
		}
		return out
	}
	if !strings.Contains(err.Error(), "failed to connect to the hypervisor") {
		t.Fatalf("virsh list: %v", err)
	}
	for _, dir := range []string{"/etc/libvirt/qemu", "/run/libvirt/qemu"} {
		m, _ := filepath.Glob(filepath.Join(dir, l.name+"-*.xml"))
		for _, f := range m {
			out = append(out, strings.TrimSuffix(filepath.Base(f), ".xml")+" ("+f+")")
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, arg := range strings.Split(string(b), "\x00") {
			if strings.HasPrefix(arg, "guest="+l.name+"-") {
				out = append(out, fmt.Sprintf("%s (QEMU %s)", strings.TrimPrefix(strings.Split(arg, ",")[0], "guest="), filepath.Base(filepath.Dir(f))))
			}
		}
	}
	return out
}

// checkKilledVM: a small lab with its VM, the supervisor killed with SIGKILL (the
// guest outlives it: QEMU is libvirtd's child), then lab down removes the domain and
// everything else.
func checkKilledVM(t *testing.T, l *labRun, before snapshot) {
	t.Helper()
	start := time.Now()
	out, errOut, code := l.run(4*time.Minute, "up", "--name", l.name, "--nodes", "1", "--pods-per-node", "1", "-o", "json")
	var r lab.Report
	if code != 0 || json.Unmarshal([]byte(out), &r) != nil || r.VM == nil {
		t.Fatalf("lab up --nodes 1 --pods-per-node 1: exit %d, want a lab with its VM\n%s%s", code, out, errOut)
	}
	t.Logf("lab up --nodes 1 --pods-per-node 1 with the VM in %v", time.Since(start).Round(time.Millisecond))
	st, err := lab.ReadState(l.dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := netnode.Poll(context.Background(), 10*time.Second, 20*time.Millisecond, func() error {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", st.PID)); err == nil && !strings.Contains(string(b), ") Z ") {
			return fmt.Errorf("supervisor %d still alive", st.PID)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if doms := labDomains(t, l); len(doms) != 1 {
		t.Errorf("after SIGKILL of the supervisor: domains %v, want the guest still there", doms)
	}
	out, errOut, code = l.run(3*time.Minute, "down", "--name", l.name)
	t.Logf("lab down after SIGKILL (exit %d):\n%s%s", code, out, errOut)
	if code != 0 || !strings.Contains(out, "undefined libvirt domain "+r.VM.Domain) {
		t.Errorf("lab down after SIGKILL: exit %d, want the domain %s destroyed and undefined", code, r.VM.Domain)
	}
	checkNothingLeft(t, l, st, before)
}

// checkReport checks a healthy report of nodes nodes and pods pods (and the VM: in
// the matrix, every pod reaches it and it reaches every pod).
func checkReport(t *testing.T, r *lab.Report, nodes, pods int, vm bool) {
	t.Helper()
	if len(r.Problems) > 0 {
		t.Errorf("report problems:\n%s", strings.Join(r.Problems, "\n"))
	}
	if len(r.Nodes) != nodes || len(r.Pods) != pods {
		t.Fatalf("report: %d nodes and %d pods, want %d and %d", len(r.Nodes), len(r.Pods), nodes, pods)
	}
	for _, n := range r.Nodes {
		// The mesh session with the other node, and the ToR's.
		if !n.Ready || len(n.Sessions) != nodes {
			t.Errorf("node %s: ready %v, %d sessions (want ready and %d): %+v", n.Name, n.Ready, len(n.Sessions), nodes, n.Sessions)
		}
		for _, s := range n.Sessions {
			if s.State != "Established" {
				t.Errorf("node %s: session with %s (%s) is %s", n.Name, s.Address, s.Type, s.State)
			}
		}
	}
	if r.Tor == nil || r.Tor.Kind != "frr" || len(r.Tor.Peers) != nodes {
		t.Fatalf("report: ToR %+v, want FRR with %d peers", r.Tor, nodes)
	}
	for _, p := range r.Tor.Peers {
		if p.State != "Established" || p.Prefixes == 0 {
			t.Errorf("ToR session with %s (%s): %s, %d prefixes; want Established with prefixes", p.Addr, p.Node, p.State, p.Prefixes)
		}
	}
	checkVM(t, r, vm)
	n := pods
	if vm {
		n++
	}
	m := r.Matrix
	if m == nil || m.Total != n*(n-1) || m.Reachable != m.Total || len(m.Cells) != n {
		t.Fatalf("matrix %+v: want %d of %d pairs reachable", m, n*(n-1), n*(n-1))
	}
	if vm && m.Workloads[n-1] != lab.VMName {
		t.Errorf("matrix workloads %v: want %s last", m.Workloads, lab.VMName)
	}
	for i, row := range m.Cells {
		for j, c := range row {
			want := lab.CellOK
			if i == j {
				want = lab.CellSelf
			}
			if c != want {
				t.Errorf("matrix %s -> %s: %s, want %s", m.Workloads[i], m.Workloads[j], c, want)
			}
		}
	}
}

// checkVM checks the report's VM: running on node a with its WorkloadEndpoint's
// address, or (without libvirt) none and a note saying why.
func checkVM(t *testing.T, r *lab.Report, want bool) {
	t.Helper()
	if !want {
		if r.VM != nil || r.VMNote == "" {
			t.Errorf("report without libvirt: VM %+v, note %q; want no VM and a note", r.VM, r.VMNote)
		}
		return
	}
	v := r.VM
	switch {
	case v == nil:
		t.Fatalf("report: no VM (note %q)", r.VMNote)
	case v.Name != lab.VMName || v.Domain != r.Name+"-"+lab.VMName || v.Node != r.Nodes[0].Name || v.State != "running" ||
		v.IP == "" || v.Endpoint == "" || !strings.HasPrefix(v.Tap, r.Name) || v.MAC == "":
		t.Errorf("report: VM %+v; want %s, domain %s-%s, running on %s with an endpoint and an address", v, lab.VMName, r.Name, lab.VMName, r.Nodes[0].Name)
	}
}

func findPod(t *testing.T, r *lab.Report, name string) lab.PodState {
	t.Helper()
	for _, p := range r.Pods {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no pod %s in the report", name)
	return lab.PodState{}
}

// snapshot is the host's state the lab must leave as it found it.
type snapshot struct {
	links, routes []string
}

func hostSnapshot(t *testing.T) snapshot {
	t.Helper()
	links := lines(netnode.MustRun(t, "ip", "-o", "link", "show"), func(l string) string {
		// "7: name@peer: <FLAGS> ...": the name identifies a link.
		f := strings.Fields(l)
		if len(f) < 2 {
			return l
		}
		return strings.TrimSuffix(f[1], ":")
	})
	routes := lines(netnode.MustRun(t, "ip", "route", "show", "table", "all"), func(l string) string { return l })
	return snapshot{links: links, routes: routes}
}

func lines(s string, key func(string) string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, key(l))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// checkNothingLeft checks that no trace of the lab remains.
func checkNothingLeft(t *testing.T, l *labRun, st *lab.State, before snapshot) {
	t.Helper()
	if _, err := os.Stat(l.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory %s still there (%v)", l.dir, err)
	}
	for _, ns := range lines(netnode.MustRun(t, "ip", "netns", "list"), func(s string) string { return strings.Fields(s)[0] }) {
		if strings.HasPrefix(ns, l.name+"-") {
			t.Errorf("network namespace %s left behind", ns)
		}
	}
	// Processes: anything naming the state directory or the lab (the supervisor,
	// tabby-node, zebra, bgpd, etcd, kube-apiserver all do), and the supervisor's pid.
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if strings.Contains(cmdline, l.dir) || strings.Contains(cmdline, l.name+"-") {
			t.Errorf("process %d left behind: %s", pid, cmdline)
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", st.PID)); err == nil && !strings.Contains(string(b), ") Z ") {
		t.Errorf("the supervisor (pid %d) is still alive: %s", st.PID, b)
	}
	// Files outside the state directory.
	var leftovers []string
	if m, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", l.name+"-*")); m != nil {
		leftovers = append(leftovers, m...)
	}
	if m, _ := filepath.Glob(filepath.Join("/sys/fs/bpf", l.name+"*")); m != nil {
		leftovers = append(leftovers, m...)
	}
	// The nodes' bpffs (their pins) is unmounted.
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], l.dir) {
				leftovers = append(leftovers, "mount "+f[4])
			}
		}
	}
	if _, err := exec.LookPath("virsh"); err == nil {
		for _, d := range labDomains(t, l) {
			leftovers = append(leftovers, "libvirt domain "+d)
		}
	}
	if st.Tor != nil {
		for comm, pid := range st.Tor.PIDs {
			p := filepath.Join("/var/tmp/frr", fmt.Sprintf("%s.%d", comm, pid))
			if _, err := os.Stat(p); err == nil {
				leftovers = append(leftovers, p)
			}
		}
	}
	for _, f := range leftovers {
		t.Errorf("left behind: %s", f)
	}
	// The host's namespace: nothing new that is the lab's. Other suites may run at the
	// same time (in their own namespaces); a change that is not the lab's is logged.
	after := hostSnapshot(t)
	ours := []string{l.name, "cali", "fab", "uplink", "br0", "10.90.", "10.91."}
	for _, d := range []struct {
		what          string
		before, after []string
	}{{"interface", before.links, after.links}, {"route", before.routes, after.routes}} {
		for _, x := range d.after {
			if slices.Contains(d.before, x) {
				continue
			}
			if slices.ContainsFunc(ours, func(s string) bool { return strings.Contains(x, s) }) {
				t.Errorf("new %s in the host's namespace: %s", d.what, x)
			} else {
				t.Logf("new %s in the host's namespace, not the lab's (another suite's?): %s", d.what, x)
			}
		}
	}
}
