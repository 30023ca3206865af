// Package benchutil holds what every benchmark shares: the RESULT line, percentiles and
// a real Kubernetes control plane to run against.
package benchutil

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
)

// Result prints the closing line every benchmark ends with:
//
//	RESULT <name> ours=<n><unit> ref=<n><unit>|- ratio=<n>|- goal=<goal> ok|short
//
// ref < 0 means there is no reference (printed as -).
func Result(name string, ours float64, unit string, ref float64, goal string, ok bool) {
	refS, ratioS := "-", "-"
	if ref >= 0 {
		refS = format(ref) + unit
		if ref != 0 {
			ratioS = strconv.FormatFloat(ours/ref, 'f', 2, 64)
		}
	}
	verdict := "short"
	if ok {
		verdict = "ok"
	}
	fmt.Printf("RESULT %s ours=%s%s ref=%s ratio=%s goal=%s %s\n", name, format(ours), unit, refS, ratioS, goal, verdict)
}

func format(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 3, 64)
}

// Percentile returns the p-th percentile (0-100) of ds, nearest rank.
func Percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(float64(len(s))*p/100+0.999999) - 1
	if idx < 0 {
		idx = 0
	}
	if idx >= len(s) {
		idx = len(s) - 1
	}
	return s[idx]
}

// Ms is a duration in milliseconds.
func Ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// StartKube starts etcd and kube-apiserver with Tabby's CRDs (run from the repo root).
func StartKube(ctx context.Context) (*k8senv.Env, error) {
	return k8senv.Start(ctx, k8senv.Options{CRDDir: "charts/tabby/crds",
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "  "+f+"\n", a...) }})
}

// Fatal prints err and exits 1.
func Fatal(err error) {
	fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	os.Exit(1)
}

// StartKubeIn is StartKube with its temporary directory under dir (the run's own, so
// that a killed run's is swept with it).
func StartKubeIn(ctx context.Context, dir string) (*k8senv.Env, error) {
	old, had := os.LookupEnv("TMPDIR")
	if err := os.Setenv("TMPDIR", dir); err != nil {
		return nil, err
	}
	defer func() {
		if had {
			_ = os.Setenv("TMPDIR", old)
		} else {
			_ = os.Unsetenv("TMPDIR")
		}
	}()
	return StartKube(ctx)
}

// SweepStale removes the network namespaces, cached cnitool results and temporary
// directories named with prefix that earlier runs left when they were killed before
// they could tear down (see netnode.RunID); a run that is alive is left alone.
func SweepStale(ctx context.Context, prefix string, logf func(format string, args ...any)) error {
	if err := netnode.SweepNetns(ctx, prefix, logf); err != nil {
		return err
	}
	files, _ := filepath.Glob(filepath.Join(netnode.CNIResults, prefix+"*"))
	for _, f := range files {
		if netnode.LeftByDeadRun(prefix, filepath.Base(f)) {
			_ = os.Remove(f)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), prefix+"*"))
	for _, d := range dirs {
		if netnode.LeftByDeadRun(prefix, filepath.Base(d)) {
			logf("removing %s left by a killed run", d)
			_ = os.RemoveAll(d)
		}
	}
	return nil
}

// NewRun starts a run named with prefix: it sweeps what killed runs left (SweepStale),
// takes a run ID (netnode.RunID) and makes the run's temporary directory with the
// given subdirectories, removed by cl. It returns the ID, the directory and the
// subdirectories' paths.
func NewRun(ctx context.Context, cl *netnode.Cleanup, prefix string, logf func(format string, args ...any), subdirs ...string) (string, string, []string, error) {
	if err := SweepStale(ctx, prefix, logf); err != nil {
		return "", "", nil, err
	}
	id, err := netnode.RunID(prefix)
	if err != nil {
		return "", "", nil, err
	}
	tmp, err := os.MkdirTemp("", id+"-")
	if err != nil {
		return "", "", nil, err
	}
	cl.Add("remove "+tmp, func() error { return os.RemoveAll(tmp) })
	dirs := make([]string, len(subdirs))
	for i, d := range subdirs {
		dirs[i] = filepath.Join(tmp, d)
		if err := os.Mkdir(dirs[i], 0o755); err != nil {
			return "", "", nil, err
		}
	}
	return id, tmp, dirs, nil
}

// Run is the frame of a benchmark that needs root and tears down after itself: it
// checks for root, runs f with a context of the given timeout and a cleanup stack,
// and runs the stack afterwards; a signal cancels the run (a second one, or a
// teardown that has not started within a minute, tears down at once and exits). An
// error of f is fatal (after the teardown).
func Run[T any](name string, timeout time.Duration, f func(context.Context, *netnode.Cleanup) (T, error)) T {
	if os.Geteuid() != 0 {
		Fatal(fmt.Errorf("%s needs root (network namespaces): run make bench BENCH=%s as root", name, name))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cl := &netnode.Cleanup{Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...) }}
	stopSignals := cl.OnSignal(cancel)
	res, err := f(ctx, cl)
	_ = cl.Run() // each failed step is reported by Logf
	stopSignals()
	if err != nil {
		Fatal(err)
	}
	return res
}
