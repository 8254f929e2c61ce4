package cache

import (
	"bufio"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fastTarget is the request-target alphabet the PoP's fast loop accepts.
var fastTarget = regexp.MustCompile(`^/([A-Za-z0-9\-._~!$&'()*+,;=:@/]|%[0-9A-Fa-f]{2})*(\?[\x21-\x22\x24-\x7e]*)?$`)

// FuzzAppendKey: for every request the fast loop may look up, AppendKey
// builds the key primaryKey builds from the parsed request, in every
// query mode, so both paths find the same entries; and every spelling of
// a host (case, trailing dot, port) gives one key.
func FuzzAppendKey(f *testing.F) {
	for _, s := range []string{"/", "/a/b.css?v=1", "/a%2Fb?b=2&a=1", "//x", "/x?", "/%41?&&", "/a?b=1&a=2&c"} {
		f.Add(s, "localhost", uint8(0))
		f.Add(s, "WWW.CDN.lab:8443", uint8(1))
		f.Add(s, "[::1]:443", uint8(2))
		for i, h := range []string{"LOCALHOST.", "localhost:1", "localhost:443", "LocalHost.:80", "localhost.", "[::1]", "::1", "a..:"} {
			f.Add(s, h, uint8(i))
		}
	}
	f.Fuzz(func(t *testing.T, target, host string, mode uint8) {
		if !fastTarget.MatchString(target) || strings.Trim(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") != "" || host == "" {
			return
		}
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n")))
		if err != nil {
			return
		}
		r.TLS = &tls.ConnectionState{}
		q := Query(mode % 3)
		c := &Cache{cfg: Config{Query: q}}
		want := c.primaryKey(r)
		if got := string(AppendKey(nil, true, host, target, q)); got != want {
			t.Errorf("AppendKey(%q, %q, %d) = %q, primaryKey %q", host, target, q, got, want)
		}
		// Another spelling of the same host: other case, a trailing
		// dot, a port.
		if host[0] != '[' && strings.Count(host, ":") <= 1 {
			name, _, _ := strings.Cut(host, ":")
			other := strings.ToUpper(name) + ".:8080"
			if got := string(AppendKey(nil, true, other, target, q)); got != want {
				t.Errorf("AppendKey(%q, %q, %d) = %q, want %q as for host %q", other, target, q, got, want, host)
			}
		}
	})
}

// TestLookupFast: only a fresh, unpurged 200 that does not vary and needs
// no validation is a fast hit, and a lookup allocates nothing.
func TestLookupFast(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/vary":
			w.Header().Set("Vary", "Accept-Language")
		case "/nocache":
			w.Header().Set("Cache-Control", "no-cache")
			w.Header().Set("ETag", `"n"`)
		case "/404":
			w.Header().Set("Cache-Control", "max-age=60")
			w.WriteHeader(404)
			return
		case "/short":
			w.Header().Set("Cache-Control", "max-age=1")
		}
		if w.Header().Get("Cache-Control") == "" {
			w.Header().Set("Cache-Control", "max-age=60")
		}
		w.Write([]byte("body of " + r.URL.Path))
	}))
	defer origin.Close()
	now := time.Now()
	c, err := New(Config{Transport: originTransport{origin.URL}, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range []string{"/plain", "/vary", "/nocache", "/404", "/short", "/purged"} {
		c.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "https://a.lab"+p, nil))
	}
	c.Wait()
	if _, err := c.PurgeURL("https://a.lab/purged", true); err != nil {
		t.Fatal(err)
	}
	key := func(p string) []byte { return AppendKey(nil, true, "a.lab", p, QueryKeep) }
	hit, ok := c.LookupFast(key("/plain"), "")
	age0 := hit.Age // the origin's Date has whole seconds: up to 1s of apparent age
	if !ok || string(hit.Body) != "body of /plain" || age0 > time.Second || hit.TTL != 60*time.Second-age0 || hit.Header.Get("Cache-Control") != "max-age=60" {
		t.Errorf("/plain: ok %v, body %q, ttl %v, age %v", ok, hit.Body, hit.TTL, hit.Age)
	}
	for _, p := range []string{"/vary", "/nocache", "/404", "/purged", "/absent"} {
		if _, ok := c.LookupFast(key(p), ""); ok {
			t.Errorf("%s is a fast hit", p)
		}
	}
	now = now.Add(2 * time.Second)
	if _, ok := c.LookupFast(key("/short"), ""); ok {
		t.Error("/short is a fast hit after its max-age")
	}
	if hit, ok := c.LookupFast(key("/plain"), ""); !ok || hit.Age != age0+2*time.Second {
		t.Errorf("/plain 2s later: ok %v, age %v", ok, hit.Age)
	}
	k := key("/plain")
	if n := testing.AllocsPerRun(100, func() { c.LookupFast(k, "") }); n != 0 {
		t.Errorf("LookupFast allocates %v times", n)
	}
}

// TestEveryRequestCountsOnce: the store's admission and eviction compare
// per-key access counts (admission.go), so each request must count exactly one access
// whatever path it takes: a miss that the fast path looked up first and
// ServeHTTP then fetched (leader and store included) counts one, as does
// a hit served by LookupFast and one served by ServeHTTP. Misses counted
// more than hits made new objects look more popular than the hot set
// (0.352 byte hit ratio in a 64 MiB replay where the same policy counting
// once gets 0.393).
func TestEveryRequestCountsOnce(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Write([]byte("body"))
	})
	host := strings.TrimPrefix(rg.front.URL, "http://")
	key := AppendKey(nil, false, host, "/once", QueryKeep)
	// The key's own count in the admission's sketch (which this test's
	// few keys leave exact).
	accesses := func() int64 { return rg.cache.st.adm.freq.estimate(keyHash(string(key))) }
	before := accesses()
	if _, ok := rg.cache.LookupFast(key, ""); ok {
		t.Fatal("LookupFast found /once before it was fetched")
	}
	rg.get("/once") // the miss: ServeHTTP, the flight's leader, the store
	rg.cache.Wait()
	if got := accesses() - before; got != 1 {
		t.Errorf("a miss looked up by the fast path and fetched by ServeHTTP counted %d accesses, want 1", got)
	}
	before = accesses()
	if _, ok := rg.cache.LookupFast(key, ""); !ok {
		t.Fatal("LookupFast missed /once after it was stored")
	}
	if got := accesses() - before; got != 1 {
		t.Errorf("a fast hit counted %d accesses, want 1", got)
	}
	before = accesses()
	rg.get("/once")
	if got := accesses() - before; got != 1 {
		t.Errorf("a hit through ServeHTTP counted %d accesses, want 1", got)
	}
}
