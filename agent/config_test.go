package agent

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func host(name string) func() (string, error) { return func() (string, error) { return name, nil } }

func TestConfigDefaults(t *testing.T) {
	c, err := ParseConfig(nil, env(nil), host("Node-A"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{NodeName: "node-a", LogLevel: "info", LogFormat: "json", HealthAddr: DefaultHealthAddr,
		MetricsAddr: DefaultMetricsAddr, Socket: DefaultSocket, IPAutodetect: "first-found",
		NodenameFile: DefaultNodenameFile, ResyncInterval: DefaultResyncInterval,
		BGP: true, BGPSecretNamespace: DefaultBGPSecretNamespace, Policy: true, BPFPinDir: "/sys/fs/bpf/tabby", ProcSysRoot: "/proc/sys",
		VMEndpoints: true, LibvirtURI: "qemu:///system", VMTapPrefix: "tap,vnet", VMNamespace: "default"}
	if c != want {
		t.Fatalf("defaults\n got %+v\nwant %+v", c, want)
	}
}

// TestConfigPrecedence: a flag wins over its environment variable, which wins over the
// default, for every setting.
func TestConfigPrecedence(t *testing.T) {
	vars := map[string]string{
		"NODENAME": "env-node", "KUBECONFIG": "/env/kubeconfig", "TABBY_LOG_LEVEL": "debug",
		"TABBY_LOG_FORMAT": "console", "TABBY_HEALTH_ADDR": "127.0.0.1:1", "TABBY_METRICS_ADDR": "127.0.0.1:2",
		"TABBY_SOCKET": "/env/sock", "IP": "10.0.0.5/24", "IP_AUTODETECTION_METHOD": "interface=eth.*",
		"TABBY_NODENAME_FILE": "/env/nodename", "TABBY_RESYNC_INTERVAL": "30s",
		"TABBY_BGP": "false", "TABBY_BGP_SECRET_NAMESPACE": "env-ns",
		"TABBY_POLICY": "false", "TABBY_BPF_PIN_DIR": "/env/bpf", "TABBY_PROC_SYS_ROOT": "/env/proc/sys",
		"TABBY_VM_ENDPOINTS": "false", "TABBY_LIBVIRT_URI": "qemu+ssh://env/system", "TABBY_VM_TAP_PREFIX": "vm",
		"TABBY_VM_NAMESPACE": "env-vms",
	}
	c, err := ParseConfig(nil, env(vars), host("host"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fromEnv := Config{NodeName: "env-node", Kubeconfig: "/env/kubeconfig", LogLevel: "debug", LogFormat: "console",
		HealthAddr: "127.0.0.1:1", MetricsAddr: "127.0.0.1:2", Socket: "/env/sock", IP: "10.0.0.5/24",
		IPAutodetect: "interface=eth.*", NodenameFile: "/env/nodename", ResyncInterval: 30 * time.Second,
		BGP: false, BGPSecretNamespace: "env-ns", BPFPinDir: "/env/bpf", ProcSysRoot: "/env/proc/sys",
		VMEndpoints: false, LibvirtURI: "qemu+ssh://env/system", VMTapPrefix: "vm", VMNamespace: "env-vms"}
	if c != fromEnv {
		t.Fatalf("from the environment\n got %+v\nwant %+v", c, fromEnv)
	}
	args := []string{"--node-name=flag-node", "--kubeconfig=/flag/kc", "--log-level=warn", "--log-format=json",
		"--health-addr=127.0.0.1:3", "--metrics-addr=", "--socket=/flag/sock", "--ip=10.1.0.5/16",
		"--ip-autodetect=can-reach=10.0.0.1", "--nodename-file=", "--resync-interval=1m",
		"--bgp=true", "--bgp-secret-namespace=flag-ns", "--policy", "--bpf-pin-dir=/flag/bpf", "--proc-sys-root=/host/proc/sys",
		"--vm-endpoints", "--libvirt-uri=test:///default", "--vm-tap-prefix=", "--vm-namespace=flag-vms"}
	c, err = ParseConfig(args, env(vars), host("host"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	fromFlags := Config{NodeName: "flag-node", Kubeconfig: "/flag/kc", LogLevel: "warn", LogFormat: "json",
		HealthAddr: "127.0.0.1:3", MetricsAddr: "", Socket: "/flag/sock", IP: "10.1.0.5/16",
		IPAutodetect: "can-reach=10.0.0.1", NodenameFile: "", ResyncInterval: time.Minute,
		BGP: true, BGPSecretNamespace: "flag-ns", Policy: true, BPFPinDir: "/flag/bpf", ProcSysRoot: "/host/proc/sys",
		VMEndpoints: true, LibvirtURI: "test:///default", VMTapPrefix: "", VMNamespace: "flag-vms"}
	if c != fromFlags {
		t.Fatalf("flags over the environment\n got %+v\nwant %+v", c, fromFlags)
	}
}

func TestConfigNodeNameSources(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"hostname", nil, nil, "myhost"},
		{"TABBY_NODENAME", nil, map[string]string{"TABBY_NODENAME": "Tabby-Env"}, "tabby-env"},
		{"NODENAME first", nil, map[string]string{"NODENAME": "a", "TABBY_NODENAME": "b"}, "a"},
		{"flag", []string{"--node-name", "F"}, map[string]string{"NODENAME": "a"}, "f"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig(tc.args, env(tc.env), host("MyHost"), io.Discard)
			if err != nil || c.NodeName != tc.want {
				t.Fatalf("node name %q (%v), want %q", c.NodeName, err, tc.want)
			}
		})
	}
	_, err := ParseConfig(nil, env(nil), func() (string, error) { return "", errors.New("no uts") }, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "no uts") {
		t.Fatalf("no hostname: %v", err)
	}
}

func TestConfigInvalid(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		env     map[string]string
		wantErr string
	}{
		{[]string{"--log-level=loud"}, nil, `--log-level: "loud" is not one of`},
		{[]string{"--log-format=xml"}, nil, `--log-format: "xml"`},
		{[]string{"--health-addr=9099"}, nil, `--health-addr: "9099" is not host:port`},
		{[]string{"--socket="}, nil, "--socket: empty"},
		{[]string{"--ip=10.0.0.2"}, nil, `--ip: "10.0.0.2" is not an IPv4 address with its prefix length`},
		{[]string{"--ip=fd00::1/64"}, nil, `--ip: "fd00::1/64"`},
		{[]string{"--ip-autodetect=interface=("}, nil, "--ip-autodetect:"},
		{[]string{"--ip-autodetect=magic"}, nil, `"magic" is not first-found`},
		{[]string{"--resync-interval=0s"}, nil, "--resync-interval: 0s is not positive"},
		{nil, map[string]string{"TABBY_RESYNC_INTERVAL": "soon"}, `environment variable TABBY_RESYNC_INTERVAL="soon"`},
		{[]string{"extra"}, nil, `unexpected arguments ["extra"]`},
		{[]string{"--no-such-flag"}, nil, "unknown flag: --no-such-flag"},
		{[]string{"--libvirt-uri="}, nil, "--libvirt-uri: empty"},
		{[]string{"--vm-namespace=VMs"}, nil, `--vm-namespace: "VMs" is not a namespace name`},
		{nil, map[string]string{"TABBY_VM_TAP_PREFIX": "tap,a/b"}, `--vm-tap-prefix: "a/b"`},
		{nil, map[string]string{"TABBY_VM_ENDPOINTS": "maybe"}, `environment variable TABBY_VM_ENDPOINTS="maybe"`},
	} {
		_, err := ParseConfig(tc.args, env(tc.env), host("h"), io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%v %v: error %v, want it to contain %q", tc.args, tc.env, err, tc.wantErr)
		}
	}
	var out strings.Builder
	if _, err := ParseConfig([]string{"-h"}, env(nil), host("h"), &out); !errors.Is(err, pflag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, f := range []string{"--node-name", "--ip-autodetect", "NODENAME", "TABBY_LOG_LEVEL", "KUBECONFIG",
		"--vm-endpoints", "--libvirt-uri", "--vm-tap-prefix", "--vm-namespace", "TABBY_LIBVIRT_URI"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("usage lacks %s:\n%s", f, out.String())
		}
	}
	if c, err := ParseConfig([]string{"--ip=autodetect"}, env(nil), host("h"), io.Discard); err != nil || c.IP != "autodetect" {
		t.Errorf("--ip=autodetect: %+v %v", c, err)
	} else if p, _ := c.StaticIP(); p.IsValid() {
		t.Errorf("--ip=autodetect gave a static address %v", p)
	}
}

// TestConfigVMOff: with --vm-endpoints=false the VM settings are not checked.
func TestConfigVMOff(t *testing.T) {
	c, err := ParseConfig([]string{"--vm-endpoints=false", "--libvirt-uri=", "--vm-namespace=Bad"}, env(nil), host("h"), io.Discard)
	if err != nil || c.VMEndpoints {
		t.Fatalf("%+v %v", c, err)
	}
	c, err = ParseConfig([]string{"--vm-tap-prefix= tap, vnet ,,"}, env(nil), host("h"), io.Discard)
	if err != nil || strings.Join(c.VMTapPrefixes(), "|") != "tap|vnet" {
		t.Fatalf("prefixes %q: %v", c.VMTapPrefixes(), err)
	}
}

func TestNewLogger(t *testing.T) {
	var b strings.Builder
	log, err := NewLogger("warn", "json", &b)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown")
	if strings.Contains(b.String(), "hidden") || !strings.Contains(b.String(), `"msg":"shown"`) {
		t.Fatalf("json log: %s", b.String())
	}
	b.Reset()
	log, err = NewLogger("debug", "console", &b)
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("console line")
	if !strings.Contains(b.String(), "DEBUG") || !strings.Contains(b.String(), "console line") {
		t.Fatalf("console log: %s", b.String())
	}
	if _, err := NewLogger("loud", "json", &b); err == nil {
		t.Fatal("bad level accepted")
	}
}
