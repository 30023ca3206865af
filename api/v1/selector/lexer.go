package selector

import "strings"

// tokenKind identifies the kind of a lexical token.
type tokenKind uint8

const (
	tokEOF          tokenKind = iota // end of input
	tokIdent                         // label key or keyword (in, not, has, ...)
	tokString                        // quoted string; text holds the contents
	tokLParen                        // (
	tokRParen                        // )
	tokLBrace                        // {
	tokRBrace                        // }
	tokComma                         // ,
	tokNot                           // !
	tokEq                            // ==
	tokNe                            // !=
	tokAnd                           // &&
	tokOr                            // ||
	tokUnterminated                  // quoted string without its closing quote
	tokIllegal                       // any byte that starts no valid token
)

// token is one lexical token. pos is the byte offset of its first byte in
// the source; text is the identifier or the string contents (without
// quotes) and is a substring of the source.
type token struct {
	kind tokenKind
	pos  int
	text string
}

// lexer splits a selector string into tokens on demand.
type lexer struct {
	src string
	pos int
}

// isSpace reports whether c is whitespace allowed between tokens.
func isSpace(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '\v', '\f':
		return true
	}
	return false
}

// isKeyByte reports whether c may appear in a label key.
func isKeyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '.' || c == '/' || c == '-'
}

// isBlank reports whether s consists only of whitespace.
func isBlank(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isSpace(s[i]) {
			return false
		}
	}
	return true
}

// next returns the next token and advances past it.
func (l *lexer) next() token {
	for l.pos < len(l.src) && isSpace(l.src[l.pos]) {
		l.pos++
	}
	start := l.pos
	if start >= len(l.src) {
		return token{kind: tokEOF, pos: start}
	}
	c := l.src[start]
	if isKeyByte(c) {
		end := start + 1
		for end < len(l.src) && isKeyByte(l.src[end]) {
			end++
		}
		l.pos = end
		return token{kind: tokIdent, pos: start, text: l.src[start:end]}
	}
	if c == '"' || c == '\'' {
		n := strings.IndexByte(l.src[start+1:], c)
		if n < 0 {
			l.pos = len(l.src)
			return token{kind: tokUnterminated, pos: start}
		}
		l.pos = start + 1 + n + 1
		return token{kind: tokString, pos: start, text: l.src[start+1 : start+1+n]}
	}
	var second byte
	if start+1 < len(l.src) {
		second = l.src[start+1]
	}
	kind, size := tokIllegal, 1
	switch c {
	case '(':
		kind = tokLParen
	case ')':
		kind = tokRParen
	case '{':
		kind = tokLBrace
	case '}':
		kind = tokRBrace
	case ',':
		kind = tokComma
	case '!':
		kind = tokNot
		if second == '=' {
			kind, size = tokNe, 2
		}
	case '=':
		if second == '=' {
			kind, size = tokEq, 2
		}
	case '&':
		if second == '&' {
			kind, size = tokAnd, 2
		}
	case '|':
		if second == '|' {
			kind, size = tokOr, 2
		}
	}
	l.pos = start + size
	return token{kind: kind, pos: start, text: l.src[start : start+size]}
}
