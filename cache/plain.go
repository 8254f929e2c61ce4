package cache

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file owns what makes a request "plain": one that a stored 200 answers
// as it is, whole, with nothing of its own to evaluate. The PoP's fast
// paths (HTTP/1.1, HTTP/2 and HTTP/3) answer only plain requests, through
// LookupFast; everything else goes through ServeHTTP.

// PlainRefuses reports whether a request field named name (in any case)
// keeps a GET or HEAD from being plain: a precondition (If-*) or Range
// changes what is sent; Authorization, Cache-Control and Pragma change
// whether the cache may answer; Content-Length, Transfer-Encoding, Expect
// and Trailer announce a body; Connection, Keep-Alive, Proxy-Connection,
// Upgrade, TE and HTTP2-Settings are about the connection, which a fast
// path leaves to the full server (HTTP/1.1's fast loop reads "Connection:
// close" and "keep-alive" itself before asking).
func PlainRefuses(name string) bool {
	if len(name) > 3 && strings.EqualFold(name[:3], "if-") {
		return true
	}
	switch len(name) {
	case 2:
		return strings.EqualFold(name, "te")
	case 5:
		return strings.EqualFold(name, "range")
	case 6:
		return strings.EqualFold(name, "pragma") || strings.EqualFold(name, "expect")
	case 7:
		return strings.EqualFold(name, "upgrade") || strings.EqualFold(name, "trailer")
	case 10:
		return strings.EqualFold(name, "connection") || strings.EqualFold(name, "keep-alive")
	case 13:
		return strings.EqualFold(name, "authorization") || strings.EqualFold(name, "cache-control")
	case 14:
		return strings.EqualFold(name, "content-length") || strings.EqualFold(name, "http2-settings")
	case 16:
		return strings.EqualFold(name, "proxy-connection")
	case 17:
		return strings.EqualFold(name, "transfer-encoding")
	}
	return false
}

// wholeBodyRefusers are the fields after which a stored 200 is not simply
// sent whole: Range and the preconditions (RFC 9110 13.1, 14.2). If-Range
// without Range changes nothing.
var wholeBodyRefusers = [...]string{"Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since"}

// wantsWholeBody reports whether r asks for a stored 200 whole and
// unconditionally: no Range and no precondition.
func wantsWholeBody(r *http.Request) bool {
	for _, f := range wholeBodyRefusers {
		if _, ok := r.Header[f]; ok {
			return false
		}
	}
	return true
}

// PlainTarget reports whether an origin-form request target is one the
// fast paths may key as sent: "/" then characters that net/url keeps as
// they are (unreserved, sub-delims, ":", "@", "/" and %XX), then
// optionally "?" and visible ASCII other than "#". AppendKey then builds
// the key ServeHTTP would.
func PlainTarget(t string) bool {
	if len(t) == 0 || t[0] != '/' {
		return false
	}
	inQuery := false
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case inQuery:
			if c <= ' ' || c >= 0x7f || c == '#' {
				return false
			}
		case c == '?':
			inQuery = true
		case c == '%':
			if i+2 >= len(t) || !isHex(t[i+1]) || !isHex(t[i+2]) {
				return false
			}
			i += 2
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		default:
			switch c {
			case '-', '.', '_', '~', '!', '$', '&', '\'', '(', ')', '*', '+', ',', ';', '=', ':', '@', '/':
			default:
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// PlainHost reports whether a Host value is a name, an IPv4 address or a
// bracketed IPv6 address, with an optional port: ASCII letters, digits and
// ".-:[]" only.
func PlainHost(h string) bool {
	if len(h) == 0 {
		return false
	}
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}

// AppendAge appends d as an Age value: whole seconds, capped at 2^31 (RFC
// 9111 1.2.2).
func AppendAge(b []byte, d time.Duration) []byte {
	return strconv.AppendInt(b, min(int64(d/time.Second), maxDelta), 10)
}

// AppendHitStatus appends the Cache-Status value (RFC 9211) of a fresh
// hit served by the cache called name with ttl of freshness left:
// "name; hit; ttl=N". (A stored response carries no Cache-Status of its
// own: storing drops the upstream's.)
func AppendHitStatus(b []byte, name string, ttl time.Duration) []byte {
	return appendHit(append(append(b, name...), "; "...), ttl)
}

// appendHit appends "hit; ttl=N", the status of a fresh hit.
func appendHit(b []byte, ttl time.Duration) []byte {
	return AppendAge(append(b, "hit; ttl="...), ttl)
}
