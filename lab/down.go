package lab

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
)

// Deadlines of lab down.
const (
	supervisorStopTimeout = 90 * time.Second // the supervisor's own teardown after SIGTERM
	killWait              = 15 * time.Second // a SIGKILLed process to be gone
)

// Places outside the state directory where a lab leaves something.
var (
	netnsDir      = "/run/netns"
	cniResultsDir = "/var/lib/cni/results"
	frrCrashDir   = "/var/tmp/frr"
	bpfDir        = "/sys/fs/bpf"
)

// stateEntries are the names lab makes in its state directory; down removes the
// directory only when it holds nothing else (a mistyped --state-dir is left alone).
var stateEntries = []string{stateFile, stateFile + ".tmp", lockFile, logFile, sockFile, kubeconfigFile, k8sDir, fabricDir, vmDir}

// Down removes the lab of dir (named name when dir has no state): it sends the
// supervisor SIGTERM and waits for its own teardown (SIGKILL after 90 s), then sweeps
// whatever is left, also after the supervisor was killed outright: the lab's libvirt
// domains (named <name>-*: destroyed and undefined), processes started
// for the lab (their command line names the state directory, or they run in one of
// the lab's network namespaces), the namespaces (recorded, or named <name>-*), cnitool's
// cached results of the lab's networks, FRR's crash-log directories of the ToR's
// daemons, BPF pins named <name>*, and the state directory, after unmounting what is
// mounted in it (the nodes' bpffs: their BPF maps, programs and TC links go with it).
// Nothing else is touched.
// With no lab there, it does nothing. Each thing it does is told to logf.
func Down(ctx context.Context, dir, name string, logf func(format string, args ...any)) error {
	st, err := ReadState(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		logf("state unreadable (%v); sweeping by name %q", err, name)
	}
	if st != nil {
		name = st.Name
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) && len(labNetns(name, nil)) == 0 {
		return nil // nothing of a lab here
	}
	if _, other, ok := runningSupervisor(name); ok && other != dir {
		// Its namespaces carry the same names: not ours to touch.
		logf("a lab named %q runs with state directory %s: leaving its namespaces and processes alone", name, other)
		return removeStateDir(dir, logf)
	}
	if Running(dir) {
		pid := 0
		if st != nil {
			pid = st.PID
		}
		if err := stopSupervisor(dir, pid, logf); err != nil {
			logf("%v", err)
		}
	}
	var errs []error
	// Before the processes: libvirt stops the guest's QEMU (not the lab's child: it
	// outlives a SIGKILLed supervisor) and forgets the domain.
	if err := sweepVMs(ctx, name, st, logf); err != nil {
		errs = append(errs, err)
	}
	if err := sweepProcs(dir, name, st, logf); err != nil {
		errs = append(errs, err)
	}
	if err := sweepNetns(ctx, name, st, logf); err != nil {
		errs = append(errs, err)
	}
	sweepFiles(name, st, logf)
	if err := removeStateDir(dir, logf); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// stopSupervisor sends the supervisor SIGTERM and waits for its lock to go; after
// supervisorStopTimeout it is killed.
func stopSupervisor(dir string, pid int, logf func(string, ...any)) error {
	if pid <= 0 {
		return errors.New("a supervisor holds the lock but the state names no pid; sweeping")
	}
	logf("stopping the lab supervisor (pid %d): it tears the lab down", pid)
	gone := unlocked(dir)
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal the supervisor: %w", err)
	}
	select {
	case <-gone:
		return waitGone(pid)
	case <-time.After(supervisorStopTimeout):
	}
	logf("the supervisor did not finish within %v: killing it", supervisorStopTimeout)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	select {
	case <-gone:
		return waitGone(pid)
	case <-time.After(killWait):
		return fmt.Errorf("the supervisor (pid %d) does not exit", pid)
	}
}

// waitGone waits for a process that is exiting (it released its lock) to be gone,
// and briefly for its parent (init, once lab up is gone) to reap it.
func waitGone(pid int) error {
	err := netnode.Poll(context.Background(), killWait, 10*time.Millisecond, func() error {
		if alive(pid) {
			return fmt.Errorf("process %d is still alive", pid)
		}
		return nil
	})
	if err != nil {
		return err
	}
	_ = netnode.Poll(context.Background(), 2*time.Second, 10*time.Millisecond, func() error {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
			return errors.New("not reaped yet")
		}
		return nil
	})
	return nil
}

// labNetns is every network namespace of the lab that exists: those recorded and those
// named <name>-*.
func labNetns(name string, st *State) []string {
	var out []string
	if st != nil {
		out = append(out, st.Netns...)
	}
	entries, _ := os.ReadDir(netnsDir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), name+"-") {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	out = slices.Compact(out)
	return slices.DeleteFunc(out, func(n string) bool {
		_, err := os.Stat(filepath.Join(netnsDir, n))
		return err != nil
	})
}

// sweepProcs kills (SIGKILL) every process of the lab still alive: one whose command
// line names the state directory (only when it holds nothing but a lab's files), or
// that runs in one of the lab's namespaces. This process and its ancestors are spared.
func sweepProcs(dir, name string, st *State, logf func(string, ...any)) error {
	byDir := isLabDir(dir)
	inodes := map[uint64]bool{}
	for _, n := range labNetns(name, st) {
		if ino, err := nsInode(filepath.Join(netnsDir, n)); err == nil {
			inodes[ino] = true
		}
	}
	procs, err := listProcs()
	if err != nil {
		return err
	}
	spare := ancestors()
	var killed []proc
	for _, p := range procs {
		if spare[p.pid] || !((byDir && namesDir(p.args, dir)) || inodes[p.netns]) {
			continue
		}
		if err := syscall.Kill(p.pid, syscall.SIGKILL); err == nil {
			killed = append(killed, p)
			logf("killed %s (pid %d)", p.comm, p.pid)
		}
	}
	return netnode.Poll(context.Background(), killWait, 50*time.Millisecond, func() error {
		for _, p := range killed {
			if alive(p.pid) {
				return fmt.Errorf("%s (pid %d) is still alive after SIGKILL", p.comm, p.pid)
			}
		}
		return nil
	})
}

// sweepNetns deletes the lab's network namespaces.
func sweepNetns(ctx context.Context, name string, st *State, logf func(string, ...any)) error {
	var errs []error
	for _, n := range labNetns(name, st) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := netnode.Run(ctx, "ip", "netns", "del", n)
		cancel()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		logf("deleted network namespace %s", n)
	}
	return errors.Join(errs...)
}

// sweepFiles removes what the lab leaves outside its state directory: cnitool's cached
// results of the lab's networks (named after its nodes, <name>-*), FRR's crash-log
// directories of the ToR's daemons, and BPF pins named <name>*.
func sweepFiles(name string, st *State, logf func(string, ...any)) {
	var paths []string
	if m, _ := filepath.Glob(filepath.Join(cniResultsDir, name+"-*")); m != nil {
		paths = append(paths, m...)
	}
	if st != nil && st.Tor != nil {
		for comm, pid := range st.Tor.PIDs {
			paths = append(paths, filepath.Join(frrCrashDir, comm+"."+strconv.Itoa(pid)))
		}
	}
	if m, _ := filepath.Glob(filepath.Join(bpfDir, name+"*")); m != nil {
		paths = append(paths, m...)
	}
	for _, p := range paths {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			logf("remove %s: %v", p, err)
			continue
		}
		logf("removed %s", p)
	}
}

// isLabDir reports whether dir is missing or holds only what a lab makes there.
func isLabDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	for _, e := range entries {
		if !slices.Contains(stateEntries, e.Name()) {
			return false
		}
	}
	return true
}

// removeStateDir removes the state directory if it holds only what a lab makes, else
// just those entries.
func removeStateDir(dir string, logf func(string, ...any)) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// The nodes' bpffs (fabric/bpffs), when the supervisor could not unmount it.
	mps, err := unmountUnder(dir)
	for _, mp := range mps {
		logf("unmounted %s (the nodes' BPF maps, programs and TC links go with it)", mp)
	}
	if err != nil {
		return err
	}
	var foreign []string
	for _, e := range entries {
		if !slices.Contains(stateEntries, e.Name()) {
			foreign = append(foreign, e.Name())
		}
	}
	if len(foreign) == 0 {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("remove the state directory: %w", err)
		}
		logf("removed the state directory %s", dir)
		return nil
	}
	for _, e := range stateEntries {
		if err := os.RemoveAll(filepath.Join(dir, e)); err != nil {
			return err
		}
	}
	logf("left %s in place: it holds files the lab did not make (%s)", dir, strings.Join(foreign, ", "))
	return nil
}

// proc is a process as /proc shows it.
type proc struct {
	pid   int
	comm  string
	args  []string
	netns uint64 // the inode of its network namespace
}

// listProcs reads every process's command line and network namespace; processes that
// end meanwhile, and kernel threads, are skipped.
func listProcs() ([]proc, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []proc
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		base := filepath.Join("/proc", e.Name())
		cmdline, err := os.ReadFile(filepath.Join(base, "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join(base, "comm"))
		p := proc{pid: pid, comm: strings.TrimSpace(string(comm)),
			args: strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")}
		if ino, err := nsInode(filepath.Join(base, "ns", "net")); err == nil {
			p.netns = ino
		}
		out = append(out, p)
	}
	return out, nil
}

// procsInNetns lists the processes running in the named network namespace.
func procsInNetns(name string) ([]proc, error) {
	ino, err := nsInode(filepath.Join(netnsDir, name))
	if err != nil {
		return nil, err
	}
	procs, err := listProcs()
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(procs, func(p proc) bool { return p.netns != ino }), nil
}

// nsInode is the inode of a namespace file (a /run/netns mount or /proc/PID/ns/net).
func nsInode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// namesDir reports whether a command line names dir or a path inside it, as a whole
// argument or after "=" ("--data-dir=/run/tabby-lab/k8s").
func namesDir(args []string, dir string) bool {
	for _, a := range args {
		for off := 0; ; {
			i := strings.Index(a[off:], dir)
			if i < 0 {
				break
			}
			i += off
			end := i + len(dir)
			startOK := i == 0 || strings.ContainsRune("=:,", rune(a[i-1]))
			endOK := end == len(a) || a[end] == '/'
			if startOK && endOK {
				return true
			}
			off = i + 1
		}
	}
	return false
}

// ancestors is this process and its ancestors.
func ancestors() map[int]bool {
	out := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !out[pid]; {
		out[pid] = true
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			break
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			break
		}
		if pid, err = strconv.Atoi(f[1]); err != nil {
			break
		}
	}
	return out
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
}

// runningSupervisor finds the supervisor (tabbyctl lab run) of a lab named name, and
// its state directory.
func runningSupervisor(name string) (pid int, dir string, ok bool) {
	procs, err := listProcs()
	if err != nil {
		return 0, "", false
	}
	for _, p := range procs {
		if p.pid == os.Getpid() || !isSupervisor(p.args) {
			continue
		}
		if flagValue(p.args, "--name") == name {
			return p.pid, flagValue(p.args, "--state-dir"), true
		}
	}
	return 0, "", false
}

// isSupervisor reports whether a command line is tabbyctl lab run.
func isSupervisor(args []string) bool {
	return len(args) > 2 && filepath.Base(args[0]) == "tabbyctl" && args[1] == "lab" && args[2] == "run"
}

// flagValue is the value of --flag in args (as "--flag v" or "--flag=v"), or "".
func flagValue(args []string, flag string) string {
	for i, a := range args {
		if a == flag && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}
