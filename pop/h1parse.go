package pop

import (
	"bufio"
	"bytes"
	"unsafe"

	"github.com/edgecdn/cdn/cache"
)

// peekHead returns the request head (through the empty line) from the
// read buffer without consuming it, reading more as needed. It returns nil
// and no error when the head is not for the fast loop: longer than the
// buffer, or lines ending in a bare LF.
func peekHead(br *bufio.Reader) ([]byte, error) {
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf, crlfcrlf); i >= 0 {
			return buf[:i+4], nil
		}
		if i := bytes.IndexByte(buf, '\n'); i >= 0 && (i == 0 || buf[i-1] != '\r') {
			return nil, nil
		}
		if len(buf) >= br.Size() {
			return nil, nil
		}
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return nil, err
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// fastRequest is what the fast loop needs from a request head. Its slices
// point into the read buffer.
type fastRequest struct {
	head   bool // HEAD rather than GET
	target []byte
	host   []byte
	close  bool // Connection: close
	// acceptEncoding is the one Accept-Encoding field's value, or nil:
	// it picks the representation of a response compressed at the edge.
	acceptEncoding []byte
}

// parse accepts only plain requests (see hit.go): "GET" or "HEAD", a
// target cache.PlainTarget accepts, HTTP/1.1, one Host that
// cache.PlainHost accepts, fields with token names and clean values,
// "Connection: close" or "keep-alive" at most, and no field that
// cache.PlainRefuses names. Anything else is left to net/http, so the fast
// loop never decides a case net/http would decide differently
// (FuzzFastParse checks this against http.ReadRequest).
func (q *fastRequest) parse(head []byte) bool {
	line, rest, _ := bytes.Cut(head, crlf)
	switch {
	case bytes.HasPrefix(line, []byte("GET /")):
		line = line[4:]
	case bytes.HasPrefix(line, []byte("HEAD /")):
		q.head = true
		line = line[5:]
	default:
		return false
	}
	target, version, ok := bytes.Cut(line, []byte(" "))
	if !ok || string(version) != "HTTP/1.1" || !cache.PlainTarget(view(target)) {
		return false
	}
	q.target = target
	fields, encodings := 0, 0
	for len(rest) > 2 { // the head ends with the empty line's CRLF
		var l []byte
		l, rest, _ = bytes.Cut(rest, crlf)
		if fields++; fields > 64 {
			return false
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || !validToken(name) {
			return false
		}
		value = bytes.Trim(value, " \t")
		if !validValue(value) {
			return false
		}
		switch {
		case asciiEqualFold(name, "host"):
			if q.host != nil || !cache.PlainHost(view(value)) {
				return false
			}
			q.host = value
		case asciiEqualFold(name, "accept-encoding"):
			if encodings++; encodings > 1 {
				return false // two lines (an empty one too): net/http joins them
			}
			q.acceptEncoding = value[:len(value):len(value)]
		case asciiEqualFold(name, "connection"):
			switch {
			case asciiEqualFold(value, "close"):
				q.close = true
			case asciiEqualFold(value, "keep-alive"):
			default:
				return false
			}
		case cache.PlainRefuses(view(name)):
			return false
		}
	}
	return len(q.host) > 0
}

var crlf = []byte("\r\n")

func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// validToken reports whether b is an HTTP token (RFC 9110 5.6.2): a
// field name, a method, a CDN-Loop cdn-id.
func validToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		default:
			switch c {
			case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
			default:
				return false
			}
		}
	}
	return true
}

func validValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// view is b as a string, without a copy: valid while b is not changed.
func view(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
