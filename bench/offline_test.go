package bench_test

import (
	"strings"
	"testing"

	"github.com/edgecdn/cdn/bench"
)

// trace makes a trace from "id:size" pairs given as (id, size) numbers.
func trace(pairs ...int) []bench.TraceRequest {
	var out []bench.TraceRequest
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, bench.TraceRequest{Time: int64(i / 2), ID: uint64(pairs[i]), Size: int64(pairs[i+1])})
	}
	return out
}

func TestSimulateLRU(t *testing.T) {
	const a, b, c, d, e = 1, 2, 3, 4, 5
	// Budget 3: A B C fill it, A hits; D (2 bytes) evicts B and C; B
	// evicts A; A evicts D; C fits beside A and B. One hit, on the 4th.
	seq := trace(a, 1, b, 1, c, 1, a, 1, d, 2, b, 1, a, 1, c, 1)
	for _, tt := range []struct {
		name    string
		reqs    []bench.TraceRequest
		warmup  int
		budget  int64
		want    bench.OfflineResult
		ohr, bh float64
	}{
		{"evictions", seq, 0, 3, bench.OfflineResult{Requests: 8, Hits: 1, Bytes: 9, HitBytes: 1}, 1.0 / 8, 1.0 / 9},
		{"warm-up fills but is not counted", seq, 3, 3, bench.OfflineResult{Requests: 5, Hits: 1, Bytes: 6, HitBytes: 1}, 1.0 / 5, 1.0 / 6},
		{"too large to store evicts nothing", trace(a, 1, e, 5, a, 1, e, 5), 0, 3, bench.OfflineResult{Requests: 4, Hits: 1, Bytes: 12, HitBytes: 1}, 1.0 / 4, 1.0 / 12},
		{"an ID with another size is another object", trace(a, 1, a, 2, a, 1, a, 2), 0, 3, bench.OfflineResult{Requests: 4, Hits: 2, Bytes: 6, HitBytes: 3}, 0.5, 0.5},
		{"recency, not frequency", trace(a, 1, a, 1, a, 1, b, 1, c, 1, a, 1), 0, 2, bench.OfflineResult{Requests: 6, Hits: 2, Bytes: 6, HitBytes: 2}, 2.0 / 6, 2.0 / 6},
		{"zero budget", seq, 0, 0, bench.OfflineResult{Requests: 8, Bytes: 9}, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := bench.SimulateLRU(tt.reqs, tt.warmup, tt.budget)
			tt.want.Policy, tt.want.Budget, tt.want.ObjectHitRatio, tt.want.ByteHitRatio = bench.PolicyLRU, tt.budget, tt.ohr, tt.bh
			if got != tt.want {
				t.Errorf("SimulateLRU = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestStaticOracle(t *testing.T) {
	const w, x, y, z = 1, 2, 3, 4
	// In the window: X (2 bytes) 3 times, Y (2 bytes) and Z (1 byte) twice
	// each, W (1 byte) once; the warm-up asks for W many times, which
	// must not count.
	reqs := trace(w, 1, w, 1, w, 1, w, 1,
		x, 2, y, 2, z, 1, x, 2, w, 1, y, 2, z, 1, x, 2)
	for _, tt := range []struct {
		name    string
		budget  int64
		hits    int64
		hitB    int64
		ohr, bh float64
	}{
		// X, then Z (the smaller of the two asked twice); Y and W no
		// longer fit.
		{"budget 3", 3, 5, 8, 5.0 / 8, 8.0 / 13},
		// X, Z; Y does not fit, but W after it does.
		{"budget 4: past what does not fit", 4, 6, 9, 6.0 / 8, 9.0 / 13},
		{"everything fits", 6, 8, 13, 1, 1},
		{"nothing fits", 0, 0, 0, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := bench.StaticOracle(reqs, 4, tt.budget)
			want := bench.OfflineResult{Policy: bench.PolicyOracle, Budget: tt.budget, Requests: 8, Hits: tt.hits, Bytes: 13, HitBytes: tt.hitB,
				ObjectHitRatio: tt.ohr, ByteHitRatio: tt.bh}
			if got != want {
				t.Errorf("StaticOracle = %+v, want %+v", got, want)
			}
		})
	}
}

// On traffic of fixed popularity the static oracle bounds LRU.
func TestOracleBoundsLRU(t *testing.T) {
	reqs, err := bench.GenerateTrace(bench.TraceConfig{Seed: 1, Objects: 2000, Requests: 50_000, Warmup: 10_000, Zipf: 0.8, SizeSigma: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, budget := range []int64{1 << 20, 4 << 20, 16 << 20} {
		lru, oracle := bench.SimulateLRU(reqs, 10_000, budget), bench.StaticOracle(reqs, 10_000, budget)
		if lru.ByteHitRatio <= 0 || lru.ByteHitRatio >= oracle.ByteHitRatio || oracle.ByteHitRatio >= 1 {
			t.Errorf("budget %d: LRU byte hit ratio %.3f, oracle %.3f; want 0 < LRU < oracle < 1", budget, lru.ByteHitRatio, oracle.ByteHitRatio)
		}
	}
}

// TestSimulateStore: the PoP's store, simulated, keeps an object requested
// again and again among objects requested once, and counts only the
// window.
func TestSimulateStore(t *testing.T) {
	var reqs []bench.TraceRequest
	for i := range 100 {
		reqs = append(reqs, bench.TraceRequest{ID: 0, Size: 1000}, bench.TraceRequest{ID: uint64(i + 1), Size: 1000})
	}
	got, err := bench.SimulateStore(reqs, 20, 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	// After the warm-up's 10 requests for object 0, its other 90 hit.
	if got.Policy != bench.PolicyStore || got.Requests != 180 || got.Hits != 90 || got.HitBytes != 90_000 {
		t.Errorf("SimulateStore = %+v, want policy %q, 180 requests, 90 hits of 1000 bytes", got, bench.PolicyStore)
	}
	if _, err := bench.SimulateStore(reqs, 0, 100); err == nil || !strings.Contains(err.Error(), "-budget 100") {
		t.Errorf("SimulateStore at 100 bytes: error %v, want one naming the budget", err)
	}
}
