package selector

import (
	"fmt"
	"slices"
)

// maxDepth bounds the nesting of "(" and "!" so that hostile input cannot
// exhaust the stack.
const maxDepth = 128

// Expectation messages used in syntax errors.
const (
	expTerm     = "expected a label key, '!', '(', 'has(' or 'all()'"
	expOperator = "expected an operator ('==', '!=', 'in', 'not in', 'contains', 'starts with' or 'ends with')"
	expString   = "expected a quoted string"
	expKey      = "expected a label key"
	expRParen   = "expected ')'"
	expLBrace   = "expected '{'"
	expSetNext  = "expected ',' or '}'"
	expGroupEnd = "expected '&&', '||' or ')'"
	expEnd      = "expected '&&', '||' or end of selector"
)

// syntaxError is the error returned by Parse. It unwraps to ErrSyntax.
type syntaxError struct {
	src    string
	msg    string
	offset int
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("selector %q: %s at offset %d", e.src, e.msg, e.offset)
}

func (e *syntaxError) Unwrap() error { return ErrSyntax }

// parser is a recursive-descent parser with one token of lookahead.
type parser struct {
	lex   lexer
	tok   token
	depth int
}

// parse parses src into an AST. Blank input yields allNode.
func parse(src string) (node, error) {
	if isBlank(src) {
		return allNode{}, nil
	}
	p := &parser{lex: lexer{src: src}}
	p.advance()
	n, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tokEOF {
		return nil, p.fail(expEnd)
	}
	return n, nil
}

func (p *parser) advance() { p.tok = p.lex.next() }

// fail returns a syntax error located at the current token.
func (p *parser) fail(msg string) error {
	return &syntaxError{src: p.lex.src, msg: msg, offset: p.tok.pos}
}

// parseOr parses and { "||" and }, flattening nested ORs.
func (p *parser) parseOr() (node, error) {
	first, err := p.parseAnd()
	if err != nil || p.tok.kind != tokOr {
		return first, err
	}
	or := &orNode{}
	or.add(first)
	for p.tok.kind == tokOr {
		p.advance()
		n, err := p.parseAnd()
		if err != nil {
			return nil, err
		}
		or.add(n)
	}
	return or, nil
}

// parseAnd parses unary { "&&" unary }, flattening nested ANDs.
func (p *parser) parseAnd() (node, error) {
	first, err := p.parseUnary()
	if err != nil || p.tok.kind != tokAnd {
		return first, err
	}
	and := &andNode{}
	and.add(first)
	for p.tok.kind == tokAnd {
		p.advance()
		n, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		and.add(n)
	}
	return and, nil
}

// parseUnary parses "!" unary | "(" or ")" | term.
//
// Nesting is counted as one level per "!" and per "(" that does not directly
// follow a "!". This makes the canonical form, which prints !(a == "b") for
// !a == "b", never nest deeper than the input it came from.
func (p *parser) parseUnary() (node, error) {
	switch p.tok.kind {
	case tokNot:
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer p.leave()
		p.advance()
		var n node
		var err error
		if p.tok.kind == tokLParen {
			n, err = p.parseGroup()
		} else {
			n, err = p.parseUnary()
		}
		if err != nil {
			return nil, err
		}
		return &notNode{op: n}, nil
	case tokLParen:
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer p.leave()
		return p.parseGroup()
	case tokIdent:
		return p.parseTerm()
	}
	return nil, p.fail(expTerm)
}

// enter records one more level of nesting at the current token and fails
// if that exceeds maxDepth.
func (p *parser) enter() error {
	p.depth++
	if p.depth > maxDepth {
		return p.fail(fmt.Sprintf("nesting deeper than %d levels", maxDepth))
	}
	return nil
}

func (p *parser) leave() { p.depth-- }

// parseGroup parses "(" or ")"; the current token is "(".
func (p *parser) parseGroup() (node, error) {
	p.advance()
	n, err := p.parseOr()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tokRParen {
		return nil, p.fail(expGroupEnd)
	}
	p.advance()
	return n, nil
}

// parseTerm parses all(), has(key) or key <operator> <operand>; the current
// token is an identifier.
func (p *parser) parseTerm() (node, error) {
	ident := p.tok.text
	p.advance()
	if p.tok.kind == tokLParen {
		switch ident {
		case "has":
			p.advance()
			if p.tok.kind != tokIdent {
				return nil, p.fail(expKey)
			}
			key := p.tok.text
			p.advance()
			if p.tok.kind != tokRParen {
				return nil, p.fail(expRParen)
			}
			p.advance()
			return &hasNode{key: key}, nil
		case "all":
			p.advance()
			if p.tok.kind != tokRParen {
				return nil, p.fail(expRParen)
			}
			p.advance()
			return allNode{}, nil
		}
		return nil, p.fail(expOperator)
	}
	return p.parseOperator(ident)
}

// parseOperator parses the operator and operand following label key key.
func (p *parser) parseOperator(key string) (node, error) {
	switch p.tok.kind {
	case tokEq:
		p.advance()
		v, err := p.parseString()
		if err != nil {
			return nil, err
		}
		return &eqNode{key: key, value: v}, nil
	case tokNe:
		p.advance()
		v, err := p.parseString()
		if err != nil {
			return nil, err
		}
		return &neNode{key: key, value: v}, nil
	case tokIdent:
	default:
		return nil, p.fail(expOperator)
	}
	switch p.tok.text {
	case "in", "not":
		negate := p.tok.text == "not"
		p.advance()
		if negate {
			if p.tok.kind != tokIdent || p.tok.text != "in" {
				return nil, p.fail("expected 'in' after 'not'")
			}
			p.advance()
		}
		vals, err := p.parseSet()
		if err != nil {
			return nil, err
		}
		if negate {
			return &notInNode{key: key, values: vals}, nil
		}
		return &inNode{key: key, values: vals}, nil
	case "contains", "starts", "ends":
		op := p.tok.text
		p.advance()
		if op != "contains" {
			if p.tok.kind != tokIdent || p.tok.text != "with" {
				return nil, p.fail("expected 'with' after '" + op + "'")
			}
			p.advance()
		}
		v, err := p.parseString()
		if err != nil {
			return nil, err
		}
		switch op {
		case "contains":
			return &containsNode{key: key, value: v}, nil
		case "starts":
			return &startsWithNode{key: key, value: v}, nil
		}
		return &endsWithNode{key: key, value: v}, nil
	}
	return nil, p.fail(expOperator)
}

// parseString parses a quoted string and returns its contents.
func (p *parser) parseString() (string, error) {
	switch p.tok.kind {
	case tokString:
		v := p.tok.text
		p.advance()
		return v, nil
	case tokUnterminated:
		return "", p.fail("unterminated quoted string")
	}
	return "", p.fail(expString)
}

// parseSet parses "{" [ string { "," string } ] "}" and returns the members
// sorted and de-duplicated (nil for the empty set).
func (p *parser) parseSet() ([]string, error) {
	if p.tok.kind != tokLBrace {
		return nil, p.fail(expLBrace)
	}
	p.advance()
	if p.tok.kind == tokRBrace {
		p.advance()
		return nil, nil
	}
	var vals []string
	for {
		v, err := p.parseString()
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
		switch p.tok.kind {
		case tokComma:
			p.advance()
			continue
		case tokRBrace:
			p.advance()
			slices.Sort(vals)
			return slices.Compact(vals), nil
		}
		return nil, p.fail(expSetNext)
	}
}
