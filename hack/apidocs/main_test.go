package main

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

const (
	crdsDir   = "../../charts/tabby/crds"
	committed = "../../docs/reference/resources.md"
)

// TestDocIsFresh fails when the committed reference differs from what the CRDs generate.
func TestDocIsFresh(t *testing.T) {
	var got bytes.Buffer
	if err := generate(&got, crdsDir); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(committed)
	if err != nil {
		t.Fatalf("docs/reference/resources.md is stale: run make docs (%v)", err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		g, w := strings.Split(got.String(), "\n"), strings.Split(string(want), "\n")
		i := 0
		for i < len(g) && i < len(w) && g[i] == w[i] {
			i++
		}
		line := func(l []string) string {
			if i < len(l) {
				return l[i]
			}
			return "(end of file)"
		}
		t.Fatalf("docs/reference/resources.md is stale: run make docs\nfirst difference at line %d:\n  committed: %q\n  generated: %q",
			i+1, line(w), line(g))
	}
}

// TestDeterministic generates twice, through run's stdout path, and compares.
func TestDeterministic(t *testing.T) {
	var a, b bytes.Buffer
	if err := run(crdsDir, "-", &a); err != nil {
		t.Fatal(err)
	}
	if err := run(crdsDir, "-", &b); err != nil {
		t.Fatal(err)
	}
	if a.Len() == 0 || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatalf("two runs differ (or are empty): %d and %d bytes", a.Len(), b.Len())
	}
}

const tinySchema = `
type: object
required: [name, rules]
properties:
  name:
    type: string
    description: |-
      Name of the thing, as in "node.<node>";
      no | pipes.
    x-kubernetes-validations:
    - rule: self.size() > 0
      message: must not be empty
  mode:
    type: string
    enum: [Auto, "Off"]
  timeout:
    type: string
    description: Timeout of it (default 30s).
  port:
    type: integer
    minimum: 1
    maximum: 65535
  labels:
    type: object
    additionalProperties: {type: string}
  rules:
    type: array
    items:
      type: object
      description: Rule matches things.
      required: [action]
      properties:
        action:
          type: string
          pattern: ^(a|b)$
        ports:
          type: array
          items:
            anyOf: [{type: integer}, {type: string}]
            x-kubernetes-int-or-string: true
        since:
          type: string
          format: date-time
`

type tinySpec struct {
	Name    string            `json:"name"`
	Mode    string            `json:"mode,omitempty"`
	Timeout *metav1.Duration  `json:"timeout,omitempty"`
	Port    int               `json:"port,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
	Rules   []tinyRule        `json:"rules"`
}

type tinyRule struct {
	Action string               `json:"action"`
	Ports  []intstr.IntOrString `json:"ports,omitempty"`
	Since  metav1.Time          `json:"since,omitempty"`
}

func tiny(t *testing.T) *apiextv1.JSONSchemaProps {
	t.Helper()
	var s apiextv1.JSONSchemaProps
	if err := yaml.Unmarshal([]byte(tinySchema), &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

func TestFieldTable(t *testing.T) {
	var b strings.Builder
	if err := writeFieldTable(&b, childRows("spec.", tiny(t), reflect.TypeOf(tinySpec{}))); err != nil {
		t.Fatal(err)
	}
	want := "| Field | Type | Required | Constraints | Description |\n" +
		"|---|---|---|---|---|\n" +
		"| `spec.labels` | map of string | optional |  |  |\n" +
		"| `spec.mode` | string | optional | one of `Auto`, `Off` |  |\n" +
		"| `spec.name` | string | required | rule: must not be empty | Name of the thing, as in \"node.&lt;node&gt;\"; no \\| pipes. |\n" +
		"| `spec.port` | integer | optional | 1–65535 |  |\n" +
		"| `spec.rules[]` | array of object | required |  | Rule matches things. |\n" +
		"| `spec.rules[].action` | string | required | pattern `^(a\\|b)$` |  |\n" +
		"| `spec.rules[].ports[]` | array of int-or-string | optional |  |  |\n" +
		"| `spec.rules[].since` | date-time string | optional |  |  |\n" +
		"| `spec.timeout` | duration string | optional |  | Timeout of it (default 30s). |\n"
	if b.String() != want {
		t.Errorf("field table:\n%s\nwant:\n%s", b.String(), want)
	}

	// Without the Go type, a duration is only a string.
	rows := childRows("spec.", tiny(t), nil)
	if last := rows[len(rows)-1]; last.Path != "spec.timeout" || last.Type != "string" {
		t.Errorf("without Go type: %+v, want spec.timeout of type string", last)
	}
}

func TestSkeleton(t *testing.T) {
	k := &kind{Kind: "Tiny", Singular: "tiny", Namespaced: true, Schema: &apiextv1.JSONSchemaProps{
		Type: "object", Properties: map[string]apiextv1.JSONSchemaProps{"spec": *tiny(t)}}}
	got, err := yaml.Marshal(skeleton(k))
	if err != nil {
		t.Fatal(err)
	}
	want := `apiVersion: tabby.dev/v1
kind: Tiny
metadata:
  name: my-tiny
  namespace: default
spec:
  name: <name>
  rules:
  - action: <action>
`
	if string(got) != want {
		t.Errorf("skeleton:\n%s\nwant:\n%s", got, want)
	}
}
