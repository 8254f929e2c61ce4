package cache

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestLookupFastEncodings: a stored response's encoding slots belong to
// it: the same on every lookup, apart from other responses' slots and from
// each other, and empty again for the response stored after a purge.
func TestLookupFastEncodings(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Write([]byte("body of " + r.URL.Path))
	}))
	defer origin.Close()
	c, err := New(Config{Transport: originTransport{origin.URL}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	store := func() {
		for _, p := range []string{"/a", "/b"} {
			c.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "https://a.lab"+p, nil))
		}
		c.Wait()
	}
	store()
	lookup := func(p string) FastHit {
		t.Helper()
		hit, ok := c.LookupFast(AppendKey(nil, true, "a.lab", p, QueryKeep), "")
		if !ok {
			t.Fatalf("LookupFast(%s) missed", p)
		}
		return hit
	}
	a, b := lookup("/a"), lookup("/b")
	if a.Encoded == nil || a.Encoded == b.Encoded {
		t.Fatalf("encoding slots: /a %p, /b %p; want distinct, non-nil", a.Encoded, b.Encoded)
	}
	enc := []byte("encoded /a")
	a.Encoded.HTTP3.Store(&enc)
	if got := lookup("/a").Encoded.HTTP3.Load(); got == nil || string(*got) != "encoded /a" {
		t.Errorf("second lookup of /a: HTTP3 slot holds %v, want what the first stored", got)
	}
	if lookup("/a").Encoded.HTTP1.Load() != nil || b.Encoded.HTTP3.Load() != nil {
		t.Error("storing into /a's HTTP3 slot filled another slot")
	}
	if _, err := c.PurgeURL("https://a.lab/a", false); err != nil {
		t.Fatal(err)
	}
	store()
	if got := lookup("/a").Encoded.HTTP3.Load(); got != nil {
		t.Errorf("/a stored again after a purge: HTTP3 slot holds %q, want empty", *got)
	}
}
