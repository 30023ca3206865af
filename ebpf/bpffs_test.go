package ebpf

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
)

// TestEnsureBPFFS: a pin dir on a bpffs is fine; one elsewhere (outside /sys/fs/bpf)
// is refused with an error naming the fix.
func TestEnsureBPFFS(t *testing.T) {
	ebpftest.Require(t)
	dir := ebpftest.PinDir(t)
	if m, err := ensureBPFFS(filepath.Join(dir, "a", "b")); err != nil || m {
		t.Fatalf("on a bpffs: mounted %v, %v", m, err)
	}
	_, err := ensureBPFFS(filepath.Join(t.TempDir(), "pins"))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("on tmpfs: %v; want ErrInvalid", err)
	}
	if _, err := Load(Options{PinDir: filepath.Join(t.TempDir(), "pins")}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load on tmpfs: %v; want ErrInvalid", err)
	}
}

// TestLoadReplacesIncompatibleMaps: a pinned map with another layout (an upgrade
// changed it) fails Load, unless ReplaceIncompatible, which makes it anew and says so.
func TestLoadReplacesIncompatibleMaps(t *testing.T) {
	ebpftest.Require(t)
	dir := ebpftest.PinDir(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Name: "tabby_policy", Type: ebpf.Hash, KeySize: 12, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(filepath.Join(dir, "tabby_policy")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(Options{PinDir: dir}); !errors.Is(err, ebpf.ErrMapIncompatible) {
		t.Fatalf("Load over an older map: %v; want ErrMapIncompatible", err)
	}
	d, err := Load(Options{PinDir: dir, ReplaceIncompatible: true})
	if err != nil {
		t.Fatalf("Load with ReplaceIncompatible: %v", err)
	}
	defer d.Close()
	if len(d.Replaced) != 1 || d.Replaced[0] != "tabby_policy" {
		t.Fatalf("Replaced = %v, want [tabby_policy]", d.Replaced)
	}
	d2, err := Load(Options{PinDir: dir, ReplaceIncompatible: true})
	if err != nil || len(d2.Replaced) != 0 {
		t.Fatalf("second Load: replaced %v, %v; want nothing", d2.Replaced, err)
	}
	_ = d2.Close()
}
