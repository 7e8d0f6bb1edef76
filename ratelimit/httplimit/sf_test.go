package httplimit

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// A Structured Field (RFC 9651) List parser, written here so that the
// headers are checked by parsing them back, independently of how they were
// written. It covers what RateLimit fields can hold: Items that are
// Strings, Tokens, Integers, Decimals, Byte Sequences or Booleans, with
// Parameters. Inner Lists are rejected (RateLimit fields have none).

type sfToken string

type sfParam struct {
	key string
	val any // int64, float64, string, sfToken, []byte, bool
}

type sfItem struct {
	val    any
	params []sfParam
}

// param returns the value of parameter key, and whether it is there.
func (it sfItem) param(key string) (any, bool) {
	for _, p := range it.params {
		if p.key == key {
			return p.val, true
		}
	}
	return nil, false
}

type sfParser struct {
	s string
	i int
}

var errSF = errors.New("sf: parse error")

func (p *sfParser) fail(what string) error {
	return fmt.Errorf("%w at %d of %q: %s", errSF, p.i, p.s, what)
}

func (p *sfParser) eof() bool { return p.i >= len(p.s) }
func (p *sfParser) peek() byte {
	if p.eof() {
		return 0
	}
	return p.s[p.i]
}

func (p *sfParser) skipSP() {
	for !p.eof() && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *sfParser) skipOWS() {
	for !p.eof() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// parseSFList parses the field lines of one List field, combined as RFC 9110
// combines them.
func parseSFList(lines []string) ([]sfItem, error) {
	p := &sfParser{s: strings.Join(lines, ", ")}
	p.skipSP()
	var out []sfItem
	for !p.eof() {
		if p.peek() == '(' {
			return nil, p.fail("inner lists not supported")
		}
		it, err := p.item()
		if err != nil {
			return nil, err
		}
		out = append(out, it)
		p.skipOWS()
		if p.eof() {
			return out, nil
		}
		if p.peek() != ',' {
			return nil, p.fail("expected ','")
		}
		p.i++
		p.skipOWS()
		if p.eof() {
			return nil, p.fail("trailing comma")
		}
	}
	if len(out) == 0 {
		return nil, p.fail("empty list") // an empty field is an absent one
	}
	return out, nil
}

func (p *sfParser) item() (sfItem, error) {
	v, err := p.bare()
	if err != nil {
		return sfItem{}, err
	}
	params, err := p.parameters()
	return sfItem{val: v, params: params}, err
}

func (p *sfParser) parameters() ([]sfParam, error) {
	var out []sfParam
	for p.peek() == ';' {
		p.i++
		p.skipSP()
		k, err := p.key()
		if err != nil {
			return nil, err
		}
		var v any = true
		if p.peek() == '=' {
			p.i++
			if v, err = p.bare(); err != nil {
				return nil, err
			}
		}
		replaced := false
		for j := range out {
			if out[j].key == k {
				out[j].val, replaced = v, true
			}
		}
		if !replaced {
			out = append(out, sfParam{k, v})
		}
	}
	return out, nil
}

func (p *sfParser) key() (string, error) {
	c := p.peek()
	if !(c >= 'a' && c <= 'z' || c == '*') {
		return "", p.fail("key must start with lcalpha or '*'")
	}
	start := p.i
	for !p.eof() {
		c := p.s[p.i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("_-.*", c) >= 0 {
			p.i++
			continue
		}
		break
	}
	return p.s[start:p.i], nil
}

func (p *sfParser) bare() (any, error) {
	c := p.peek()
	switch {
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == '"':
		return p.str()
	case c == ':':
		return p.bytes()
	case c == '?':
		p.i++
		switch p.peek() {
		case '1':
			p.i++
			return true, nil
		case '0':
			p.i++
			return false, nil
		}
		return nil, p.fail("bad boolean")
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '*':
		start := p.i
		p.i++
		for !p.eof() && (isTchar(p.s[p.i]) || p.s[p.i] == ':' || p.s[p.i] == '/') {
			p.i++
		}
		return sfToken(p.s[start:p.i]), nil
	}
	return nil, p.fail("unexpected start of item")
}

func (p *sfParser) number() (any, error) {
	start := p.i
	if p.peek() == '-' {
		p.i++
	}
	digits, dot := 0, -1
	for !p.eof() {
		c := p.s[p.i]
		if c >= '0' && c <= '9' {
			digits++
			p.i++
			continue
		}
		if c == '.' && dot < 0 {
			dot = digits
			p.i++
			continue
		}
		break
	}
	text := p.s[start:p.i]
	if digits == 0 {
		return nil, p.fail("number without digits")
	}
	if dot < 0 {
		if digits > 15 {
			return nil, p.fail("integer longer than 15 digits")
		}
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return nil, p.fail(err.Error())
		}
		return n, nil
	}
	if dot > 12 || digits-dot < 1 || digits-dot > 3 {
		return nil, p.fail("bad decimal")
	}
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		return nil, p.fail(err.Error())
	}
	return f, nil
}

func (p *sfParser) str() (string, error) {
	p.i++ // '"'
	var b strings.Builder
	for !p.eof() {
		c := p.s[p.i]
		p.i++
		switch {
		case c == '\\':
			if p.eof() || (p.s[p.i] != '"' && p.s[p.i] != '\\') {
				return "", p.fail("bad escape")
			}
			b.WriteByte(p.s[p.i])
			p.i++
		case c == '"':
			return b.String(), nil
		case c < 0x20 || c > 0x7e:
			return "", p.fail("non-printable character in string")
		default:
			b.WriteByte(c)
		}
	}
	return "", p.fail("unterminated string")
}

func (p *sfParser) bytes() ([]byte, error) {
	p.i++ // ':'
	end := strings.IndexByte(p.s[p.i:], ':')
	if end < 0 {
		return nil, p.fail("unterminated byte sequence")
	}
	b, err := base64.StdEncoding.DecodeString(p.s[p.i : p.i+end])
	if err != nil {
		return nil, p.fail(err.Error())
	}
	p.i += end + 1
	return b, nil
}

// The parser must accept the draft's examples and reject malformed lists;
// otherwise the header tests below would prove nothing.
func TestSFParser(t *testing.T) {
	good := []struct {
		in    string
		items int
		check func(t *testing.T, it []sfItem)
	}{
		{`"burst";q=100;w=60,"daily";q=1000;w=86400`, 2, func(t *testing.T, it []sfItem) {
			if it[1].val != "daily" {
				t.Errorf("second item %v", it[1].val)
			}
			if q, _ := it[1].param("q"); q != int64(1000) {
				t.Errorf("q = %v", q)
			}
		}},
		{`"peruser";q=65535;qu="content-bytes";w=10;pk=:c2VjcmV0:`, 1, func(t *testing.T, it []sfItem) {
			if pk, _ := it[0].param("pk"); string(pk.([]byte)) != "secret" {
				t.Errorf("pk = %v", pk)
			}
			if qu, _ := it[0].param("qu"); qu != "content-bytes" {
				t.Errorf("qu = %v", qu)
			}
		}},
		{`"a\"b\\c";r=0;t=5`, 1, func(t *testing.T, it []sfItem) {
			if it[0].val != `a"b\c` {
				t.Errorf("escaped string = %q", it[0].val)
			}
		}},
		{`tok;x;y=?0, 1.5`, 2, func(t *testing.T, it []sfItem) {
			if it[0].val != sfToken("tok") {
				t.Errorf("token = %v", it[0].val)
			}
			if x, _ := it[0].param("x"); x != true {
				t.Errorf("bare param = %v", x)
			}
			if it[1].val != 1.5 {
				t.Errorf("decimal = %v", it[1].val)
			}
		}},
	}
	for _, tc := range good {
		it, err := parseSFList([]string{tc.in})
		if err != nil {
			t.Errorf("parse %q: %v", tc.in, err)
			continue
		}
		if len(it) != tc.items {
			t.Errorf("parse %q: %d items, want %d", tc.in, len(it), tc.items)
			continue
		}
		tc.check(t, it)
	}
	for _, in := range []string{
		``, `"unterminated`, `"a";q=1,`, `"a";Q=1`, `"a";q=1234567890123456`, `"a" "b"`,
		`"a";pk=:not base64!:`, `"bad\escape"`, "\"ctl\x01\"", `(1 2)`, `"a";q=1.2345`,
	} {
		if it, err := parseSFList([]string{in}); err == nil {
			t.Errorf("parse %q: accepted as %v", in, it)
		}
	}
}
