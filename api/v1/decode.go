package v1

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Decode reads one or more YAML or JSON documents (separated by ---, or a kind: List
// with items) into typed Tabby objects. It is strict: an unknown field, a duplicate
// field, a value of the wrong type, an unknown kind or a foreign apiVersion is an error
// naming the document and the field. It neither defaults nor validates.
func Decode(data []byte) ([]Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []Object
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			continue
		}
		objs, err := decodeDoc(raw)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", doc, err)
		}
		out = append(out, objs...)
	}
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

type typeHead struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Items      []json.RawMessage `json:"items"`
}

func decodeDoc(raw []byte) ([]Object, error) {
	j, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	var head typeHead
	if err := json.Unmarshal(j, &head); err != nil {
		return nil, fmt.Errorf("not a resource: %w", err)
	}
	if head.Kind == "List" || (strings.HasSuffix(head.Kind, "List") && head.Items != nil) {
		var out []Object
		for i, item := range head.Items {
			o, err := decodeOne(item)
			if err != nil {
				return nil, fmt.Errorf("items[%d]: %w", i, err)
			}
			out = append(out, o)
		}
		return out, nil
	}
	o, err := decodeOne(j)
	if err != nil {
		return nil, err
	}
	return []Object{o}, nil
}

// DecodeJSON decodes one JSON object strictly into its typed Tabby object.
func DecodeJSON(j []byte) (Object, error) { return decodeOne(j) }

func decodeOne(j []byte) (Object, error) {
	var head typeHead
	if err := json.Unmarshal(j, &head); err != nil {
		return nil, fmt.Errorf("not a resource: %w", err)
	}
	if head.Kind == "" {
		return nil, fmt.Errorf("kind: Required value: every resource names its kind")
	}
	if head.APIVersion != APIVersion {
		return nil, fmt.Errorf("apiVersion: Unsupported value: %q: Tabby resources are %s", head.APIVersion, APIVersion)
	}
	r, ok := LookupResource(head.Kind)
	if !ok || r.Kind != head.Kind {
		return nil, fmt.Errorf("kind: Unsupported value: %q: known kinds are %s", head.Kind, strings.Join(kindNames(), ", "))
	}
	obj := r.New()
	strictErrs, err := sigsjson.UnmarshalStrict(j, obj)
	if err != nil {
		return nil, describeJSONError(err)
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, 0, len(strictErrs))
		for _, e := range strictErrs {
			msgs = append(msgs, e.Error())
		}
		return nil, fmt.Errorf("%w: %s %q: %s", ErrInvalid, r.Kind, objectName(j), strings.Join(msgs, "; "))
	}
	return obj, nil
}

// describeJSONError turns a type mismatch into "field: Invalid value: ..." form.
func describeJSONError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("%w: %s: Invalid value: %s: expected %s", ErrInvalid, te.Field, te.Value, describeGoType(te.Type.String()))
	}
	return fmt.Errorf("%w: %v", ErrInvalid, err)
}

func describeGoType(t string) string {
	switch t {
	case "v1.ASNumber":
		return "an AS number 1-4294967295"
	case "uint8":
		return "a number 0-255"
	case "uint16":
		return "a number 0-65535"
	case "uint32":
		return "a number 0-4294967295"
	case "int", "int32", "int64", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	}
	return t
}

func objectName(j []byte) string {
	var m struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	_ = json.Unmarshal(j, &m)
	return m.Metadata.Name
}

func kindNames() []string {
	out := make([]string, 0, len(Resources))
	for _, r := range Resources {
		out = append(out, r.Kind)
	}
	return out
}
