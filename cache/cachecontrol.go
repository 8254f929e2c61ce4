package cache

import (
	"strconv"
	"strings"
)

// maxDelta is what a delta-seconds value too large to represent counts as
// (RFC 9111 1.2.2: 2^31).
const maxDelta = 1 << 31

// Directives are the parsed Cache-Control (or CDN-Cache-Control) directives
// of a request or response. Durations are seconds; -1 means absent.
type Directives struct {
	NoStore, NoCache, Private, Public          bool
	MustRevalidate, ProxyRevalidate, Immutable bool
	MustUnderstand, NoTransform, OnlyIfCached  bool
	MaxStaleAny                                bool // with MaxStale: a request's max-stale without a value

	// Invalid is set when a freshness directive (max-age, s-maxage) has a
	// malformed value or appears twice with different values: RFC 9111
	// 4.2.1 then has a cache treat the response as stale.
	Invalid bool

	// NoCacheFields and PrivateFields are the field names of the qualified
	// forms no-cache="a, b" and private="a"; an unqualified directive leaves
	// them nil.
	NoCacheFields, PrivateFields []string

	MaxAge, SMaxAge, MinFresh          int64
	MaxStale                           int64 // with MaxStaleAny, a request's max-stale without a value
	StaleWhileRevalidate, StaleIfError int64
}

// Directives' booleans come first, together: every stored response holds
// one (in its policy), and a field's padding would be its cost.

func emptyDirectives() Directives {
	return Directives{MaxAge: -1, SMaxAge: -1, MinFresh: -1, MaxStale: -1, StaleWhileRevalidate: -1, StaleIfError: -1}
}

// ParseCacheControl parses the field lines of a Cache-Control-style header.
// Unknown directives are ignored; names are case-insensitive; values may be
// tokens or quoted strings.
func ParseCacheControl(lines []string) Directives {
	d := emptyDirectives()
	for _, line := range lines {
		for rest := line; rest != ""; {
			var name, value string
			var quoted bool
			name, value, quoted, rest = nextDirective(rest)
			if name == "" {
				continue
			}
			d.apply(strings.ToLower(name), value, quoted)
		}
	}
	return d
}

// nextDirective splits the first directive off s.
func nextDirective(s string) (name, value string, quoted bool, rest string) {
	s = strings.TrimLeft(s, " \t,")
	i := 0
	for i < len(s) && s[i] != '=' && s[i] != ',' {
		i++
	}
	name = strings.TrimSpace(s[:i])
	if i == len(s) || s[i] == ',' {
		return name, "", false, s[i:]
	}
	s = strings.TrimLeft(s[i+1:], " \t")
	if strings.HasPrefix(s, `"`) {
		var b strings.Builder
		j := 1
		for ; j < len(s) && s[j] != '"'; j++ {
			if s[j] == '\\' && j+1 < len(s) {
				j++
			}
			b.WriteByte(s[j])
		}
		if j >= len(s) {
			// An unterminated quoted-string is malformed: a value that
			// cannot parse as delta-seconds.
			return name, "\"", true, ""
		}
		j++ // closing quote
		rest = s[j:]
		if k := strings.IndexByte(rest, ','); k >= 0 {
			rest = rest[k:]
		} else {
			rest = ""
		}
		return name, b.String(), true, rest
	}
	j := strings.IndexByte(s, ',')
	if j < 0 {
		j = len(s)
	}
	return name, strings.TrimSpace(s[:j]), false, s[j:]
}

func (d *Directives) apply(name, value string, quoted bool) {
	switch name {
	case "no-store":
		d.NoStore = true
	case "no-cache":
		if value == "" {
			d.NoCache = true
			d.NoCacheFields = nil
		} else if !d.NoCache || d.NoCacheFields != nil {
			d.NoCacheFields = append(d.NoCacheFields, fieldList(value)...)
			d.NoCache = true
		}
	case "private":
		if value == "" {
			d.Private = true
			d.PrivateFields = nil
		} else if !d.Private || d.PrivateFields != nil {
			d.PrivateFields = append(d.PrivateFields, fieldList(value)...)
			d.Private = true
		}
	case "public":
		d.Public = true
	case "must-revalidate":
		d.MustRevalidate = true
	case "proxy-revalidate":
		d.ProxyRevalidate = true
	case "immutable":
		d.Immutable = true
	case "must-understand":
		d.MustUnderstand = true
	case "no-transform":
		d.NoTransform = true
	case "only-if-cached":
		d.OnlyIfCached = true
	case "max-age":
		d.setSeconds(&d.MaxAge, value, quoted, true)
	case "s-maxage":
		d.setSeconds(&d.SMaxAge, value, quoted, true)
	case "min-fresh":
		d.setSeconds(&d.MinFresh, value, quoted, false)
	case "max-stale":
		if value == "" {
			d.MaxStaleAny = true
			return
		}
		d.setSeconds(&d.MaxStale, value, quoted, false)
	case "stale-while-revalidate":
		d.setSeconds(&d.StaleWhileRevalidate, value, quoted, false)
	case "stale-if-error":
		d.setSeconds(&d.StaleIfError, value, quoted, false)
	}
}

// setSeconds stores a delta-seconds value. The first occurrence wins; a
// malformed or conflicting freshness directive marks d Invalid.
func (d *Directives) setSeconds(dst *int64, value string, quoted, freshness bool) {
	v, ok := parseDelta(value)
	if !ok {
		if freshness {
			d.Invalid = true
		}
		return
	}
	if *dst >= 0 {
		if *dst != v && freshness {
			d.Invalid = true
		}
		return
	}
	_ = quoted // RFC 9111 5.2: senders use the token form, recipients accept the quoted one
	*dst = v
}

// parseDelta parses delta-seconds (1*DIGIT); values that overflow count as 2^31.
func parseDelta(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v > maxDelta {
		return maxDelta, true
	}
	return v, true
}

func fieldList(v string) []string {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, strings.ToLower(f))
		}
	}
	return out
}
