package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AttachMode is how the programs were attached to an interface.
type AttachMode string

const (
	// ModeTCX: BPF links (kernel 6.6+), pinned under <pin dir>/links.
	ModeTCX AttachMode = "tcx"
	// ModeTC: classic clsact qdisc with direct-action cls_bpf filters.
	ModeTC AttachMode = "tc"
)

// AttachOptions tune Attach.
type AttachOptions struct {
	// ForceTC skips TCX and attaches cls_bpf filters (the fallback when the kernel
	// has no TCX).
	ForceTC bool
}

// tcFilterPriority and tcFilterHandle identify Tabby's cls_bpf filters.
const (
	tcFilterPriority = 0x7ab
	tcFilterHandle   = 1
)

type hook struct {
	dir    Direction
	name   string          // link pin and filter name suffix
	attach ebpf.AttachType // TCX attach type
	parent uint32          // clsact parent
}

// On the host side of a workload interface, TC ingress sees what the workload sends
// (policy egress) and TC egress what it receives (policy ingress).
var hooks = []hook{
	{dir: Egress, name: "tc_ingress", attach: ebpf.AttachTCXIngress, parent: netlink.HANDLE_MIN_INGRESS},
	{dir: Ingress, name: "tc_egress", attach: ebpf.AttachTCXEgress, parent: netlink.HANDLE_MIN_EGRESS},
}

func (d *Datapath) linkPin(ifindex int, h hook) string {
	return filepath.Join(d.pinDir, "links", fmt.Sprintf("if%d_%s", ifindex, h.name))
}

// Attach puts both programs on the host-side workload interface ifindex: with TCX
// links (pinned, so they outlive the agent) or, when the kernel has no TCX or
// opts.ForceTC is set, with clsact + cls_bpf filters. Attaching again replaces the
// programs atomically. Programs pass with TC_ACT_UNSPEC so later programs and
// filters still run.
func (d *Datapath) Attach(ifindex int, opts AttachOptions) (AttachMode, error) {
	if err := d.check(); err != nil {
		return "", err
	}
	if _, err := netlink.LinkByIndex(ifindex); err != nil {
		return "", fmt.Errorf("attach: interface %d: %w", ifindex, ErrNotFound)
	}
	if !opts.ForceTC {
		err := d.attachTCX(ifindex)
		if err == nil {
			// A previous classic attachment would run the programs twice.
			if err := d.detachTC(ifindex); err != nil {
				return "", err
			}
			return ModeTCX, nil
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return "", err
		}
	}
	if err := d.attachTC(ifindex); err != nil {
		return "", err
	}
	if err := d.detachTCX(ifindex); err != nil {
		return "", err
	}
	return ModeTC, nil
}

func (d *Datapath) attachTCX(ifindex int) error {
	if err := os.MkdirAll(filepath.Join(d.pinDir, "links"), 0o700); err != nil {
		return fmt.Errorf("create links pin dir: %w", err)
	}
	for _, h := range hooks {
		prog, err := d.program(h.dir)
		if err != nil {
			return err
		}
		pin := d.linkPin(ifindex, h)
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			ok := false
			if info, err := l.Info(); err == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
				ok = l.Update(prog) == nil
			}
			if !ok { // defunct (interface gone) or not ours: replace it
				_ = l.Unpin()
			}
			_ = l.Close()
			if ok {
				continue
			}
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: h.attach})
		if err != nil {
			return fmt.Errorf("attach tcx %s to %d: %w", h.name, ifindex, wrapNotSupported(err))
		}
		err = l.Pin(pin)
		_ = l.Close()
		if err != nil {
			return fmt.Errorf("pin tcx link: %w", err)
		}
	}
	return nil
}

func (d *Datapath) detachTCX(ifindex int) error {
	for _, h := range hooks {
		l, err := link.LoadPinnedLink(d.linkPin(ifindex, h), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("load pinned link: %w", err)
		}
		err = l.Unpin()
		_ = l.Close() // the last reference: detaches
		if err != nil {
			return fmt.Errorf("unpin link: %w", err)
		}
	}
	return nil
}

func tcFilter(ifindex int, h hook, fd int) *netlink.BpfFilter {
	return &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    h.parent,
			Handle:    tcFilterHandle,
			Priority:  tcFilterPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           fd,
		Name:         "tabby_" + h.name,
		DirectAction: true,
	}
}

func (d *Datapath) attachTC(ifindex int) error {
	q := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0),
			Parent: netlink.HANDLE_CLSACT},
		QdiscType: "clsact",
	}
	if err := netlink.QdiscReplace(q); err != nil {
		return fmt.Errorf("add clsact to %d: %w", ifindex, err)
	}
	for _, h := range hooks {
		prog, err := d.program(h.dir)
		if err != nil {
			return err
		}
		if err := netlink.FilterReplace(tcFilter(ifindex, h, prog.FD())); err != nil {
			return fmt.Errorf("add cls_bpf %s to %d: %w", h.name, ifindex, err)
		}
	}
	return nil
}

// detachTC removes Tabby's cls_bpf filters (the clsact qdisc stays: others may use it).
func (d *Datapath) detachTC(ifindex int) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return nil // interface gone: so are its filters
	}
	for _, h := range hooks {
		fs, err := netlink.FilterList(l, h.parent)
		if err != nil {
			continue // no clsact
		}
		for _, f := range fs {
			if bf, ok := f.(*netlink.BpfFilter); ok && bf.Priority == tcFilterPriority &&
				bf.Handle == tcFilterHandle {
				if err := netlink.FilterDel(bf); err != nil && !errors.Is(err, unix.ENOENT) {
					return fmt.Errorf("delete cls_bpf %s from %d: %w", h.name, ifindex, err)
				}
			}
		}
	}
	return nil
}

// Detach removes whatever Attach put on ifindex (either mode). Detaching an
// interface that has nothing attached is not an error.
func (d *Datapath) Detach(ifindex int) error {
	if err := d.detachTCX(ifindex); err != nil {
		return fmt.Errorf("detach %d: %w", ifindex, err)
	}
	if err := d.detachTC(ifindex); err != nil {
		return fmt.Errorf("detach %d: %w", ifindex, err)
	}
	return nil
}

// Attached reports how ifindex is attached: ModeTCX if Tabby's pinned links are
// live on it, ModeTC if its cls_bpf filters are, "" if neither.
func (d *Datapath) Attached(ifindex int) (AttachMode, error) {
	l, err := link.LoadPinnedLink(d.linkPin(ifindex, hooks[0]), nil)
	if err == nil {
		info, ierr := l.Info()
		_ = l.Close()
		if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
			return ModeTCX, nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("load pinned link: %w", err)
	}
	nl, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return "", nil
	}
	fs, err := netlink.FilterList(nl, hooks[0].parent)
	if err != nil {
		return "", nil
	}
	for _, f := range fs {
		if f.Attrs().Priority == tcFilterPriority && f.Attrs().Handle == tcFilterHandle {
			return ModeTC, nil
		}
	}
	return "", nil
}
