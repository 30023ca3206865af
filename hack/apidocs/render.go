package main

import (
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"

	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fieldRow is one line of a field table.
type fieldRow struct {
	Path, Type  string
	Required    bool
	Constraints []string
	Description string
}

// childRows lists the fields of object s, sorted by name, each followed by its own
// fields; prefix ends with "." (e.g. "spec.", "spec.ingress[]."). gt is the Go type of
// s when known (nil otherwise); it tells metav1.Duration strings apart.
func childRows(prefix string, s *apiextv1.JSONSchemaProps, gt reflect.Type) []fieldRow {
	var rows []fieldRow
	for _, name := range sortedKeys(s.Properties) {
		p := s.Properties[name]
		rows = append(rows, fieldRows(prefix+name, &p, slices.Contains(s.Required, name), goField(gt, name))...)
	}
	return rows
}

// fieldRows is the row of one field and the rows of the fields beneath it.
func fieldRows(path string, s *apiextv1.JSONSchemaProps, required bool, gt reflect.Type) []fieldRow {
	row := fieldRow{Path: path, Type: typeName(s, gt), Required: required,
		Constraints: constraints(s, gt), Description: description(s)}
	inner, innerGo := s, gt
	for inner.Type == "array" && inner.Items != nil && inner.Items.Schema != nil {
		row.Path += "[]"
		inner, innerGo = inner.Items.Schema, goElem(innerGo)
	}
	rows := []fieldRow{row}
	switch {
	case len(inner.Properties) > 0:
		rows = append(rows, childRows(row.Path+".", inner, innerGo)...)
	case inner.AdditionalProperties != nil && inner.AdditionalProperties.Schema != nil &&
		len(inner.AdditionalProperties.Schema.Properties) > 0:
		rows = append(rows, childRows(row.Path+".<key>.", inner.AdditionalProperties.Schema, goElem(innerGo))...)
	}
	return rows
}

// typeName is the type as a user writes it: string, integer, boolean, object,
// int-or-string, duration string, array of X, map of X.
func typeName(s *apiextv1.JSONSchemaProps, gt reflect.Type) string {
	switch {
	case isDuration(gt):
		return "duration string"
	case s.XIntOrString:
		return "int-or-string"
	case s.Type == "array" && s.Items != nil && s.Items.Schema != nil:
		return "array of " + typeName(s.Items.Schema, goElem(gt))
	case s.Type == "object" && s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil:
		return "map of " + typeName(s.AdditionalProperties.Schema, goElem(gt))
	case s.Type == "object" && s.XPreserveUnknownFields != nil && *s.XPreserveUnknownFields:
		return "object (any fields)"
	case s.Type == "string" && s.Format == "date-time":
		return "date-time string"
	case s.Type == "":
		return "any"
	}
	return s.Type
}

// constraints lists what the schema checks beyond the type: enum, range, lengths,
// pattern, format, default and CEL rules (by message), then those of list items or map
// values under "each:".
func constraints(s *apiextv1.JSONSchemaProps, gt reflect.Type) []string {
	var c []string
	if len(s.Enum) > 0 {
		vals := make([]string, len(s.Enum))
		for i, e := range s.Enum {
			vals[i] = code(jsonText(e.Raw))
		}
		c = append(c, "one of "+strings.Join(vals, ", "))
	}
	c = appendRange(c, "", s.Minimum, s.Maximum, s.ExclusiveMinimum, s.ExclusiveMaximum)
	c = appendRange(c, "length ", intPtr(s.MinLength), intPtr(s.MaxLength), false, false)
	c = appendRange(c, "items ", intPtr(s.MinItems), intPtr(s.MaxItems), false, false)
	c = appendRange(c, "keys ", intPtr(s.MinProperties), intPtr(s.MaxProperties), false, false)
	if s.MultipleOf != nil {
		c = append(c, "multiple of "+num(*s.MultipleOf))
	}
	if s.UniqueItems {
		c = append(c, "unique items")
	}
	if s.Pattern != "" {
		c = append(c, "pattern "+code(s.Pattern))
	}
	switch s.Format {
	case "", "date-time", "int32", "int64", "float", "double":
	default:
		c = append(c, "format "+code(s.Format))
	}
	if s.Default != nil {
		c = append(c, "default "+code(string(s.Default.Raw)))
	}
	for _, r := range s.XValidations {
		c = append(c, ruleText(r))
	}
	var each []string
	switch {
	case s.Type == "array" && s.Items != nil && s.Items.Schema != nil:
		each = constraints(s.Items.Schema, goElem(gt))
	case s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil:
		each = constraints(s.AdditionalProperties.Schema, goElem(gt))
	}
	if len(each) > 0 {
		c = append(c, "each: "+strings.Join(each, "; "))
	}
	return c
}

// appendRange adds "1–65535", "≥ 0" or "≤ 255", prefixed by what is counted.
func appendRange(c []string, what string, lo, hi *float64, exLo, exHi bool) []string {
	loOp, hiOp := "≥ ", "≤ "
	if exLo {
		loOp = "> "
	}
	if exHi {
		hiOp = "< "
	}
	switch {
	case lo != nil && hi != nil && !exLo && !exHi:
		return append(c, what+num(*lo)+"–"+num(*hi))
	case lo != nil && hi != nil:
		return append(c, what+loOp+num(*lo), what+hiOp+num(*hi))
	case lo != nil:
		return append(c, what+loOp+num(*lo))
	case hi != nil:
		return append(c, what+hiOp+num(*hi))
	}
	return c
}

func ruleText(r apiextv1.ValidationRule) string {
	switch {
	case r.Message != "":
		return "rule: " + r.Message
	case r.MessageExpression != "":
		return "rule: " + code(r.Rule) + " (" + code(r.MessageExpression) + ")"
	}
	return "rule: " + code(r.Rule)
}

// description is the field's description, else its list items' or map values'.
func description(s *apiextv1.JSONSchemaProps) string {
	for s != nil {
		if s.Description != "" {
			return oneLine(s.Description)
		}
		switch {
		case s.Items != nil && s.Items.Schema != nil:
			s = s.Items.Schema
		case s.AdditionalProperties != nil && s.AdditionalProperties.Schema != nil:
			s = s.AdditionalProperties.Schema
		default:
			s = nil
		}
	}
	return ""
}

// writeFieldTable writes rows as a Markdown table.
func writeFieldTable(w io.Writer, rows []fieldRow) error {
	var b strings.Builder
	b.WriteString("| Field | Type | Required | Constraints | Description |\n")
	b.WriteString("|---|---|---|---|---|\n")
	for _, r := range rows {
		req := "optional"
		if r.Required {
			req = "required"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", cell(code(r.Path)), cell(r.Type), req,
			cell(strings.Join(r.Constraints, "; ")), cell(escapeText(r.Description)))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// sample is a placeholder value for a required field of the skeleton: the first enum
// value, the minimum, false, "<name>" for strings, a list of one sample item, or an
// object holding its own required fields.
func sample(name string, s *apiextv1.JSONSchemaProps) any {
	if len(s.Enum) > 0 {
		var v any
		if json.Unmarshal(s.Enum[0].Raw, &v) == nil {
			return v
		}
	}
	switch {
	case s.XIntOrString || s.Type == "string":
		return "<" + name + ">"
	case s.Type == "integer" || s.Type == "number":
		if s.Minimum != nil {
			return *s.Minimum
		}
		return 0
	case s.Type == "boolean":
		return false
	case s.Type == "array":
		if s.Items == nil || s.Items.Schema == nil {
			return []any{}
		}
		item := sample(strings.TrimSuffix(name, "s"), s.Items.Schema)
		if m, ok := item.(map[string]any); ok && len(m) == 0 {
			return []any{}
		}
		return []any{item}
	case s.Type == "object":
		obj := map[string]any{}
		for _, req := range s.Required {
			if p, ok := s.Properties[req]; ok {
				obj[req] = sample(req, &p)
			}
		}
		return obj
	}
	return "<" + name + ">"
}

// goField is the Go type of the field with JSON name name in struct type t (looking
// through pointers and inlined embedded structs), or nil.
func goField(t reflect.Type, name string) reflect.Type {
	t = deref(t)
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("json"), ",")[0]
		if tag == "-" {
			continue
		}
		if f.Anonymous && tag == "" {
			if ft := goField(f.Type, name); ft != nil {
				return ft
			}
			continue
		}
		if tag == name || (tag == "" && f.Name == name) {
			return f.Type
		}
	}
	return nil
}

// goElem is the element type of a slice, array or map type (through pointers), or nil.
func goElem(t reflect.Type) reflect.Type {
	t = deref(t)
	if t == nil {
		return nil
	}
	switch t.Kind() {
	case reflect.Slice, reflect.Array, reflect.Map:
		return t.Elem()
	}
	return nil
}

func deref(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

var durationType = reflect.TypeOf(metav1.Duration{})

func isDuration(t reflect.Type) bool { return t != nil && deref(t) == durationType }

// jsonText shows a JSON value: strings unquoted, anything else as written.
func jsonText(raw []byte) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(raw)
}

func intPtr(p *int64) *float64 {
	if p == nil {
		return nil
	}
	f := float64(*p)
	return &f
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// code is s as a Markdown code span.
func code(s string) string {
	if strings.Contains(s, "`") {
		return "`` " + s + " ``"
	}
	return "`" + s + "`"
}

// oneLine joins the lines of a Go doc comment into one.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// paragraphs joins the lines of each paragraph of s and escapes it for Markdown.
func paragraphs(s string) string {
	var ps []string
	for _, p := range strings.Split(strings.TrimSpace(s), "\n\n") {
		if p = oneLine(p); p != "" {
			ps = append(ps, escapeText(p))
		}
	}
	return strings.Join(ps, "\n\n")
}

// escapeText keeps prose from being read as HTML or emphasis.
var escapeText = strings.NewReplacer("<", "&lt;", ">", "&gt;", "*", `\*`).Replace

// cell escapes the pipes of a table cell (code spans included, as GFM requires).
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
