package cni

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseConfigDefaults(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"1.1.0","name":"k8s-pod-network","type":"tabby-cni",
		"kubeconfig":"/etc/cni/net.d/tabby-kubeconfig","ipam":{"type":"tabby-ipam"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.MTU != 1500 || conf.LogLevel != "warn" || conf.DatastoreTimeout.Duration != 10*time.Second {
		t.Fatalf("defaults not applied: %+v", conf)
	}
	if conf.Kubeconfig != "/etc/cni/net.d/tabby-kubeconfig" || conf.Nodename != "" {
		t.Fatalf("fields: %+v", conf)
	}
}

func TestParseConfigFields(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"cniVersion":"0.4.0","name":"n","type":"tabby-cni","kubeconfig":"k",
		"nodename":"Node-1","mtu":1450,"log_level":"debug","log_file":"/tmp/x.log","datastore_timeout":"2s",
		"runtimeConfig":{"whatever":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	if conf.MTU != 1450 || conf.LogLevel != "debug" || conf.LogFile != "/tmp/x.log" || conf.DatastoreTimeout.Duration != 2*time.Second {
		t.Fatalf("fields: %+v", conf)
	}
	conf, err = ParseConfig([]byte(`{"name":"n","type":"tabby-cni","kubeconfig":"k","datastore_timeout":3}`))
	if err != nil || conf.DatastoreTimeout.Duration != 3*time.Second {
		t.Fatalf("numeric timeout: %v %v", conf, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ conf, want string }{
		{`{`, "cannot parse"},
		{`{"name":"n","type":"bridge","kubeconfig":"k"}`, `type: "bridge" is not "tabby-cni"`},
		{`{"name":"n","type":"tabby-cni"}`, "kubeconfig: required"},
		{`{"name":"n","type":"tabby-cni","kubeconfig":"k","mtu":20}`, "mtu: 20"},
		{`{"name":"n","type":"tabby-cni","kubeconfig":"k","log_level":"loud"}`, `log_level: "loud"`},
		{`{"name":"n","type":"tabby-cni","kubeconfig":"k","ipam":{"type":"host-local"}}`, `ipam.type: "host-local" is not supported`},
		{`{"name":"n","type":"tabby-cni","kubeconfig":"k","datastore_timeout":"soon"}`, `not a duration`},
	} {
		_, err := ParseConfig([]byte(tc.conf))
		if err == nil {
			t.Errorf("%s: no error", tc.conf)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not mention %q", tc.conf, err, tc.want)
		}
		if ce := CNIError(err); ce.Code != CodeInvalidConfig {
			t.Errorf("%s: code %d, want 7", tc.conf, ce.Code)
		}
	}
}

func TestNodename(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "nodename")
	env := map[string]string{}
	src := nodeSource{
		Getenv:   func(k string) string { return env[k] },
		File:     file,
		Hostname: func() (string, error) { return "Host-A", nil },
	}
	check := func(conf *NetConf, want string) {
		t.Helper()
		got, err := src.Nodename(conf)
		if err != nil || got != want {
			t.Fatalf("Nodename = %q, %v; want %q", got, err, want)
		}
	}
	check(&NetConf{}, "host-a")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(&NetConf{}, "from-file")
	env[EnvNodename] = "from-env"
	check(&NetConf{}, "from-env")
	check(&NetConf{Nodename: "from-conf"}, "from-conf")

	src = nodeSource{File: filepath.Join(dir, "missing"), Hostname: func() (string, error) { return "", errors.New("no") }}
	if _, err := src.Nodename(&NetConf{}); err == nil {
		t.Fatal("no error without any source")
	}
}

func TestParseK8sArgs(t *testing.T) {
	a, err := ParseK8sArgs("IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc", "cid")
	if err != nil {
		t.Fatal(err)
	}
	if a != (K8sArgs{Namespace: "ns1", Pod: "web-0", ContainerID: "abc"}) {
		t.Fatalf("got %+v", a)
	}
	a, err = ParseK8sArgs("K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0", "cid")
	if err != nil || a.ContainerID != "cid" {
		t.Fatalf("fallback to CNI_CONTAINERID: %+v %v", a, err)
	}
	if err := a.require(); err != nil {
		t.Fatal(err)
	}
	a, _ = ParseK8sArgs("", "cid")
	err = a.require()
	if err == nil || CNIError(err).Code != CodeInvalidEnv || !strings.Contains(err.Error(), "K8S_POD_NAMESPACE") {
		t.Fatalf("missing pod: %v", err)
	}
	if _, err := ParseK8sArgs("garbage", "cid"); err == nil {
		t.Fatal("no error for a pair without =")
	}
}

// TestShippedConflist parses the conflist the Helm chart installs.
func TestShippedConflist(t *testing.T) {
	b, err := os.ReadFile("../charts/tabby/cni/10-tabby.conflist")
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Name       string            `json:"name"`
		CNIVersion string            `json:"cniVersion"`
		Plugins    []json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != "1.1.0" || len(list.Plugins) != 1 {
		t.Fatalf("conflist: version %q, %d plugins", list.CNIVersion, len(list.Plugins))
	}
	var plugin map[string]any
	if err := json.Unmarshal(list.Plugins[0], &plugin); err != nil {
		t.Fatal(err)
	}
	plugin["name"], plugin["cniVersion"] = list.Name, list.CNIVersion // as libcni injects them
	pb, _ := json.Marshal(plugin)
	conf, err := ParseConfig(pb)
	if err != nil {
		t.Fatal(err)
	}
	if conf.Kubeconfig != "/etc/cni/net.d/tabby-kubeconfig" || conf.Type != PluginType {
		t.Fatalf("conf %+v", conf)
	}
}

func TestLoggerFallsBackToStderr(t *testing.T) {
	dir := t.TempDir()
	log, err := NewLogger(&NetConf{LogLevel: "info", LogFile: filepath.Join(dir, "sub", "cni.log")})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hello")
	_ = log.Sync()
	b, err := os.ReadFile(filepath.Join(dir, "sub", "cni.log"))
	if err != nil || !strings.Contains(string(b), "hello") {
		t.Fatalf("log file: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewLogger(&NetConf{LogFile: filepath.Join(dir, "file", "cni.log")}); err != nil {
		t.Fatalf("an unusable log_file must not fail the call: %v", err)
	}
}
