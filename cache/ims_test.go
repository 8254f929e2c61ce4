package cache

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestIfModifiedSinceWithoutLastModified: a stored response without
// Last-Modified answers If-Modified-Since with 304 when it was stored at
// or before the given date, by its Date or, without one, by when it was
// received (RFC 9111 4.3.2), and with itself otherwise; If-None-Match
// takes precedence.
func TestIfModifiedSinceWithoutLastModified(t *testing.T) {
	for _, withDate := range []bool{true, false} {
		name := "Date"
		if !withDate {
			name = "no Date"
		}
		t.Run(name, func(t *testing.T) {
			rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
				if !withDate {
					w.Header()["Date"] = nil // net/http adds none
				}
				w.Header().Set("Cache-Control", "max-age=600")
				w.Header().Set("Content-Type", "text/plain")
				w.Write([]byte("body"))
			})
			stored := rg.clk.now()
			rg.get("/ims")
			e := rg.cache.st.getEntry(rg.cache.primaryKey(httptest.NewRequest("GET", rg.front.URL+"/ims", nil)))
			if e == nil || (e.header.Get("Date") != "") != withDate {
				t.Fatalf("stored entry %v, want one with Date: %v", e, withDate)
			}
			rg.clk.add(10 * time.Second)
			date := func(d time.Duration) string { return stored.Add(d).UTC().Format(http.TimeFormat) }
			tests := []struct {
				name string
				hdr  []string
				code int
			}{
				{"the date stored", []string{"If-Modified-Since", date(0)}, 304},
				{"after it was stored", []string{"If-Modified-Since", date(time.Hour)}, 304},
				{"before it was stored", []string{"If-Modified-Since", date(-time.Second)}, 200},
				{"an invalid date", []string{"If-Modified-Since", date(time.Hour)[:len(date(0))-4] + " UTC"}, 200},
				{"If-None-Match does not match", []string{"If-None-Match", `"x"`, "If-Modified-Since", date(time.Hour)}, 200},
				{"with a Range", []string{"Range", "bytes=0-1", "If-Modified-Since", date(time.Hour)}, 304},
				{"before, with a Range", []string{"Range", "bytes=0-1", "If-Modified-Since", date(-time.Hour)}, 206},
			}
			for _, tt := range tests {
				for _, method := range []string{"GET", "HEAD"} {
					resp, body := rg.do(method, "/ims", tt.hdr...)
					if resp.StatusCode != tt.code {
						t.Errorf("%s %s (%q) = %d, want %d", method, tt.name, tt.hdr, resp.StatusCode, tt.code)
					}
					if resp.StatusCode == 304 && (body != "" || resp.Header.Get("Content-Type") != "" || resp.Header.Get("Cache-Control") != "max-age=600") {
						t.Errorf("%s %s: 304 with body %q, Content-Type %q, Cache-Control %q; want no body and no Content-Type, the stored Cache-Control",
							method, tt.name, body, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"))
					}
				}
			}
			if h := rg.hits.Load(); h != 1 {
				t.Errorf("origin requests = %d, want 1 (all answered from the store)", h)
			}
		})
	}
}
