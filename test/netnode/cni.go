package netnode

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// CNIResults is where cnitool (libcni) caches ADD results.
const CNIResults = "/var/lib/cni/results"

// FindCnitool takes $TABBY_CNITOOL or runs <root>/hack/cnitool.sh, which installs
// cnitool once and prints its path. An empty root is this module's (RepoRoot).
func FindCnitool(ctx context.Context, root string) (string, error) {
	if p := os.Getenv("TABBY_CNITOOL"); p != "" {
		return p, nil
	}
	if root == "" {
		var err error
		if root, err = RepoRoot(); err != nil {
			return "", err
		}
	}
	script := filepath.Join(root, "hack", "cnitool.sh")
	cmd := exec.CommandContext(ctx, "bash", script)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", script, err, stderr.String())
	}
	fields := strings.Fields(string(out))
	if len(fields) == 0 {
		return "", errors.New("hack/cnitool.sh printed no path")
	}
	p := fields[len(fields)-1]
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// WriteConflist writes <dir>/<network>.conflist for cnitool: one plugin, conf.
func WriteConflist(dir, network, cniVersion string, conf map[string]any) error {
	list := map[string]any{"cniVersion": cniVersion, "name": network, "plugins": []any{conf}}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, network+".conflist"), b, 0o644)
}

// RemoveCNIResults removes what cnitool cached for the network (DEL removes it too).
func RemoveCNIResults(network string) error {
	files, _ := filepath.Glob(filepath.Join(CNIResults, network+"-*"))
	var errs []error
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// K8sArgs is the CNI_ARGS a Kubernetes runtime passes for a pod.
func K8sArgs(namespace, pod string) string {
	return "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + namespace + ";K8S_POD_NAME=" + pod
}

// Runtime is cnitool playing the container runtime on a node.
type Runtime struct {
	Node    *Node
	Cnitool string // the cnitool binary
	ConfDir string // NETCONFPATH
	BinDir  string // CNI_PATH
}

// Run runs `cnitool <cmd> <network> /run/netns/<podNS>` inside the node namespace with
// CNI_ARGS=cniArgs and CNI_IFNAME=eth0, and returns its stdout and stderr.
func (r *Runtime) Run(ctx context.Context, cmd, network, podNS, cniArgs string) (string, string, error) {
	c := r.Node.Command(ctx, r.Cnitool, cmd, network, NSPath(podNS))
	c.Env = append(os.Environ(), "NETCONFPATH="+r.ConfDir, "CNI_PATH="+r.BinDir, "CNI_ARGS="+cniArgs, "CNI_IFNAME=eth0")
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	return stdout.String(), stderr.String(), err
}
