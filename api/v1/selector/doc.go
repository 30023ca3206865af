// Package selector owns Tabby's label-selector language: the Calico v3 style
// expressions used in network policies, IPPool.nodeSelector, BGPPeer
// nodeSelector/peerSelector and similar fields. It parses a selector string
// into an immutable [Selector], evaluates it against a set of labels and
// prints it back in a canonical form.
//
// The package imports only the Go standard library, so it can be used from
// API types, controllers and the data plane alike.
//
// # Grammar
//
//	selector   = [ or ]                      (empty or blank: matches everything)
//	or         = and { "||" and }
//	and        = unary { "&&" unary }        (&& binds tighter than ||)
//	unary      = "!" unary | "(" or ")" | term
//	term       = "all" "(" ")" | "has" "(" key ")"
//	           | key "==" string | key "!=" string
//	           | key "in" set | key "not" "in" set
//	           | key "contains" string
//	           | key "starts" "with" string | key "ends" "with" string
//	set        = "{" [ string { "," string } ] "}"
//	string     = '"' { any byte except '"' } '"'
//	           | "'" { any byte except "'" } "'"
//	key        = 1*( letter | digit | "_" | "." | "/" | "-" )
//
// Whitespace (space, tab, CR, LF, VT, FF) may appear between any two tokens.
// There are no escape sequences: a string cannot contain its own quote
// character, so a value containing '"' must be written with single quotes.
//
// Semantics for a label that is absent: ==, in, contains, starts with and
// ends with are false; != and not in are true; has(key) is false.
// all() matches every label set.
//
// Nesting is limited to 128 levels, counting each "!" and each "(" that does
// not directly follow a "!"; deeper input is a syntax error.
//
// The canonical form printed by [Selector.String] uses double quotes (single
// quotes only when the value contains '"'), single spaces around operators,
// sorted and de-duplicated set members, only the parentheses that
// precedence requires, and "!(...)" around every negated operand except
// has(), all() and another "!"; [Parse] of that form yields an equal selector.
package selector
