package k8senv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// readCRDs parses every *.yaml and *.yml file in dir (sorted by name) and
// returns the CustomResourceDefinitions in them. Empty documents are
// skipped; documents of any other kind are an error.
func readCRDs(dir string) ([]*apiextensionsv1.CustomResourceDefinition, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read crd dir: %w", err)
	}
	var names []string
	for _, ent := range entries {
		if n := ent.Name(); !ent.IsDir() && (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, name := range names {
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for i := 0; ; i++ {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
			}
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
			}
			if tm.Kind == "" && tm.APIVersion == "" && isEmptyYAML(doc) {
				continue
			}
			if tm.Kind != "CustomResourceDefinition" || tm.APIVersion != apiextensionsv1.SchemeGroupVersion.String() {
				return nil, fmt.Errorf("%s: document %d: want apiextensions.k8s.io/v1 CustomResourceDefinition, got %s %s", path, i, tm.APIVersion, tm.Kind)
			}
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := yaml.Unmarshal(doc, crd); err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
			}
			crds = append(crds, crd)
		}
	}
	return crds, nil
}

// isEmptyYAML reports whether doc holds nothing but comments and blanks.
func isEmptyYAML(doc []byte) bool {
	var v any
	return yaml.Unmarshal(doc, &v) == nil && v == nil
}

// installCRDs creates the CRDs found in dir and waits until all of them are
// Established.
func installCRDs(ctx context.Context, cfg *rest.Config, dir string, logf func(string, ...any)) error {
	crds, err := readCRDs(dir)
	if err != nil {
		return err
	}
	if len(crds) == 0 {
		return fmt.Errorf("no CustomResourceDefinitions in %s", dir)
	}
	cs, err := apiextensionsclient.NewForConfig(cfg)
	if err != nil {
		return err
	}
	api := cs.ApiextensionsV1().CustomResourceDefinitions()
	for _, crd := range crds {
		if _, err := api.Create(ctx, crd, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create crd %s: %w", crd.Name, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, crdTimeout)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	pending := crds
	for {
		var still []*apiextensionsv1.CustomResourceDefinition
		var last error
		for _, crd := range pending {
			got, err := api.Get(ctx, crd.Name, metav1.GetOptions{})
			if err != nil {
				last = fmt.Errorf("get crd %s: %w", crd.Name, err)
				still = append(still, crd)
				continue
			}
			established, rejected := crdStatus(got)
			if rejected != "" {
				return fmt.Errorf("crd %s: names not accepted: %s", crd.Name, rejected)
			}
			if !established {
				last = fmt.Errorf("crd %s not established yet", crd.Name)
				still = append(still, crd)
			}
		}
		if len(still) == 0 {
			logf("k8senv: %d CRDs established", len(crds))
			return nil
		}
		pending = still
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for crds: %w (last: %v)", ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// crdStatus reports whether crd is Established, and the message if its
// names were rejected.
func crdStatus(crd *apiextensionsv1.CustomResourceDefinition) (established bool, rejected string) {
	for _, c := range crd.Status.Conditions {
		switch {
		case c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue:
			established = true
		case c.Type == apiextensionsv1.NamesAccepted && c.Status == apiextensionsv1.ConditionFalse:
			rejected = c.Message
		}
	}
	return established, rejected
}
