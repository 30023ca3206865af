package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
)

// Remove takes Tabby's datapath off this network namespace and deletes everything
// under pinDir: every pinned TCX link is detached, every interface whose name starts
// with one of prefixes loses Tabby's cls_bpf filters (found by priority, handle and
// name, so nobody else's go), and the maps' and programs' pins are removed. It is what
// an agent started with policy off does, so that no earlier run's programs keep
// enforcing a policy nobody maintains. A missing pinDir is not an error. It reports
// how many interfaces it detached.
func Remove(pinDir string, prefixes []string) (int, error) {
	if pinDir == "" || filepath.Clean(pinDir) == "/" {
		return 0, fmt.Errorf("remove: pin dir %q: %w", pinDir, ErrInvalid)
	}
	var errs []error
	detached := map[string]bool{}
	ents, err := os.ReadDir(filepath.Join(pinDir, "links"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("remove: %w", err)
	}
	for _, e := range ents {
		p := filepath.Join(pinDir, "links", e.Name())
		l, err := link.LoadPinnedLink(p, nil)
		if err != nil {
			// Not a link (or from an older layout): the pin alone goes.
			errs = append(errs, removeFile(p))
			continue
		}
		err = l.Unpin()
		_ = l.Close() // the last reference: detaches
		if err != nil {
			errs = append(errs, fmt.Errorf("unpin link %s: %w", e.Name(), err))
		}
		detached[strings.SplitN(e.Name(), "_", 2)[0]] = true
	}
	links, err := netlink.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list interfaces: %w", err))
	}
	for _, l := range links {
		name := l.Attrs().Name
		if !hasAnyPrefix(name, prefixes) {
			continue
		}
		n, err := removeFilters(l)
		if err != nil {
			errs = append(errs, err)
		}
		if n > 0 {
			detached[fmt.Sprintf("if%d", l.Attrs().Index)] = true
		}
	}
	if err := os.RemoveAll(pinDir); err != nil {
		errs = append(errs, fmt.Errorf("remove pins: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return len(detached), fmt.Errorf("remove the datapath under %s: %w", pinDir, err)
	}
	return len(detached), nil
}

// removeFilters deletes Tabby's cls_bpf filters from l and counts them.
func removeFilters(l netlink.Link) (int, error) {
	n := 0
	for _, h := range hooks {
		fs, err := netlink.FilterList(l, h.parent)
		if err != nil {
			continue // no clsact
		}
		for _, f := range fs {
			bf, ok := f.(*netlink.BpfFilter)
			if !ok || bf.Priority != tcFilterPriority || bf.Handle != tcFilterHandle || !strings.HasPrefix(bf.Name, "tabby_") {
				continue
			}
			if err := netlink.FilterDel(bf); err != nil {
				return n, fmt.Errorf("delete cls_bpf %s from %s: %w", h.name, l.Attrs().Name, err)
			}
			n++
		}
	}
	return n, nil
}

func removeFile(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", p, err)
	}
	return nil
}

func hasAnyPrefix(s string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
