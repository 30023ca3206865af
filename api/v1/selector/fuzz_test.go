package selector

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// addParseSeeds adds valid and invalid selectors to the fuzz corpus.
func addParseSeeds(f *testing.F, add func(s string)) {
	for _, s := range roundTripInputs {
		add(s)
	}
	for _, s := range []string{
		`app ==`, `app = "x"`, `has(`, `in {"a"}`, `app in {"a",}`, `&& a == "b"`,
		`(a == "b"`, `a == "b")`, `a == "b" c`, `a == "b`, `!`, `a not in{"x",'y'}`,
		`has (x) && all ( )`, "a\t==\n'\x00\xff'",
	} {
		add(s)
	}
}

func FuzzParse(f *testing.F) {
	addParseSeeds(f, func(s string) { f.Add(s) })
	f.Fuzz(func(t *testing.T, in string) {
		sel, err := Parse(in)
		if err != nil {
			if sel != nil {
				t.Fatalf("Parse(%q) returned both a selector and error %v", in, err)
			}
			if !errors.Is(err, ErrSyntax) || !strings.Contains(err.Error(), " at offset ") {
				t.Fatalf("Parse(%q) error %q: want ErrSyntax with an offset", in, err)
			}
			return
		}
		out := sel.String()
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not reparse: %v", in, out, err)
		}
		if got := again.String(); got != out {
			t.Fatalf("String is not a fixed point for %q: %q -> %q", in, out, got)
		}
		if !reflect.DeepEqual(sel, again) {
			t.Fatalf("Parse(%q) and Parse(%q) give different selectors", in, out)
		}
		keys := sel.LabelKeys()
		if !slices.IsSorted(keys) || len(slices.Compact(slices.Clone(keys))) != len(keys) {
			t.Fatalf("LabelKeys(%q) = %q: not sorted and unique", in, keys)
		}
	})
}

// fuzzLabels builds a label map from "k=v" pairs separated by ';'. A pair
// without '=' is a key with an empty value.
func fuzzLabels(s string) map[string]string {
	labels := map[string]string{}
	for pair := range strings.SplitSeq(s, ";") {
		k, v, _ := strings.Cut(pair, "=")
		labels[k] = v
	}
	return labels
}

func FuzzEvaluate(f *testing.F) {
	labelSeeds := []string{
		"app=web;tier=frontend",
		"app=db;tier=backend;kubernetes.io/metadata.name=prod",
		"q=say \"hi\";s=it's",
		"app=;a=x;b=y;c=x;d=y;e=z",
		"",
	}
	i := 0
	addParseSeeds(f, func(s string) {
		f.Add(s, labelSeeds[i%len(labelSeeds)])
		i++
	})
	f.Fuzz(func(t *testing.T, in, labelSpec string) {
		sel, err := Parse(in)
		if err != nil {
			return
		}
		labels := fuzzLabels(labelSpec)
		got := sel.Evaluate(labels)

		out := sel.String()
		again := MustParse(out)
		if again.Evaluate(labels) != got {
			t.Fatalf("%q = %v but its round trip %q differs on %q", in, got, out, labels)
		}
		// Wrapping adds one level of nesting, which may exceed maxDepth.
		if neg, err := Parse("!(" + out + ")"); err == nil && neg.Evaluate(labels) == got {
			t.Fatalf("!(%s) does not negate %q on %q", out, in, labels)
		}
		if w, err := Parse("all() && (" + out + ") || !all()"); err == nil && w.Evaluate(labels) != got {
			t.Fatalf("wrapping %q in all() changes its result on %q", out, labels)
		}
		// Labels the selector does not mention cannot affect the result.
		trimmed := map[string]string{}
		for _, k := range sel.LabelKeys() {
			if v, ok := labels[k]; ok {
				trimmed[k] = v
			}
		}
		if sel.Evaluate(trimmed) != got {
			t.Fatalf("%q: result depends on labels outside LabelKeys %q (%q)", in, sel.LabelKeys(), labels)
		}
	})
}
