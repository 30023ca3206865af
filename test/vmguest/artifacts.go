package vmguest

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tabbynet/tabby/test/netnode"
)

// The guest's scripts, packed into every initramfs.
var (
	//go:embed guest/init.sh
	initScript []byte
	//go:embed guest/udhcpc.sh
	udhcpcScript []byte
)

// Modules are the kernel modules the initramfs carries, in the order /init loads them
// (virtio is modular in Debian's cloud kernel; button and evdev serve ACPI shutdown).
var Modules = []string{
	"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
	"failover", "net_failover", "virtio_net", "button", "evdev",
}

// KernelMetaPackage is the Debian package whose current dependency is the guest kernel.
const KernelMetaPackage = "linux-image-cloud-amd64"

// Artifacts are the guest's boot files: all readable by QEMU (uid 64055).
type Artifacts struct {
	Kernel        string // vmlinuz
	Initrd        string // gzip'd newc cpio: busybox, Modules, /init
	KernelRelease string // e.g. 6.1.0-56-cloud-amd64
	KernelPackage string // e.g. linux-image-6.1.0-56-cloud-amd64_6.1.192-2
}

// CacheDir is where Build keeps its artifacts: $TABBY_VMGUEST_CACHE, else
// $XDG_CACHE_HOME/tabby/vmguest, else ~/.cache/tabby/vmguest.
func CacheDir() (string, error) {
	if d := os.Getenv("TABBY_VMGUEST_CACHE"); d != "" {
		return d, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("vmguest: cache dir: %w", err)
	}
	return filepath.Join(base, "tabby", "vmguest"), nil
}

// Build returns the guest kernel and initramfs, made once under cacheDir ("" is
// CacheDir()) and reused: the kernel is keyed by its package version, the initramfs by
// the hash of its contents (scripts, busybox, modules). The kernel and busybox-static
// come from Debian's apt (apt-get download, dpkg -x), never installed on the host.
// Concurrent builds are safe: each result is renamed into place whole.
func Build(ctx context.Context, cacheDir string) (*Artifacts, error) {
	if cacheDir == "" {
		var err error
		if cacheDir, err = CacheDir(); err != nil {
			return nil, err
		}
	}
	if err := mkdirReadable(cacheDir); err != nil {
		return nil, err
	}
	kpkg, bpkg, err := resolve(ctx, cacheDir)
	if err != nil {
		return nil, err
	}
	kdir, err := unpacked(ctx, cacheDir, kpkg)
	if err != nil {
		return nil, err
	}
	bdir, err := unpacked(ctx, cacheDir, bpkg)
	if err != nil {
		return nil, err
	}
	a := &Artifacts{KernelPackage: kpkg.key()}
	vmlinuz, err := filepath.Glob(filepath.Join(kdir, "boot", "vmlinuz-*"))
	if err != nil || len(vmlinuz) != 1 {
		return nil, fmt.Errorf("vmguest: want one vmlinuz in %s, found %v", kdir, vmlinuz)
	}
	a.Kernel = vmlinuz[0]
	a.KernelRelease = strings.TrimPrefix(filepath.Base(a.Kernel), "vmlinuz-")
	if err := os.Chmod(a.Kernel, 0o644); err != nil {
		return nil, fmt.Errorf("vmguest: chmod kernel: %w", err)
	}
	files, err := initramfsFiles(kdir, bdir, a.KernelRelease)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s %o %d %d\n", f.name, f.mode, f.rdev, len(f.data))
		h.Write(f.data)
	}
	a.Initrd = filepath.Join(cacheDir, "initrd-"+kpkg.key()+"-"+hex.EncodeToString(h.Sum(nil))[:16]+".gz")
	if _, err := os.Stat(a.Initrd); err == nil {
		return a, nil
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := writeCpio(zw, files); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("vmguest: gzip initramfs: %w", err)
	}
	if err := writeFileAtomic(a.Initrd, buf.Bytes()); err != nil {
		return nil, err
	}
	return a, nil
}

// debPkg is a Debian package at its candidate version.
type debPkg struct{ name, version string }

func (p debPkg) key() string { return p.name + "_" + strings.ReplaceAll(p.version, ":", "%3a") }

// aptState changes whenever what apt would install may change: apt-get update
// renames new lists into place, an install rewrites dpkg's status.
var aptState = []string{"/var/lib/apt/lists", "/var/lib/dpkg/status"}

// resolve returns the kernel and busybox-static packages apt would install now,
// remembered in cacheDir/apt-resolved for as long as apt's lists and dpkg's status are
// unchanged (asking apt-cache costs about a second).
func resolve(ctx context.Context, cacheDir string) (kernel, busybox debPkg, err error) {
	key := ""
	for _, p := range aptState {
		fi, err := os.Stat(p)
		if err != nil {
			key = ""
			break
		}
		key += fmt.Sprintf("%d/%d,", fi.ModTime().UnixNano(), fi.Size())
	}
	memo := filepath.Join(cacheDir, "apt-resolved")
	if b, err := os.ReadFile(memo); err == nil && key != "" {
		var k, kn, kv, bn, bv string
		if n, _ := fmt.Sscanf(string(b), "%q %s %s %s %s", &k, &kn, &kv, &bn, &bv); n == 5 && k == key {
			return debPkg{kn, kv}, debPkg{bn, bv}, nil
		}
	}
	if kernel, err = candidate(ctx, KernelMetaPackage, true); err != nil {
		return debPkg{}, debPkg{}, err
	}
	if busybox, err = candidate(ctx, "busybox-static", false); err != nil {
		return debPkg{}, debPkg{}, err
	}
	if key != "" {
		line := fmt.Sprintf("%q %s %s %s %s\n", key, kernel.name, kernel.version, busybox.name, busybox.version)
		if err := writeFileAtomic(memo, []byte(line)); err != nil {
			return debPkg{}, debPkg{}, err
		}
	}
	return kernel, busybox, nil
}

// candidate resolves name (through its first linux-image dependency when meta is set)
// to the package apt would install now.
func candidate(ctx context.Context, name string, meta bool) (debPkg, error) {
	if meta {
		out, err := netnode.Run(ctx, "apt-cache", "depends", name)
		if err != nil {
			return debPkg{}, fmt.Errorf("vmguest: resolve %s: %w", name, err)
		}
		dep := ""
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) == 2 && f[0] == "Depends:" && strings.HasPrefix(f[1], "linux-image-") {
				dep = f[1]
				break
			}
		}
		if dep == "" {
			return debPkg{}, fmt.Errorf("vmguest: %s has no linux-image dependency (apt-get update?)", name)
		}
		name = dep
	}
	out, err := netnode.Run(ctx, "apt-cache", "policy", name)
	if err != nil {
		return debPkg{}, fmt.Errorf("vmguest: resolve %s: %w", name, err)
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "Candidate:"); ok {
			if v = strings.TrimSpace(v); v != "" && v != "(none)" {
				return debPkg{name, v}, nil
			}
		}
	}
	return debPkg{}, fmt.Errorf("vmguest: %s has no candidate version (apt-get update?)", name)
}

// unpacked returns cacheDir/<pkg key>, the package's files (dpkg -x), fetching and
// unpacking it the first time.
func unpacked(ctx context.Context, cacheDir string, p debPkg) (string, error) {
	dir := filepath.Join(cacheDir, p.key())
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	tmp, err := os.MkdirTemp(cacheDir, ".fetch-")
	if err != nil {
		return "", fmt.Errorf("vmguest: fetch %s: %w", p.name, err)
	}
	defer os.RemoveAll(tmp)
	// apt's download sandbox user (_apt) must be able to write the directory.
	if err := os.Chmod(tmp, 0o777); err != nil {
		return "", fmt.Errorf("vmguest: fetch %s: %w", p.name, err)
	}
	cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", p.name+"="+p.version)
	cmd.Dir = tmp
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("vmguest: apt-get download %s=%s: %w: %s", p.name, p.version, err, bytes.TrimSpace(out))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return "", fmt.Errorf("vmguest: apt-get download %s: want one .deb, found %v", p.name, debs)
	}
	x := filepath.Join(tmp, "x")
	if _, err := netnode.Run(ctx, "dpkg-deb", "-x", debs[0], x); err != nil {
		return "", fmt.Errorf("vmguest: unpack %s: %w", p.name, err)
	}
	if err := filepath.Walk(x, func(path string, fi os.FileInfo, err error) error {
		if err != nil || !fi.IsDir() {
			return err
		}
		return os.Chmod(path, 0o755)
	}); err != nil {
		return "", fmt.Errorf("vmguest: unpack %s: %w", p.name, err)
	}
	if err := os.Rename(x, dir); err != nil {
		if _, serr := os.Stat(dir); serr == nil {
			return dir, nil // another build got there first
		}
		return "", fmt.Errorf("vmguest: unpack %s: %w", p.name, err)
	}
	return dir, nil
}

// initramfsFiles lists the initramfs: directories, /dev/console, busybox with an sh
// link, the scripts and the modules (flat under /lib/modules).
func initramfsFiles(kdir, bdir, release string) ([]cpioFile, error) {
	files := []cpioFile{}
	for _, d := range []string{"bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp", "run", "www"} {
		files = append(files, cpioFile{name: d, mode: modeDir | 0o755})
	}
	files = append(files, cpioFile{name: "dev/console", mode: modeChr | 0o600, rdev: [2]uint32{5, 1}})
	bb, err := findBusybox(bdir)
	if err != nil {
		return nil, err
	}
	files = append(files,
		cpioFile{name: "bin/busybox", mode: modeReg | 0o755, data: bb},
		cpioFile{name: "bin/sh", mode: modeLnk | 0o777, data: []byte("busybox")},
		cpioFile{name: "init", mode: modeReg | 0o755, data: initScript},
		cpioFile{name: "etc/udhcpc.script", mode: modeReg | 0o755, data: udhcpcScript},
	)
	mods := map[string]string{}
	root := filepath.Join(kdir, "lib", "modules", release, "kernel")
	if err := filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && strings.HasSuffix(path, ".ko") {
			mods[strings.TrimSuffix(fi.Name(), ".ko")] = path
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("vmguest: kernel modules: %w", err)
	}
	for _, m := range Modules {
		path, ok := mods[m]
		if !ok {
			return nil, fmt.Errorf("vmguest: module %s.ko not in %s", m, root)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("vmguest: read module: %w", err)
		}
		files = append(files, cpioFile{name: "lib/modules/" + m + ".ko", mode: modeReg | 0o644, data: data})
	}
	return files, nil
}

// findBusybox reads the static busybox of an unpacked busybox-static.
func findBusybox(bdir string) ([]byte, error) {
	for _, p := range []string{"bin/busybox", "usr/bin/busybox"} {
		data, err := os.ReadFile(filepath.Join(bdir, p))
		if err == nil {
			if bytes.Contains(data, []byte("/lib64/ld-linux")) {
				return nil, fmt.Errorf("vmguest: %s is not static", filepath.Join(bdir, p))
			}
			return data, nil
		}
	}
	return nil, fmt.Errorf("vmguest: no busybox in %s", bdir)
}

// mkdirReadable makes dir (and parents) and opens it to QEMU's uid (0755).
func mkdirReadable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("vmguest: cache dir: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("vmguest: cache dir: %w", err)
	}
	return nil
}

// writeFileAtomic writes data to path (0644) through a temporary file and a rename.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return fmt.Errorf("vmguest: write %s: %w", path, err)
	}
	_, werr := f.Write(data)
	cerr := f.Close()
	if err := errors.Join(werr, cerr, os.Chmod(f.Name(), 0o644)); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("vmguest: write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("vmguest: write %s: %w", path, err)
	}
	return nil
}

// CopyForQEMU copies the artifacts into dir, which it opens to QEMU's uid: a cache
// under a 0700 home is not reachable by QEMU, and libvirt relabels (chowns) the files
// of a running guest, so each guest gets its own copies. It returns the copies.
func (a *Artifacts) CopyForQEMU(dir string) (*Artifacts, error) {
	if err := mkdirReadable(dir); err != nil {
		return nil, err
	}
	c := *a
	c.Kernel, c.Initrd = filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd.gz")
	for src, dst := range map[string]string{a.Kernel: c.Kernel, a.Initrd: c.Initrd} {
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, fmt.Errorf("vmguest: copy artifacts: %w", err)
		}
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			return nil, fmt.Errorf("vmguest: copy artifacts: %w", err)
		}
	}
	return &c, nil
}
