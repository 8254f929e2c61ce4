package bench

import (
	"cmp"
	"container/list"
	"fmt"
	"slices"
	"strconv"

	"github.com/edgecdn/cdn/cache"
)

// The offline references say what a cache of the same budget could have
// done with the same trace, so that a measured hit ratio means something:
// an exact LRU (what a plain cache does) and the hindsight static oracle
// (the best fixed set of objects, the bound for traffic whose popularity
// does not change). Both count the requests after the warm-up only, and
// charge an object its size in bytes, nothing more.

// Policies of OfflineResult.
const (
	PolicyLRU    = "lru"
	PolicyOracle = "oracle"
	PolicyStore  = "pop store" // the PoP's cache store, simulated (SimulateStore)
)

// OfflineResult is what a policy achieves on a trace's measured window.
type OfflineResult struct {
	Policy string `json:"policy"`
	Budget int64  `json:"budget"`
	// Requests and Bytes are the window's; Hits and HitBytes the part the
	// policy served from its cache.
	Requests       int64   `json:"requests"`
	Hits           int64   `json:"hits"`
	Bytes          int64   `json:"bytes"`
	HitBytes       int64   `json:"hit_bytes"`
	ObjectHitRatio float64 `json:"object_hit_ratio"`
	ByteHitRatio   float64 `json:"byte_hit_ratio"`
}

func (r *OfflineResult) finish() {
	if r.Requests > 0 {
		r.ObjectHitRatio = float64(r.Hits) / float64(r.Requests)
	}
	if r.Bytes > 0 {
		r.ByteHitRatio = float64(r.HitBytes) / float64(r.Bytes)
	}
}

// SimulateLRU replays reqs through an exact LRU cache of budget bytes: a
// miss stores the object (unless it alone is larger than the budget) and
// evicts the least recently used until the rest fits; a hit makes the
// object the most recent. The warm-up requests fill the cache but are not
// counted.
func SimulateLRU(reqs []TraceRequest, warmup int, budget int64) OfflineResult {
	res := OfflineResult{Policy: PolicyLRU, Budget: budget}
	lru := list.New() // of traceKey, most recent first
	index := make(map[traceKey]*list.Element)
	var used int64
	for i, r := range reqs {
		k := r.key()
		e, hit := index[k]
		if i >= warmup {
			res.Requests++
			res.Bytes += r.Size
			if hit {
				res.Hits++
				res.HitBytes += r.Size
			}
		}
		switch {
		case hit:
			lru.MoveToFront(e)
		case r.Size <= budget:
			for used+r.Size > budget {
				old := lru.Back()
				ok := lru.Remove(old).(traceKey)
				delete(index, ok)
				used -= ok.size
			}
			index[k] = lru.PushFront(k)
			used += r.Size
		}
	}
	res.finish()
	return res
}

// StaticOracle is the hindsight static oracle: knowing the window's
// requests in advance, it keeps a fixed set of objects chosen greedily by
// request count in the window, most requested first (ties: smaller, then
// lower ID, first), skipping any that no longer fits and going on with
// the next. Every request for a kept object is a hit, the first one
// included.
func StaticOracle(reqs []TraceRequest, warmup int, budget int64) OfflineResult {
	res := OfflineResult{Policy: PolicyOracle, Budget: budget}
	window := reqs[min(max(warmup, 0), len(reqs)):]
	counts := make(map[traceKey]int64)
	for _, r := range window {
		counts[r.key()]++
		res.Requests++
		res.Bytes += r.Size
	}
	type obj struct {
		k traceKey
		n int64
	}
	objs := make([]obj, 0, len(counts))
	for k, n := range counts {
		objs = append(objs, obj{k, n})
	}
	slices.SortFunc(objs, func(a, b obj) int {
		return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.k.size, b.k.size), cmp.Compare(a.k.id, b.k.id))
	})
	free := budget
	for _, o := range objs {
		if o.k.size <= free {
			free -= o.k.size
			res.Hits += o.n
			res.HitBytes += o.n * o.k.size
		}
	}
	res.finish()
	return res
}

// SimulateStore replays reqs through the PoP's cache store without HTTP
// (cache.StoreSim): its admission, eviction and costs at budget bytes, so
// that a change of policy can be judged in seconds before a replay. Keys
// are those a replay's requests get (https://127.0.0.1/gen/<size>?o=<id>).
// The result varies a little from run to run (see cache.StoreSim).
func SimulateStore(reqs []TraceRequest, warmup int, budget int64) (OfflineResult, error) {
	res := OfflineResult{Policy: PolicyStore, Budget: budget}
	sim, err := cache.NewStoreSim(cache.SimConfig{MaxBytes: budget})
	if err != nil {
		return res, fmt.Errorf("-budget %d: %w", budget, err)
	}
	defer sim.Close()
	var key []byte
	for i, r := range reqs {
		key = append(key[:0], "https://127.0.0.1/gen/"...)
		key = strconv.AppendInt(key, r.Size, 10)
		key = append(key, "?o="...)
		key = strconv.AppendUint(key, r.ID, 10)
		hit, err := sim.Request(string(key), r.Size)
		if err != nil {
			return res, fmt.Errorf("trace request %d: %w", i, err)
		}
		if i >= warmup {
			res.Requests++
			res.Bytes += r.Size
			if hit {
				res.Hits++
				res.HitBytes += r.Size
			}
		}
	}
	res.finish()
	return res, nil
}
