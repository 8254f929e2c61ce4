package cache

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestServeRoute: each request's Route decides where its misses go, how
// its query enters the key and what happens to Set-Cookie, and a
// background revalidation goes where the request that started it went;
// the Config's Transport is not used.
func TestServeRoute(t *testing.T) {
	type origin struct {
		srv *httptest.Server
		n   atomic.Int64
	}
	newOrigin := func(name string) *origin {
		o := &origin{}
		o.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			o.n.Add(1)
			w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
			w.Header().Set("Set-Cookie", "s=1")
			w.Write([]byte(name + " " + r.URL.RequestURI()))
		}))
		t.Cleanup(o.srv.Close)
		return o
	}
	a, b := newOrigin("a"), newOrigin("b")
	now := time.Now()
	var clock atomic.Int64
	c, err := New(Config{Now: func() time.Time { return now.Add(time.Duration(clock.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ra := &Route{Transport: originTransport{a.srv.URL}, Query: QueryIgnore, SetCookie: CookiePass}
	rb := &Route{Transport: originTransport{b.srv.URL}, Query: QueryKeep, SetCookie: CookieStrip}
	get := func(host, target string, rt *Route) (string, http.Header) {
		t.Helper()
		w := httptest.NewRecorder()
		c.ServeRoute(w, httptest.NewRequest("GET", "http://"+host+target, nil), rt)
		c.Wait()
		return w.Body.String(), w.Header()
	}
	if body, _ := get("a.lab", "/x?q=1", ra); body != "a /x?q=1" {
		t.Errorf("first request of route a: %q, want origin a's answer", body)
	}
	// CookiePass: a's answers carry Set-Cookie, so they are not stored.
	if body, _ := get("a.lab", "/x?q=1", ra); body != "a /x?q=1" || a.n.Load() != 2 {
		t.Errorf("route a with set_cookie pass: %q after %d origin requests, want a second fetch", body, a.n.Load())
	}
	ra.SetCookie = CookieStrip
	get("a.lab", "/y?q=1", ra)
	if body, _ := get("a.lab", "/y?q=2", ra); body != "a /y?q=1" {
		t.Errorf("route a ignores the query: /y?q=2 = %q, want the stored /y?q=1", body)
	}
	if body, _ := get("b.lab", "/y?q=2", rb); body != "b /y?q=2" || b.n.Load() != 1 {
		t.Errorf("route b: %q after %d requests to b, want origin b's answer", body, b.n.Load())
	}
	if body, _ := get("b.lab", "/y?q=3", rb); body != "b /y?q=3" {
		t.Errorf("route b keeps the query: /y?q=3 = %q, want a fetch of its own", body)
	}
	// Stale: served at once, revalidated in the background through b.
	clock.Store(int64(2 * time.Second))
	before := b.n.Load()
	if _, h := get("b.lab", "/y?q=3", rb); h.Get("Cache-Status") == "" {
		t.Errorf("stale answer without Cache-Status")
	}
	poll.Until(t, "the background revalidation to reach origin b", func() bool { return b.n.Load() == before+1 })
	if a.n.Load() != 3 {
		t.Errorf("origin a saw %d requests, want 3: route b's revalidation went elsewhere", a.n.Load())
	}
	// Without a Route and without Config.Transport: 502, nothing fetched.
	w := httptest.NewRecorder()
	c.ServeHTTP(w, httptest.NewRequest("GET", "http://c.lab/z", nil))
	if w.Code != http.StatusBadGateway {
		t.Errorf("ServeHTTP without a transport = %d, want 502", w.Code)
	}
}
