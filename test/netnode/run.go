package netnode

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Run executes a command and returns its combined output; an error carries the output.
func Run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// Build builds the main packages pkgs into dir (`go build -o dir/ pkgs...`), each binary
// named after its package's last element.
func Build(ctx context.Context, dir string, pkgs ...string) error {
	_, err := Run(ctx, "go", append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)...)
	return err
}

// RepoRoot is the module's root directory, from this file's path.
func RepoRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("netnode: cannot locate the source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..")), nil
}

// RandomID is six random hex digits, to make names unique.
func RandomID() (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// RunID is <prefix><pid>-<RandomID>, the prefix of every name of one run of a
// benchmark: the pid lets a later run recognise what a killed run left behind (see
// LeftByDeadRun).
func RunID(prefix string) (string, error) {
	r, err := RandomID()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%d-%s", prefix, os.Getpid(), r), nil
}

// LeftByDeadRun reports whether name starts with "<RunID(prefix)>-" of another process
// that is gone (so it was killed before it could tear down).
func LeftByDeadRun(prefix, name string) bool {
	m := regexp.MustCompile(`^` + regexp.QuoteMeta(prefix) + `([0-9]+)-[0-9a-f]{6}-`).FindStringSubmatch(name)
	if m == nil {
		return false
	}
	pid, err := strconv.Atoi(m[1])
	if err != nil || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// SweepNetns deletes the network namespaces left by dead runs of prefix (LeftByDeadRun),
// telling logf (if set) of each. Runs that are alive are left alone.
func SweepNetns(ctx context.Context, prefix string, logf func(format string, args ...any)) error {
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if !LeftByDeadRun(prefix, e.Name()) {
			continue
		}
		if logf != nil {
			logf("removing network namespace %s left by a killed run", e.Name())
		}
		if _, err := Run(ctx, "ip", "netns", "del", e.Name()); err != nil {
			return err
		}
	}
	return nil
}
