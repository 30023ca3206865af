package lab

import (
	"slices"
	"strings"
	"testing"
)

// TestVMNames: the guest's names start with the lab's, its tap fits an interface name
// even for the longest lab name, and its MAC parses and differs between labs.
func TestVMNames(t *testing.T) {
	long := "abcdefghijkl" // 12 bytes, the longest lab name
	if err := ValidateName(long); err != nil {
		t.Fatal(err)
	}
	if tap := vmTap(long); len(tap) > 15 || !strings.HasPrefix(tap, vmTapPrefix(long)) {
		t.Errorf("tap %q: want at most 15 bytes with the prefix %q", tap, vmTapPrefix(long))
	}
	if d := vmDomain("tabbylab"); d != "tabbylab-vm-a1" {
		t.Errorf("domain %q, want tabbylab-vm-a1", d)
	}
	if a, b := vmMAC("tabbylab"), vmMAC("tabbylab2"); a == b || len(a) != 17 || !strings.HasPrefix(a, "52:54:00:") {
		t.Errorf("MACs %q and %q: want two different QEMU MACs", a, b)
	}
	if got := vmNodeArgs("x1"); !slices.Equal(got, []string{"--vm-endpoints=true", "--vm-tap-prefix=x1v"}) {
		t.Errorf("node args %v", got)
	}
}

// TestAnswersAs: a pod answers "<pod> on <node>", the guest its bare name; another
// name or nothing is no answer.
func TestAnswersAs(t *testing.T) {
	for _, tc := range []struct {
		line, name string
		want       bool
	}{
		{"pod-a1 on tabbylab-a-node\n", "pod-a1", true},
		{"vm-a1\n", "vm-a1", true},
		{"vm-a1\r\n", "vm-a1", true},
		{"vm-a10\n", "vm-a1", false},
		{"pod-a2 on x", "pod-a1", false},
		{"", "vm-a1", false},
	} {
		if got := answersAs(tc.line, tc.name); got != tc.want {
			t.Errorf("answersAs(%q, %q) = %v, want %v", tc.line, tc.name, got, tc.want)
		}
	}
	out := "P 10.91.0.1 pod-a1 on a\r\nP 10.91.0.65 \nP 10.91.0.66 pod-b2 on b\n"
	got := map[string]string{}
	for _, m := range vmProbeLine.FindAllStringSubmatch(out, -1) {
		got[m[1]] = strings.TrimSpace(m[2])
	}
	if got["10.91.0.1"] != "pod-a1 on a" || got["10.91.0.65"] != "" || got["10.91.0.66"] != "pod-b2 on b" || len(got) != 3 {
		t.Errorf("parsed console lines: %q", got)
	}
}

// TestMatrixWorkloadsAndVMPrint: the guest joins the matrix once it has an address;
// the summary lists it, or says why there is none.
func TestMatrixWorkloadsAndVMPrint(t *testing.T) {
	st := testState()
	ws, idx := matrixWorkloads(st)
	if idx != -1 || len(ws) != len(st.Pods) {
		t.Errorf("without a VM: %d workloads, VM at %d", len(ws), idx)
	}
	st.VM = &VMState{Name: VMName, Domain: "t1-vm-a1", Namespace: PodNamespace, Node: "t1-a-node", Netns: "t1-a-node", Tap: "t1va1"}
	if _, idx := matrixWorkloads(st); idx != -1 {
		t.Errorf("a VM without an address is in the matrix at %d", idx)
	}
	st.VM.IP = "10.91.0.2"
	ws, idx = matrixWorkloads(st)
	if idx != len(st.Pods) || ws[idx].Name != VMName || ws[idx].IP != "10.91.0.2" {
		t.Errorf("with a VM: %+v, VM at %d", ws, idx)
	}

	r := &Report{Name: "t1", StateDir: "/run/t1", Options: Options{Name: "t1", Tor: "none"}, Kubeconfig: "/run/t1/kubeconfig",
		VM: &VMReport{Name: VMName, Domain: "t1-vm-a1", Namespace: PodNamespace, Node: "t1-a-node", Tap: "t1va1",
			MAC: "52:54:00:01:02:a1", IP: "10.91.0.2", State: "paused"}}
	r.Problems = problems(r)
	if !slices.Equal(r.Problems, []string{"vm vm-a1: domain t1-vm-a1 is paused"}) {
		t.Errorf("problems %q", r.Problems)
	}
	var b strings.Builder
	if err := WriteReport(&b, r, Hints{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"0 pods, 1 VM,", "vm-a1  t1-vm-a1  demo       t1-a-node  t1va1  52:54:00:01:02:a1  10.91.0.2  paused"} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("printout lacks %q:\n%s", s, b.String())
		}
	}
	r.VM, r.VMNote = nil, "virsh is not installed (hack/deps.sh installs libvirt and QEMU)"
	b.Reset()
	if err := WriteReport(&b, r, Hints{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "VMS\n  (none: virsh is not installed") {
		t.Errorf("printout without a VM lacks the note:\n%s", b.String())
	}
}
