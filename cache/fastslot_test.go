package cache

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestLookupFastWire3: the Wire3 slot belongs to one stored response: the
// same on every lookup of it, apart from Wire and from other responses'
// slots, and empty again for the response stored after a purge.
func TestLookupFastWire3(t *testing.T) {
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
		hit, ok := c.LookupFast(AppendKey(nil, true, "a.lab", p, QueryKeep))
		if !ok {
			t.Fatalf("LookupFast(%s) missed", p)
		}
		return hit
	}
	a, b := lookup("/a"), lookup("/b")
	if a.Wire3 == nil || a.Wire3 == a.Wire || a.Wire3 == b.Wire3 {
		t.Fatalf("Wire3 slots: /a %p (Wire %p), /b %p; want distinct, non-nil", a.Wire3, a.Wire, b.Wire3)
	}
	enc := []byte("encoded /a")
	a.Wire3.Store(&enc)
	if got := lookup("/a").Wire3.Load(); got == nil || string(*got) != "encoded /a" {
		t.Errorf("second lookup of /a: Wire3 holds %v, want what the first stored", got)
	}
	if lookup("/a").Wire.Load() != nil || b.Wire3.Load() != nil {
		t.Error("storing into /a's Wire3 filled another slot")
	}
	if _, err := c.PurgeURL("https://a.lab/a", false); err != nil {
		t.Fatal(err)
	}
	store()
	if got := lookup("/a").Wire3.Load(); got != nil {
		t.Errorf("/a stored again after a purge: Wire3 holds %q, want empty", *got)
	}
}
