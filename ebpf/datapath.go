package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/rlimit"
)

// DefaultPinDir is where a node's Tabby maps, programs and links are pinned.
const DefaultPinDir = "/sys/fs/bpf/tabby"

// Options configure Load.
type Options struct {
	// PinDir must be on a bpffs; it is created if missing. Empty means DefaultPinDir.
	PinDir string
	// ReplaceIncompatible removes a pinned map whose layout is not this program's (an
	// upgrade changed it) and creates it anew, instead of failing. Its contents are
	// lost (flows in conntrack, counters); the policy maps are written again by their
	// owner before the new programs are attached. Datapath.Replaced names them.
	ReplaceIncompatible bool
}

// Datapath is the loaded program pair and its maps. Maps are pinned by name under
// the pin directory and reused by the next Load, so their contents survive an agent
// restart. A Datapath is safe for concurrent use.
type Datapath struct {
	pinDir string
	// Replaced names the pinned maps Load replaced (Options.ReplaceIncompatible).
	Replaced []string

	mu     sync.Mutex
	closed bool
	objs   tabbyObjects
}

// Load loads the programs, creating or reusing the pinned maps, and pins the
// programs too (progs/ under the pin directory).
func Load(opts Options) (*Datapath, error) {
	dir := opts.PinDir
	if dir == "" {
		dir = DefaultPinDir
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	if _, err := ensureBPFFS(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "progs"), 0o700); err != nil {
		return nil, fmt.Errorf("create pin dir: %w", err)
	}
	d := &Datapath{pinDir: dir}
	err := loadTabbyObjects(&d.objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: dir},
	})
	if errors.Is(err, ebpf.ErrMapIncompatible) && opts.ReplaceIncompatible {
		if d.Replaced, err = removeIncompatible(dir); err == nil {
			err = loadTabbyObjects(&d.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: dir}})
		}
	}
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("load tabby objects: a map pinned under %s has an older layout "+
			"(remove the pins to start over): %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("load tabby objects: %w", wrapNotSupported(err))
	}
	for name, p := range map[string]*ebpf.Program{
		"tabby_from_wl": d.objs.TabbyFromWl,
		"tabby_to_wl":   d.objs.TabbyToWl,
	} {
		path := filepath.Join(dir, "progs", name)
		_ = os.Remove(path) // a pin from an older load: replace it
		if err := p.Pin(path); err != nil {
			_ = d.objs.Close()
			return nil, fmt.Errorf("pin program %s: %w", name, err)
		}
	}
	return d, nil
}

// removeIncompatible removes the pins under dir of maps whose layout differs from this
// program's and returns their names. The programs attached now keep the old maps alive
// until they are replaced.
func removeIncompatible(dir string) ([]string, error) {
	spec, err := loadTabby()
	if err != nil {
		return nil, fmt.Errorf("load the program spec: %w", err)
	}
	var removed []string
	for name, ms := range spec.Maps {
		if ms.Pinning != ebpf.PinByName {
			continue
		}
		path := filepath.Join(dir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		incompatible := ms.Compatible(m) != nil
		_ = m.Close()
		if !incompatible {
			continue
		}
		if err := os.Remove(path); err != nil {
			return removed, fmt.Errorf("remove incompatible map pin %s: %w", name, err)
		}
		removed = append(removed, name)
	}
	sort.Strings(removed)
	return removed, nil
}

// PinDir returns the directory the datapath pins under.
func (d *Datapath) PinDir() string { return d.pinDir }

// Close releases this process's handles. Pins (and so maps and attached programs)
// stay; use Unpin to remove them all.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.objs.Close()
}

// Unpin removes the maps' and programs' pins (attached links stay until Detach).
func (d *Datapath) Unpin() error {
	var errs []error
	for _, m := range []*ebpf.Map{d.objs.TabbyConntrack, d.objs.TabbyCounters, d.objs.TabbyDrops,
		d.objs.TabbyEndpoints, d.objs.TabbyEpCounters, d.objs.TabbyIpcache, d.objs.TabbyPolicy} {
		if err := m.Unpin(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range []*ebpf.Program{d.objs.TabbyFromWl, d.objs.TabbyToWl} {
		if err := p.Unpin(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unpin: %w", err)
	}
	return nil
}

func (d *Datapath) program(dir Direction) (*ebpf.Program, error) {
	switch dir {
	case Ingress:
		return d.objs.TabbyToWl, nil
	case Egress:
		return d.objs.TabbyFromWl, nil
	}
	return nil, fmt.Errorf("direction %d: %w", dir, ErrInvalid)
}

func wrapNotSupported(err error) error {
	if errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, ErrNotSupported) {
		return fmt.Errorf("%w: %w", ErrNotSupported, err)
	}
	return err
}
