// Package fieldenc encodes HTTP header fields for HPACK (RFC 7541) and
// QPACK (RFC 9204) the way the PoP's hand-written HTTP/2 server and its
// HTTP/3 hit path send them: static-table indices where they help, and
// otherwise literals, never Huffman-coded and never added to a dynamic
// table. A block encoded so is valid on every connection, which is what
// lets a stored response's block be encoded once and sent many times;
// plain strings cost a client's decoder a copy where Huffman codes cost a
// table walk per byte.
//
// HPACK and QPACK share the integer encoding with an n-bit prefix and,
// without Huffman coding, the string encoding; the functions for both
// live here.
package fieldenc

import (
	"bytes"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/quic-go/qpack"
	"golang.org/x/net/http/httpguts"
)

// AppendInt appends an integer with an n-bit prefix (RFC 7541 5.1, RFC
// 9204 4.1.1); first holds the bits above the prefix.
func AppendInt(b []byte, first byte, n uint, v uint64) []byte {
	max := uint64(1)<<n - 1
	if v < max {
		return append(b, first|byte(v))
	}
	b = append(b, first|byte(max))
	for v -= max; v >= 128; v >>= 7 {
		b = append(b, byte(v)|0x80)
	}
	return append(b, byte(v))
}

// AppendString appends a string literal without Huffman coding (the H bit
// clear, a 7-bit length prefix).
func AppendString[S string | []byte](b []byte, s S) []byte {
	return append(AppendInt(b, 0, 7, uint64(len(s))), s...)
}

// AppendHPACKField appends a literal field never added to the table, with
// a literal name (RFC 7541 6.2.2). name must be lowercase.
func AppendHPACKField[S string | []byte](b []byte, name string, value S) []byte {
	return AppendString(AppendString(append(b, 0), name), value)
}

// AppendHPACKStatus appends :status: indexed for 200, otherwise a literal
// with the static table's name (index 8).
func AppendHPACKStatus(b []byte, code int) []byte {
	if code == http.StatusOK {
		return append(b, 0x88)
	}
	var num [3]byte
	return AppendString(append(b, 0x08), strconv.AppendInt(num[:0], int64(code), 10))
}

// AppendHPACKFields appends h's fields as AppendHPACKField does, sorted by
// name and lowercased, leaving out connection-specific fields (RFC 9113
// 8.2.2), http.TrailerPrefix keys and anything not valid in a field.
func AppendHPACKFields(b []byte, h http.Header) []byte {
	for _, k := range SortedKeys(h) {
		if strings.HasPrefix(k, http.TrailerPrefix) || ConnectionSpecific(k) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		name := strings.ToLower(k)
		for _, v := range h[k] {
			if httpguts.ValidHeaderFieldValue(v) {
				b = AppendHPACKField(b, name, v)
			}
		}
	}
	return b
}

// ConnectionSpecific reports the fields HTTP/2 and HTTP/3 forbid (RFC 9113
// 8.2.2, RFC 9114 4.2), by canonical name.
func ConnectionSpecific(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// SortedKeys returns h's keys in order.
func SortedKeys(h http.Header) []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// QPACK static table indices (RFC 9204 appendix A) of fields sent per
// request.
const (
	QPACKAge  = 2
	QPACKDate = 6
)

// AppendQPACKField appends the field line for name: value: an indexed
// line when the static table holds the whole field, a literal with the
// table's name when it holds the name, else a literal name. qpack's
// encoder chooses the static entry; only its Huffman-coded strings are
// replaced.
func AppendQPACKField(b []byte, name, value string) []byte {
	var one bytes.Buffer
	qpack.NewEncoder(&one).WriteField(qpack.HeaderField{Name: name, Value: value})
	line := one.Bytes()[2:] // after the two-byte section prefix
	switch {
	case line[0]&0xc0 == 0xc0: // 11xxxxxx: indexed, static table
		return append(b, line...)
	case line[0]&0xd0 == 0x50: // 01N1xxxx: literal with a static name
		idx := uint64(line[0] & 0x0f)
		if idx == 0x0f { // RFC 9204 4.1.1: the index continues
			for i, m := 1, uint(0); i < len(line); i, m = i+1, m+7 {
				idx += uint64(line[i]&0x7f) << m
				if line[i]&0x80 == 0 {
					break
				}
			}
		}
		return AppendString(AppendInt(b, 0x50, 4, idx), value)
	default:
		return AppendQPACKLiteral(b, name, []byte(value))
	}
}

// AppendQPACKStatic appends a literal field line whose name is static
// table entry idx (< 16), with value v.
func AppendQPACKStatic(b []byte, idx byte, v []byte) []byte {
	b = append(b, 0x50|idx) // 01NT: may be indexed, static table
	return AppendString(b, v)
}

// AppendQPACKLiteral appends a literal field line with a literal
// (lowercase) name and value.
func AppendQPACKLiteral(b []byte, name string, v []byte) []byte {
	b = AppendInt(b, 0x20, 3, uint64(len(name))) // 001NH
	b = append(b, name...)
	return AppendString(b, v)
}
