package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// bpffsRoot is where systemd (and a DaemonSet's hostPath) normally mounts the bpffs.
const bpffsRoot = "/sys/fs/bpf"

// ensureBPFFS makes sure dir can be pinned to: it must be on a bpffs. When dir is
// under /sys/fs/bpf and nothing is mounted there, a bpffs is mounted there, as Cilium
// does (a host without systemd's mount). Anywhere else it is an error naming the fix.
func ensureBPFFS(dir string) (mounted bool, err error) {
	dir = filepath.Clean(dir)
	on, err := onBPFFS(dir)
	if err != nil || on {
		return false, err
	}
	if dir != bpffsRoot && !strings.HasPrefix(dir, bpffsRoot+"/") {
		return false, fmt.Errorf("pin dir %s is not on a bpffs: mount one (mount -t bpf bpf DIR) or pin elsewhere: %w",
			dir, ErrInvalid)
	}
	if root, err := onBPFFS(bpffsRoot); err != nil || root {
		return false, err // mounted, but dir's ancestors are not: statfs saw a stale path
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount a bpffs on %s for the pins: %w", bpffsRoot, err)
	}
	return true, nil
}

// onBPFFS reports whether dir, or its nearest existing ancestor, is on a bpffs.
func onBPFFS(dir string) (bool, error) {
	for p := dir; ; p = filepath.Dir(p) {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			return st.Type == unix.BPF_FS_MAGIC, nil
		}
		if !errors.Is(err, os.ErrNotExist) || p == "/" {
			return false, fmt.Errorf("statfs %s: %w", p, err)
		}
	}
}
