package bench

import (
	"net/http"
	"testing"
)

func TestReplayVerdict(t *testing.T) {
	for _, tt := range []struct {
		name, value string
		verdict     string
		coalesced   bool
	}{
		{"Cache-Status", "pop-a; hit", "hit", false},
		{"Cache-Status", "pop-a; fwd=uri-miss; stored", "miss", false},
		{"Cache-Status", "pop-a; fwd=miss; detail=coalesced", "miss", true},
		{"Cache-Status", "origin-cache; hit, pop-a; fwd=uri-miss", "miss", false},
		{"Cache-Status", "pop-a; fwd=stale; fwd-status=304", "stale", false},
		{"X-Cache-Status", "HIT", "hit", false},
		{"X-Cache-Status", "EXPIRED", "miss", false},
		{"X-Cache", "MISS from squid", "miss", false},
		{"X-Cache", "Hit from cloudfront", "hit", false},
		{"X-Varnish", "32770 3", "hit", false},
		{"X-Varnish", "32770", "miss", false},
		{"Server", "x", "", false},
	} {
		h := http.Header{}
		h.Set(tt.name, tt.value)
		if v, c := replayVerdict(h); v != tt.verdict || c != tt.coalesced {
			t.Errorf("replayVerdict(%s: %s) = %q, %v; want %q, %v", tt.name, tt.value, v, c, tt.verdict, tt.coalesced)
		}
	}
}
