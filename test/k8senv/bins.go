package k8senv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// binNames are the executables a bin directory must hold.
var binNames = []string{"kube-apiserver", "kubectl", "etcd"}

// BinDir returns the directory holding the kube-apiserver, kubectl and etcd
// executables. If $TABBY_K8S_BIN_DIR names a directory holding all three, it
// is used as is. Otherwise hack/k8s-bins.sh is run (found relative to this
// source file, or by walking up from the working directory when the binary
// was built with -trimpath); it builds and caches the binaries on first use,
// which can take many minutes, and waits on a lock while another build runs.
// ctx bounds the whole wait.
func BinDir(ctx context.Context) (string, error) {
	if dir := os.Getenv("TABBY_K8S_BIN_DIR"); dir != "" {
		if err := checkBinDir(dir); err == nil {
			return dir, nil
		}
	}
	script, err := findScript()
	if err != nil {
		return "", err
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	// Orphaned "go build" children may hold the pipes after bash is killed.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("run %s: %w\n%s", script, err, tail(stderr.Bytes(), 20))
	}
	lines := strings.Fields(strings.TrimSpace(stdout.String()))
	if len(lines) == 0 {
		return "", fmt.Errorf("%s printed no directory\n%s", script, tail(stderr.Bytes(), 20))
	}
	dir := lines[len(lines)-1]
	if err := checkBinDir(dir); err != nil {
		return "", fmt.Errorf("%s printed %s: %w", script, dir, err)
	}
	return dir, nil
}

// checkBinDir reports whether dir holds every executable in binNames.
func checkBinDir(dir string) error {
	for _, name := range binNames {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
			return fmt.Errorf("%s is not executable", filepath.Join(dir, name))
		}
	}
	return nil
}

// findScript locates hack/k8s-bins.sh.
func findScript() (string, error) {
	const rel = "hack/k8s-bins.sh"
	var tried []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		p := filepath.Join(filepath.Dir(file), "..", "..", rel)
		if _, err := os.Stat(p); err == nil {
			return filepath.Clean(p), nil
		}
		tried = append(tried, p)
	}
	wd, err := os.Getwd()
	if err == nil {
		for dir := wd; ; dir = filepath.Dir(dir) {
			p := filepath.Join(dir, rel)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			if filepath.Dir(dir) == dir {
				break
			}
		}
		tried = append(tried, "parents of "+wd)
	}
	return "", errors.New("cannot find " + rel + " (tried " + strings.Join(tried, ", ") + "); set TABBY_K8S_BIN_DIR")
}

// tail returns at most the last n lines of b.
func tail(b []byte, n int) string {
	s := strings.TrimRight(string(b), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tailFile returns at most the last n lines of the file at path, reading no
// more than its last 64 KiB.
func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	const max = 64 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		if _, err := f.Seek(fi.Size()-max, 0); err != nil {
			return "(" + err.Error() + ")"
		}
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return "(" + err.Error() + ")"
	}
	return tail(buf.Bytes(), n)
}
