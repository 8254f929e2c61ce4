package bench_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/edgecdn/cdn/bench"
)

// TestVarnishAnchor replays a trace against Varnish with lru_interval=0,
// which must land near the exact LRU's numbers: the check that the tool,
// the trace and the references agree. It needs varnishd (apt-get install
// varnish) and skips without it.
func TestVarnishAnchor(t *testing.T) {
	const budget = 4 << 20
	reqs, err := bench.GenerateTrace(bench.TraceConfig{Seed: 1, Objects: 2000, Requests: 10_000, Warmup: 2000, Zipf: 0.8,
		SizeMedian: 16 << 10, SizeSigma: 1})
	if err != nil {
		t.Fatal(err)
	}
	o := startReplayOrigin(t)
	res, err := bench.RunVarnishAnchor(context.Background(), bench.ReplayConfig{Workers: 4, Warmup: 2000, Origin: o},
		strings.TrimPrefix(o.URL(), "http://"), budget, reqs)
	if errors.Is(err, bench.ErrNoVarnish) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	r := res.Replay
	if r.Status["200"] != r.Requests || len(r.Errors) != 0 || r.Header.Unknown != 0 {
		t.Fatalf("varnish: status %v, errors %v, %d without a verdict; want every answer 200 with X-Varnish", r.Status, r.Errors, r.Header.Unknown)
	}
	if r.Origin == nil || r.Origin.Difference != 0 || r.Origin.ByteDifference != 0 {
		t.Errorf("varnish: origin %+v, headers %+v; want both accounts to agree", r.Origin, r.Header)
	}
	lru := bench.SimulateLRU(reqs, 2000, budget)
	// Varnish's storage also holds each object's headers and rounds its
	// allocations: a little below the LRU of bodies alone.
	if d := lru.ByteHitRatio - r.Origin.ByteHitRatio; math.Abs(d) > 0.05 {
		t.Errorf("varnish byte hit ratio %.3f, exact LRU %.3f: want within 0.05", r.Origin.ByteHitRatio, lru.ByteHitRatio)
	}
	if r.PeakRSSMiB <= 0 {
		t.Errorf("varnish peak RSS %.1f MiB, want its cache process's", r.PeakRSSMiB)
	}
	t.Logf("varnish: object hit %.3f byte hit %.3f; LRU %.3f %.3f", r.Origin.ObjectHitRatio, r.Origin.ByteHitRatio, lru.ObjectHitRatio, lru.ByteHitRatio)
}
