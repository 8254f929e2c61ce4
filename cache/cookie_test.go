package cache

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestSetCookiePolicy: the client whose request fetched a response that
// sets a cookie always gets the cookie; later clients get it only under
// CookieStore, from the stored copy (RFC 9111 behaviour); under
// CookieStrip (the default) they get the stored copy without it; under
// CookiePass nothing is stored.
func TestSetCookiePolicy(t *testing.T) {
	tests := []struct {
		name    string
		policy  string
		stored  bool   // the second request is a hit
		second  string // Set-Cookie the second client gets
		zeroCfg bool   // leave Config.SetCookie zero
	}{
		{"default is strip", "", true, "", true},
		{"strip", "strip", true, "", false},
		{"store", "store", true, "id=1", false},
		{"pass", "pass", false, "id=2", false},
	}
	for _, tt := range tests {
		for _, conditional := range []bool{false, true} {
			name := tt.name
			if conditional {
				// A miss with a precondition is read whole and then
				// served from the new entry, not streamed.
				name += "/conditional miss"
			}
			t.Run(name, func(t *testing.T) {
				policy, err := ParseCookiePolicy(tt.policy)
				if err != nil {
					t.Fatal(err)
				}
				if tt.zeroCfg {
					policy = 0
				}
				rg := cookieRig(t, policy)
				var hdr []string
				if conditional {
					hdr = []string{"If-None-Match", `"other"`}
				}
				resp, _ := rg.get("/c", hdr...)
				if got := resp.Header.Values("Set-Cookie"); !slices.Equal(got, []string{"id=1"}) {
					t.Errorf("first client: Set-Cookie %q, want [id=1] (its own cookie)", got)
				}
				resp, body := rg.get("/c")
				if stored := rg.hits.Load() == 1; stored != tt.stored || body != "c" {
					t.Errorf("second client: %q, stored = %v, want %v", body, stored, tt.stored)
				}
				if got := resp.Header.Get("Set-Cookie"); got != tt.second {
					t.Errorf("second client: Set-Cookie %q, want %q", got, tt.second)
				}
			})
		}
	}
}

// TestSetCookieStrip304: under CookieStrip a 304 that sets a cookie gives
// it to the client whose request revalidated, not to the stored copy.
func TestSetCookieStrip304(t *testing.T) {
	rg := cookieRig(t, CookieStrip)
	rg.get("/c")
	rg.clk.add(20 * time.Second) // stale: the next request revalidates
	resp, body := rg.get("/c")
	if resp.StatusCode != 200 || body != "c" || rg.hits.Load() != 2 {
		t.Fatalf("revalidation: %d %q with %d origin hits, want the stored 200 after one 304", resp.StatusCode, body, rg.hits.Load())
	}
	if got := resp.Header.Get("Set-Cookie"); got != "id=2" {
		t.Errorf("revalidating client: Set-Cookie %q, want id=2 (from the 304)", got)
	}
	resp, _ = rg.get("/c")
	if got := resp.Header.Get("Set-Cookie"); got != "" || rg.hits.Load() != 2 {
		t.Errorf("next client: Set-Cookie %q (origin hits %d), want a hit without a cookie", got, rg.hits.Load())
	}
}

// TestSetCookiePrivateField: the origin's private="set-cookie" keeps the
// cookie out of the stored copy under every policy, and the rest of the
// response is stored even under CookiePass.
func TestSetCookiePrivateField(t *testing.T) {
	for _, p := range []CookiePolicy{CookieStrip, CookieStore, CookiePass} {
		t.Run(fmt.Sprint(p), func(t *testing.T) {
			rg := newRigWith(t, Config{SetCookie: p}, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Cache-Control", `max-age=60, private="set-cookie"`)
				w.Header().Set("Set-Cookie", "id=1")
				w.Write([]byte("c"))
			})
			if resp, _ := rg.get("/c"); resp.Header.Get("Set-Cookie") != "id=1" {
				t.Errorf("first client: Set-Cookie %q, want id=1", resp.Header.Get("Set-Cookie"))
			}
			if resp, _ := rg.get("/c"); resp.Header.Get("Set-Cookie") != "" || rg.hits.Load() != 1 {
				t.Errorf("second client: Set-Cookie %q, origin hits %d; want a hit without it", resp.Header.Get("Set-Cookie"), rg.hits.Load())
			}
		})
	}
}

// cookieRig is an origin that sets a new cookie (id=N for its Nth
// request) on every 200 and 304, behind a cache with policy p.
func cookieRig(t *testing.T, p CookiePolicy) *rig {
	t.Helper()
	var n atomic.Int64
	return newRigWith(t, Config{SetCookie: p}, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("ETag", `"c"`)
		w.Header().Set("Set-Cookie", fmt.Sprintf("id=%d", n.Add(1)))
		if r.Header.Get("If-None-Match") == `"c"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Write([]byte("c"))
	})
}

func TestParseCookiePolicy(t *testing.T) {
	for in, want := range map[string]CookiePolicy{"": CookieStrip, "strip": CookieStrip, "store": CookieStore, "pass": CookiePass} {
		if got, err := ParseCookiePolicy(in); got != want || err != nil {
			t.Errorf("ParseCookiePolicy(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseCookiePolicy("keep"); err == nil || !strings.Contains(err.Error(), "want strip, store or pass") {
		t.Errorf("ParseCookiePolicy(keep) error %v, want one naming the choices", err)
	}
	if _, err := New(Config{Transport: http.DefaultTransport, SetCookie: 7}); err == nil {
		t.Error("New with SetCookie 7: no error")
	}
}
