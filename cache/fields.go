package cache

import (
	"cmp"
	"iter"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// Fields are a stored response's header fields, kept compact: its field
// lines as name, value pairs in one slice, sorted by name (the lines of a
// name in their order), every value (and every name but the common ones,
// commonNames) a part of one string. An http.Header of seven fields
// holds some 650 bytes on the heap (a map of 400, a slice for each
// field's values, a string for each value); the same fields here hold
// some 340 (Fields.bytes). A Fields is immutable: share it, never change
// what its methods return.
type Fields struct {
	kv []string // name, value, name, value...
}

// fieldReader is what reading a response's fields takes: an http.Header
// (a response being stored) or a *Fields (a stored one).
type fieldReader interface {
	Get(name string) string
	Values(name string) []string
}

// FieldsOf copies h's fields into a Fields.
func FieldsOf(h http.Header) Fields {
	var pairs [][2]string
	for k, vs := range h {
		for _, v := range vs {
			pairs = append(pairs, [2]string{k, v})
		}
	}
	// Map order is random; a name's lines are together, in order.
	slices.SortStableFunc(pairs, func(a, b [2]string) int { return cmp.Compare(a[0], b[0]) })
	return fieldsOf(pairs)
}

// fieldsOf makes a Fields of name, value pairs sorted by name.
func fieldsOf(pairs [][2]string) Fields {
	if len(pairs) == 0 {
		return Fields{}
	}
	size := 0
	for _, p := range pairs {
		size += len(p[1])
		if _, ok := commonNames[p[0]]; !ok {
			size += len(p[0])
		}
	}
	var b strings.Builder
	b.Grow(size)
	for _, p := range pairs {
		if _, ok := commonNames[p[0]]; !ok {
			b.WriteString(p[0])
		}
		b.WriteString(p[1])
	}
	text := b.String() // one allocation, which the pairs are cut from
	kv := make([]string, 2*len(pairs))
	off := 0
	cut := func(n int) string { s := text[off : off+n]; off += n; return s }
	for i, p := range pairs {
		if name, ok := commonNames[p[0]]; ok {
			kv[2*i] = name // static: no heap
		} else {
			kv[2*i] = cut(len(p[0]))
		}
		kv[2*i+1] = cut(len(p[1]))
	}
	return Fields{kv: kv}
}

// bytes is the heap f holds: its slice and its text, each rounded up to
// its allocation.
func (f *Fields) bytes() int64 {
	size := 0
	for i := 0; i < len(f.kv); i += 2 {
		size += len(f.kv[i+1])
		if _, ok := commonNames[f.kv[i]]; !ok {
			size += len(f.kv[i])
		}
	}
	return allocSize(int64(cap(f.kv))*16) + allocSize(int64(size))
}

// commonNames are field names responses often carry, canonical: a Fields
// refers to these strings (in the program's data, not on the heap)
// instead of copying them.
var commonNames = func() map[string]string {
	m := map[string]string{}
	for _, n := range []string{
		"Accept-Ranges", "Access-Control-Allow-Credentials", "Access-Control-Allow-Headers",
		"Access-Control-Allow-Methods", "Access-Control-Allow-Origin", "Access-Control-Expose-Headers",
		"Access-Control-Max-Age", "Age", "Alt-Svc", "Cache-Control", "Cache-Tag", "Cdn-Cache-Control",
		"Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
		"Content-Location", "Content-Security-Policy", "Content-Type", "Cross-Origin-Resource-Policy",
		"Date", "Etag", "Expires", "Last-Modified", "Link", "Location", "Permissions-Policy", "Pragma",
		"Referrer-Policy", "Server", "Set-Cookie", "Strict-Transport-Security", "Surrogate-Control",
		"Surrogate-Key", "Timing-Allow-Origin", "Vary", "Via", "X-Content-Type-Options",
		"X-Frame-Options", "X-Powered-By", "X-Xss-Protection",
	} {
		m[n] = n
	}
	return m
}()

// find is the index in kv of name's first line, or -1. Names are
// canonical (as in an http.Header); name is matched exactly, else
// without regard to case, as http.Header.Get canonicalises it.
func (f *Fields) find(name string) int {
	n := len(f.kv) / 2
	lo, hi := 0, n
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if f.kv[2*m] < name {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < n && f.kv[2*lo] == name {
		return 2 * lo
	}
	for i := 0; i < len(f.kv); i += 2 {
		if strings.EqualFold(f.kv[i], name) {
			return i
		}
	}
	return -1
}

// lines is the index of name's first line and the number of its lines.
func (f *Fields) lines(name string) (int, int) {
	i := f.find(name)
	if i < 0 {
		return 0, 0
	}
	j := i + 2
	for j < len(f.kv) && f.kv[j] == f.kv[i] {
		j += 2
	}
	return i, (j - i) / 2
}

// Get is the first value of name, or "" (as http.Header.Get).
func (f *Fields) Get(name string) string {
	if i := f.find(name); i >= 0 {
		return f.kv[i+1]
	}
	return ""
}

// Has reports whether name has a line.
func (f *Fields) Has(name string) bool { return f.find(name) >= 0 }

// Values are name's values (as http.Header.Values): read-only. A field
// of one line, the usual case, costs no allocation.
func (f *Fields) Values(name string) []string {
	i, n := f.lines(name)
	return f.values(i, n)
}

func (f *Fields) values(i, n int) []string {
	switch n {
	case 0:
		return nil
	case 1:
		return f.kv[i+1 : i+2 : i+2]
	}
	vs := make([]string, n)
	for k := range vs {
		vs[k] = f.kv[i+2*k+1]
	}
	return vs
}

// All yields each field's name and values (read-only), in name order. A
// field of one line costs no allocation.
func (f *Fields) All() iter.Seq2[string, []string] {
	return func(yield func(string, []string) bool) {
		for i := 0; i < len(f.kv); {
			n := 1
			for i+2*n < len(f.kv) && f.kv[i+2*n] == f.kv[i] {
				n++
			}
			if !yield(f.kv[i], f.values(i, n)) {
				return
			}
			i += 2 * n
		}
	}
}

// Len is the number of fields (names).
func (f *Fields) Len() int {
	n := 0
	for i := 0; i < len(f.kv); i += 2 {
		if i == 0 || f.kv[i] != f.kv[i-2] {
			n++
		}
	}
	return n
}

// Header is the fields as a new http.Header, for a caller to change
// (its values in one slice, as http.Header.Clone makes them).
func (f *Fields) Header() http.Header {
	h := make(http.Header, f.Len())
	vals := make([]string, len(f.kv)/2)
	for i := range vals {
		vals[i] = f.kv[2*i+1]
	}
	for i := 0; i < len(f.kv); {
		n := 1
		for i+2*n < len(f.kv) && f.kv[i+2*n] == f.kv[i] {
			n++
		}
		h[f.kv[i]] = vals[i/2 : i/2+n : i/2+n]
		i += 2 * n
	}
	return h
}

// with is f with name's lines replaced by values, or removed when there
// are none (as http.Header.Set and Del): a new Fields, for an entry not
// yet shared.
func (f *Fields) with(name string, values ...string) Fields {
	name = textproto.CanonicalMIMEHeaderKey(name)
	pairs := make([][2]string, 0, len(f.kv)/2+len(values))
	added := false
	add := func() {
		for _, v := range values {
			pairs = append(pairs, [2]string{name, v})
		}
		added = true
	}
	for i := 0; i < len(f.kv); i += 2 {
		switch k := f.kv[i]; {
		case k == name:
			continue
		case !added && k > name:
			add()
		}
		pairs = append(pairs, [2]string{f.kv[i], f.kv[i+1]})
	}
	if !added {
		add()
	}
	return fieldsOf(pairs)
}

// without is f without name (as http.Header.Del): a new Fields, for an
// entry not yet shared.
func (f *Fields) without(name string) Fields { return f.with(name) }
