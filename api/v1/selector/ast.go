package selector

import (
	"slices"
	"strings"
)

// node is one node of a parsed selector. Implementations are immutable and
// their eval methods must not allocate.
type node interface {
	// eval reports whether labels satisfy the node.
	eval(labels map[string]string) bool
	// String returns the node in canonical selector syntax.
	String() string
	// appendKeys appends the label keys the node mentions to dst.
	appendKeys(dst []string) []string
}

// quote returns v as a selector string literal, using double quotes unless
// v itself contains a double quote.
func quote(v string) string {
	if strings.IndexByte(v, '"') >= 0 {
		return "'" + v + "'"
	}
	return `"` + v + `"`
}

// allNode matches every label set: all().
type allNode struct{}

func (allNode) eval(map[string]string) bool      { return true }
func (allNode) String() string                   { return "all()" }
func (allNode) appendKeys(dst []string) []string { return dst }

// hasNode matches when the label is present: has(key).
type hasNode struct{ key string }

func (n *hasNode) eval(labels map[string]string) bool {
	_, ok := labels[n.key]
	return ok
}
func (n *hasNode) String() string                   { return "has(" + n.key + ")" }
func (n *hasNode) appendKeys(dst []string) []string { return append(dst, n.key) }

// eqNode matches when the label is present and equal: key == "v".
type eqNode struct{ key, value string }

func (n *eqNode) eval(labels map[string]string) bool {
	v, ok := labels[n.key]
	return ok && v == n.value
}
func (n *eqNode) String() string                   { return n.key + " == " + quote(n.value) }
func (n *eqNode) appendKeys(dst []string) []string { return append(dst, n.key) }

// neNode matches when the label is absent or different: key != "v".
type neNode struct{ key, value string }

func (n *neNode) eval(labels map[string]string) bool {
	v, ok := labels[n.key]
	return !ok || v != n.value
}
func (n *neNode) String() string                   { return n.key + " != " + quote(n.value) }
func (n *neNode) appendKeys(dst []string) []string { return append(dst, n.key) }

// formatSet prints sorted set members as {"a", "b"}.
func formatSet(values []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, v := range values {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quote(v))
	}
	b.WriteByte('}')
	return b.String()
}

// inNode matches when the label is present and one of values (sorted,
// unique): key in {"a", "b"}.
type inNode struct {
	key    string
	values []string
}

func (n *inNode) eval(labels map[string]string) bool {
	v, ok := labels[n.key]
	if !ok {
		return false
	}
	_, found := slices.BinarySearch(n.values, v)
	return found
}
func (n *inNode) String() string                   { return n.key + " in " + formatSet(n.values) }
func (n *inNode) appendKeys(dst []string) []string { return append(dst, n.key) }

// notInNode matches when the label is absent or not one of values (sorted,
// unique): key not in {"a", "b"}.
type notInNode struct {
	key    string
	values []string
}

func (n *notInNode) eval(labels map[string]string) bool {
	v, ok := labels[n.key]
	if !ok {
		return true
	}
	_, found := slices.BinarySearch(n.values, v)
	return !found
}
func (n *notInNode) String() string                   { return n.key + " not in " + formatSet(n.values) }
func (n *notInNode) appendKeys(dst []string) []string { return append(dst, n.key) }

// containsNode matches when the label is present and contains value.
type containsNode struct{ key, value string }

func (n *containsNode) eval(labels map[string]string) bool {
	v, ok := labels[n.key]
	return ok && strings.Contains(v, n.value)
}
func (n *containsNode) String() string                   { return n.key + " contains " + quote(n.value) }
func (n *containsNode) appendKeys(dst []string) []string { return append(dst, n.key) }

// startsWithNode matches when the label is present and has prefix value.
type startsWithNode struct{ key, value string }

func (n *startsWithNode) eval(labels map[string]string) bool {
	v, ok := labels[n.key]
	return ok && strings.HasPrefix(v, n.value)
}
func (n *startsWithNode) String() string                   { return n.key + " starts with " + quote(n.value) }
func (n *startsWithNode) appendKeys(dst []string) []string { return append(dst, n.key) }

// endsWithNode matches when the label is present and has suffix value.
type endsWithNode struct{ key, value string }

func (n *endsWithNode) eval(labels map[string]string) bool {
	v, ok := labels[n.key]
	return ok && strings.HasSuffix(v, n.value)
}
func (n *endsWithNode) String() string                   { return n.key + " ends with " + quote(n.value) }
func (n *endsWithNode) appendKeys(dst []string) []string { return append(dst, n.key) }

// notNode negates its operand: !term.
type notNode struct{ op node }

func (n *notNode) eval(labels map[string]string) bool { return !n.op.eval(labels) }

// String prints !has(k), !all() and !!x directly and parenthesises every
// other operand, e.g. !(a == "b"), for readability.
func (n *notNode) String() string {
	switch n.op.(type) {
	case allNode, *hasNode, *notNode:
		return "!" + n.op.String()
	}
	return "!(" + n.op.String() + ")"
}
func (n *notNode) appendKeys(dst []string) []string { return n.op.appendKeys(dst) }

// andNode matches when all of its operands (two or more, none an andNode)
// match.
type andNode struct{ ops []node }

// add appends n, flattening a nested andNode.
func (n *andNode) add(op node) {
	if a, ok := op.(*andNode); ok {
		n.ops = append(n.ops, a.ops...)
		return
	}
	n.ops = append(n.ops, op)
}

func (n *andNode) eval(labels map[string]string) bool {
	for _, op := range n.ops {
		if !op.eval(labels) {
			return false
		}
	}
	return true
}

// String joins the operands with " && ", parenthesising OR operands.
func (n *andNode) String() string {
	parts := make([]string, len(n.ops))
	for i, op := range n.ops {
		parts[i] = op.String()
		if _, ok := op.(*orNode); ok {
			parts[i] = "(" + parts[i] + ")"
		}
	}
	return strings.Join(parts, " && ")
}

func (n *andNode) appendKeys(dst []string) []string {
	for _, op := range n.ops {
		dst = op.appendKeys(dst)
	}
	return dst
}

// orNode matches when any of its operands (two or more, none an orNode)
// matches.
type orNode struct{ ops []node }

// add appends n, flattening a nested orNode.
func (n *orNode) add(op node) {
	if o, ok := op.(*orNode); ok {
		n.ops = append(n.ops, o.ops...)
		return
	}
	n.ops = append(n.ops, op)
}

func (n *orNode) eval(labels map[string]string) bool {
	for _, op := range n.ops {
		if op.eval(labels) {
			return true
		}
	}
	return false
}

// String joins the operands with " || "; no operand needs parentheses.
func (n *orNode) String() string {
	parts := make([]string, len(n.ops))
	for i, op := range n.ops {
		parts[i] = op.String()
	}
	return strings.Join(parts, " || ")
}

func (n *orNode) appendKeys(dst []string) []string {
	for _, op := range n.ops {
		dst = op.appendKeys(dst)
	}
	return dst
}
