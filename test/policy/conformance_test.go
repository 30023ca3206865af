package policy

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/probe"
	networkingv1 "k8s.io/api/networking/v1"
)

var env *k8senv.Env

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() { // make unit: no control plane
		os.Exit(m.Run())
	}
	k8senv.Main(m, k8senv.Options{CRDDir: "../../charts/tabby/crds"}, &env)
}

// Probe timeouts: the first pass, and the second look at cells that disagree.
const (
	shortTimeout = 300 * time.Millisecond
	longTimeout  = 2 * time.Second
)

// detailsPerStep bounds the failing cells logged in full for one step.
const detailsPerStep = 6

func TestRemap(t *testing.T) {
	for in, want := range map[string]string{
		"192.168.1.0/24": "10.78.1.0/24", "192.168.1.0/28": "10.78.1.0/28", "192.168.1.7/32": "10.78.1.7/32",
		"0.0.0.0/0": "0.0.0.0/0", "0.0.0.0/31": "0.0.0.0/31", "172.16.0.0/12": "172.16.0.0/12",
	} {
		if got, err := remapCIDR(in); err != nil || got != want {
			t.Errorf("remapCIDR(%s) = %q, %v; want %s", in, got, err, want)
		}
	}
	for _, bad := range []string{"192.168.0.0/16", "10.0.0.0/8", "10.78.1.0/25", "nonsense"} {
		if got, err := remapCIDR(bad); err == nil {
			t.Errorf("remapCIDR(%s) = %s, want an error", bad, got)
		}
	}
	if a, err := remapAddr("192.168.1.9"); err != nil || a.String() != "10.78.1.9" {
		t.Errorf("remapAddr(192.168.1.9) = %v, %v", a, err)
	}
}

// TestConformanceData: the data is there, every step has the same namespaces and pods,
// and every policy remaps.
func TestConformanceData(t *testing.T) {
	steps := mustLoad(t)
	for _, st := range steps {
		if !bytes.Equal(st.Raw.Namespaces, steps[0].Raw.Namespaces) || !bytes.Equal(st.Raw.Pods, steps[0].Raw.Pods) {
			t.Errorf("%s: namespaces or pods differ from the first step's", st)
		}
		for i := range st.Policies {
			if _, err := remapPolicy(&st.Policies[i]); err != nil {
				t.Errorf("%s: %v", st, err)
			}
		}
	}
}

func mustLoad(t *testing.T) []*caseStep {
	t.Helper()
	steps, err := loadCases(casesPath)
	if errors.Is(err, os.ErrNotExist) && os.Getenv("CI") != "true" {
		t.Skipf("conformance data %s not found (CI != true): %v", casesPath, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return steps
}

// totals counts the replay's cells.
type totals struct {
	steps, replayed, passed, failed, loopback, unreplayable, reprobed int
	blocked                                                           int // passed cells that were blocked
}

// TestConformanceReplay replays every replayable step with real traffic through the
// datapath of one node (see the package doc).
func TestConformanceReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: root, a kube-apiserver, cnitool, BPF and network namespaces")
	}
	steps := mustLoad(t)
	w := newWorld(t, env, steps[0])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()

	// Baseline: with no policy every cell is allowed, or the harness is broken.
	if failed := w.baseline(t, ctx); failed > 0 {
		t.Fatalf("baseline without policies: %d cells not allowed; the harness is broken", failed)
	}

	var tot totals
	start := time.Now()
	for i, st := range steps {
		tot.steps++
		if !st.Replayable {
			tot.unreplayable += len(st.Expected)
			t.Logf("%s: not replayable: recorded inputs equal an earlier step's but verdicts differ (%d cells)", st, len(st.Expected))
			continue
		}
		if err := w.replay(t, ctx, st, &tot); err != nil {
			t.Fatalf("%s: %v", st, err)
		}
		if (i+1)%32 == 0 {
			t.Logf("progress: %d of %d steps, %d cells passed, %d failed, in %v", i+1, len(steps), tot.passed, tot.failed,
				time.Since(start).Round(time.Second))
		}
	}
	t.Logf("replay: %d steps (%d replayed), %d cells passed (%d of them blocked), %d failed, %d loopback (not probed), "+
		"%d not replayable; %d cells probed a second time; %v",
		tot.steps, tot.replayed, tot.passed, tot.blocked, tot.failed, tot.loopback, tot.unreplayable, tot.reprobed,
		time.Since(start).Round(time.Millisecond))
	if tot.passed == 0 {
		t.Error("no cell replayed")
	}
	if tot.failed > 0 {
		t.Errorf("%d cells saw other verdicts than recorded (details above)", tot.failed)
	}
}

// baseline probes every pair and protocol with no policy in force; it returns how many
// cells were not allowed.
func (w *world) baseline(t *testing.T, ctx context.Context) int {
	t.Helper()
	var cells []probe.Cell
	for fk, from := range w.pods {
		for tk, to := range w.pods {
			if fk == tk {
				continue
			}
			for _, proto := range []probe.Proto{probe.TCP, probe.UDP, probe.SCTP} {
				for _, port := range servePorts {
					cells = append(cells, probe.Cell{From: from.Netns, To: to.Addr, Proto: proto, Port: port, Want: true})
				}
			}
		}
	}
	start := time.Now()
	out, err := w.prober.Matrix(ctx, cells, probe.MatrixOptions{Short: shortTimeout, Long: longTimeout})
	if err != nil {
		t.Fatalf("baseline: %v", err)
	}
	failed := 0
	for _, o := range out {
		if !o.OK() {
			failed++
			t.Errorf("baseline %s: %s", o.Cell, o.Result)
		}
	}
	t.Logf("baseline: %d cells without policy in %v, %d not allowed", len(cells), time.Since(start).Round(time.Millisecond), failed)
	return failed
}

// replay runs one step: its policies in, every cell probed, the policies out. An error
// is a harness failure (the agent never reports the policies, a probe cannot be made);
// other verdicts than recorded are logged and counted.
func (w *world) replay(t *testing.T, ctx context.Context, st *caseStep, tot *totals) error {
	t.Helper()
	var nps []*networkingv1.NetworkPolicy
	for i := range st.Policies {
		np, err := remapPolicy(&st.Policies[i])
		if err != nil {
			return err
		}
		nps = append(nps, np)
	}
	var cells []probe.Cell
	var recorded []caseCell
	missing := 0
	for _, c := range st.Expected {
		if c.From == c.To {
			tot.loopback++
			continue
		}
		from, to := w.pods[c.From], w.pods[c.To]
		if from == nil || to == nil {
			missing++
			continue
		}
		proto, port, err := parseKey(c.Key)
		if err != nil {
			return err
		}
		cells = append(cells, probe.Cell{From: from.Netns, To: to.Addr, Proto: proto, Port: port, Want: c.Combined == "allowed"})
		recorded = append(recorded, c)
	}
	if missing > 0 {
		tot.unreplayable += missing
		t.Logf("%s: %d cells name pods the step does not record; not replayable", st, missing)
	}
	tot.replayed++
	as, err := w.applyPolicies(ctx, nps)
	if err != nil {
		return errors.Join(err, w.deletePolicies(context.Background(), as))
	}
	out, perr := w.prober.Matrix(ctx, cells, probe.MatrixOptions{Short: shortTimeout, Long: longTimeout})
	if err := w.deletePolicies(ctx, as); err != nil {
		return errors.Join(perr, err)
	}
	if perr != nil {
		return perr
	}
	var fails []string
	for i, o := range out {
		if o.Again {
			tot.reprobed++
		}
		if o.OK() {
			tot.passed++
			if !o.Want {
				tot.blocked++
			}
			continue
		}
		tot.failed++
		if len(fails) < detailsPerStep {
			c := recorded[i]
			fails = append(fails, fmt.Sprintf("  %s -> %s %s (%s -> %s): expected %s (ingress %s, egress %s), got %s: %s (first pass: %s)",
				c.From, c.To, c.Key, w.pods[c.From].Addr, o.To, c.Combined, c.Ingress, c.Egress, word(o.Allowed), o.Result, o.First))
		}
	}
	if len(fails) > 0 {
		n := 0
		for _, o := range out {
			if !o.OK() {
				n++
			}
		}
		t.Errorf("%s: %d of %d cells differ from the recorded verdicts:\n%s\npolicies:\n%s", st, n, len(out),
			strings.Join(fails, "\n"), describe(nps))
	}
	return nil
}

func word(allowed bool) string {
	if allowed {
		return "allowed"
	}
	return "blocked"
}

// describe prints the step's policies, compactly, for a failure report.
func describe(nps []*networkingv1.NetworkPolicy) string {
	var b strings.Builder
	for _, np := range nps {
		fmt.Fprintf(&b, "  %s/%s: %s\n", np.Namespace, np.Name, np.Spec.String())
	}
	return b.String()
}
