package cache

import (
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// manyRanges is "bytes=0-0,2-2,..." with n one-byte ranges.
func manyRanges(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("%d-%d", 2*i, 2*i)
	}
	return "bytes=" + strings.Join(parts, ",")
}

// TestRangeAbuse: a Range field that would make a stored object answer
// with a multipart response many times its size (more than maxRanges
// ranges, overlapping or descending ranges) is answered with the whole
// object and a 200, from the store (hit) and on a miss, where the origin
// is not asked for the ranges either; ordinary range requests still get
// their 206.
func TestRangeAbuse(t *testing.T) {
	body := strings.Repeat("0123456789", 100) // 1000 bytes
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("ETag", `"r"`)
		w.Header().Set("Content-Type", "text/plain")
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body)) // the origin honours ranges
	})
	tests := []struct {
		name  string
		rng   string
		code  int
		parts int // multipart parts, for a 206 with several ranges
		// hitOnly: on a miss the size is not known before the origin
		// answers, so suffix ranges are not compared (see ignoreRange).
		hitOnly bool
	}{
		{"one range", "bytes=2-4", 206, 0, false},
		{"two ascending ranges", "bytes=0-9,20-29", 206, 2, false},
		{"adjacent ranges", "bytes=0-9,10-19", 206, 2, false},
		{"16 ranges", manyRanges(16), 206, 16, false},
		{"17 ranges", manyRanges(17), 200, 0, false},
		{"1000 ranges", manyRanges(1000), 200, 0, false},
		{"1000 copies of one range", "bytes=" + strings.Repeat("0-0,", 999) + "0-0", 200, 0, false},
		{"overlapping", "bytes=0-499,400-999", 200, 0, false},
		{"descending", "bytes=500-599,0-99", 200, 0, false},
		{"open range then another", "bytes=100-,0-9", 200, 0, false},
		{"suffix overlapping the one before", "bytes=990-999,-5", 200, 0, true},
		{"suffix after the one before", "bytes=0-9,-5", 206, 2, false},
		{"empty elements do not count", "bytes=" + strings.Repeat(",", 40) + "0-0,5-5", 206, 2, false},
	}
	for _, miss := range []bool{true, false} {
		for i, tt := range tests {
			name := tt.name + "/hit"
			path := "/obj"
			if miss {
				name = tt.name + "/miss"
				path = "/miss/" + strconv.Itoa(i)
			} else if i == 0 {
				rg.get(path) // store it
			}
			t.Run(name, func(t *testing.T) {
				if miss && tt.hitOnly {
					t.Skip("the origin answers it")
				}
				resp, got := rg.get(path, "Range", tt.rng)
				if resp.StatusCode != tt.code {
					t.Fatalf("Range %.60q: status %d, want %d", tt.rng, resp.StatusCode, tt.code)
				}
				switch {
				case tt.code == 200 && got != body:
					t.Errorf("200 with %d bytes, want the whole %d", len(got), len(body))
				case tt.parts > 0:
					if n := countParts(t, resp, got); n != tt.parts {
						t.Errorf("%d parts, want %d", n, tt.parts)
					}
				}
				if cs := resp.Header.Get("Cache-Status"); !miss && !strings.Contains(cs, "; hit") {
					t.Errorf("Cache-Status %q, want a hit", cs)
				}
				if len(got) > 3*len(body) {
					t.Errorf("a %d-byte answer for a %d-byte object", len(got), len(body))
				}
			})
		}
	}
}

func countParts(t *testing.T, resp *http.Response, body string) int {
	t.Helper()
	_, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type %q: %v", resp.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(strings.NewReader(body), params["boundary"])
	n := 0
	for {
		if _, err := mr.NextPart(); err == io.EOF {
			return n
		} else if err != nil {
			t.Fatalf("part %d: %v", n, err)
		}
		n++
	}
}

// FuzzRangeAnswer: whatever the Range field, a stored object is answered
// with at most maxRanges parts, and never with more than the object plus
// the parts' header blocks.
func FuzzRangeAnswer(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=0-1,3-4", "bytes=-5", "bytes=5-", "bytes=0-0,0-0,0-0", manyRanges(17),
		"bytes=9-1", "bytes=,,,0-1", "bytes= 1 - 2 , 4-5", "bytes=-0,0-0", "items=0-1", "bytes=1-2,-3,0-",
		"bytes=100-00,20-20,20-20", // an unsatisfiable range is skipped before its end is checked
	} {
		f.Add(s, uint16(100))
	}
	f.Add("bytes=-0,100-00,20-20,20-20,-0,-0,-0,0-0,00-00,00-00,00-00,00-00,02-02,10-10,10-10,10-10,10-10,12-", uint16(82))
	f.Fuzz(func(t *testing.T, rng string, size uint16) {
		c := &Cache{cfg: Config{Name: "t"}}
		e := &entry{key: "k", status: 200, header: FieldsOf(http.Header{"Content-Type": {"text/plain"}}), data: packBody([]byte(strings.Repeat("x", int(size))))}
		r := httptest.NewRequest("GET", "http://h/k", nil)
		r.Header.Set("Range", rng)
		w := httptest.NewRecorder()
		c.serveEntry(w, r, e, 0, "hit")
		if w.Code != http.StatusPartialContent {
			return
		}
		ct := w.Header().Get("Content-Type")
		if !strings.HasPrefix(ct, "multipart/") {
			if w.Body.Len() > int(size) {
				t.Fatalf("Range %q on %d bytes: one part of %d bytes", rng, size, w.Body.Len())
			}
			return
		}
		_, params, _ := mime.ParseMediaType(ct)
		parts := strings.Count(w.Body.String(), "--"+params["boundary"]) - 1
		if parts > maxRanges || w.Body.Len() > int(size)+maxRanges*200 {
			t.Fatalf("Range %q on %d bytes: %d parts, %d bytes", rng, size, parts, w.Body.Len())
		}
	})
}
