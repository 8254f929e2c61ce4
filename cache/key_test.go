package cache

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func TestPrimaryKey(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		url, host string
		want      string
	}{
		{"plain", Config{}, "/a/b?x=1", "WWW.cdn.lab", "http://www.cdn.lab/a/b?x=1"},
		{"empty query kept", Config{}, "/a?", "h", "http://h/a?"},
		{"sorted query", Config{Query: QuerySort}, "/a?b=2&a=1", "h", "http://h/a?a=1&b=2"},
		{"ignored query", Config{Query: QueryIgnore}, "/a?b=2", "h", "http://h/a"},
		{"escaped path kept", Config{}, "/a%2Fb", "h", "http://h/a%2Fb"},
		{"port dropped", Config{}, "/a", "localhost:1", "http://localhost/a"},
		{"trailing dot dropped", Config{}, "/a", "LOCALHOST.", "http://localhost/a"},
		{"trailing dot and port dropped", Config{}, "/a", "LocalHost.:8443", "http://localhost/a"},
		{"IPv6 literal keeps brackets, loses port", Config{}, "/a", "[::1]:443", "http://[::1]/a"},
		{"IPv6 without brackets kept whole", Config{}, "/a", "::1", "http://::1/a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Cache{cfg: tt.cfg}
			r := httptest.NewRequest("GET", tt.url, nil)
			r.Host = tt.host
			if got := c.primaryKey(r); got != tt.want {
				t.Errorf("primaryKey(%q) = %q, want %q", tt.url, got, tt.want)
			}
		})
	}
}

func TestSecondaryKeyNormalisation(t *testing.T) {
	key := func(kv ...string) string {
		h := http.Header{}
		for i := 0; i+1 < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return secondaryKey("k", []string{"Accept-Encoding", "Accept-Language"}, h)
	}
	same := [][2]string{
		{key("Accept-Encoding", "gzip, br"), key("Accept-Encoding", "br,gzip")},
		{key("Accept-Encoding", "GZIP"), key("Accept-Encoding", "gzip")},
		{key("Accept-Encoding", "gzip", "Accept-Encoding", "br"), key("Accept-Encoding", "br, gzip")},
		{key("Accept-Language", "en ; q=0.5"), key("Accept-Language", "EN;q=0.5")},
	}
	for i, p := range same {
		if p[0] != p[1] {
			t.Errorf("pair %d: %q != %q, want equal keys", i, p[0], p[1])
		}
	}
	differ := [][2]string{
		{key("Accept-Encoding", "gzip"), key()},
		{key("Accept-Encoding", ""), key()},
		{key("Accept-Language", "en, de"), key("Accept-Language", "de, en")}, // preference order matters
	}
	for i, p := range differ {
		if p[0] == p[1] {
			t.Errorf("pair %d: keys equal (%q), want different", i, p[0])
		}
	}
}

func FuzzCacheKey(f *testing.F) {
	for _, s := range []string{"/a?b=1&a=2", "/%2e%2e/x", "/?", "//x", "/a#frag"} {
		f.Add(s, "www.cdn.lab")
	}
	f.Fuzz(func(t *testing.T, target, host string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		r := &http.Request{Method: "GET", URL: u, Host: host}
		for _, cfg := range []Config{{}, {Query: QuerySort}, {Query: QueryIgnore}} {
			c := &Cache{cfg: cfg}
			k := c.primaryKey(r)
			kh := strings.ToLower(keyHost(host))
			if !strings.HasPrefix(k, "http://"+kh) {
				t.Fatalf("primaryKey(%q, %q) = %q, want it to start with the host %q", target, host, k, kh)
			}
			if strings.HasSuffix(kh, ".") || (kh != "" && kh[0] != '[' && strings.Count(kh, ":") == 1) {
				t.Fatalf("primaryKey(%q, %q) = %q: host keeps a trailing dot or a port", target, host, k)
			}
			if k2 := c.primaryKey(r); k2 != k {
				t.Fatalf("primaryKey not deterministic: %q vs %q", k, k2)
			}
			if cfg.Query == QueryIgnore && strings.Contains(k[len("http://"+kh):], "?") && u.RawQuery != "" {
				t.Fatalf("IgnoreQuery key %q keeps a query", k)
			}
		}
	})
}

func FuzzVary(f *testing.F) {
	f.Add("Accept-Encoding, accept-encoding", "gzip, br")
	f.Add("*", "x")
	f.Add(" , ,Accept", "text/html;q=0.9 , */*")
	f.Fuzz(func(t *testing.T, vary, value string) {
		h := http.Header{"Vary": {vary}}
		names, star := varyNames(h)
		if star && names != nil {
			t.Fatalf("varyNames(%q): star with names %v", vary, names)
		}
		seen := map[string]bool{}
		for _, n := range names {
			if n == "" || seen[n] || n != http.CanonicalHeaderKey(n) {
				t.Fatalf("varyNames(%q) = %v: empty, duplicate or non-canonical name", vary, names)
			}
			seen[n] = true
		}
		req := http.Header{}
		for _, n := range names {
			req.Set(n, value)
		}
		if secondaryKey("p", names, req) != secondaryKey("p", names, req.Clone()) {
			t.Fatalf("secondaryKey not deterministic")
		}
	})
}

// TestHostSpellingsShareEntries: requests for one URL under different
// spellings of its host (case, trailing dot, a port) share one stored
// response, found by the fast path (AppendKey, LookupFast) as by
// ServeHTTP, and a purge under any spelling removes it.
func TestHostSpellingsShareEntries(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("one copy"))
	})
	spellings := []string{"localhost", "LOCALHOST.", "localhost:1", "localhost:80", "LocalHost.:8080"}
	for _, h := range spellings {
		r := httptest.NewRequest("GET", "/p", nil)
		r.Host = h
		w := httptest.NewRecorder()
		rg.cache.ServeHTTP(w, r)
		rg.cache.Wait()
		if w.Code != 200 || w.Body.String() != "one copy" {
			t.Fatalf("Host %q: %d %q", h, w.Code, w.Body.String())
		}
	}
	if h := rg.hits.Load(); h != 1 {
		t.Errorf("%d spellings of one host: %d origin requests, want 1", len(spellings), h)
	}
	for _, h := range spellings {
		if _, ok := rg.cache.LookupFast(AppendKey(nil, false, h, "/p", QueryKeep), ""); !ok {
			t.Errorf("LookupFast(Host %q) missed", h)
		}
	}
	if n, err := rg.cache.PurgeURL("http://LOCALHOST.:8443/p", false); err != nil || n != 1 {
		t.Errorf("PurgeURL(http://LOCALHOST.:8443/p) = %d, %v; want 1", n, err)
	}
	if _, ok := rg.cache.LookupFast(AppendKey(nil, false, "localhost", "/p", QueryKeep), ""); ok {
		t.Error("still stored after the purge")
	}
}

// TestUnsafeInvalidatesOtherHostSpelling: a POST's Location names the
// stored URL with another spelling of the host; it is invalidated all the
// same (RFC 9111 4.4).
func TestUnsafeInvalidatesOtherHostSpelling(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.Method == http.MethodPost {
			w.Header().Set("Location", "http://LOCALHOST.:9/other")
		}
		w.Write([]byte(r.Method))
	})
	do := func(method, path string) {
		r := httptest.NewRequest(method, path, nil)
		r.Host = "localhost"
		rg.cache.ServeHTTP(httptest.NewRecorder(), r)
		rg.cache.Wait()
	}
	do("GET", "/other")
	do("POST", "/form")
	do("GET", "/other")
	if h := rg.hits.Load(); h != 3 {
		t.Errorf("origin hits = %d, want 3 (the POST's Location invalidated /other)", h)
	}
}
