package bench

import (
	"fmt"
	"strconv"
	"strings"
)

// ServerTimingMetric is one metric of a Server-Timing header field
// (https://www.w3.org/TR/server-timing/): a name, and optionally a
// duration in milliseconds and a description.
type ServerTimingMetric struct {
	Name   string
	Dur    float64 // milliseconds; meaningful when HasDur
	HasDur bool
	Desc   string
}

// ParseServerTiming parses Server-Timing field values (several fields are
// one list, as a comma joins them):
//
//	metric *( OWS ";" OWS param ), where param is name "=" ( token / quoted-string )
//
// Parameters other than dur and desc are ignored; a repeated dur or desc
// keeps the first, as browsers do. A malformed value is an error naming
// the value and what is wrong; no metrics are returned with it.
func ParseServerTiming(values ...string) ([]ServerTimingMetric, error) {
	var out []ServerTimingMetric
	for _, v := range values {
		p := stParser{s: v}
		for {
			p.skipSpace()
			if p.done() {
				break
			}
			if p.peek() == ',' { // empty list elements are allowed
				p.i++
				continue
			}
			m, err := p.metric()
			if err != nil {
				return nil, fmt.Errorf("server-timing %q: %w", v, err)
			}
			out = append(out, m)
			p.skipSpace()
			if p.done() {
				break
			}
			if p.peek() != ',' {
				return nil, fmt.Errorf("server-timing %q: at byte %d: %q after metric %s, want \",\" or \";\"", v, p.i, p.peek(), m.Name)
			}
			p.i++
		}
	}
	return out, nil
}

type stParser struct {
	s string
	i int
}

func (p *stParser) done() bool { return p.i >= len(p.s) }
func (p *stParser) peek() byte { return p.s[p.i] }

func (p *stParser) skipSpace() {
	for !p.done() && (p.peek() == ' ' || p.peek() == '\t') {
		p.i++
	}
}

// isTchar reports whether c may appear in a token (RFC 9110 5.6.2).
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func (p *stParser) token() string {
	start := p.i
	for !p.done() && isTchar(p.peek()) {
		p.i++
	}
	return p.s[start:p.i]
}

// quoted reads a quoted-string, the opening quote at p.i.
func (p *stParser) quoted() (string, error) {
	start := p.i
	p.i++
	var b strings.Builder
	for !p.done() {
		c := p.peek()
		p.i++
		switch {
		case c == '"':
			return b.String(), nil
		case c == '\\':
			if p.done() {
				return "", fmt.Errorf("at byte %d: a quoted string ends in a backslash", p.i)
			}
			b.WriteByte(p.peek())
			p.i++
		case c < ' ' && c != '\t' || c == 0x7f:
			return "", fmt.Errorf("at byte %d: control character %q in a quoted string", p.i-1, c)
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("at byte %d: the quoted string is not closed", start)
}

func (p *stParser) metric() (ServerTimingMetric, error) {
	var m ServerTimingMetric
	if m.Name = p.token(); m.Name == "" {
		return m, fmt.Errorf("at byte %d: %q, want a metric name (a token such as edge)", p.i, p.peek())
	}
	var seenDesc bool
	for {
		p.skipSpace()
		if p.done() || p.peek() != ';' {
			return m, nil
		}
		p.i++
		p.skipSpace()
		name := p.token()
		if name == "" {
			return m, fmt.Errorf("at byte %d: a parameter of %s has no name", p.i, m.Name)
		}
		p.skipSpace()
		var val string
		if !p.done() && p.peek() == '=' {
			p.i++
			p.skipSpace()
			if !p.done() && p.peek() == '"' {
				v, err := p.quoted()
				if err != nil {
					return m, err
				}
				val = v
			} else {
				val = p.token()
			}
		}
		switch strings.ToLower(name) {
		case "dur":
			if m.HasDur {
				continue
			}
			d, err := strconv.ParseFloat(val, 64)
			if err != nil || d < 0 || d != d || d > 1e12 {
				return m, fmt.Errorf("%s;dur=%q: want a duration in milliseconds, such as 0.081", m.Name, val)
			}
			m.Dur, m.HasDur = d, true
		case "desc":
			if !seenDesc {
				m.Desc, seenDesc = val, true
			}
		}
	}
}

// FormatServerTiming writes metrics as one Server-Timing field value, the
// form the PoPs send: name;desc="...";dur=1.234.
func FormatServerTiming(ms []ServerTimingMetric) string {
	var b strings.Builder
	for i, m := range ms {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(m.Name)
		if m.Desc != "" {
			b.WriteString(`;desc="`)
			for i := 0; i < len(m.Desc); i++ {
				if c := m.Desc[i]; c == '"' || c == '\\' {
					b.WriteByte('\\')
				}
				b.WriteByte(m.Desc[i])
			}
			b.WriteByte('"')
		}
		if m.HasDur {
			b.WriteString(";dur=")
			b.WriteString(strconv.FormatFloat(m.Dur, 'f', -1, 64))
		}
	}
	return b.String()
}

// EdgeTiming is what a PoP's Server-Timing says about one response:
//
//	Server-Timing: cdn-pop;desc="pop-eu", cdn-cache;desc="hit", edge;dur=0.081, origin;dur=35.214, rtt;dur=10.400
//
// edge is the time spent in the PoP, origin the time the PoP waited for
// the origin (only when it went upstream), rtt the PoP's measure of the
// round trip to the client (when it has one).
type EdgeTiming struct {
	PoP    string  `json:"pop"`
	Cache  string  `json:"cache"`
	Edgems float64 `json:"edge_ms"`
	// Originms is 0 when the PoP did not go upstream (HasOrigin false).
	Originms  float64 `json:"origin_ms"`
	HasOrigin bool    `json:"has_origin"`
	RTTms     float64 `json:"rtt_ms,omitempty"`
}

// EdgeTimingFrom picks the PoP's metrics out of a parsed Server-Timing;
// ok is false when there is no edge metric (no PoP timed the response).
func EdgeTimingFrom(ms []ServerTimingMetric) (t EdgeTiming, ok bool) {
	for _, m := range ms {
		switch m.Name {
		case "cdn-pop":
			t.PoP = m.Desc
		case "cdn-cache":
			t.Cache = m.Desc
		case "edge":
			t.Edgems, ok = m.Dur, m.HasDur
		case "origin":
			t.Originms, t.HasOrigin = m.Dur, m.HasDur
		case "rtt":
			t.RTTms = m.Dur
		}
	}
	return t, ok
}

// TTFBSplit divides a request's time to first byte by where it went:
// ClientPoPms is everything outside the PoP (DNS, handshakes, the request
// and the response crossing the network between client and PoP), PoPms the
// time in the PoP, PoPOriginms the time the PoP waited for the origin
// (0 on a hit). The three add up to the TTFB.
type TTFBSplit struct {
	ClientPoPms float64 `json:"client_pop_ms"`
	PoPms       float64 `json:"pop_ms"`
	PoPOriginms float64 `json:"pop_origin_ms"`
}

// Split divides ttfb (ms) with the PoP's timing.
func (t EdgeTiming) Split(ttfb float64) TTFBSplit {
	return TTFBSplit{ClientPoPms: ttfb - t.Edgems - t.Originms, PoPms: t.Edgems, PoPOriginms: t.Originms}
}
