package lab

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/vmguest"
	"libvirt.org/go/libvirt"
)

// The lab's VM: one libvirt guest on node a (test/vmguest: Debian's cloud kernel and a
// busybox initramfs, TCG), a workload endpoint like the pods. Its tap is made by the
// machine's system libvirtd in the host's namespace and moved into node a's namespace
// while the guest is still paused; node a's tabby-node follows libvirt for taps with
// the lab's prefix, writes the guest's WorkloadEndpoint (labels and namespace from
// Tabby's metadata in the domain XML) and answers its DHCP. The guest serves its name
// on ProbePort (a bare line, no HTTP) and probes the pods from its serial console.
const (
	// VMName is the guest's name in the matrix: what it answers, its label app=vm-a1.
	VMName = "vm-a1"
	// vmBootTimeout bounds the guest's boot until DHCP and its console shell.
	vmBootTimeout = 90 * time.Second
	// vmEndpointTimeout bounds the wait for the guest's WorkloadEndpoint.
	vmEndpointTimeout = 60 * time.Second
	// vmRowTimeout bounds the console command of the VM's row of the matrix (one
	// command for every destination, each wget bounded by probeTimeout).
	vmRowTimeout = 10 * time.Second
	// tabbyVMXMLNS is the XML namespace of Tabby's domain metadata (docs/vm.md).
	tabbyVMXMLNS = "https://tabby.dev/xmlns/vm/1.0"
)

// Names of a lab's guest: everything starts with the lab's name, so lab down finds the
// domain after a SIGKILL of the supervisor, and node a follows only this lab's taps.
func vmDomain(lab string) string    { return lab + "-" + VMName }
func vmTapPrefix(lab string) string { return lab + "v" }
func vmTap(lab string) string       { return vmTapPrefix(lab) + "a1" } // at most 15 bytes

// vmMAC is the guest's MAC: locally administered by QEMU's OUI, the rest from the
// lab's name (two labs of different names do not share it).
func vmMAC(lab string) string {
	h := sha1.Sum([]byte(lab))
	return fmt.Sprintf("52:54:00:%02x:%02x:a1", h[0], h[1])
}

// labVM is the guest the supervisor holds.
type labVM struct {
	st   VMState
	art  *vmguest.Artifacts
	lv   *vmguest.Libvirtd
	conn *libvirt.Connect
	dom  *vmguest.Domain // set once defined
}

// prepareVM makes sure libvirt can run the lab's guest: QEMU and libvirt installed,
// the guest's kernel and initramfs (built once and cached), the system libvirtd
// running (started if need be) and a connection to it. When any is missing it says
// in one line why no VM runs, records why, and the lab goes on with pods only.
func (s *supervisor) prepareVM(ctx context.Context, b *built) error {
	if !s.o.VM {
		return nil
	}
	noVM := func(why string) error {
		s.mu.Lock()
		s.st.VMNote = why
		s.mu.Unlock()
		s.p.step("no VM: %s; the lab runs pods only", why)
		return s.save()
	}
	for _, bin := range []string{"qemu-system-x86_64", "libvirtd", "virtlogd", "virsh"} {
		if _, err := exec.LookPath(bin); err != nil {
			return noVM(fmt.Sprintf("%s is not installed (hack/deps.sh installs libvirt and QEMU)", bin))
		}
	}
	art, err := vmguest.Build(ctx, "")
	if err != nil {
		return noVM(fmt.Sprintf("no guest kernel and initramfs: %s", oneLine(err)))
	}
	lv, err := vmguest.StartLibvirtd(ctx, "")
	if err != nil {
		return noVM(fmt.Sprintf("libvirtd cannot start: %s", oneLine(err)))
	}
	// Runs after the domain's teardown (registered later): libvirtd is stopped only if
	// the lab started it and no domain is left on it.
	s.cl.Add("stop libvirtd if the lab started it and no domain is left", func() error {
		if err := lv.Stop(); err != nil {
			s.p.detail("%v", err)
		}
		return nil
	})
	conn, err := libvirt.NewConnect(vmguest.URI)
	if err != nil {
		return noVM(fmt.Sprintf("cannot connect to libvirtd (%s): %s", vmguest.URI, oneLine(err)))
	}
	s.cl.Add("close the libvirt connection", func() error { _, err := conn.Close(); return err })
	name := s.o.Name
	v := &labVM{art: art, lv: lv, conn: conn, st: VMState{Name: VMName, Domain: vmDomain(name), Namespace: PodNamespace,
		Node: b.nodes[0].Name, Netns: b.nodes[0].Net.Name, Tap: vmTap(name), MAC: vmMAC(name),
		Dir: filepath.Join(s.o.StateDir, vmDir)}}
	if lv.Started {
		v.st.LibvirtdPID = lv.PID
	}
	b.vm = v
	st := v.st
	s.mu.Lock()
	s.st.VM = &st
	s.mu.Unlock()
	if err := s.save(); err != nil {
		return err
	}
	how := "the machine's, already running"
	if lv.Started {
		how = "started for the lab"
	}
	s.p.step("libvirt: libvirtd pid %d (%s), guest kernel %s; node %s follows libvirt for taps %s*", lv.PID, how,
		art.KernelRelease, v.st.Node, vmTapPrefix(name))
	return nil
}

// vmNodeArgs are the extra tabby-node flags of the node that hosts the guest.
func vmNodeArgs(lab string) []string {
	return []string{"--vm-endpoints=true", "--vm-tap-prefix=" + vmTapPrefix(lab)}
}

// startVM defines and starts the guest, hands its tap to its node while it is paused,
// and waits for its WorkloadEndpoint, its DHCP lease and its console shell.
func (s *supervisor) startVM(ctx context.Context, b *built) error {
	v := b.vm
	if v == nil {
		return nil
	}
	t0 := time.Now()
	node := b.nodes[0]
	meta := fmt.Sprintf(`<tabby:endpoint xmlns:tabby=%q namespace=%q hostname=%q><tabby:label key=%q value=%q/></tabby:endpoint>`,
		tabbyVMXMLNS, v.st.Namespace, VMName, PodLabel, VMName)
	dom, err := vmguest.Define(v.conn, vmguest.Options{Name: v.st.Domain, MAC: v.st.MAC, Tap: v.st.Tap, Metadata: meta,
		Artifacts: v.art, Dir: v.st.Dir, KernelArgs: "tabby.name=" + VMName})
	if err != nil {
		return fmt.Errorf("vm %s: %w", VMName, err)
	}
	v.dom = dom
	s.cl.Add("destroy and undefine the VM's domain "+v.st.Domain, dom.Close)
	hook := func() error {
		if _, err := netnode.Run(ctx, "ip", "link", "set", v.st.Tap, "netns", node.Net.Name); err != nil {
			return err
		}
		// Moving a link to another namespace takes it down; libvirt had brought it up.
		_, err := node.Net.IP(ctx, "link", "set", v.st.Tap, "up")
		return err
	}
	if err := dom.Start(ctx, hook); err != nil {
		return fmt.Errorf("vm %s: %w", VMName, err)
	}
	s.p.detail("vm %s: domain %s started, tap %s moved into %s", VMName, v.st.Domain, v.st.Tap, node.Net.Name)
	addr, _, err := dom.WaitDHCP(ctx, 0, vmBootTimeout)
	if err == nil {
		_, err = dom.Console.Wait(ctx, 0, vmguest.LineReady, vmBootTimeout)
	}
	if err != nil {
		return fmt.Errorf("vm %s did not boot: %w; its console:\n%s", VMName, err, tail(dom.Console.Transcript(), 15))
	}
	booted := time.Since(dom.StartedAt).Round(100 * time.Millisecond)
	var wep *v1.WorkloadEndpoint
	err = poll(ctx, vmEndpointTimeout, func() error {
		var err error
		wep, err = vmEndpoint(ctx, b.store, v.st)
		return err
	})
	if err != nil {
		return fmt.Errorf("vm %s: no WorkloadEndpoint within %v: %w", VMName, vmEndpointTimeout, err)
	}
	ip := endpointIP(wep)
	if addr != ip+"/32" {
		return fmt.Errorf("vm %s: DHCP gave the guest %s, its WorkloadEndpoint %s says %s", VMName, addr, wep.Name, ip)
	}
	v.st.IP = ip
	st := v.st
	s.mu.Lock()
	s.st.VM = &st
	s.mu.Unlock()
	if err := s.save(); err != nil {
		return err
	}
	s.p.step("vm %s: libvirt domain %s on %s, tap %s, MAC %s: %s by DHCP from tabby-node (booted in %v, %v in all)",
		VMName, v.st.Domain, node.Name, v.st.Tap, v.st.MAC, ip, booted, time.Since(t0).Round(100*time.Millisecond))
	return nil
}

// vmEndpoint is the guest's WorkloadEndpoint with its address.
func vmEndpoint(ctx context.Context, store datastore.Store, vm VMState) (*v1.WorkloadEndpoint, error) {
	objs, err := store.List(ctx, datastore.KindWorkloadEndpoint, datastore.ListOptions{Namespace: vm.Namespace,
		LabelSelector: PodLabel + "=" + VMName})
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if w, ok := o.(*v1.WorkloadEndpoint); ok && w.Spec.Workload == vm.Domain && w.Spec.InterfaceName == vm.Tap {
			if endpointIP(w) == "" {
				return nil, fmt.Errorf("WorkloadEndpoint %s has no address yet", w.Name)
			}
			return w, nil
		}
	}
	return nil, fmt.Errorf("no WorkloadEndpoint of domain %s in namespace %s yet", vm.Domain, vm.Namespace)
}

// endpointIP is an endpoint's first address without its length ("" without one).
func endpointIP(w *v1.WorkloadEndpoint) string {
	if len(w.Spec.IPNetworks) == 0 {
		return ""
	}
	ip, _, _ := strings.Cut(w.Spec.IPNetworks[0], "/")
	return ip
}

// VMReport is the lab's guest as libvirt and the API server report it.
type VMReport struct {
	Name      string `json:"name"`
	Domain    string `json:"domain"`
	Namespace string `json:"namespace"`
	Node      string `json:"node"`
	Tap       string `json:"tap"`
	MAC       string `json:"mac"`
	// IP is from its WorkloadEndpoint, named Endpoint.
	IP       string `json:"ip"`
	Endpoint string `json:"endpoint"`
	// State is the domain's state as libvirt reports it: running, paused, shut off...
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// report asks libvirt and the API server about the guest.
func (v *labVM) report(ctx context.Context, store datastore.Store) *VMReport {
	r := &VMReport{Name: v.st.Name, Domain: v.st.Domain, Namespace: v.st.Namespace, Node: v.st.Node, Tap: v.st.Tap,
		MAC: v.st.MAC, State: "not defined"}
	var errs []string
	if v.dom != nil {
		if st, err := v.dom.State(); err != nil {
			errs = append(errs, err.Error())
			r.State = "unknown"
		} else {
			r.State = domainState(st)
		}
	}
	if store != nil {
		if w, err := vmEndpoint(ctx, store, v.st); err != nil {
			errs = append(errs, err.Error())
		} else {
			r.IP, r.Endpoint = endpointIP(w), w.Name
		}
	}
	r.Error = strings.Join(errs, "; ")
	return r
}

// domainState names a libvirt domain state as virsh does.
func domainState(st libvirt.DomainState) string {
	switch st {
	case libvirt.DOMAIN_RUNNING:
		return "running"
	case libvirt.DOMAIN_BLOCKED:
		return "idle"
	case libvirt.DOMAIN_PAUSED:
		return "paused"
	case libvirt.DOMAIN_SHUTDOWN:
		return "in shutdown"
	case libvirt.DOMAIN_SHUTOFF:
		return "shut off"
	case libvirt.DOMAIN_CRASHED:
		return "crashed"
	case libvirt.DOMAIN_PMSUSPENDED:
		return "pmsuspended"
	}
	return "no state"
}

// vmProbeLine is a line of the VM's row: "P <address> <first line of the answer>".
var vmProbeLine = regexp.MustCompile(`(?m)^P (\S+) ?(.*)$`)

// probeFrom probes every destination from the guest, with one command on its serial
// console: a busybox nc to each one's ProbePort sending an HTTP request, all at once,
// each bounded by probeTimeout. It says which answered with their name.
func (v *labVM) probeFrom(ctx context.Context, dsts []PodState) []bool {
	ok := make([]bool, len(dsts))
	if v.dom == nil || v.dom.Console == nil || len(dsts) == 0 {
		return ok
	}
	var b strings.Builder
	b.WriteString("for a in")
	for _, d := range dsts {
		b.WriteString(" " + d.IP)
	}
	// busybox nc, not wget: the static busybox's wget crashes resolving an address.
	fmt.Fprintf(&b, `; do ( echo "P $a $(printf 'GET / HTTP/1.0\r\n\r\n' | nc -w %d $a %d 2>/dev/null | tail -n 1)" ) & done; wait`,
		int(probeTimeout/time.Second), ProbePort)
	out, _, err := v.dom.Console.Run(ctx, b.String(), vmRowTimeout)
	if err != nil {
		return ok
	}
	got := map[string]string{}
	for _, m := range vmProbeLine.FindAllStringSubmatch(out, -1) {
		got[m[1]] = strings.TrimSpace(m[2])
	}
	for k, d := range dsts {
		ok[k] = answersAs(got[d.IP], d.Name)
	}
	return ok
}

// answersAs reports whether a probe's first line of answer is name's: the pods say
// "<pod> on <node>", the guest says its bare name.
func answersAs(line, name string) bool {
	line = strings.TrimSpace(line)
	return line == name || strings.HasPrefix(line, name+" ")
}

// sweepVMs destroys and undefines the lab's domains (named <name>-*) left on the
// machine's libvirtd, e.g. after a SIGKILL of the supervisor; and stops the libvirtd
// the lab started, when the state records it and no domain is left on it. Without
// virsh or a running libvirtd there is nothing to do.
func sweepVMs(ctx context.Context, name string, st *State, logf func(string, ...any)) error {
	if _, err := exec.LookPath("virsh"); err != nil || libvirtdPid() == 0 {
		return nil
	}
	list := func() ([]string, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		out, err := netnode.Run(ctx, "virsh", "-q", "-c", vmguest.URI, "list", "--all", "--name")
		return strings.Fields(out), err
	}
	doms, err := list()
	if err != nil {
		return fmt.Errorf("list libvirt domains: %w", err)
	}
	var errs []error
	for _, d := range doms {
		if !strings.HasPrefix(d, name+"-") {
			continue
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, _ = netnode.Run(ctx, "virsh", "-q", "-c", vmguest.URI, "destroy", d) // a stopped domain is no error
		_, err := netnode.Run(ctx, "virsh", "-q", "-c", vmguest.URI, "undefine", d)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("undefine domain %s: %w", d, err))
			continue
		}
		logf("destroyed and undefined libvirt domain %s", d)
	}
	if st == nil || st.VM == nil || st.VM.LibvirtdPID == 0 || libvirtdPid() != st.VM.LibvirtdPID {
		return errors.Join(errs...)
	}
	if doms, err := list(); err == nil && len(doms) == 0 {
		if err := syscall.Kill(st.VM.LibvirtdPID, syscall.SIGTERM); err == nil {
			logf("stopped libvirtd (pid %d): the lab started it and no domain is left on it", st.VM.LibvirtdPID)
		}
	}
	return errors.Join(errs...)
}

// libvirtdPid is the pid of the system libvirtd when it runs, else 0.
func libvirtdPid() int {
	b, err := os.ReadFile("/run/libvirtd.pid")
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	comm, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "comm"))
	if err != nil || strings.TrimSpace(string(comm)) != "libvirtd" {
		return 0
	}
	return pid
}

// oneLine is err's message on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
