package helm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current chart")

const (
	chartDir    = "../../charts/tabby"
	helmScript  = "../../hack/helm.sh"
	release     = "tabby"
	namespace   = "tabby-system"
	kubeVersion = "v1.32.13" // the test API server's (hack/k8s-bins.sh)
	// helmBuildTimeout bounds a first build of helm (about 3 minutes here).
	helmBuildTimeout = 20 * time.Minute
)

// inCI reports whether $CI is true: then a missing helm fails instead of skipping.
func inCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// helmBin returns the helm binary ($TABBY_HELM, else the one hack/helm.sh builds and
// caches). Without one the test skips, or fails under CI=true.
func helmBin(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: the chart tests need helm (hack/helm.sh)")
	}
	helmOnce.Do(func() {
		if p := os.Getenv("TABBY_HELM"); p != "" {
			if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
				helmErr = fmt.Errorf("TABBY_HELM=%s is not an executable (%v)", p, err)
			}
			helmPath = p
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), helmBuildTimeout)
		defer cancel()
		var stdout, stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "bash", helmScript)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		cmd.WaitDelay = 5 * time.Second
		start := time.Now()
		if err := cmd.Run(); err != nil {
			helmErr = fmt.Errorf("run %s: %w\n%s", helmScript, err, lastLines(stderr.String(), 20))
			return
		}
		fields := strings.Fields(stdout.String())
		if len(fields) == 0 {
			helmErr = fmt.Errorf("%s printed no path", helmScript)
			return
		}
		helmPath = fields[len(fields)-1]
		if d := time.Since(start); d > 5*time.Second {
			fmt.Fprintf(os.Stderr, "test/helm: built helm in %v\n", d.Round(time.Second))
		}
	})
	if helmErr != nil {
		msg := "test/helm: no helm binary: " + helmErr.Error()
		if inCI() {
			t.Fatal(msg)
		}
		t.Skip("!!! SKIPPING (this FAILS under CI=true): " + msg)
	}
	return helmPath
}

// helmCmd runs helm with args and private helm directories, returning stdout and an
// error that carries stderr.
func helmCmd(t testing.TB, ctx context.Context, args ...string) (string, error) {
	t.Helper()
	bin := helmBin(t)
	// Private helm directories: nothing of the user's helm setup is read or written.
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// render runs helm template with the values files (none: the defaults) and extra args.
func render(t testing.TB, valuesFiles []string, extra ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := []string{"template", release, chartDir, "--namespace", namespace, "--kube-version", kubeVersion}
	for _, f := range valuesFiles {
		args = append(args, "--values", f)
	}
	return helmCmd(t, ctx, append(args, extra...)...)
}

// mustRender is render that fails the test on an error.
func mustRender(t testing.TB, valuesFiles ...string) string {
	t.Helper()
	out, err := render(t, valuesFiles)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// parseManifests splits a multi-document YAML stream into objects, skipping empty
// documents.
func parseManifests(s string) ([]*unstructured.Unstructured, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(s)))
	var out []*unstructured.Unstructured
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// lastLines returns at most the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// valuesFiles are the values files in testdata that lint and the golden test use.
var valuesFiles = []string{"testdata/peers-vm.yaml"}

func TestLint(t *testing.T) {
	for _, vf := range append([]string{""}, valuesFiles...) {
		name := "defaults"
		if vf != "" {
			name = filepath.Base(vf)
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			args := []string{"lint", "--strict", chartDir, "--namespace", namespace, "--kube-version", kubeVersion}
			if vf != "" {
				args = append(args, "--values", vf)
			}
			out, err := helmCmd(t, ctx, args...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if !strings.Contains(out, "0 chart(s) failed") {
				t.Fatalf("helm lint:\n%s", out)
			}
		})
	}
}

func TestGolden(t *testing.T) {
	cases := []struct{ name, values string }{
		{"defaults", ""},
		{"peers-vm", "testdata/peers-vm.yaml"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var files []string
			if c.values != "" {
				files = append(files, c.values)
			}
			got := mustRender(t, files...)
			golden := filepath.Join("testdata", c.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				t.Logf("wrote %s", golden)
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run: go test ./test/helm/ -run Golden -update)", err)
			}
			if got != string(want) {
				t.Fatalf("helm template differs from %s (if the change is intended: go test ./test/helm/ -run Golden -update):\n%s",
					golden, firstDiff(string(want), got))
			}
		})
	}
}

// firstDiff shows the first differing line of two texts with a little context.
func firstDiff(want, got string) string {
	wl, gl := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			from := max(0, i-3)
			ctx := strings.Join(gl[from:min(i, len(gl))], "\n")
			return fmt.Sprintf("line %d:\n%s\n- want: %q\n+ got:  %q", i+1, ctx, w, g)
		}
	}
	return "(texts are equal)"
}

// TestSchema checks that bad values fail at template time, naming the field.
func TestSchema(t *testing.T) {
	cases := []struct {
		name   string
		values string // a values file's content
		want   []string
	}{
		{"log level", "logLevel: loud\n", []string{"/logLevel", "debug"}},
		{"pool cidr", "ipPools:\n  - name: bad\n    cidr: 10.0.0.0/33\n", []string{"/ipPools/0/cidr", "10.0.0.0/33"}},
		{"pool cidr not an address", "ipPools:\n  - name: bad\n    cidr: pods\n", []string{"/ipPools/0/cidr"}},
		{"block size", "ipPools:\n  - name: p\n    cidr: 10.0.0.0/16\n    blockSize: 8\n", []string{"/ipPools/0/blockSize"}},
		{"as number too big", "bgp:\n  asNumber: 4294967296\n", []string{"/bgp/asNumber"}},
		{"as number zero", "bgp:\n  asNumber: 0\n", []string{"/bgp/asNumber"}},
		{"peer without AS", "bgp:\n  peers:\n    - name: tor\n      peerIP: 10.0.0.1\n", []string{"/bgp/peers/0", "asNumber"}},
		{"peer IP", "bgp:\n  peers:\n    - name: tor\n      peerIP: router\n      asNumber: 65000\n", []string{"/bgp/peers/0/peerIP"}},
		{"password without key", "bgp:\n  peers:\n    - name: tor\n      peerIP: 10.0.0.1\n      asNumber: 65000\n      password:\n        secretName: s\n", []string{"/bgp/peers/0/password", "key"}},
		{"typo at the top", "logLevle: debug\n", []string{"logLevle"}},
		{"typo in a section", "vmEndpoints:\n  enable: true\n", []string{"enable"}},
		{"port", "metrics:\n  port: 70000\n", []string{"/metrics/port"}},
		{"pin dir", "policy:\n  bpfPinDir: /tmp/pins\n", []string{"/policy/bpfPinDir"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(f, []byte(c.values), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := render(t, []string{f})
			if err == nil {
				t.Fatalf("values %q rendered without error:\n%s", c.values, lastLines(out, 10))
			}
			t.Logf("%s", lastLines(err.Error(), 2))
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("values %q: the error does not name %q:\n%v", c.values, w, err)
				}
			}
		})
	}
	// The defaults and the test values pass the same schema.
	mustRender(t)
	mustRender(t, valuesFiles...)
}

// TestServiceMonitor checks that the ServiceMonitor is rendered only when enabled.
func TestServiceMonitor(t *testing.T) {
	kinds := func(objs []*unstructured.Unstructured) map[string]int {
		m := map[string]int{}
		for _, o := range objs {
			m[o.GetKind()]++
		}
		return m
	}
	off, err := parseManifests(mustRender(t))
	if err != nil {
		t.Fatal(err)
	}
	if n := kinds(off)["ServiceMonitor"]; n != 0 {
		t.Fatalf("default values render %d ServiceMonitors, want none", n)
	}
	out, err := render(t, nil, "--set", "metrics.serviceMonitor.enabled=true")
	if err != nil {
		t.Fatal(err)
	}
	on, err := parseManifests(out)
	if err != nil {
		t.Fatal(err)
	}
	if k := kinds(on); k["ServiceMonitor"] != 1 || k["Service"] != 1 {
		t.Fatalf("metrics.serviceMonitor.enabled=true renders %v, want one Service and one ServiceMonitor", k)
	}
}

// TestConflist checks that the rendered CNI config is the chart's shipped conflist with
// only the values applied.
func TestConflist(t *testing.T) {
	objs, err := parseManifests(mustRender(t))
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile(filepath.Join(chartDir, "cni", "10-tabby.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	if err := yaml.Unmarshal(shipped, &want); err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() != "ConfigMap" {
			continue
		}
		s, ok, _ := unstructured.NestedString(o.Object, "data", "10-tabby.conflist")
		if !ok {
			continue
		}
		var got map[string]any
		if err := yaml.Unmarshal([]byte(s), &got); err != nil {
			t.Fatalf("rendered conflist: %v", err)
		}
		gj, _ := yaml.Marshal(got)
		wj, _ := yaml.Marshal(want)
		if !bytes.Equal(gj, wj) {
			t.Fatalf("with default values the rendered conflist differs from the shipped one:\nrendered:\n%s\nshipped:\n%s", gj, wj)
		}
		return
	}
	t.Fatal("no ConfigMap holds 10-tabby.conflist")
}
