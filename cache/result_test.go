package cache

import "testing"

// TestResultOf classifies every Cache-Status this cache writes (the
// strings of cache.go, fetch.go, slicefetch.go and sliceserve.go), and
// reads the last entry of a list.
func TestResultOf(t *testing.T) {
	tests := []struct {
		status string
		want   Result
	}{
		{"edge; hit; ttl=60", ResultHit},
		{"edge; hit; ttl=0", ResultHit},
		{"edge; hit; ttl=60; detail=sliced", ResultHit},
		{"edge; hit; ttl=-5; detail=max-stale", ResultStale},
		{"edge; hit; ttl=-5; detail=stale-while-revalidate", ResultStale},
		{"edge; hit; ttl=-5; detail=stale-if-error-origin-down", ResultStale},
		{"edge; hit; ttl=-5; detail=stale-if-error", ResultStale},
		{"edge; fwd=stale; fwd-status=304", ResultRevalidated},
		{"edge; fwd=stale; detail=coalesced", ResultRevalidated},
		{"edge; fwd=stale; detail=sliced", ResultRevalidated},
		{"edge; fwd=stale; fwd-status=200; stored", ResultMiss},
		{"edge; fwd=stale; fwd-status=404", ResultMiss},
		{"edge; fwd=stale; detail=upstream-error-beyond-stale-if-error", ResultMiss},
		{"edge; fwd=uri-miss; stored", ResultMiss},
		{"edge; fwd=uri-miss; stored; detail=sliced", ResultMiss},
		{"edge; fwd=uri-miss; detail=sliced", ResultMiss},
		{"edge; fwd=uri-miss; detail=too-large", ResultMiss},
		{"edge; fwd=uri-miss; detail=fill-budget", ResultMiss},
		{"edge; fwd=miss; detail=coalesced", ResultMiss},
		{"edge; fwd=miss; detail=upstream-error", ResultMiss},
		{"edge; fwd=miss; detail=unsupported-transfer-coding", ResultMiss},
		{"edge; fwd=miss; detail=only-if-cached", ResultMiss},
		{"edge; fwd=partial; detail=sliced", ResultMiss},
		{"edge; fwd=uri-miss; detail=no-store", ResultPass},
		{"edge; fwd=uri-miss; detail=private", ResultPass},
		{"edge; fwd=uri-miss; detail=no-freshness", ResultPass},
		{"edge; fwd=uri-miss; detail=set-cookie", ResultPass},
		{"edge; fwd=uri-miss; detail=vary-star", ResultPass},
		{"edge; fwd=uri-miss; detail=status", ResultPass},
		{"edge; fwd=bypass; detail=vary-value-too-long", ResultPass},
		{"edge; fwd=request; detail=request-body", ResultPass},
		{"edge; fwd=method", ResultPass},
		{"", ResultPass},
		// The upstream cache's entry comes first; ours is last.
		{"shield; hit; ttl=30, edge; fwd=uri-miss; stored", ResultMiss},
		{"shield; fwd=uri-miss; stored, edge; hit; ttl=30", ResultHit},
		{"shield; fwd=uri-miss; detail=no-store, edge; fwd=uri-miss; detail=no-store", ResultPass},
	}
	for _, tt := range tests {
		if got := ResultOf(tt.status); got != tt.want {
			t.Errorf("ResultOf(%q) = %q, want %q", tt.status, got, tt.want)
		}
	}
}

func TestParseResult(t *testing.T) {
	for _, r := range Results {
		if got, err := ParseResult(string(r)); got != r || err != nil {
			t.Errorf("ParseResult(%q) = %q, %v", r, got, err)
		}
	}
	if _, err := ParseResult("HIT"); err == nil || err.Error() != `"HIT", want hit, stale, revalidated, miss or pass` {
		t.Errorf(`ParseResult("HIT") = %v, want an error naming it and the choices`, err)
	}
}
