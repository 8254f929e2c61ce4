package cache

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// rig is an origin behind a cache behind a real HTTP server.
type rig struct {
	t      *testing.T
	clk    *clock
	hits   atomic.Int64 // origin requests
	cache  *Cache
	front  *httptest.Server
	origin *httptest.Server
}

func newRig(t *testing.T, h http.HandlerFunc) *rig {
	t.Helper()
	return newRigWith(t, Config{}, h)
}

// newRigWith is newRig with a cache configured by cfg (its Transport and
// Now are the rig's).
func newRigWith(t *testing.T, cfg Config, h http.HandlerFunc) *rig {
	t.Helper()
	rg := &rig{t: t, clk: &clock{t: time.Now().Truncate(time.Second)}}
	rg.origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rg.hits.Add(1)
		if w.Header().Get("Date") == "" {
			w.Header().Set("Date", rg.clk.now().UTC().Format(http.TimeFormat))
		}
		h(w, r)
	}))
	t.Cleanup(rg.origin.Close)
	cfg.Transport, cfg.Now = originTransport{rg.origin.URL}, rg.clk.now
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rg.cache = c
	rg.front = httptest.NewServer(c)
	t.Cleanup(func() { rg.front.Close(); c.Close() })
	return rg
}

// originTransport sends every request to the test origin.
type originTransport struct{ base string }

func (o originTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r.URL.Scheme, r.URL.Host = "http", strings.TrimPrefix(o.base, "http://")
	return http.DefaultTransport.RoundTrip(r)
}

func (rg *rig) get(path string, hdr ...string) (*http.Response, string) {
	rg.t.Helper()
	return rg.do("GET", path, hdr...)
}

func (rg *rig) do(method, path string, hdr ...string) (*http.Response, string) {
	rg.t.Helper()
	req, _ := http.NewRequest(method, rg.front.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		rg.t.Fatalf("%s %s: %v", method, path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	rg.cache.Wait()
	return resp, string(b)
}

func TestMissThenHitWithAge(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=100")
		w.Header().Set("ETag", `"v1"`)
		w.Write([]byte("hello"))
	})
	resp, body := rg.get("/a")
	if body != "hello" || !strings.Contains(resp.Header.Get("Cache-Status"), "fwd=uri-miss; stored") {
		t.Fatalf("first GET: %q %q", body, resp.Header.Get("Cache-Status"))
	}
	rg.clk.add(30 * time.Second)
	resp, body = rg.get("/a")
	if body != "hello" || rg.hits.Load() != 1 {
		t.Errorf("second GET: body %q, origin hits %d; want a hit", body, rg.hits.Load())
	}
	if got := resp.Header.Get("Age"); got != "30" {
		t.Errorf("Age = %q, want 30", got)
	}
	if got := resp.Header.Get("Cache-Status"); got != "edgecdn; hit; ttl=70" {
		t.Errorf("Cache-Status = %q", got)
	}
	rg.clk.add(80 * time.Second) // stale now: revalidates
	rg.get("/a")
	if rg.hits.Load() != 2 {
		t.Errorf("after expiry: origin hits %d, want 2", rg.hits.Load())
	}
}

func TestStorability(t *testing.T) {
	tests := []struct {
		name   string
		hdr    []string // response headers
		status int
		req    []string // request headers
		stored bool
	}{
		{"max-age", []string{"Cache-Control", "max-age=60"}, 200, nil, true},
		{"no-store", []string{"Cache-Control", "max-age=60, no-store"}, 200, nil, false},
		{"private", []string{"Cache-Control", "private, max-age=60"}, 200, nil, false},
		{"request no-store", []string{"Cache-Control", "max-age=60"}, 200, []string{"Cache-Control", "no-store"}, false},
		{"no freshness information", nil, 200, nil, false},
		{"heuristic from Last-Modified", []string{"Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"}, 200, nil, true},
		{"302 without freshness", []string{"Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"}, 302, nil, false},
		{"302 with max-age", []string{"Cache-Control", "max-age=60"}, 302, nil, true},
		{"404 with max-age", []string{"Cache-Control", "max-age=60"}, 404, nil, true},
		{"Vary star", []string{"Cache-Control", "max-age=60", "Vary", "*"}, 200, nil, false},
		{"Set-Cookie with explicit freshness (RFC 9111 allows it)", []string{"Cache-Control", "max-age=60", "Set-Cookie", "id=1"}, 200, nil, true},
		{"Set-Cookie excluded by no-cache=field", []string{"Cache-Control", `max-age=60, private="set-cookie"`, "Set-Cookie", "id=1"}, 200, nil, true},
		{"Authorization", []string{"Cache-Control", "max-age=60"}, 200, []string{"Authorization", "Bearer a"}, false},
		{"Authorization with s-maxage", []string{"Cache-Control", "s-maxage=60"}, 200, []string{"Authorization", "Bearer a"}, true},
		{"CDN-Cache-Control no-store wins", []string{"Cache-Control", "max-age=60", "CDN-Cache-Control", "no-store"}, 200, nil, false},
		{"CDN-Cache-Control allows", []string{"Cache-Control", "no-store", "CDN-Cache-Control", "max-age=60"}, 200, nil, true},
		{"must-understand with known status", []string{"Cache-Control", "max-age=60, no-store, must-understand"}, 200, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
				for i := 0; i+1 < len(tt.hdr); i += 2 {
					w.Header().Add(tt.hdr[i], tt.hdr[i+1])
				}
				w.WriteHeader(tt.status)
				w.Write([]byte("x"))
			})
			rg.get("/s", tt.req...)
			// The second request never carries Authorization: a response to
			// one may reach another user only if the origin allowed sharing.
			var second []string
			for i := 0; i+1 < len(tt.req); i += 2 {
				if tt.req[i] != "Authorization" {
					second = append(second, tt.req[i], tt.req[i+1])
				}
			}
			rg.get("/s", second...)
			if stored := rg.hits.Load() == 1; stored != tt.stored {
				t.Errorf("origin hits %d: stored = %v, want %v", rg.hits.Load(), stored, tt.stored)
			}
		})
	}
}

func TestCoalescing(t *testing.T) {
	release := make(chan struct{})
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("slow"))
	})
	const n = 200
	var wg sync.WaitGroup
	bodies := make([]string, n)
	for i := range n {
		wg.Go(func() {
			resp, err := http.Get(rg.front.URL + "/slow")
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			bodies[i] = string(b)
		})
	}
	// Wait until every request is in the cache (leader at the origin, the
	// rest waiting), then let the origin answer.
	poll.Until(t, fmt.Sprintf("%d requests to wait for the leader's fetch", n-1), func() bool { return rg.cache.Stats().Coalesced >= n-1 })
	close(release)
	wg.Wait()
	if h := rg.hits.Load(); h != 1 {
		t.Errorf("%d concurrent cold requests caused %d origin requests, want 1", n, h)
	}
	for i, b := range bodies {
		if b != "slow" {
			t.Fatalf("request %d got %q", i, b)
		}
	}
}

func TestStaleWhileRevalidate(t *testing.T) {
	var version atomic.Int64
	version.Store(1)
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10, stale-while-revalidate=60")
		fmt.Fprintf(w, "v%d", version.Load())
	})
	rg.get("/swr")
	version.Store(2)
	rg.clk.add(20 * time.Second)
	resp, body := rg.get("/swr")
	if body != "v1" || !strings.Contains(resp.Header.Get("Cache-Status"), "stale-while-revalidate") {
		t.Errorf("stale GET: %q %q, want v1 served stale at once", body, resp.Header.Get("Cache-Status"))
	}
	poll.Until(t, "the background refresh to reach the origin", func() bool { return rg.hits.Load() >= 2 })
	rg.cache.wg.Wait()
	rg.cache.Wait()
	if _, body := rg.get("/swr"); body != "v2" {
		t.Errorf("after the background refresh: %q, want v2", body)
	}
	if h := rg.hits.Load(); h != 2 {
		t.Errorf("origin hits = %d, want 2 (one refresh)", h)
	}
}

func TestStaleIfError(t *testing.T) {
	var broken atomic.Bool
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		if broken.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
		w.Write([]byte("good"))
	})
	rg.get("/sie")
	broken.Store(true)
	rg.clk.add(30 * time.Second)
	resp, body := rg.get("/sie")
	if resp.StatusCode != 200 || body != "good" {
		t.Errorf("within stale-if-error: %d %q, want the stale 200", resp.StatusCode, body)
	}
	rg.clk.add(60 * time.Second)
	if resp, _ := rg.get("/sie"); resp.StatusCode != 500 {
		t.Errorf("beyond stale-if-error: %d, want the origin's 500", resp.StatusCode)
	}
}

// TestStaleIfErrorOriginKnownDown: with the route's origin known down, a
// stale entry within stale-if-error is served at once (the origin here
// hangs, as a partitioned one does) and refreshed in the background once
// the origin answers; beyond stale-if-error, or with the origin up, the
// request goes to the origin as usual.
func TestStaleIfErrorOriginKnownDown(t *testing.T) {
	var down atomic.Bool
	release := make(chan struct{})
	var version atomic.Int64
	version.Store(1)
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			<-release
		}
		w.Header().Set("Cache-Control", "max-age=10, stale-if-error=60")
		fmt.Fprintf(w, "v%d", version.Load())
	})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rg.cache.ServeRoute(w, r, &Route{Transport: originTransport{rg.origin.URL}, OriginDown: down.Load})
	}))
	t.Cleanup(front.Close)
	t.Cleanup(unblock)                               // first: a failing test must not leave the origin's handler blocked
	client := &http.Client{Timeout: 5 * time.Second} // fails, not hangs, without the shortcut
	get := func(path string) (*http.Response, string) {
		resp, err := client.Get(front.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	get("/d")
	down.Store(true)
	version.Store(2)
	rg.clk.add(30 * time.Second)
	resp, body := get("/d") // would hang until release without the shortcut
	if body != "v1" || !strings.Contains(resp.Header.Get("Cache-Status"), "detail=stale-if-error-origin-down") {
		t.Errorf("origin known down: %q %q, want v1 served stale at once", body, resp.Header.Get("Cache-Status"))
	}
	poll.Until(t, "the background refresh to reach the origin", func() bool { return rg.hits.Load() >= 2 })
	if _, body := get("/d"); body != "v1" || rg.hits.Load() != 2 {
		t.Errorf("while the refresh waits: %q after %d origin requests, want v1 and one refresh", body, rg.hits.Load())
	}
	down.Store(false)
	unblock()
	rg.cache.wg.Wait()
	if _, body := get("/d"); body != "v2" {
		t.Errorf("after the origin answered the refresh: %q, want v2", body)
	}
}

// TestMaxObjectIsAShareOfTheBudget: by default an object above a
// sixteenth of the budget is not stored (it would evict many popular
// ones), one below is.
func TestMaxObjectIsAShareOfTheBudget(t *testing.T) {
	rg := newRigWith(t, Config{MaxBytes: 1 << 20}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Write(bytes.Repeat([]byte("x"), n))
	})
	for _, tt := range []struct {
		n      int
		stored bool
	}{{60 << 10, true}, {70 << 10, false}} {
		path := fmt.Sprintf("/big?n=%d", tt.n)
		rg.get(path)
		rg.cache.Wait()
		resp, _ := rg.get(path)
		if hit := strings.Contains(resp.Header.Get("Cache-Status"), "hit"); hit != tt.stored {
			t.Errorf("%d bytes in a 1 MiB cache: second request %q, want stored %v", tt.n, resp.Header.Get("Cache-Status"), tt.stored)
		}
	}
}

func TestRevalidation304UpdatesHeaders(t *testing.T) {
	var n atomic.Int64
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"e1"`)
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("X-Version", fmt.Sprint(n.Add(1)))
		if r.Header.Get("If-None-Match") == `"e1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte("body"))
	})
	rg.get("/r")
	rg.clk.add(20 * time.Second)
	resp, body := rg.get("/r")
	if resp.StatusCode != 200 || body != "body" || resp.Header.Get("X-Version") != "2" {
		t.Errorf("after 304: %d %q X-Version %q, want 200 body with X-Version 2", resp.StatusCode, body, resp.Header.Get("X-Version"))
	}
	resp, _ = rg.get("/r")
	if rg.hits.Load() != 2 || resp.Header.Get("X-Version") != "2" {
		t.Errorf("after refresh: hits %d, X-Version %q; want a hit with updated headers", rg.hits.Load(), resp.Header.Get("X-Version"))
	}
}

func TestConditionalAndRangeFromCache(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"abc"`)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
		w.Write([]byte("0123456789"))
	})
	rg.get("/c")
	tests := []struct {
		hdr  []string
		code int
		body string
	}{
		{[]string{"If-None-Match", `"abc"`}, 304, ""},
		{[]string{"If-None-Match", `W/"abc"`}, 304, ""},
		{[]string{"If-None-Match", `"x", "abc"`}, 304, ""},
		{[]string{"If-None-Match", `*`}, 304, ""},
		{[]string{"If-None-Match", `"x"`, "If-Modified-Since", "Tue, 01 Jan 2030 00:00:00 GMT"}, 200, "0123456789"},
		{[]string{"If-Modified-Since", "Tue, 01 Jan 2030 00:00:00 GMT"}, 304, ""},
		{[]string{"Range", "bytes=2-4"}, 206, "234"},
	}
	for _, tt := range tests {
		resp, body := rg.get("/c", tt.hdr...)
		if resp.StatusCode != tt.code || body != tt.body {
			t.Errorf("GET with %q = %d %q, want %d %q", tt.hdr, resp.StatusCode, body, tt.code, tt.body)
		}
	}
	if rg.hits.Load() != 1 {
		t.Errorf("origin hits = %d, want 1", rg.hits.Load())
	}
}

func TestVaryAndAuthorization(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Encoding")
		fmt.Fprintf(w, "enc=%s auth=%s", r.Header.Get("Accept-Encoding"), r.Header.Get("Authorization"))
	})
	rg.get("/v", "Accept-Encoding", "gzip, br")
	if _, body := rg.get("/v", "Accept-Encoding", "br,gzip"); body != "enc=gzip, br auth=" || rg.hits.Load() != 1 {
		t.Errorf("equivalent Accept-Encoding: %q (hits %d), want the stored variant", body, rg.hits.Load())
	}
	if _, body := rg.get("/v", "Accept-Encoding", "identity"); body != "enc=identity auth=" {
		t.Errorf("other Accept-Encoding got %q", body)
	}
	if _, body := rg.get("/v", "Accept-Encoding", "gzip, br", "Authorization", "Bearer bob"); body != "enc=gzip, br auth=Bearer bob" {
		t.Errorf("Authorization request got %q, want its own response", body)
	}
}

func TestUnsafeInvalidates(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.Method == http.MethodPost {
			w.Header().Set("Location", "/other")
		}
		w.Write([]byte(r.Method))
	})
	rg.get("/u")
	rg.get("/other")
	rg.do("POST", "/u")
	rg.get("/u")
	rg.get("/other")
	if h := rg.hits.Load(); h != 5 {
		t.Errorf("origin hits = %d, want 5 (POST invalidated /u and its Location)", h)
	}
}

func TestNoCacheAndOnlyIfCached(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache, max-age=60")
		w.Header().Set("ETag", `"n"`)
		if r.Header.Get("If-None-Match") == `"n"` {
			w.WriteHeader(304)
			return
		}
		w.Write([]byte("n"))
	})
	rg.get("/n")
	rg.get("/n")
	if h := rg.hits.Load(); h != 2 {
		t.Errorf("no-cache: origin hits %d, want 2 (revalidated every time)", h)
	}
	if resp, _ := rg.get("/never", "Cache-Control", "only-if-cached"); resp.StatusCode != 504 {
		t.Errorf("only-if-cached miss = %d, want 504", resp.StatusCode)
	}
}

func TestPurge(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Surrogate-Key", "product-1 all")
		w.Write([]byte("p"))
	})
	rg.get("/p1")
	rg.get("/p2")
	if n, err := rg.cache.PurgeURL(rg.front.URL+"/p1", false); err != nil || n != 1 {
		t.Errorf("PurgeURL = %d, %v; want 1", n, err)
	}
	rg.get("/p1")
	if h := rg.hits.Load(); h != 3 {
		t.Errorf("after purge: hits %d, want 3", h)
	}
	rg.cache.Wait()
	if n := rg.cache.PurgeTag("all", false); n != 2 {
		t.Errorf("PurgeTag(all) = %d, want 2", n)
	}
}

func TestStreamsWhileStoring(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) }) // never leave the origin blocked
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("first-"))
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte("second"))
	})
	type got struct {
		first string
		rest  string
	}
	results := make(chan got, 2)
	firsts := make(chan struct{}, 2)
	for range 2 {
		go func() {
			resp, err := http.Get(rg.front.URL + "/stream")
			if err != nil {
				t.Error(err)
				results <- got{}
				return
			}
			defer resp.Body.Close()
			buf := make([]byte, 6)
			io.ReadFull(resp.Body, buf)
			firsts <- struct{}{}
			rest, _ := io.ReadAll(resp.Body)
			results <- got{string(buf), string(rest)}
		}()
	}
	// Both clients, the leader and the coalesced waiter, see the first
	// bytes while the origin is still holding the rest.
	for range 2 {
		select {
		case <-firsts:
		case <-time.After(10 * time.Second):
			t.Fatal("a client did not get the first bytes before the origin finished")
		}
	}
	once.Do(func() { close(release) })
	for range 2 {
		if g := <-results; g.first != "first-" || g.rest != "second" {
			t.Errorf("client got %q + %q, want first- + second", g.first, g.rest)
		}
	}
	rg.cache.Wait()
	if _, body := rg.get("/stream"); body != "first-second" || rg.hits.Load() != 1 {
		t.Errorf("after streaming: %q with %d origin hits, want a stored hit", body, rg.hits.Load())
	}
}

func TestTooLargeStreamsThroughUnstored(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		for range 10 {
			w.Write([]byte(strings.Repeat("z", 1000)))
			w.(http.Flusher).Flush() // no Content-Length: chunked
		}
	})
	rg.cache.cfg.MaxObjectBytes = 4000
	for range 2 {
		if _, body := rg.get("/big"); len(body) != 10000 {
			t.Fatalf("body %d bytes, want 10000", len(body))
		}
	}
	if h := rg.hits.Load(); h != 2 {
		t.Errorf("origin hits = %d, want 2 (too large to store)", h)
	}
}
