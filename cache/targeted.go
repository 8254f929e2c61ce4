package cache

import (
	"strconv"
	"strings"
)

// parseTargeted parses a targeted cache-control field such as
// CDN-Cache-Control (RFC 9213): a Structured Field Dictionary (RFC 8941).
// It reports ok=false when the field is empty or not a valid dictionary;
// the cache then falls back to Cache-Control. Directives with a value of the
// wrong type are ignored; parameters are ignored.
func parseTargeted(lines []string) (d Directives, ok bool) {
	d = emptyDirectives()
	s := strings.Join(lines, ",")
	p := sfParser{s: s}
	p.skipSP()
	if p.done() {
		return d, false
	}
	for {
		key, okKey := p.key()
		if !okKey {
			return d, false
		}
		isInt, n, okVal := true, int64(0), true
		boolTrue := true
		if p.peek() == '=' {
			p.i++
			isInt, n, boolTrue, okVal = p.bareItem()
			if !okVal {
				return d, false
			}
		} else {
			isInt = false
		}
		if !p.params() {
			return d, false
		}
		d.applyTargeted(key, isInt, n, boolTrue)
		p.skipOWS()
		if p.done() {
			return d, true
		}
		if p.peek() != ',' {
			return d, false
		}
		p.i++
		p.skipOWS()
		if p.done() {
			return d, false // trailing comma
		}
	}
}

func (d *Directives) applyTargeted(key string, isInt bool, n int64, boolTrue bool) {
	setInt := func(dst *int64) {
		if isInt && n >= 0 {
			*dst = min(n, maxDelta)
		}
	}
	flag := !isInt && boolTrue
	switch key {
	case "max-age":
		setInt(&d.MaxAge)
	case "s-maxage":
		setInt(&d.SMaxAge)
	case "stale-while-revalidate":
		setInt(&d.StaleWhileRevalidate)
	case "stale-if-error":
		setInt(&d.StaleIfError)
	case "no-store":
		d.NoStore = d.NoStore || flag
	case "no-cache":
		d.NoCache = d.NoCache || flag
	case "private":
		d.Private = d.Private || flag
	case "public":
		d.Public = d.Public || flag
	case "must-revalidate":
		d.MustRevalidate = d.MustRevalidate || flag
	case "proxy-revalidate":
		d.ProxyRevalidate = d.ProxyRevalidate || flag
	case "immutable":
		d.Immutable = d.Immutable || flag
	}
}

// sfParser is the part of an RFC 8941 parser a Dictionary of bare items
// needs: keys, integers, decimals, strings, tokens, byte sequences,
// booleans, inner lists and parameters.
type sfParser struct {
	s string
	i int
}

func (p *sfParser) done() bool { return p.i >= len(p.s) }

func (p *sfParser) peek() byte {
	if p.done() {
		return 0
	}
	return p.s[p.i]
}

func (p *sfParser) skipSP() {
	for !p.done() && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *sfParser) skipOWS() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }

func (p *sfParser) key() (string, bool) {
	start := p.i
	if c := p.peek(); !isLCAlpha(c) && c != '*' {
		return "", false
	}
	for !p.done() {
		c := p.s[p.i]
		if !isLCAlpha(c) && !isDigit(c) && c != '_' && c != '-' && c != '.' && c != '*' {
			break
		}
		p.i++
	}
	return p.s[start:p.i], true
}

// bareItem parses a value; it reports whether it was an integer (and its
// value) and, for booleans, whether it was ?1.
func (p *sfParser) bareItem() (isInt bool, n int64, boolTrue bool, ok bool) {
	c := p.peek()
	switch {
	case c == '-' || isDigit(c):
		start := p.i
		if c == '-' {
			p.i++
		}
		digits, dot := 0, false
		for !p.done() && (isDigit(p.s[p.i]) || (p.s[p.i] == '.' && !dot)) {
			if p.s[p.i] == '.' {
				dot = true
			} else {
				digits++
			}
			p.i++
		}
		if digits == 0 || (dot && p.s[p.i-1] == '.') || (!dot && digits > 15) || (dot && digits > 15) {
			return false, 0, false, false
		}
		if dot {
			return false, 0, false, true
		}
		v, err := strconv.ParseInt(p.s[start:p.i], 10, 64)
		return err == nil, v, false, err == nil
	case c == '"':
		p.i++
		for !p.done() {
			switch ch := p.s[p.i]; {
			case ch == '\\':
				if p.i+1 >= len(p.s) || (p.s[p.i+1] != '"' && p.s[p.i+1] != '\\') {
					return false, 0, false, false
				}
				p.i += 2
			case ch == '"':
				p.i++
				return false, 0, false, true
			case ch < 0x20 || ch > 0x7e:
				return false, 0, false, false
			default:
				p.i++
			}
		}
		return false, 0, false, false
	case c == '?':
		if p.i+1 < len(p.s) && (p.s[p.i+1] == '0' || p.s[p.i+1] == '1') {
			t := p.s[p.i+1] == '1'
			p.i += 2
			return false, 0, t, true
		}
		return false, 0, false, false
	case c == ':':
		end := strings.IndexByte(p.s[p.i+1:], ':')
		if end < 0 {
			return false, 0, false, false
		}
		p.i += end + 2
		return false, 0, false, true
	case c == '(':
		p.i++
		for {
			p.skipSP()
			if p.peek() == ')' {
				p.i++
				return false, 0, false, p.params()
			}
			if _, _, _, ok := p.bareItem(); !ok || !p.params() {
				return false, 0, false, false
			}
			if c := p.peek(); c != ' ' && c != ')' {
				return false, 0, false, false
			}
		}
	case isLCAlpha(c) || (c >= 'A' && c <= 'Z') || c == '*':
		for !p.done() && strings.IndexByte("!#$%&'*+-.^_`|~:/", p.s[p.i]) >= 0 || (!p.done() && (isDigit(p.s[p.i]) || isLCAlpha(p.s[p.i]) || (p.s[p.i] >= 'A' && p.s[p.i] <= 'Z'))) {
			p.i++
		}
		return false, 0, false, true
	}
	return false, 0, false, false
}

// params parses ;key[=value] parameters and ignores them.
func (p *sfParser) params() bool {
	for p.peek() == ';' {
		p.i++
		p.skipSP()
		if _, ok := p.key(); !ok {
			return false
		}
		if p.peek() == '=' {
			p.i++
			if _, _, _, ok := p.bareItem(); !ok {
				return false
			}
		}
	}
	return true
}
