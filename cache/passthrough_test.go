package cache

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRequestBodyPassesThrough: a GET or HEAD with a body (Content-Length
// or chunked) goes to the origin with its body; its answer is neither
// stored nor taken from the store, so one client's body cannot choose
// what others get.
func TestRequestBodyPassesThrough(t *testing.T) {
	var chunkedSeen atomic.Bool
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		if slices.Contains(r.TransferEncoding, "chunked") {
			chunkedSeen.Store(true)
		}
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("body=" + string(b)))
	})
	send := func(method, path, body string, chunked bool) (*http.Response, string) {
		t.Helper()
		var rd io.Reader = strings.NewReader(body)
		if chunked {
			rd = io.MultiReader(rd) // length unknown: the client sends it chunked
		}
		req, _ := http.NewRequest(method, rg.front.URL+path, rd)
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		rg.cache.Wait()
		return resp, string(b)
	}
	for _, chunked := range []bool{false, true} {
		name := "Content-Length"
		if chunked {
			name = "chunked"
		}
		t.Run(name, func(t *testing.T) {
			path := "/" + name
			if _, body := send("GET", path, "poison", chunked); body != "body=poison" {
				t.Fatalf("GET with a body got %q, want the origin's answer to it", body)
			}
			hits := rg.hits.Load()
			if _, body := rg.get(path); body != "body=" {
				t.Errorf("plain GET after a GET with a body got %q, want its own answer", body)
			}
			if rg.hits.Load() != hits+1 {
				t.Errorf("plain GET after a GET with a body: not fetched")
			}
			// Now a plain answer is stored: a GET with a body still
			// goes to the origin.
			resp, body := send("GET", path, "other", chunked)
			if body != "body=other" || rg.hits.Load() != hits+2 {
				t.Errorf("GET with a body after a stored answer: %q (origin hits %d), want the origin's answer", body, rg.hits.Load()-hits)
			}
			if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "fwd=request; detail=request-body") {
				t.Errorf("Cache-Status %q, want fwd=request; detail=request-body", cs)
			}
			if resp, _ := send("HEAD", path, "x", chunked); resp.StatusCode != 200 || rg.hits.Load() != hits+3 {
				t.Errorf("HEAD with a body: %d, origin hits %d; want passed through", resp.StatusCode, rg.hits.Load()-hits)
			}
		})
	}
	if !chunkedSeen.Load() {
		t.Error("no request reached the origin chunked: the chunked case tested nothing")
	}
}
