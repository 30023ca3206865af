package lab_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/tabbynet/tabby/lab"
	"github.com/tabbynet/tabby/test/netnode"
)

// demoTarget is the pod the demo's policy isolates.
const demoTarget = "pod-a1"

// checkPolicyDemo runs lab policy deny and wants exactly the cells into demoTarget
// denied and the rest reachable, with the policy programmed by every node; then lab
// policy allow and the matrix full again. The demo's own report should show it at
// once (it waits for every agent); lab status is polled only if it does not.
func checkPolicyDemo(t *testing.T, l *labRun, full string) {
	t.Helper()
	np, err := lab.DenyPolicy()
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct {
		action string
		deny   bool
	}{{lab.PolicyDeny, true}, {lab.PolicyAllow, false}} {
		start := time.Now()
		out, errOut, code := l.run(2*time.Minute, "policy", step.action, "-o", "json")
		var res lab.PolicyResult
		if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Report == nil {
			t.Fatalf("lab policy %s: exit %d\n%s%s", step.action, code, out, errOut)
		}
		if !res.Changed || res.Namespace != np.Namespace || res.Name != np.Name {
			t.Errorf("lab policy %s: %+v, want %s/%s changed", step.action, res, np.Namespace, np.Name)
		}
		why := matrixWrong(res.Report, step.deny, np.Namespace, np.Name)
		if why != "" {
			t.Logf("lab policy %s (programmed after %s): %s; polling lab status", step.action, res.ProgrammedAfter, why)
			err := netnode.Poll(context.Background(), 20*time.Second, 200*time.Millisecond, func() error {
				out, _, _ := l.run(time.Minute, "status", "-o", "json")
				var r lab.Report
				if err := json.Unmarshal([]byte(out), &r); err != nil {
					return fmt.Errorf("decode lab status: %w", err)
				}
				if why := matrixWrong(&r, step.deny, np.Namespace, np.Name); why != "" {
					return errors.New(why)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("after lab policy %s: %v", step.action, err)
			}
		}
		t.Logf("lab policy %s: programmed after %s, the matrix as expected %v after the command started",
			step.action, res.ProgrammedAfter, time.Since(start).Round(time.Millisecond))
	}
	// The table of lab status: the restored matrix, no policy in force.
	out, _, code := l.run(time.Minute, "status")
	if code != 0 || !strings.Contains(out, full) || !strings.Contains(out, "POLICIES IN FORCE\n  (none") {
		t.Errorf("lab status after the demo: exit %d:\n%s", code, out)
	}
}

// matrixWrong says how r differs from the demo's expectation ("" when it does not):
// with deny, the policy in force on every node and exactly the cells into demoTarget
// denied; without, no policy and every cell reachable.
func matrixWrong(r *lab.Report, deny bool, ns, name string) string {
	var why []string
	if len(r.Problems) > 0 {
		why = append(why, "problems: "+strings.Join(r.Problems, "; "))
	}
	found := false
	for _, p := range r.Policies {
		if p.Namespace == ns && p.Name == name {
			found = true
			if deny && (p.Programmed != p.Nodes || p.Nodes != len(r.Nodes) ||
				len(p.Isolates) != 1 || p.Isolates[0] != lab.PodNamespace+"/"+demoTarget) {
				why = append(why, fmt.Sprintf("policy %+v: want programmed by every node, isolating %s", p, demoTarget))
			}
		}
	}
	if found != deny {
		why = append(why, fmt.Sprintf("policy %s/%s in force: %v, want %v", ns, name, found, deny))
	}
	m := r.Matrix
	if m == nil {
		return strings.Join(append(why, "no matrix"), "; ")
	}
	denied := 0
	for i, row := range m.Cells {
		for j, c := range row {
			want := lab.CellOK
			switch {
			case i == j:
				want = lab.CellSelf
			case deny && m.Workloads[j] == demoTarget:
				want = lab.CellDenied
				denied++
			}
			if c != want {
				why = append(why, fmt.Sprintf("%s -> %s: %s, want %s", m.Workloads[i], m.Workloads[j], c, want))
			}
		}
	}
	if m.Denied != denied || m.Reachable != m.Total-denied {
		why = append(why, fmt.Sprintf("matrix counts: %d reachable and %d denied of %d, want %d denied and the rest reachable",
			m.Reachable, m.Denied, m.Total, denied))
	}
	if deny && denied == 0 {
		why = append(why, "no cell to deny: the lab has no "+demoTarget)
	}
	return strings.Join(why, "; ")
}

// pinnedPrograms returns the ids of the BPF programs the nodes' agents pinned: the
// policy programs on their pods' interfaces.
func pinnedPrograms(t *testing.T, st *lab.State) []ebpf.ProgramID {
	t.Helper()
	var ids []ebpf.ProgramID
	for _, n := range st.Nodes {
		paths, _ := filepath.Glob(filepath.Join(n.PinDir, "progs", "*"))
		if len(paths) == 0 {
			t.Errorf("node %s: no BPF program pinned under %s (is policy on?)", n.Name, n.PinDir)
		}
		for _, p := range paths {
			prog, err := ebpf.LoadPinnedProgram(p, nil)
			if err != nil {
				t.Errorf("load %s: %v", p, err)
				continue
			}
			info, err := prog.Info()
			prog.Close()
			if err != nil {
				t.Errorf("%s: %v", p, err)
				continue
			}
			if id, ok := info.ID(); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// checkProgramsGone wants every program of ids gone from the kernel (its pins, and so
// the TC links that held it, removed); the kernel frees them a moment after the last
// reference goes.
func checkProgramsGone(t *testing.T, ids []ebpf.ProgramID) {
	t.Helper()
	err := netnode.Poll(context.Background(), 10*time.Second, 50*time.Millisecond, func() error {
		var left []string
		for _, id := range ids {
			prog, err := ebpf.NewProgramFromID(id)
			if err == nil {
				prog.Close()
				left = append(left, fmt.Sprint(id))
			} else if !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("program %d: %w", id, err)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("BPF programs of the lab's nodes still loaded: ids %s", strings.Join(left, ", "))
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
