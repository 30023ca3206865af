package lab

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The nodes' BPF pins live on a bpffs test/fabric mounts under the lab's fabric
// directory (fabric.Cluster.PinRoot), each node pinning under its own directory there;
// the fabric's teardown unmounts it, which drops every pin at once: the maps, the
// programs and the TC links (which detach). After a crash of the supervisor, lab down
// unmounts whatever is still mounted under the state directory.

// unmountUnder unmounts every mount at or under dir in this mount namespace, deepest
// first and lazily (the agents' copies went with their mount namespaces), and returns
// the mount points it unmounted.
func unmountUnder(dir string) ([]string, error) {
	mps := mountsUnder(dir)
	slices.SortFunc(mps, func(a, b string) int { return len(b) - len(a) })
	var done []string
	var errs []error
	for _, mp := range mps {
		if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
			continue
		}
		done = append(done, mp)
	}
	return done, errors.Join(errs...)
}

// mountsUnder lists the mount points at or under dir in this mount namespace.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": field 5.
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		mp := unescapeMount(fs[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
