package ebpf

import (
	"errors"
	"path/filepath"
	"testing"

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
