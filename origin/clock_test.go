package origin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestClock: /clock changes every ClockPeriod, never sooner; its ETag
// and Last-Modified are the period's, its max-age the seconds left in it,
// and a conditional request within the period gets 304.
func TestClock(t *testing.T) {
	s := newServer(t, Config{})
	base := time.Date(2026, 12, 3, 18, 0, 0, 0, time.UTC) // a period starts here
	now := base
	s.now = func() time.Time { return now }
	get := func(hdr ...string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", "/clock", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	first := get()
	if first.Code != 200 || first.Header().Get("Content-Type") != "application/json" || !strings.Contains(first.Body.String(), `"changed":"2026-12-03T18:00:00Z"`) {
		t.Fatalf("GET /clock = %d %q %s", first.Code, first.Header().Get("Content-Type"), first.Body)
	}
	if cc := first.Header().Get("Cache-Control"); cc != "public, max-age=5" {
		t.Errorf("Cache-Control at the period's start = %q, want public, max-age=5", cc)
	}
	if lm := first.Header().Get("Last-Modified"); lm != base.Format(http.TimeFormat) {
		t.Errorf("Last-Modified = %q, want %q", lm, base.Format(http.TimeFormat))
	}
	etag := first.Header().Get("ETag")
	now = base.Add(3500 * time.Millisecond)
	same := get()
	if same.Body.String() != first.Body.String() || same.Header().Get("ETag") != etag || same.Header().Get("Cache-Control") != "public, max-age=1" {
		t.Errorf("3.5 s later: %s ETag %s %q, want the same object with max-age=1", same.Body, same.Header().Get("ETag"), same.Header().Get("Cache-Control"))
	}
	if rec := get("If-None-Match", etag); rec.Code != http.StatusNotModified {
		t.Errorf("If-None-Match %s within the period = %d, want 304", etag, rec.Code)
	}
	now = base.Add(ClockPeriod)
	next := get()
	if next.Body.String() == first.Body.String() || next.Header().Get("ETag") == etag {
		t.Errorf("after ClockPeriod: %s ETag %s, want a new object", next.Body, next.Header().Get("ETag"))
	}
	if rec := get("If-None-Match", etag); rec.Code != http.StatusOK {
		t.Errorf("If-None-Match with the old ETag = %d, want 200", rec.Code)
	}
}
