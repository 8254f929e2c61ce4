package cache

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestRevalidationCoalesced: requests that find one stored response stale
// at once cause one conditional request; all get the refreshed response.
// When the origin fails, the waiters get the stale response within
// stale-if-error without asking the origin themselves.
func TestRevalidationCoalesced(t *testing.T) {
	for _, tc := range []struct {
		name     string
		status   int // the answer to the conditional request
		cc       string
		want     int    // status each client gets
		inStatus string // in each client's Cache-Status
	}{
		{"304", http.StatusNotModified, "max-age=10", 200, "fwd=stale"},
		{"200", http.StatusOK, "max-age=10", 200, "fwd=stale"},
		{"500 within stale-if-error", http.StatusInternalServerError, "max-age=10, stale-if-error=600", 200, "stale-if-error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var conditional atomic.Int64
			release := make(chan struct{})
			rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("ETag", `"v1"`)
				w.Header().Set("Cache-Control", tc.cc)
				if r.Header.Get("If-None-Match") == "" {
					w.Write([]byte("body"))
					return
				}
				conditional.Add(1)
				<-release // every client asks while this one is in flight
				w.WriteHeader(tc.status)
				if tc.status == http.StatusOK {
					w.Write([]byte("body"))
				}
			})
			unblock := sync.OnceFunc(func() { close(release) })
			t.Cleanup(unblock) // before the rig's cleanup, which waits for the origin's handlers
			rg.get("/r")
			rg.cache.Wait()
			rg.clk.add(11 * time.Second) // stale
			const n = 10
			var wg sync.WaitGroup
			codes := make(chan string, n)
			for range n {
				wg.Go(func() {
					resp, body := rg.get("/r")
					codes <- resp.Status + " " + body + " " + resp.Header.Get("Cache-Status")
				})
			}
			// All n reach the cache before the origin answers.
			poll.Until(t, "the other requests to wait for the first one's revalidation", func() bool { return rg.cache.Stats().Coalesced == n-1 })
			unblock()
			wg.Wait()
			close(codes)
			for c := range codes {
				if !strings.HasPrefix(c, "200 OK body ") || !strings.Contains(c, tc.inStatus) {
					t.Errorf("client got %q, want 200 with the body and %q in Cache-Status", c, tc.inStatus)
				}
			}
			if got := conditional.Load(); got != 1 {
				t.Errorf("%d concurrent requests for one stale response caused %d conditional requests, want 1", n, got)
			}
		})
	}
}

// TestLeaderLooksAgain: a request that missed just before another flight
// stored the response does not fetch again: the leader of a new flight
// finds the response in the store first.
func TestLeaderLooksAgain(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("body"))
	})
	rg.get("/x")
	rg.cache.Wait()
	if rg.hits.Load() != 1 {
		t.Fatalf("origin requests after the first fetch: %d", rg.hits.Load())
	}
	// As if this request's lookup had missed an instant before the first
	// flight stored its response: it arrives at fetch as a new leader.
	r := httptest.NewRequest("GET", "http://"+strings.TrimPrefix(rg.front.URL, "http://")+"/x", nil)
	w := httptest.NewRecorder()
	rg.cache.fetch(w, r, rg.cache.primaryKey(r), requestDirectives(r), false)
	if w.Code != 200 || w.Body.String() != "body" || rg.hits.Load() != 1 {
		t.Errorf("leader after the store: %d %q with %d origin requests, want the stored 200 and still 1 request", w.Code, w.Body.String(), rg.hits.Load())
	}
}
