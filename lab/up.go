package lab

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
)

// ErrNoLab says there is no lab in the state directory.
var ErrNoLab = errors.New("no lab")

// reportTimeout bounds one report from the supervisor (the matrix's pings included).
const reportTimeout = 2 * time.Minute

// Up makes a lab with o and returns its report; exe is the tabbyctl to run as the
// supervisor (tabbyctl lab run ...). The supervisor is started detached (its own
// session, output to lab.log) and Up follows its progress on a pipe, copying each line
// to progress, until the lab is ready or the supervisor failed. If a lab already runs
// in the state directory, its report comes back with Existing set and nothing is made;
// the remains of a lab that is not running are removed first. When ctx ends during the
// bring-up (an interrupt), the supervisor tears down what it made and so does Up.
func Up(ctx context.Context, o Options, exe string, progress io.Writer) (*Report, error) {
	o = o.Defaults()
	if err := o.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("the lab needs root (network namespaces, BGP on port 179): run it with sudo")
	}
	say := func(format string, args ...any) { fmt.Fprintf(progress, format+"\n", args...) }
	dir := o.StateDir
	if Running(dir) {
		st, _ := ReadState(dir)
		if st != nil && st.Phase != PhaseReady {
			return nil, fmt.Errorf("a lab is being built or torn down in %s (phase %s, supervisor pid %d): see %s",
				dir, st.Phase, st.PID, filepath.Join(dir, logFile))
		}
		r, err := fetchReport(ctx, dir, true)
		if err != nil {
			return nil, fmt.Errorf("a lab runs in %s but does not answer: %w", dir, err)
		}
		r.Existing = true
		return r, nil
	}
	if pid, other, ok := runningSupervisor(o.Name); ok && other != dir {
		return nil, fmt.Errorf("a lab named %q already runs (supervisor pid %d, state directory %s): use another --name, or --state-dir %s",
			o.Name, pid, other, other)
	}
	if !isLabDir(dir) {
		return nil, fmt.Errorf("state directory %s holds files a lab does not make: use a new or empty directory (lab down removes it)", dir)
	}
	if _, err := os.Stat(dir); err == nil || len(labNetns(o.Name, nil)) > 0 {
		say("==> removing the remains of a lab in %s that is not running", dir)
		if err := Down(ctx, dir, o.Name, func(f string, a ...any) { say("    "+f, a...) }); err != nil {
			return nil, fmt.Errorf("remove the old lab: %w", err)
		}
	}
	binDir, err := findBinDir(o)
	if err != nil {
		return nil, err
	}
	o.BinDir = binDir
	env, err := prepare(ctx, binDir, say)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("make the state directory: %w", err)
	}
	return follow(ctx, o, exe, env, progress)
}

// prepare finds (building once if need be) kube-apiserver and cnitool, outside the
// bring-up's timeout, and returns the environment that hands them to the supervisor.
func prepare(ctx context.Context, binDir string, say func(string, ...any)) ([]string, error) {
	repo, err := findRepo(binDir)
	if err != nil {
		return nil, err
	}
	say("==> finding kube-apiserver, etcd and cnitool (built once and cached; the first kube-apiserver build takes ~8 minutes)")
	k8sBin, err := k8senv.BinDir(ctx)
	if err != nil {
		return nil, fmt.Errorf("kube-apiserver: %w (make deps builds it)", err)
	}
	cnitool, err := netnode.FindCnitool(ctx, repo)
	if err != nil {
		return nil, fmt.Errorf("cnitool: %w (make deps installs it)", err)
	}
	return append(os.Environ(), "TABBY_K8S_BIN_DIR="+k8sBin, "TABBY_CNITOOL="+cnitool), nil
}

// follow starts the supervisor and copies its progress until it is ready or gone.
func follow(ctx context.Context, o Options, exe string, env []string, progress io.Writer) (*Report, error) {
	dir := o.StateDir
	logPath := filepath.Join(dir, logFile)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the lab log: %w", err)
	}
	defer logf.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer pr.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		pw.Close()
		return nil, err
	}
	defer devnull.Close()
	cmd := exec.Command(exe, append([]string{"lab", "run", "--progress-fd", "3"}, o.Args()...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.ExtraFiles = []*os.File{pw} // fd 3
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives this command, no terminal
	err = cmd.Start()
	pw.Close() // the supervisor holds the only write end now
	if err != nil {
		return nil, fmt.Errorf("start the lab supervisor: %w", err)
	}
	fmt.Fprintf(progress, "==> lab supervisor started (pid %d, log %s)\n", cmd.Process.Pid, logPath)
	go func() { _ = cmd.Wait() }() // reap it should it end while we follow

	// An interrupt or the timeout asks the supervisor to stop; it tears down and the
	// pipe ends.
	stopCtx, cancel := context.WithTimeout(ctx, o.Timeout+time.Minute)
	defer cancel()
	followed := make(chan struct{})
	var stopped atomic.Bool
	go func() {
		select {
		case <-stopCtx.Done():
			stopped.Store(true)
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case <-followed:
		}
	}()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		fmt.Fprintln(progress, sc.Text())
	}
	close(followed)
	st, _ := ReadState(dir)
	if stopped.Load() {
		why := "interrupted"
		if ctx.Err() == nil {
			why = fmt.Sprintf("timed out after %v", o.Timeout+time.Minute)
		}
		fmt.Fprintf(progress, "==> %s: removing the lab\n", why)
		_ = Down(context.Background(), dir, o.Name, func(f string, a ...any) { fmt.Fprintf(progress, "    "+f+"\n", a...) })
		return nil, fmt.Errorf("%s: the lab was not made", why)
	}
	if st == nil || st.Phase != PhaseReady || !Running(dir) {
		why := "the supervisor exited"
		if st != nil && st.Error != "" {
			why = st.Error
		}
		return nil, fmt.Errorf("the lab did not come up: %s\n(the log is %s; tabbyctl lab down%s removes what is left)",
			firstLine(why), logPath, stateDirFlag(dir))
	}
	return fetchReport(ctx, dir, true)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// stateDirFlag is " --state-dir DIR" unless dir is the default one.
func stateDirFlag(dir string) string {
	if dir == StateDirFromEnv() {
		return ""
	}
	return " --state-dir " + dir
}

// Status is the report of the lab in dir (with the matrix when matrix), from its
// supervisor. ErrNoLab when there is none; an error saying so when it is not running.
func Status(ctx context.Context, dir string, matrix bool) (*Report, error) {
	if !Running(dir) {
		st, err := ReadState(dir)
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w in %s (tabbyctl lab up makes one)", ErrNoLab, dir)
		}
		if err != nil {
			return nil, err
		}
		msg := fmt.Sprintf("the lab %q in %s is not running: its supervisor (pid %d) is gone (last phase %s", st.Name, dir, st.PID, st.Phase)
		if st.Error != "" {
			msg += ": " + firstLine(st.Error)
		}
		return nil, fmt.Errorf("%s); tabbyctl lab down%s removes what is left", msg, stateDirFlag(dir))
	}
	return fetchReport(ctx, dir, matrix)
}

// fetchReport asks the supervisor over its control socket.
func fetchReport(ctx context.Context, dir string, matrix bool) (*Report, error) {
	path := "/report"
	if !matrix {
		path += "?matrix=0"
	}
	var r Report
	if err := askSupervisor(ctx, dir, http.MethodGet, path, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// Policy runs the policy demo in the lab of dir: action PolicyDeny applies the demo's
// NetworkPolicy (DenyPolicyYAML), PolicyAllow removes it; either waits until every
// node's agent programmed the change, then probes the matrix.
func Policy(ctx context.Context, dir, action string) (*PolicyResult, error) {
	if action != PolicyDeny && action != PolicyAllow {
		return nil, fmt.Errorf("policy action %q: want %s or %s", action, PolicyDeny, PolicyAllow)
	}
	if !Running(dir) {
		_, err := Status(ctx, dir, false) // says why
		return nil, err
	}
	var res PolicyResult
	if err := askSupervisor(ctx, dir, http.MethodPost, "/policy/"+action, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// askSupervisor sends a request to the supervisor's control socket and decodes the
// JSON answer into into.
func askSupervisor(ctx context.Context, dir, method, path string, into any) error {
	sock := filepath.Join(dir, sockFile)
	client := &http.Client{Timeout: reportTimeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	req, err := http.NewRequestWithContext(ctx, method, "http://lab"+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("ask the lab supervisor: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e struct{ Error string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("ask the lab supervisor: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		return fmt.Errorf("decode the lab supervisor's answer: %w", err)
	}
	return nil
}

// Target is something lab exec runs a command in.
type Target struct {
	What  string // "pod", "node", "tor" or "fabric"
	Name  string
	Netns string
}

// Resolve finds name among the lab's pods (name or namespace/name), nodes (name, its
// letter, or node-<letter>), "tor" and "fabric".
func Resolve(st *State, name string) (Target, error) {
	var all []string
	for _, p := range st.Pods {
		if name == p.Name || name == p.Namespace+"/"+p.Name {
			return Target{"pod", p.Namespace + "/" + p.Name, p.Netns}, nil
		}
		all = append(all, p.Name)
	}
	for _, n := range st.Nodes {
		if name == n.Name || name == n.Letter || name == "node-"+n.Letter {
			return Target{"node", n.Name, n.Netns}, nil
		}
		all = append(all, n.Name)
	}
	if st.Tor != nil {
		if name == "tor" || name == st.Tor.Netns {
			return Target{"tor", st.Tor.Netns, st.Tor.Netns}, nil
		}
		all = append(all, "tor")
	}
	if st.Fabric != "" {
		if name == "fabric" || name == st.Fabric {
			return Target{"fabric", st.Fabric, st.Fabric}, nil
		}
		all = append(all, "fabric")
	}
	return Target{}, fmt.Errorf("no pod, node or router %q in the lab %q (have: %s)", name, st.Name, strings.Join(all, ", "))
}

// Exec runs argv (default: sh) inside target's network namespace in the lab of dir,
// with the given stdio, and returns its exit code.
func Exec(ctx context.Context, dir, target string, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	st, err := ReadState(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 1, fmt.Errorf("%w in %s (tabbyctl lab up makes one)", ErrNoLab, dir)
	}
	if err != nil {
		return 1, err
	}
	t, err := Resolve(st, target)
	if err != nil {
		return 1, err
	}
	if _, err := os.Stat(filepath.Join(netnsDir, t.Netns)); err != nil {
		return 1, fmt.Errorf("%s %s: its network namespace %s is gone (is the lab running? tabbyctl lab status)", t.What, t.Name, t.Netns)
	}
	if len(argv) == 0 {
		argv = []string{"sh"}
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", t.Netns}, argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// sortPods orders pods by node, then number (pod-a1, pod-a2, ..., pod-a10, pod-b1).
func sortPods(ps []PodState) {
	slices.SortFunc(ps, func(a, b PodState) int {
		if c := strings.Compare(a.Node, b.Node); c != 0 {
			return c
		}
		if c := len(a.Name) - len(b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
}
