package cache

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Accept-Encoding and Accept-Language in the secondary key. Browsers and
// libraries write the same preferences in many ways ("gzip, br" and
// "br;q=1.0, GZIP"; "de, en;q=0.5" and "en;q=0.50,DE"), so when a response
// varies on either, the cache keys on a canonical form of the field: its
// members lowercased, without whitespace, q-values written shortest with
// q=1 left out, and members of weight 0 dropped where dropping them means
// the same. Order is canonical too: Accept-Encoding's members are sorted
// (their order carries no meaning), Accept-Language's are ordered by
// weight, and those of equal weight keep the order they were sent in (a
// language priority list may rank by position, RFC 4647 2.3). A field
// that does not parse as its grammar, or has more than maxAcceptMembers
// members, is keyed as secondaryKey normalises any field. Only the key
// changes: the origin gets the request's fields as they were sent.

// maxAcceptMembers bounds the work of canonicalising one field; real
// fields have a handful of members.
const maxAcceptMembers = 32

// varyKey is secondaryKey of request fields h, with Accept-Encoding and
// Accept-Language in canonical form when names lists them.
func varyKey(primary string, names []string, h http.Header) string {
	return secondaryKey(primary, names, canonicalVaryFields(names, h))
}

// canonicalVaryFields returns h, or a copy of the fields names lists with
// Accept-Encoding and Accept-Language in canonical form.
func canonicalVaryFields(names []string, h http.Header) http.Header {
	var out http.Header
	for _, n := range names {
		encoding := n == "Accept-Encoding"
		if !encoding && n != "Accept-Language" {
			continue
		}
		lines, ok := h[n]
		if !ok {
			continue // absent is not empty
		}
		v, ok := canonicalAccept(lines, encoding)
		if !ok {
			continue
		}
		if out == nil {
			out = make(http.Header, len(names))
			for _, m := range names {
				if vs, ok := h[m]; ok {
					out[m] = vs
				}
			}
		}
		out[n] = []string{v}
	}
	if out == nil {
		return h
	}
	return out
}

// acceptMember is one member of an Accept-Encoding or Accept-Language
// list: a coding or language range, lowercased, and its weight in
// thousandths.
type acceptMember struct {
	value string
	q     int
}

// canonicalAccept is the canonical form of an Accept-Encoding (encoding)
// or Accept-Language field with lines, or ok=false when the field is not
// a list of tokens each with at most a weight (RFC 9110 12.4.2), names a
// member twice, or has more than maxAcceptMembers members.
func canonicalAccept(lines []string, encoding bool) (string, bool) {
	var members []acceptMember
	for _, l := range lines {
		for m := range strings.SplitSeq(l, ",") {
			m = strings.Trim(m, " \t")
			if m == "" {
				continue // empty list elements do not count (RFC 9110 5.6.1)
			}
			if len(members) == maxAcceptMembers {
				return "", false
			}
			am, ok := parseAcceptMember(m)
			if !ok || slices.ContainsFunc(members, func(o acceptMember) bool { return o.value == am.value }) {
				return "", false
			}
			members = append(members, am)
		}
	}
	kept := members[:0:0]
	for _, m := range members {
		if m.q > 0 || !droppable(m.value, members, encoding) {
			kept = append(kept, m)
		}
	}
	if encoding {
		slices.SortFunc(kept, func(a, b acceptMember) int { return strings.Compare(a.value, b.value) })
	} else {
		slices.SortStableFunc(kept, func(a, b acceptMember) int { return b.q - a.q })
	}
	var b strings.Builder
	for i, m := range kept {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(m.value)
		if m.q < 1000 {
			b.WriteString(";q=")
			b.WriteString(formatQ(m.q))
		}
	}
	return b.String(), true
}

// droppable reports whether a member of weight 0 with value v says
// nothing beyond what leaving it out says, given all the members. For
// Accept-Encoding, a coding not listed is unacceptable already unless
// "*" accepts it, and identity is acceptable unless excluded, so
// "identity;q=0" and "*;q=0" stay, and so does any member of weight 0
// beside a "*" of positive weight. For Accept-Language, a range of weight
// 0 stays if a range of positive weight overlaps it ("*", a prefix, or
// one it is a prefix of), and so does "*;q=0".
func droppable(v string, members []acceptMember, encoding bool) bool {
	if v == "*" || encoding && v == "identity" {
		return false
	}
	for _, o := range members {
		if o.q == 0 {
			continue
		}
		if o.value == "*" || !encoding && (strings.HasPrefix(v, o.value+"-") || strings.HasPrefix(o.value, v+"-")) {
			return false
		}
	}
	return true
}

// parseAcceptMember parses token [ OWS ";" OWS ( "q" / "Q" ) "=" qvalue ].
func parseAcceptMember(m string) (acceptMember, bool) {
	value, weight, hasWeight := strings.Cut(m, ";")
	value = strings.TrimRight(value, " \t")
	if !isToken(value) {
		return acceptMember{}, false
	}
	am := acceptMember{value: strings.ToLower(value), q: 1000}
	if !hasWeight {
		return am, true
	}
	weight = strings.TrimLeft(weight, " \t")
	if len(weight) < 2 || weight[0] != 'q' && weight[0] != 'Q' || weight[1] != '=' {
		return acceptMember{}, false
	}
	q, ok := parseQ(weight[2:])
	am.q = q
	return am, ok
}

// parseQ parses a qvalue (RFC 9110 12.4.2) into thousandths:
// "0" [ "." 0*3DIGIT ] or "1" [ "." 0*3"0" ].
func parseQ(s string) (int, bool) {
	if s == "" || s[0] != '0' && s[0] != '1' || len(s) > 5 || len(s) > 1 && s[1] != '.' {
		return 0, false
	}
	q := int(s[0]-'0') * 1000
	for i, scale := 2, 100; i < len(s); i, scale = i+1, scale/10 {
		d := s[i]
		if d < '0' || d > '9' || s[0] == '1' && d != '0' {
			return 0, false
		}
		q += int(d-'0') * scale
	}
	return q, true
}

// formatQ writes thousandths as the shortest qvalue.
func formatQ(q int) string {
	if q == 0 {
		return "0"
	}
	s := strconv.Itoa(1000 + q)[1:] // three digits
	return "0." + strings.TrimRight(s, "0")
}

// isToken reports whether s is a non-empty token (RFC 9110 5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
