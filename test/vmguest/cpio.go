package vmguest

import (
	"fmt"
	"io"
)

// File types of a newc cpio header's mode.
const (
	modeDir = 0o040000
	modeReg = 0o100000
	modeLnk = 0o120000
	modeChr = 0o020000
)

// cpioFile is one initramfs entry: data is a regular file's contents or a symlink's
// target; rdev a device's major and minor.
type cpioFile struct {
	name string
	mode uint32
	rdev [2]uint32
	data []byte
}

// writeCpio writes files as a newc ("070701") archive, owned by root, with the trailer.
// It is what `busybox cpio -o -H newc` writes, but it can hold /dev/console without
// mknod.
func writeCpio(w io.Writer, files []cpioFile) error {
	for i, f := range append(files, cpioFile{name: "TRAILER!!!"}) {
		nlink := 1
		if f.mode&0o170000 == modeDir {
			nlink = 2
		}
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			i+1, f.mode, 0, 0, nlink, 0, len(f.data), 0, 0, f.rdev[0], f.rdev[1], len(f.name)+1, 0)
		if _, err := io.WriteString(w, hdr+f.name+"\x00"+pad(len(hdr)+len(f.name)+1)); err != nil {
			return fmt.Errorf("vmguest: write cpio: %w", err)
		}
		if _, err := w.Write(f.data); err != nil {
			return fmt.Errorf("vmguest: write cpio: %w", err)
		}
		if _, err := io.WriteString(w, pad(len(f.data))); err != nil {
			return fmt.Errorf("vmguest: write cpio: %w", err)
		}
	}
	return nil
}

// pad is the NULs that align n bytes to 4.
func pad(n int) string { return "\x00\x00\x00"[:(4-n%4)%4] }
