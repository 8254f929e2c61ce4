package cache

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
)

// TestVaryAcceptCanonical: requests whose Accept-Encoding or
// Accept-Language say the same thing in other words share a stored
// variant; the origin gets each field as the client sent it.
func TestVaryAcceptCanonical(t *testing.T) {
	tests := []struct {
		field string
		same  []string // equivalent to each other
		other []string // each different from same[0] and from one another
	}{
		{"Accept-Encoding",
			[]string{"gzip, br", "br,gzip", "BR ; q=1.0, Gzip;Q=1", "gzip, br, deflate;q=0", "gzip,,br, zstd;q=0.000"},
			[]string{"gzip", "gzip, br;q=0.5", "gzip, br, identity;q=0", "gzip, br, *;q=0", "*, gzip, br, deflate;q=0"}},
		{"Accept-Language",
			[]string{"de-DE, en;q=0.5", "en;q=0.500, de-de", "DE-de,EN; q=0.5", "de-DE, fr;q=0, en;q=0.5", "de-DE;q=1.000, en;q=0.50"},
			[]string{"en;q=0.5, de-DE;q=0.9", "en, de-DE", "de-DE, en;q=0.5, de;q=0", "de-DE, en;q=0.5, *;q=0"}},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			var mu sync.Mutex // guards seen
			var seen []string
			rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen = append(seen, r.Header.Get(tt.field))
				mu.Unlock()
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set("Vary", tt.field)
				fmt.Fprintf(w, "%s=%s", tt.field, r.Header.Get(tt.field))
			})
			for _, v := range tt.same {
				if _, body := rg.get("/v", tt.field, v); body != tt.field+"="+tt.same[0] {
					t.Errorf("%s: %s = %q, want the variant stored for %q", tt.field, v, body, tt.same[0])
				}
			}
			for i, v := range tt.other {
				if _, body := rg.get("/v", tt.field, v); body != tt.field+"="+v {
					t.Errorf("%s: %s = %q, want a variant of its own", tt.field, v, body)
				}
				if h := rg.hits.Load(); h != int64(2+i) {
					t.Errorf("%s: %s: origin requests %d, want %d", tt.field, v, h, 2+i)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if want := append([]string{tt.same[0]}, tt.other...); fmt.Sprint(seen) != fmt.Sprint(want) {
				t.Errorf("origin got %s %q, want %q as sent", tt.field, seen, want)
			}
		})
	}
}

// TestVaryKeyAccept: canonical forms in the key, and fields that are not
// the grammar keyed as they come.
func TestVaryKeyAccept(t *testing.T) {
	key := func(name, v string) string {
		return varyKey("k", []string{name, "X-Other"}, http.Header{name: {v}, "X-Other": {"o"}})
	}
	same := []struct{ name, a, b string }{
		{"Accept-Encoding", "gzip;q=0.5, br", "br;q=1, gzip;q=0.500"},
		{"Accept-Encoding", "gzip, x-foo;q=0", "gzip"},
		{"Accept-Encoding", "deflate;q=0", ""},
		{"Accept-Language", "fr-CH, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", "FR-ch,fr;q=0.90,en;q=0.8,de;q=0.7,*;q=0.5"},
		{"Accept-Language", "en, de;q=0.5, ja;q=0", "en, de;q=0.5"},
		{"Accept-Language", "de;q=0.5, en", "en, de;q=0.5"},
	}
	for _, tt := range same {
		if a, b := key(tt.name, tt.a), key(tt.name, tt.b); a != b {
			t.Errorf("%s: key(%q) = %q, key(%q) = %q; want equal", tt.name, tt.a, a, tt.b, b)
		}
	}
	differ := []struct{ name, a, b string }{
		{"Accept-Encoding", "gzip;q=0.5", "gzip"},
		{"Accept-Encoding", "identity;q=0", ""},
		{"Accept-Encoding", "*, gzip;q=0", "*"},
		{"Accept-Encoding", "gzip;q=2", "gzip"},       // not a qvalue: keyed as sent
		{"Accept-Encoding", "gzip;level=1", "gzip"},   // not a weight
		{"Accept-Encoding", "gzip, gzip;q=0", "gzip"}, // a member twice
		{"Accept-Language", "en, de", "de, en"},       // equal weights keep their order
		{"Accept-Language", "en, en-GB;q=0", "en"},    // the exclusion overlaps a range
		{"Accept-Language", "en-GB, en;q=0", "en-GB"}, // and the other way round
		{"Accept-Language", "*, fr;q=0", "*"},         //
		{"Accept-Language", "en;q=0.001", "en;q=0"},   //
		{"Accept-Language", "\"en\"", "en"},           // not a token
	}
	for _, tt := range differ {
		if a, b := key(tt.name, tt.a), key(tt.name, tt.b); a == b {
			t.Errorf("%s: key(%q) = key(%q) = %q; want different", tt.name, tt.a, tt.b, a)
		}
	}
	// Absent is not empty, and other fields are untouched.
	if a, b := varyKey("k", []string{"Accept-Encoding"}, http.Header{}), key("Accept-Encoding", ""); a == b {
		t.Errorf("no Accept-Encoding and an empty one share key %q", a)
	}
	h := http.Header{"Accept-Encoding": {"gzip"}, "X-Other": {"A , b"}}
	if a, b := varyKey("k", []string{"Accept-Encoding", "X-Other"}, h), secondaryKey("k", []string{"Accept-Encoding", "X-Other"}, h); a != b {
		t.Errorf("varyKey = %q, secondaryKey = %q; want equal for a canonical Accept-Encoding", a, b)
	}
}

// FuzzAcceptCanonical: the canonical form of a field is canonical: read
// again, it comes out the same.
func FuzzAcceptCanonical(f *testing.F) {
	for _, s := range []string{"gzip, br;q=0.5", "en-US,en;q=0.9,*;q=0.1", "identity;q=0, *;q=0", "a;Q=1.", "de;q=0, de-AT"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, encoding bool) {
		c, ok := canonicalAccept([]string{s}, encoding)
		if !ok {
			return
		}
		again, ok := canonicalAccept([]string{c}, encoding)
		if !ok || again != c {
			t.Fatalf("canonicalAccept(%q) = %q, which reads as %q, %v", s, c, again, ok)
		}
	})
}
