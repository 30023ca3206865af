package k8senv

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// These tests need no control plane.

func TestReadCRDs(t *testing.T) {
	crds, err := readCRDs("testdata/crds")
	if err != nil {
		t.Fatal(err)
	}
	if len(crds) != 1 || crds[0].Name != "widgets.k8senvtest.tabby.dev" {
		t.Fatalf("got %d crds: %+v", len(crds), crds)
	}
}

func TestReadCRDsRejectsOtherKinds(t *testing.T) {
	dir := t.TempDir()
	doc := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"
	if err := os.WriteFile(filepath.Join(dir, "cm.yaml"), []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readCRDs(dir); err == nil || !strings.Contains(err.Error(), "ConfigMap") {
		t.Fatalf("want error naming ConfigMap, got %v", err)
	}
}

func TestRequireWithoutEnvSkips(t *testing.T) {
	if inCI() {
		t.Skip("Require fails instead of skipping under CI=true")
	}
	var skipped bool
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Require(t, nil)
	})
	if !skipped {
		t.Fatal("Require(t, nil) did not skip")
	}
}
