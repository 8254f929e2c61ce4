package fieldenc

import (
	"bytes"
	"io"
	"testing"

	"github.com/quic-go/qpack"
)

// TestQPACKFieldsArePlain checks the stored blocks' field lines: each
// decodes to its field (static-table references included, indices past
// the 4-bit prefix among them) and carries its value as plain text, not
// Huffman-coded.
func TestQPACKFieldsArePlain(t *testing.T) {
	fields := []qpack.HeaderField{
		{Name: ":status", Value: "200"},                                 // indexed (25)
		{Name: "accept-ranges", Value: "bytes"},                         // indexed (32)
		{Name: "age", Value: "17"},                                      // static name (2)
		{Name: "content-type", Value: "application/octet-stream"},       // static name (44)
		{Name: "cache-control", Value: "public, max-age=3600"},          // static name (36)
		{Name: "alt-svc", Value: `h3=":443"; ma=86400`},                 // static name (83)
		{Name: "x-served-by", Value: "pop-eu"},                          // literal name
		{Name: "last-modified", Value: "Thu, 01 Jan 2026 00:00:00 GMT"}, // static name (10)
	}
	b := []byte{0, 0}
	for _, f := range fields {
		before := len(b)
		b = AppendQPACKField(b, f.Name, f.Value)
		if line := b[before:]; len(line) > 2 && !bytes.Contains(line, []byte(f.Value)) {
			t.Errorf("%s: the line %x does not hold %q as plain text", f.Name, line, f.Value)
		}
	}
	var got []qpack.HeaderField
	next := qpack.NewDecoder().Decode(b)
	for {
		f, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("decoding %x: %v", b, err)
		}
		got = append(got, f)
	}
	if len(got) != len(fields) {
		t.Fatalf("decoded %d fields, want %d: %v", len(got), len(fields), got)
	}
	for i, f := range fields {
		if got[i] != f {
			t.Errorf("field %d = %v, want %v", i, got[i], f)
		}
	}
}
