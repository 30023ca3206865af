package dataplane

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"
)

// WorkloadSysctls are the settings every workload interface needs: answer ARP for the
// workload's gateway (169.254.1.1) by proxy, at once, and forward what it sends; and
// strict reverse-path filtering, so that the kernel neither answers nor learns ARP from
// the workload for an address that is not routed to its interface (a guest claiming a
// neighbour's address by ARP; the eBPF programs police IPv4 only). %s is the interface
// name; paths are under /proc/sys.
var WorkloadSysctls = []struct{ Path, Value string }{
	{"net/ipv4/conf/%s/proxy_arp", "1"},
	{"net/ipv4/neigh/%s/proxy_delay", "0"},
	{"net/ipv4/conf/%s/forwarding", "1"},
	{"net/ipv4/conf/%s/rp_filter", "1"},
}

// Sysctls reconciles WorkloadSysctls on the workload interfaces of one network
// namespace: it reads each setting and writes only those that differ.
type Sysctls struct {
	ns   *NSThread
	root string
	log  *zap.Logger

	wanted   map[string]struct{}
	dirty    map[string]struct{}
	problems map[string]string // why an interface is not (yet) configured; "" when done
	resync   bool
}

// DefaultProcSysRoot is where the sysctls are, unless NewSysctls is told otherwise.
const DefaultProcSysRoot = "/proc/sys"

// NewSysctls returns a reconciler that does its file I/O on ns (nil: the caller's
// thread and namespace), under root ("": DefaultProcSysRoot). Another root serves an
// unprivileged container, whose /proc/sys is read-only, with the host's /proc/sys/net
// mounted elsewhere: a net sysctl file belongs to the network namespace of the thread
// that opens it, not to the mount.
func NewSysctls(ns *NSThread, root string, log *zap.Logger) *Sysctls {
	if log == nil {
		log = zap.NewNop()
	}
	if root == "" {
		root = DefaultProcSysRoot
	}
	return &Sysctls{ns: ns, root: root, log: log, wanted: map[string]struct{}{},
		dirty: map[string]struct{}{}, problems: map[string]string{}}
}

// Set says whether iface is a workload interface (its sysctls are then kept; nothing is
// undone when it stops being one).
func (s *Sysctls) Set(iface string, wanted bool) {
	if wanted {
		if _, ok := s.wanted[iface]; !ok {
			s.wanted[iface] = struct{}{}
			s.dirty[iface] = struct{}{}
		}
		return
	}
	delete(s.wanted, iface)
	delete(s.dirty, iface)
	delete(s.problems, iface)
}

// OnLink re-checks iface (it appeared, came up or was recreated).
func (s *Sysctls) OnLink(iface string) {
	if _, ok := s.wanted[iface]; ok {
		s.dirty[iface] = struct{}{}
	}
}

// QueueResync makes the next Apply check every workload interface.
func (s *Sysctls) QueueResync() { s.resync = true }

// Programmed reports whether iface's sysctls are set, and if not, why.
func (s *Sysctls) Programmed(iface string) (bool, string) {
	why, ok := s.problems[iface]
	switch {
	case !ok:
		return false, "sysctls not checked yet"
	case why != "":
		return false, why
	}
	return true, ""
}

// Apply checks the dirty interfaces (all after a resync). An interface that does not
// exist yet stays dirty (pending) until OnLink.
func (s *Sysctls) Apply() (written, pending int, err error) {
	if s.resync {
		for iface := range s.wanted {
			s.dirty[iface] = struct{}{}
		}
		s.resync = false
	}
	if len(s.dirty) == 0 {
		return 0, 0, nil
	}
	ifaces := make([]string, 0, len(s.dirty))
	for iface := range s.dirty {
		ifaces = append(ifaces, iface)
	}
	results := make([]sysctlResult, len(ifaces))
	s.ns.Do(func() {
		for i, iface := range ifaces {
			results[i] = s.configure(iface)
		}
	})
	var errs []error
	for i, iface := range ifaces {
		r := results[i]
		written += r.written
		switch {
		case r.missing:
			s.problems[iface] = "interface " + iface + " not found"
			pending++
			delete(s.dirty, iface) // retried by OnLink
		case r.err != nil:
			s.problems[iface] = r.err.Error()
			if len(errs) < maxErrors {
				errs = append(errs, r.err)
			}
		default:
			s.problems[iface] = ""
			delete(s.dirty, iface)
		}
	}
	return written, pending, errors.Join(errs...)
}

type sysctlResult struct {
	written int
	missing bool
	err     error
}

// configure runs on the namespace's thread.
func (s *Sysctls) configure(iface string) sysctlResult {
	var r sysctlResult
	for _, sc := range WorkloadSysctls {
		p := filepath.Join(s.root, fmt.Sprintf(sc.Path, iface))
		cur, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			r.missing = true
			return r
		}
		if err == nil && string(bytes.TrimSpace(cur)) == sc.Value {
			continue
		}
		if err := os.WriteFile(p, []byte(sc.Value), 0o644); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				r.missing = true
				return r
			}
			r.err = fmt.Errorf("set %s=%s: %w", p, sc.Value, err)
			return r
		}
		r.written++
		s.log.Debug("sysctl set", zap.String("path", p), zap.String("value", sc.Value))
	}
	return r
}
