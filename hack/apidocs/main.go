// Command apidocs writes docs/reference/resources.md, the reference of every Tabby
// resource, from the CRDs in charts/tabby/crds (which controller-gen generates from the
// Go types in api/v1). For each kind it gives the scope and names, the description, a
// minimal YAML skeleton and a table of every spec and status field with its type,
// whether it is required, its constraints and its description.
//
// The output is deterministic; run it with "make docs":
//
//	go run ./hack/apidocs -crds charts/tabby/crds -out docs/reference/resources.md
//
// "-out -" writes to stdout. A test in this package fails when the committed page is
// stale.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	tabbyv1 "github.com/tabbynet/tabby/api/v1"
)

func main() {
	crds := flag.String("crds", "charts/tabby/crds", "directory of the CRD YAML files")
	out := flag.String("out", "docs/reference/resources.md", `Markdown file to write, or "-" for stdout`)
	flag.Parse()
	if err := run(*crds, *out, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "apidocs:", err)
		os.Exit(1)
	}
}

// run generates the page from the CRDs in dir and writes it to out ("-": stdout).
func run(dir, out string, stdout io.Writer) error {
	var buf bytes.Buffer
	if err := generate(&buf, dir); err != nil {
		return err
	}
	if out == "-" {
		_, err := stdout.Write(buf.Bytes())
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}

// generate writes the whole page for the CRDs in dir.
func generate(w io.Writer, dir string) error {
	kinds, err := loadKinds(dir)
	if err != nil {
		return err
	}
	return writePage(w, kinds)
}

// kind is one resource kind as its CRD describes it.
type kind struct {
	Kind, Plural, Singular string
	ShortNames             []string
	Namespaced             bool
	Schema                 *apiextv1.JSONSchemaProps // the served version's openAPIV3Schema
	GoType                 reflect.Type              // the api/v1 struct, or nil if unknown
}

// loadKinds reads every CustomResourceDefinition of the *.yaml files in dir.
func loadKinds(dir string) (map[string]*kind, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no CRD files (*.yaml) in %s", dir)
	}
	sort.Strings(files)
	kinds := map[string]*kind{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var crd apiextv1.CustomResourceDefinition
			if err := yaml.Unmarshal([]byte(doc), &crd); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if crd.Kind != "CustomResourceDefinition" {
				continue
			}
			k, err := newKind(&crd)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if kinds[k.Kind] != nil {
				return nil, fmt.Errorf("%s: kind %s is defined twice", f, k.Kind)
			}
			kinds[k.Kind] = k
		}
	}
	return kinds, nil
}

func newKind(crd *apiextv1.CustomResourceDefinition) (*kind, error) {
	n := crd.Spec.Names
	var schema *apiextv1.JSONSchemaProps
	for _, v := range crd.Spec.Versions {
		if v.Schema != nil && v.Schema.OpenAPIV3Schema != nil && (schema == nil || v.Storage) {
			schema = v.Schema.OpenAPIV3Schema
		}
	}
	if schema == nil {
		return nil, fmt.Errorf("CRD %s has no openAPIV3Schema", crd.Name)
	}
	k := &kind{Kind: n.Kind, Plural: n.Plural, Singular: n.Singular, ShortNames: n.ShortNames,
		Namespaced: crd.Spec.Scope == apiextv1.NamespaceScoped, Schema: schema}
	if crd.Spec.Group == tabbyv1.Group {
		for _, r := range tabbyv1.Resources {
			if r.Kind == n.Kind {
				k.GoType = reflect.TypeOf(r.New()).Elem()
			}
		}
	}
	return k, nil
}

// sections orders the kinds on the page. Kinds not listed go last, alphabetically.
var sections = []struct {
	Title string
	Kinds []string
}{
	{"IP address management", []string{"IPPool", "IPReservation", "IPAMConfiguration", "IPAMBlock", "BlockAffinity", "IPAMHandle"}},
	{"BGP", []string{"BGPConfiguration", "BGPPeer", "BGPFilter"}},
	{"Nodes and endpoints", []string{"Node", "WorkloadEndpoint", "HostEndpoint"}},
	{"Policy", []string{"NetworkPolicy", "GlobalNetworkPolicy", "NetworkSet", "GlobalNetworkSet"}},
	{"Configuration and status", []string{"FelixConfiguration", "NodeStatus"}},
}

type section struct {
	Title string
	Kinds []*kind
}

// ordered groups the kinds into sections, dropping empty ones.
func ordered(kinds map[string]*kind) []section {
	var out []section
	placed := map[string]bool{}
	for _, s := range sections {
		sec := section{Title: s.Title}
		for _, name := range s.Kinds {
			if k := kinds[name]; k != nil {
				sec.Kinds = append(sec.Kinds, k)
				placed[name] = true
			}
		}
		if len(sec.Kinds) > 0 {
			out = append(out, sec)
		}
	}
	other := section{Title: "Other resources"}
	for _, name := range sortedKeys(kinds) {
		if !placed[name] {
			other.Kinds = append(other.Kinds, kinds[name])
		}
	}
	if len(other.Kinds) > 0 {
		out = append(out, other)
	}
	return out
}

const header = `<!-- Code generated by hack/apidocs from charts/tabby/crds. DO NOT EDIT. -->
<!-- To change this page, edit the Go doc comments and markers in api/v1, then run "make generate" and "make docs". -->

# Tabby resource reference

Tabby resources are YAML (or JSON) objects in the style of Calico's ` + "`projectcalico.org/v3`" + ` API, with
` + "`apiVersion: tabby.dev/v1`" + `. Field names and shapes follow Calico's, so a Calico manifest usually needs only
its ` + "`apiVersion`" + ` changed. Write them with ` + "`tabbyctl create|apply|replace -f FILE`" + `, or with ` + "`kubectl`" + `:
every kind is a CustomResourceDefinition of the ` + "`tabby.dev`" + ` group.

This page is generated from the CRDs in ` + "`charts/tabby/crds`" + `, which are generated from the Go types in
` + "`api/v1`" + `. Do not edit it by hand: run ` + "`make docs`" + ` to regenerate it.

`

// writeIntro writes the validation, defaults and notation notes. The example message
// and the defaults come from api/v1, so they cannot drift from the code.
func writeIntro(w io.Writer) {
	bad := &tabbyv1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "pool-a"},
		Spec: tabbyv1.IPPoolSpec{CIDR: "10.244.0.0/16", BlockSize: 33, NodeSelector: tabbyv1.DefaultNodeSelector}}
	example := "(none)"
	if err := tabbyv1.Validate(bad); err != nil {
		example = err.Error()
	}
	fmt.Fprintf(w, `## Validation

tabbyctl and the datastore fill in defaults and then validate every object before writing it
(tabbyctl prints every problem of a file and writes none of its objects if one is invalid). Each
message names the field by its path and shows the bad value:

    %s

The API server also enforces the schema constraints listed in the tables below (types, enums,
ranges, patterns and rules) for objects written with kubectl.

## Defaults

An unset field means its default:

- IPPool: `+"`blockSize`"+` %d for an IPv4 `+"`cidr`"+`, %d for IPv6; `+"`nodeSelector`"+` `+"`%s`"+` (every node);
  `+"`allowedUses`"+` `+"`[%s, %s]`"+`.
- BGPConfiguration: `+"`asNumber`"+` %d; `+"`nodeToNodeMeshEnabled`"+` true; `+"`listenPort`"+` %d.
- BGPPeer: `+"`nextHopMode`"+` `+"`%s`"+`.
- NetworkPolicy and GlobalNetworkPolicy: `+"`types`"+` is `+"`[%s]`"+`, plus `+"`%s`"+` when the policy has egress rules.

Other defaults are given in the field descriptions.

## Reading the field tables

- A path is dotted from the object's root. `+"`[]`"+` marks a list and `+"`<key>`"+` any key of a map:
  `+"`spec.ingress[].destination.ports[]`"+` is the ports list of the destination of any ingress rule.
- *required* means required whenever the enclosing object or list item is present.
- `+"`int-or-string`"+` takes a number or a string (a port `+"`80`"+`, a range `+"`\"80:90\"`"+`, a named port);
  `+"`duration string`"+` is a Go duration such as `+"`30s`"+`, `+"`1m30s`"+` or `+"`2h`"+`; `+"`date-time string`"+` is an
  RFC 3339 time such as `+"`2024-05-01T12:00:00Z`"+`.
- A constraint after `+"`each:`"+` applies to every item of a list or value of a map.

`, example, tabbyv1.DefaultBlockSizeV4, tabbyv1.DefaultBlockSizeV6, tabbyv1.DefaultNodeSelector,
		tabbyv1.IPPoolAllowedUseWorkload, tabbyv1.IPPoolAllowedUseTunnel, tabbyv1.DefaultASNumber,
		tabbyv1.DefaultListenPort, tabbyv1.NextHopAuto, tabbyv1.PolicyTypeIngress, tabbyv1.PolicyTypeEgress)
}

// writePage writes the header, the intro, the contents and one section per group.
func writePage(w io.Writer, kinds map[string]*kind) error {
	secs := ordered(kinds)
	io.WriteString(w, header)
	writeIntro(w)
	io.WriteString(w, "## Contents\n\n")
	for _, s := range secs {
		var links []string
		for _, k := range s.Kinds {
			links = append(links, fmt.Sprintf("[%s](#%s)", k.Kind, strings.ToLower(k.Kind)))
		}
		fmt.Fprintf(w, "- %s: %s\n", s.Title, strings.Join(links, ", "))
	}
	for _, s := range secs {
		fmt.Fprintf(w, "\n## %s\n", s.Title)
		for _, k := range s.Kinds {
			if err := writeKind(w, k); err != nil {
				return fmt.Errorf("%s: %w", k.Kind, err)
			}
		}
	}
	return nil
}

// writeKind writes one kind: names, description, skeleton and field table.
func writeKind(w io.Writer, k *kind) error {
	scope := "Cluster"
	if k.Namespaced {
		scope = "Namespaced"
	}
	short := "none"
	if len(k.ShortNames) > 0 {
		short = code(strings.Join(k.ShortNames, "`, `"))
	}
	fmt.Fprintf(w, "\n### %s\n\n", k.Kind)
	fmt.Fprintf(w, "**Scope:** %s · **Plural:** %s · **Short names:** %s\n\n", scope, code(k.Plural), short)
	if d := paragraphs(k.Schema.Description); d != "" {
		fmt.Fprintf(w, "%s\n\n", d)
	}
	var rules []string
	for _, part := range []string{"", "spec", "status"} {
		s := k.Schema
		if part != "" {
			p, ok := k.Schema.Properties[part]
			if !ok {
				continue
			}
			s = &p
		}
		for _, r := range s.XValidations {
			rules = append(rules, ruleText(r))
		}
	}
	if len(rules) > 0 {
		fmt.Fprintf(w, "Rules: %s.\n\n", strings.Join(rules, "; "))
	}
	skel, err := yaml.Marshal(skeleton(k))
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "```yaml\n%s```\n\n", skel)
	var rows []fieldRow
	for _, part := range []string{"spec", "status"} {
		if p, ok := k.Schema.Properties[part]; ok {
			rows = append(rows, childRows(part+".", &p, goField(k.GoType, part))...)
		}
	}
	if len(rows) == 0 {
		io.WriteString(w, "This kind has no spec or status fields.\n")
		return nil
	}
	return writeFieldTable(w, rows)
}

// skeleton is the smallest object of the kind: names plus the required spec fields.
// Kinds named *Configuration are singletons named "default", as in Calico.
func skeleton(k *kind) map[string]any {
	meta := map[string]any{"name": "my-" + k.Singular}
	if strings.HasSuffix(k.Kind, "Configuration") {
		meta["name"] = "default"
	}
	if k.Namespaced {
		meta["namespace"] = "default"
	}
	obj := map[string]any{"apiVersion": tabbyv1.APIVersion, "kind": k.Kind, "metadata": meta}
	if spec, ok := k.Schema.Properties["spec"]; ok {
		obj["spec"] = sample("spec", &spec)
	}
	return obj
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
