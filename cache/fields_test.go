package cache

import (
	"net/http"
	"reflect"
	"runtime"
	"slices"
	"testing"
)

// TestFields: a Fields reads as the http.Header it was made from: Get
// and Values (names in any case), Has, its fields in name order, and
// back to an http.Header unchanged; reading a field of one line does not
// allocate.
func TestFields(t *testing.T) {
	h := http.Header{
		"Content-Type":  {"text/html"},
		"Vary":          {"Accept-Encoding", "Accept-Language"},
		"Etag":          {`"v1"`},
		"X-Own-Field":   {"a"},
		"Cache-Control": {"max-age=60"},
		"Empty":         {""},
	}
	f := FieldsOf(h)
	if got := f.Header(); !reflect.DeepEqual(got, h) {
		t.Errorf("Header() = %v, want %v", got, h)
	}
	for _, name := range []string{"ETag", "Etag", "etag", "Vary", "X-Own-Field", "Missing", "Empty"} {
		if got, want := f.Get(name), h.Get(name); got != want {
			t.Errorf("Get(%q) = %q, want %q", name, got, want)
		}
		if got, want := f.Values(name), h.Values(name); !slices.Equal(got, want) {
			t.Errorf("Values(%q) = %q, want %q", name, got, want)
		}
		if got, want := f.Has(name), h.Get(name) != "" || len(h.Values(name)) > 0; got != want {
			t.Errorf("Has(%q) = %v, want %v", name, got, want)
		}
	}
	var names []string
	for k, vs := range f.All() {
		names = append(names, k)
		if !slices.Equal(vs, h[k]) {
			t.Errorf("All: %s = %q, want %q", k, vs, h[k])
		}
	}
	if want := []string{"Cache-Control", "Content-Type", "Empty", "Etag", "Vary", "X-Own-Field"}; !slices.Equal(names, want) || f.Len() != len(want) {
		t.Errorf("All: names %q, Len %d; want %q", names, f.Len(), want)
	}
	if empty := FieldsOf(nil); empty.Len() != 0 || empty.Get("A") != "" {
		t.Error("an empty Fields is not empty")
	}
	if n := testing.AllocsPerRun(100, func() {
		_ = f.Values("Etag")
		_ = f.Has("Date")
		for range f.All() {
			break
		}
	}); n != 0 {
		t.Errorf("reading one-line fields allocates %v times, want 0", n)
	}
	// with and without make new Fields, leaving f as it was.
	g := f.with("Etag", `"v2"`)
	g = g.without("Vary")
	if g.Get("Etag") != `"v2"` || g.Has("Vary") || f.Get("Etag") != `"v1"` || !f.Has("Vary") {
		t.Errorf("with/without: %v from %v", g.Header(), f.Header())
	}
}

// TestFieldsBytes: what a Fields says it holds is what making it grows
// the heap by (its slice and its text; common names are not copied).
func TestFieldsBytes(t *testing.T) {
	h := GenFields()
	h["X-Origin-Shard"] = []string{"7"}
	fs := make([]Fields, 1000)
	grew := heapGrowth(func() {
		for i := range fs {
			fs[i] = FieldsOf(h)
		}
	})
	if per, counted := grew/int64(len(fs)), fs[0].bytes(); per > counted {
		t.Errorf("a Fields of %d fields grows the heap by %d bytes, counts %d", len(h), per, counted)
	} else {
		t.Logf("a Fields of %d fields: %d bytes on the heap, %d counted", len(h), per, counted)
	}
}

// heapGrowth is how much f grows the live heap by.
func heapGrowth(f func()) int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	before := int64(m.HeapAlloc)
	f()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc) - before
}
