package selector

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// testLabels are the label sets used by table and round-trip tests.
var testLabels = map[string]map[string]string{
	"nil":   nil,
	"empty": {},
	"web": {
		"app":            "web",
		"tier":           "frontend",
		"tabby.dev/role": "edge-router",
	},
	"db": {
		"app":                         "db",
		"tier":                        "backend",
		"kubernetes.io/metadata.name": "prod",
	},
	"quotes": {
		"q": `say "hi"`,
		"s": "it's",
	},
	"emptyval": {"app": ""},
}

func TestEvaluate(t *testing.T) {
	tests := []struct {
		sel  string
		want map[string]bool // label set name -> result; unlisted sets expect false
	}{
		// all() and blank input.
		{"", all(true)},
		{"  \t\n", all(true)},
		{"all()", all(true)},
		{"!all()", all(false)},
		// has.
		{"has(app)", set("web", "db", "emptyval")},
		{"!has(app)", set("nil", "empty", "quotes")},
		{"has(tabby.dev/role)", set("web")},
		{"has( kubernetes.io/metadata.name )", set("db")},
		// == and !=, both quote kinds.
		{`app == "web"`, set("web")},
		{`app == 'web'`, set("web")},
		{`app=="web"`, set("web")},
		{`app == ""`, set("emptyval")},
		{`app != "web"`, set("nil", "empty", "db", "quotes", "emptyval")},
		{`app != 'web'`, set("nil", "empty", "db", "quotes", "emptyval")},
		{`q == 'say "hi"'`, set("quotes")},
		{`s == "it's"`, set("quotes")},
		{`tabby.dev/role == "edge-router"`, set("web")},
		// in / not in.
		{`app in {"web", 'db'}`, set("web", "db")},
		{`app in {"web","web"}`, set("web")},
		{`app in {}`, set()},
		{`app in {""}`, set("emptyval")},
		{`app not in {"web"}`, set("nil", "empty", "db", "quotes", "emptyval")},
		{`app not in {}`, all(true)},
		{`app not in {"web", "db", ""}`, set("nil", "empty", "quotes")},
		// contains / starts with / ends with (false when absent).
		{`app contains "e"`, set("web")},
		{`app contains ""`, set("web", "db", "emptyval")},
		{`tier starts with "front"`, set("web")},
		{`tier ends with 'end'`, set("web", "db")},
		{`tier   starts   with"back"`, set("db")},
		{`!(tier ends with "end")`, set("nil", "empty", "quotes", "emptyval")},
		// negation of any term.
		{`!app == "web"`, set("nil", "empty", "db", "quotes", "emptyval")},
		{`! app in {"db"}`, set("nil", "empty", "web", "quotes", "emptyval")},
		{`!!has(app)`, set("web", "db", "emptyval")},
		{`!(app == "web" || app == "db")`, set("nil", "empty", "quotes", "emptyval")},
		// precedence: && binds tighter than ||.
		{`app == "db" || app == "web" && tier == "backend"`, set("db")},
		{`(app == "db" || app == "web") && tier == "backend"`, set("db")},
		{`app == "web" && tier == "backend" || app == "db"`, set("db")},
		{`app == "web" && (tier == "backend" || has(tabby.dev/role))`, set("web")},
		{`has(app) && !has(tier)`, set("emptyval")},
		{`((has(q)))`, set("quotes")},
		{`has(q) || has(tier) && app == "x"`, set("quotes")},
		// label keys that are also keywords.
		{`in == "x" || not in {"y"} || has(has) || all != "z"`, all(true)},
		{`contains contains "x"`, set()},
	}
	for _, tt := range tests {
		sel, err := Parse(tt.sel)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.sel, err)
			continue
		}
		for name, labels := range testLabels {
			if got := sel.Evaluate(labels); got != tt.want[name] {
				t.Errorf("Parse(%q).Evaluate(%s=%v) = %v, want %v", tt.sel, name, labels, got, tt.want[name])
			}
		}
	}
}

// set returns the expectation "true for exactly these label sets".
func set(names ...string) map[string]bool {
	m := map[string]bool{}
	for _, n := range names {
		m[n] = true
	}
	return m
}

// all returns the expectation "v for every label set".
func all(v bool) map[string]bool {
	m := map[string]bool{}
	for n := range testLabels {
		m[n] = v
	}
	return m
}

func TestString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "all()"},
		{"   ", "all()"},
		{"all( )", "all()"},
		{"has ( a )", "has(a)"},
		{`app=='web'&&has(tier)`, `app == "web" && has(tier)`},
		{`a != 'x'`, `a != "x"`},
		{`a == 'say "hi"'`, `a == 'say "hi"'`},
		{`a in {'b',"a",'b'}`, `a in {"a", "b"}`},
		{`a not in { }`, `a not in {}`},
		{`a contains 'x'`, `a contains "x"`},
		{`a starts  with 'x'`, `a starts with "x"`},
		{`a ends with "x"`, `a ends with "x"`},
		{`!has(a)`, `!has(a)`},
		{`!all()`, `!all()`},
		{`!a == "x"`, `!(a == "x")`},
		{`!!a == "x"`, `!!(a == "x")`},
		{`!(a == "x" && has(b))`, `!(a == "x" && has(b))`},
		{`(a == "x")`, `a == "x"`},
		{`(has(a) && has(b)) && (has(c) && has(d))`, `has(a) && has(b) && has(c) && has(d)`},
		{`(has(a) || has(b)) || has(c)`, `has(a) || has(b) || has(c)`},
		{`has(a) || has(b) && has(c)`, `has(a) || has(b) && has(c)`},
		{`(has(a) || has(b)) && has(c)`, `(has(a) || has(b)) && has(c)`},
		{`has(a) && (has(b) || has(c) && has(d))`, `has(a) && (has(b) || has(c) && has(d))`},
		{`!(has(a) || has(b))`, `!(has(a) || has(b))`},
	}
	for _, tt := range tests {
		sel, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got := sel.String(); got != tt.want {
			t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{`app ==`, `selector "app ==": expected a quoted string at offset 6`},
		{`app == `, `selector "app == ": expected a quoted string at offset 7`},
		{`app = "x"`, `expected an operator ('==', '!=', 'in', 'not in', 'contains', 'starts with' or 'ends with') at offset 4`},
		{`app`, `expected an operator`},
		{`app web`, `expected an operator ('==', '!=', 'in', 'not in', 'contains', 'starts with' or 'ends with') at offset 4`},
		{`has(`, `expected a label key at offset 4`},
		{`has()`, `expected a label key at offset 4`},
		{`has(a`, `expected ')' at offset 5`},
		{`has(a b)`, `expected ')' at offset 6`},
		{`all(`, `expected ')' at offset 4`},
		{`foo()`, `expected an operator`},
		{`in {"a"}`, `expected an operator ('==', '!=', 'in', 'not in', 'contains', 'starts with' or 'ends with') at offset 3`},
		{`app in {"a",}`, `expected a quoted string at offset 12`},
		{`app in {"a" "b"}`, `expected ',' or '}' at offset 12`},
		{`app in {"a"`, `expected ',' or '}' at offset 11`},
		{`app in "a"`, `expected '{' at offset 7`},
		{`app in {,}`, `expected a quoted string at offset 8`},
		{`app not {"a"}`, `expected 'in' after 'not' at offset 8`},
		{`app starts "a"`, `expected 'with' after 'starts' at offset 11`},
		{`app ends "a"`, `expected 'with' after 'ends' at offset 9`},
		{`&& a == "b"`, `expected a label key, '!', '(', 'has(' or 'all()' at offset 0`},
		{`a == "b" &&`, `expected a label key, '!', '(', 'has(' or 'all()' at offset 11`},
		{`a == "b" || || b == "c"`, `at offset 12`},
		{`a == "b" & b == "c"`, `expected '&&', '||' or end of selector at offset 9`},
		{`a == "b" | b == "c"`, `expected '&&', '||' or end of selector at offset 9`},
		{`(a == "b"`, `expected '&&', '||' or ')' at offset 9`},
		{`((a == "b")`, `expected '&&', '||' or ')' at offset 11`},
		{`a == "b")`, `expected '&&', '||' or end of selector at offset 8`},
		{`()`, `expected a label key, '!', '(', 'has(' or 'all()' at offset 1`},
		{`a == "b" c`, `expected '&&', '||' or end of selector at offset 9`},
		{`a == "b" all()`, `expected '&&', '||' or end of selector at offset 9`},
		{`all() x`, `at offset 6`},
		{`a == "b`, `unterminated quoted string at offset 5`},
		{`a == 'b"`, `unterminated quoted string at offset 5`},
		{`a in {"x", 'y}`, `unterminated quoted string at offset 11`},
		{`a == b`, `expected a quoted string at offset 5`},
		{`!`, `at offset 1`},
		{`a@b == "c"`, `at offset 1`},
		{`a == "b" && ü == "c"`, `at offset 12`},
		{strings.Repeat("(", maxDepth+1) + "all()" + strings.Repeat(")", maxDepth+1), `nesting deeper than 128 levels at offset 128`},
		{strings.Repeat("!", 1000) + "all()", `nesting deeper than 128 levels at offset 128`},
		{strings.Repeat("!(", 1000) + "all()", `nesting deeper than 128 levels at offset 256`},
	}
	for _, tt := range tests {
		sel, err := Parse(tt.in)
		if err == nil {
			t.Errorf("Parse(%q) = %q, want error", tt.in, sel)
			continue
		}
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) error %v does not wrap ErrSyntax", tt.in, err)
		}
		if msg := err.Error(); !strings.Contains(msg, tt.want) || !strings.Contains(msg, " at offset ") {
			t.Errorf("Parse(%q) error = %q, want it to contain %q", tt.in, msg, tt.want)
		}
	}
}

func TestDeepNestingWithinLimit(t *testing.T) {
	// maxDepth "!" in a row is allowed, and so is "!(" counted once.
	for _, in := range []string{
		strings.Repeat("(", maxDepth) + "has(a)" + strings.Repeat(")", maxDepth),
		strings.Repeat("!", maxDepth) + `a == "b"`,
		strings.Repeat("!(", maxDepth) + `a == "b"` + strings.Repeat(")", maxDepth),
	} {
		sel, err := Parse(in)
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		if _, err := Parse(sel.String()); err != nil {
			t.Fatalf("canonical form of %q does not reparse: %v", in, err)
		}
	}
	// Required parentheses at the limit with a negated comparison innermost:
	// the canonical form adds "(...)" after the "!" and must still parse.
	in := `!a == "b"`
	for range maxDepth - 1 {
		in = "has(x) && (has(y) || " + in + ")"
	}
	sel, err := Parse(in)
	if err != nil {
		t.Fatalf("Parse(deep and/or): %v", err)
	}
	if again, err := Parse(sel.String()); err != nil || !reflect.DeepEqual(sel, again) {
		t.Fatalf("canonical form of deep and/or does not round-trip: %v", err)
	}
	if _, err := Parse("has(z) && (has(w) || " + in + ")"); err == nil {
		t.Fatalf("one more level should exceed maxDepth")
	}
}

func TestMustParse(t *testing.T) {
	if got := MustParse(`has(a)`).String(); got != "has(a)" {
		t.Errorf("MustParse(has(a)).String() = %q", got)
	}
	defer func() {
		r := recover()
		err, ok := r.(error)
		if !ok || !errors.Is(err, ErrSyntax) {
			t.Errorf("MustParse of invalid input panicked with %v, want an ErrSyntax error", r)
		}
	}()
	MustParse(`app ==`)
}

func TestZeroAndNilSelector(t *testing.T) {
	var zero Selector
	var nilSel *Selector
	for _, s := range []*Selector{&zero, nilSel} {
		if !s.Evaluate(nil) || !s.Evaluate(map[string]string{"a": "b"}) {
			t.Errorf("zero/nil selector should match everything")
		}
		if s.String() != "all()" || s.LabelKeys() != nil {
			t.Errorf("zero/nil selector: String() = %q, LabelKeys() = %v", s.String(), s.LabelKeys())
		}
	}
}

func TestLabelKeys(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"all()", nil},
		{"!all() || all()", nil},
		{`has(b) && a == "x" || !(b in {"y"}) || tabby.dev/role ends with "r"`, []string{"a", "b", "tabby.dev/role"}},
		{`z not in {} && z contains "" && y starts with "" && x != ""`, []string{"x", "y", "z"}},
	}
	for _, tt := range tests {
		got := MustParse(tt.in).LabelKeys()
		if !slices.Equal(got, tt.want) {
			t.Errorf("LabelKeys(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// roundTripInputs are selectors used by the round-trip test and as fuzz
// seeds.
var roundTripInputs = []string{
	"",
	"all()",
	"!all()",
	`app == "web" && has(tier)`,
	`app=='web'||app=="db"&&tier!='backend'`,
	`!(app in {"web", 'db', "web"}) || tier not in {}`,
	`(has(a) || has(b)) && !(c == "x" || d != 'y') && e contains "z"`,
	`tier starts with "front" || tier ends with 'end' && !has(tabby.dev/role)`,
	`q == 'say "hi"' || s == "it's"`,
	`!!!app == ""`,
	`((app in {""})) && (kubernetes.io/metadata.name == "prod")`,
	`in == "x" || not in {"y"} || has(has) || all != "z"`,
}

func TestRoundTrip(t *testing.T) {
	for _, in := range roundTripInputs {
		sel := MustParse(in)
		out := sel.String()
		again, err := Parse(out)
		if err != nil {
			t.Errorf("Parse(%q).String() = %q does not reparse: %v", in, out, err)
			continue
		}
		if !reflect.DeepEqual(sel, again) {
			t.Errorf("Parse(%q) and Parse(%q) differ", in, out)
		}
		if again.String() != out {
			t.Errorf("String not a fixed point: %q -> %q", out, again.String())
		}
		if !slices.Equal(sel.LabelKeys(), again.LabelKeys()) {
			t.Errorf("LabelKeys differ for %q and %q", in, out)
		}
		for name, labels := range testLabels {
			if sel.Evaluate(labels) != again.Evaluate(labels) {
				t.Errorf("%q and %q evaluate differently on %s", in, out, name)
			}
		}
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	sel := MustParse(`(app in {"web", "db"} || !has(x)) && tier != "cache" && tier not in {"a"} && ` +
		`(app == "web" || app contains "d" || tier starts with "b" || tier ends with "d") && all()`)
	labels := testLabels["db"]
	if !sel.Evaluate(labels) {
		t.Fatalf("selector should match")
	}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, l := range testLabels {
			sel.Evaluate(l)
		}
	})
	if allocs != 0 {
		t.Errorf("Evaluate allocated %v times per run, want 0", allocs)
	}
}

func BenchmarkEvaluate(b *testing.B) {
	sel := MustParse(`app in {"api", "db", "web"} && tier != "cache" && !has(tabby.dev/quarantine) && ` +
		`(kubernetes.io/metadata.name starts with "prod" || tabby.dev/role == "edge-router")`)
	labels := map[string]string{
		"app":                         "web",
		"tier":                        "frontend",
		"tabby.dev/role":              "edge-router",
		"kubernetes.io/metadata.name": "production",
		"pod-template-hash":           "7d9f8c6b5",
	}
	b.ReportAllocs()
	for b.Loop() {
		if !sel.Evaluate(labels) {
			b.Fatal("no match")
		}
	}
}
