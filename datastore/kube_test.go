package datastore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/k8senv"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
)

var env *k8senv.Env

func TestMain(m *testing.M) {
	k8senv.Main(m, k8senv.Options{CRDDir: "../charts/tabby/crds"}, &env)
}

func kubeStore(t *testing.T) datastore.Store {
	t.Helper()
	k8senv.Require(t, env)
	s, err := datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestKubeContract runs the Store contract against the real kube-apiserver and etcd.
func TestKubeContract(t *testing.T) {
	runContract(t, kubeStore(t), "kube-")
}

// TestKubeCRDSchemaRejectsBadPool writes a bad IPPool straight to the API server,
// bypassing Tabby's validation, and checks the CRD schema refuses it too.
func TestKubeCRDSchemaRejectsBadPool(t *testing.T) {
	k8senv.Require(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dc := dynamic.NewForConfigOrDie(env.Config)
	gvr := schema.GroupVersionResource{Group: "tabby.dev", Version: "v1", Resource: "ippools"}
	cases := map[string]map[string]any{
		"unmasked":   {"cidr": "10.0.0.1/24"},
		"not a cidr": {"cidr": "banana"},
		"block size": {"cidr": "10.0.0.0/16", "blockSize": int64(19)},
	}
	for name, spec := range cases {
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "tabby.dev/v1", "kind": "IPPool",
			"metadata": map[string]any{"name": "schema-" + strings.ReplaceAll(name, " ", "-")},
			"spec":     spec,
		}}
		_, err := dc.Resource(gvr).Create(ctx, u, metav1CreateStrict())
		if err == nil {
			t.Errorf("%s: the CRD schema accepted %v", name, spec)
			continue
		}
		if !strings.Contains(err.Error(), "spec.") {
			t.Errorf("%s: error does not name the field: %v", name, err)
		}
	}
}

// TestKubeUnavailable checks that a dead API server gives ErrUnavailable, fast.
func TestKubeUnavailable(t *testing.T) {
	s, err := datastore.NewKube(&rest.Config{Host: "https://127.0.0.1:1", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = s.List(ctx, datastore.KindIPPool, datastore.ListOptions{})
	if !errors.Is(err, datastore.ErrUnavailable) {
		t.Fatalf("want ErrUnavailable, got %v", err)
	}
	if _, err := s.Watch(ctx, datastore.KindIPPool, datastore.WatchOptions{}); err == nil {
		t.Fatal("watch of a dead server did not fail")
	}
	_, err = s.Create(ctx, &v1.IPPool{})
	if !errors.Is(err, v1.ErrInvalid) {
		t.Fatalf("an invalid object is refused before any I/O: got %v", err)
	}
}
