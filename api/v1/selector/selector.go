package selector

import (
	"errors"
	"slices"
)

// ErrSyntax is wrapped by every error that Parse returns; test for it with
// errors.Is. The error message names the selector, what was expected and the
// byte offset, e.g.
//
//	selector "app == ": expected a quoted string at offset 7
var ErrSyntax = errors.New("selector syntax error")

// Selector is a parsed label selector. It is immutable and safe for
// concurrent use. The zero value and a nil *Selector match every label set,
// like all().
type Selector struct {
	root node // nil means all()
}

// Parse parses s as a label selector (see the package documentation for the
// grammar). An empty or all-whitespace s yields a selector equivalent to
// all(), whose String is "all()"; callers that give the empty string another
// meaning must check for it before calling Parse. On failure the error wraps
// ErrSyntax.
func Parse(s string) (*Selector, error) {
	root, err := parse(s)
	if err != nil {
		return nil, err
	}
	return &Selector{root: root}, nil
}

// MustParse is like Parse but panics if s is not a valid selector. It is
// meant for constants and tests.
func MustParse(s string) *Selector {
	sel, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return sel
}

// Evaluate reports whether labels satisfy the selector. A nil map is an
// empty label set. Evaluate does not allocate.
func (s *Selector) Evaluate(labels map[string]string) bool {
	if s == nil || s.root == nil {
		return true
	}
	return s.root.eval(labels)
}

// String returns the selector in canonical form, e.g.
// `app == "web" && has(tier)`. Parsing the result yields an equal selector,
// and String of that selector returns the same text.
func (s *Selector) String() string {
	if s == nil || s.root == nil {
		return "all()"
	}
	return s.root.String()
}

// LabelKeys returns the sorted, de-duplicated label keys the selector
// mentions, or nil if it mentions none (e.g. all()). The caller owns the
// returned slice.
func (s *Selector) LabelKeys() []string {
	if s == nil || s.root == nil {
		return nil
	}
	keys := s.root.appendKeys(nil)
	slices.Sort(keys)
	return slices.Compact(keys)
}
