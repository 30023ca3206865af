package cni

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// memPlugin is the plugin over an in-memory store and the real allocator.
func memPlugin(s datastore.Store) (*Plugin, *bytes.Buffer) {
	var out bytes.Buffer
	return &Plugin{
		NewStore: func(*NetConf) (datastore.Store, error) { return s, nil },
		NewIPAM: func(s datastore.Store, log *zap.Logger) IPAM {
			return ipam.New(s, ipam.Options{Logger: log, CacheTTL: -1})
		},
		NewLogger: func(*NetConf) (*zap.Logger, error) { return zap.NewNop(), nil },
		Getenv:    func(string) string { return "" },
		Hostname:  func() (string, error) { return "unit-node", nil },
		Stdout:    &out,
	}, &out
}

const unitConf = `{"cniVersion":"1.1.0","name":"unit","type":"tabby-cni","kubeconfig":"unused","nodename":"unit-node"}`

func cniCode(t *testing.T, err error) uint {
	t.Helper()
	if err == nil {
		return 0
	}
	te, ok := err.(*types.Error)
	if !ok {
		t.Fatalf("%T is not a *types.Error: %v", err, err)
	}
	return te.Code
}

func TestStatus(t *testing.T) {
	s := datastore.NewMemory()
	p, _ := memPlugin(s)
	status := p.Funcs().Status
	args := &skel.CmdArgs{StdinData: []byte(unitConf)}
	err := status(args)
	if cniCode(t, err) != CodeNotAvailable || !strings.Contains(err.Error(), "no IPPool") {
		t.Fatalf("no pools: %v", err)
	}
	ctx := context.Background()
	pool := &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1.IPPoolSpec{CIDR: "10.65.0.0/16", Disabled: true}}
	if _, err := s.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := status(args); cniCode(t, err) != CodeNotAvailable || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("all disabled: %v", err)
	}
	got, _ := datastore.Get[*v1.IPPool](ctx, s, "", "p")
	got.Spec.Disabled = false
	if _, err := s.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	if err := status(args); err != nil {
		t.Fatalf("enabled pool: %v", err)
	}
}

// TestDelIdempotent: DEL of something that was never added, twice, without a network
// namespace or a pod, succeeds.
func TestDelIdempotent(t *testing.T) {
	p, _ := memPlugin(datastore.NewMemory())
	args := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=gone",
		StdinData: []byte(unitConf)}
	for range 2 {
		if err := p.Funcs().Del(args); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	args.Args = ""
	if err := p.Funcs().Del(args); err != nil {
		t.Fatalf("DEL without pod args: %v", err)
	}
}

func TestAddNeedsPod(t *testing.T) {
	p, _ := memPlugin(datastore.NewMemory())
	args := &skel.CmdArgs{ContainerID: "c1", IfName: "eth0", Netns: "/nonexistent",
		Args: "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=missing", StdinData: []byte(unitConf)}
	if err := p.Funcs().Add(args); cniCode(t, err) != CodePodNotFound {
		t.Fatalf("ADD of a missing pod: %v", err)
	}
	args.Args = ""
	if err := p.Funcs().Add(args); cniCode(t, err) != CodeInvalidEnv {
		t.Fatalf("ADD without CNI_ARGS: %v", err)
	}
	args.StdinData = []byte(`{"name":"x","type":"tabby-cni"}`)
	if err := p.Funcs().Add(args); cniCode(t, err) != CodeInvalidConfig {
		t.Fatalf("ADD without kubeconfig: %v", err)
	}
}

func TestGCAttachmentKeys(t *testing.T) {
	conf, err := ParseConfig([]byte(`{"name":"n","type":"tabby-cni","kubeconfig":"k",
		"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
		"cni.dev/attachments":[{"containerID":"b","ifname":"eth0"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	got := conf.validAttachments()
	if len(got) != 2 || got[0].ContainerID != "a" || got[1].ContainerID != "b" {
		t.Fatalf("attachments %+v", got)
	}
}

func TestStatusWithoutKubeconfig(t *testing.T) {
	p := &Plugin{NewIPAM: func(datastore.Store, *zap.Logger) IPAM { return nil },
		NewLogger: func(*NetConf) (*zap.Logger, error) { return zap.NewNop(), nil }}
	conf := `{"cniVersion":"1.1.0","name":"unit","type":"tabby-cni","kubeconfig":"/nonexistent/kubeconfig","nodename":"n"}`
	err := p.Funcs().Status(&skel.CmdArgs{StdinData: []byte(conf)})
	if cniCode(t, err) != CodeNotAvailable || !strings.Contains(err.Error(), "/nonexistent/kubeconfig") {
		t.Fatalf("STATUS without a kubeconfig: %v", err)
	}
}
