package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// Files in the state directory.
const (
	stateFile      = "state.json" // State, rewritten as the supervisor goes
	lockFile       = "lab.lock"   // flock held by the supervisor for its whole life
	logFile        = "lab.log"    // the supervisor's output
	sockFile       = "lab.sock"   // the supervisor's control socket (HTTP)
	kubeconfigFile = "kubeconfig" // the admin kubeconfig of the lab's kube-apiserver
	k8sDir         = "k8s"        // etcd and kube-apiserver (test/k8senv)
	fabricDir      = "fabric"     // node directories, the ToR's directory
	vmDir          = "vm"         // the guest's files: kernel, initramfs, console (QEMU reads them)
)

// Phases of a lab, in State.Phase.
const (
	PhaseStarting = "starting" // the supervisor is building the lab
	PhaseReady    = "ready"    // the lab is up; the supervisor holds it
	PhaseFailed   = "failed"   // the bring-up failed; the supervisor tore down what it made
	PhaseStopping = "stopping" // the supervisor is tearing the lab down
	PhaseStopped  = "stopped"  // the supervisor tore the lab down and exited
)

// State is what a lab records in state.json: enough for lab status, exec and down to
// find everything without the supervisor, and for down to remove it after a SIGKILL.
type State struct {
	Name     string    `json:"name"`
	StateDir string    `json:"stateDir"`
	PID      int       `json:"pid"` // the supervisor's
	Started  time.Time `json:"started"`
	// ReadyAfter is how long the bring-up took (set once ready).
	ReadyAfter string  `json:"readyAfter,omitempty"`
	Phase      string  `json:"phase"`
	Error      string  `json:"error,omitempty"`
	Options    Options `json:"options"`

	Kubeconfig string `json:"kubeconfig,omitempty"`
	APIServer  string `json:"apiServer,omitempty"`
	K8sBinDir  string `json:"k8sBinDir,omitempty"` // kube-apiserver, kubectl, etcd
	BinDir     string `json:"binDir,omitempty"`    // tabby-node, tabby-cni

	Fabric string      `json:"fabric,omitempty"` // the fabric namespace
	Nodes  []NodeState `json:"nodes,omitempty"`
	Tor    *TorState   `json:"tor,omitempty"`
	Pods   []PodState  `json:"pods,omitempty"`
	// VM is the lab's libvirt guest (nil without one); VMNote says why there is none
	// when one was asked for.
	VM     *VMState `json:"vm,omitempty"`
	VMNote string   `json:"vmNote,omitempty"`
	// Netns is every network namespace the lab made (also those of Nodes, Tor, Pods).
	Netns []string `json:"netns,omitempty"`
}

// NodeState is one node of the lab.
type NodeState struct {
	Name   string `json:"name"` // the Kubernetes node name, also its namespace
	Letter string `json:"letter"`
	Netns  string `json:"netns"`
	Stub   string `json:"stub"` // the namespace behind its default route
	IP     string `json:"ip"`   // on the fabric
	Socket string `json:"socket"`
	Log    string `json:"log"`
	// Network is the node's CNI network (cnitool's cached results are named after it).
	Network string `json:"network"`
	// PinDir is the node's BPF pin directory (its agent's maps, programs and links).
	PinDir string `json:"pinDir,omitempty"`
}

// TorState is the lab's top-of-rack router.
type TorState struct {
	Kind  string `json:"kind"`
	Netns string `json:"netns"`
	IP    string `json:"ip"`
	AS    uint32 `json:"as"`
	Dir   string `json:"dir"` // config, sockets, logs
	// CLI is the router's command line client with its socket, to which a command is
	// appended (vtysh -c, birdc, gobgp).
	CLI []string `json:"cli"`
	// PIDs are the router daemons' process ids (FRR leaves /var/tmp/frr/<daemon>.<pid>
	// behind when killed).
	PIDs map[string]int `json:"pids,omitempty"`
}

// PodState is one pod of the lab.
type PodState struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Node      string `json:"node"`
	Netns     string `json:"netns"`
	IP        string `json:"ip"`
}

// VMState is the lab's libvirt guest: a domain of the machine's system libvirtd whose
// tap was moved into its node's namespace.
type VMState struct {
	Name      string `json:"name"`   // the workload's name in the matrix (vm-a1), what it answers
	Domain    string `json:"domain"` // the libvirt domain: <lab name>-vm-a1
	Namespace string `json:"namespace"`
	Node      string `json:"node"`
	Netns     string `json:"netns"` // the node's namespace, where its tap is
	Tap       string `json:"tap"`
	MAC       string `json:"mac"`
	Dir       string `json:"dir"`          // its files (under the state directory)
	IP        string `json:"ip,omitempty"` // from its WorkloadEndpoint, once it has one
	// LibvirtdPID is the system libvirtd's pid when the lab started it (lab down stops
	// it after a SIGKILL of the supervisor, if no domain is left on it).
	LibvirtdPID int `json:"libvirtdPID,omitempty"`
}

func statePath(dir string) string { return filepath.Join(dir, stateFile) }

// ReadState reads dir/state.json; os.ErrNotExist when there is none.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("read %s: %w", statePath(dir), err)
	}
	return &st, nil
}

// writeState replaces dir/state.json atomically.
func writeState(st *State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(st.StateDir) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write the lab state: %w", err)
	}
	if err := os.Rename(tmp, statePath(st.StateDir)); err != nil {
		return fmt.Errorf("write the lab state: %w", err)
	}
	return nil
}

// lock is the supervisor's flock on dir/lab.lock: held while the supervisor lives (the
// kernel drops it when the process dies, however it dies), so it says whether a lab
// runs without trusting a pid.
type lock struct{ f *os.File }

// errLocked says another supervisor holds the lock.
var errLocked = errors.New("a lab supervisor is running with this state directory")

// takeLock takes dir/lab.lock without waiting.
func takeLock(dir string) (*lock, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open the lab lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return &lock{f: f}, nil
}

func (l *lock) release() { _ = l.f.Close() }

// Running reports whether a supervisor holds dir's lock (a shared probe, so that two
// probes do not see each other).
func Running(dir string) bool {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	return errors.Is(syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB), syscall.EWOULDBLOCK)
}

// unlocked returns a channel closed once no supervisor holds dir's lock (at once when
// there is no lock file: no supervisor ever ran there). The wait is the kernel's, no
// polling; a caller that gives up leaves it to end when the holder dies.
func unlocked(dir string) <-chan struct{} {
	done := make(chan struct{})
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		defer f.Close()
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_SH)
	}()
	return done
}
