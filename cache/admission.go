package cache

import (
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
)

// Who stays in the store. What a CDN is paid for is the bytes it keeps
// from the origin, and a byte stored is worth the requests for it: the
// best fixed set of objects for a budget (the hindsight oracle bench
// replay reports) is the most requested ones, whatever their size. So the
// store keeps objects by how often they are requested, measured per key:
//
//   - freqSketch counts every request's key (store.look, LookupFast: once
//     per request, see store.go) in a count-min sketch of 16-bit counters
//     that halves them all every sketchWindowPerKiB increments per KiB of
//     budget, so that popularity that has moved on fades.
//   - admission keeps the resident keys with their costs. A new object
//     that does not fit evicts, one at a time, the least requested of
//     victimSample resident objects drawn at random, as long as each is
//     requested no more than the newcomer; when one is requested more, the
//     newcomer is refused and evicts nothing. An object requested once
//     (a one-hit wonder) therefore never evicts an object requested more.
//
// ristretto stores, expires and finds the entries; its own TinyLFU
// decided this before, with 4-bit counters that halve every NumCounters
// requests: near the budget's boundary (a few thousand objects at
// 64 MiB) every resident object's counter had reached the cap of 15, so
// it could not tell the 1,000th most requested object from the 5,000th
// and evicted among them nearly at random. In bench replay's simulation
// (1M Zipf requests over 100k lognormal objects, 64 and 256 MiB, Zipf
// 0.8 and 1.0) that policy reached 0.93 to 0.97 of the oracle's byte hit
// ratio, this one 0.96 to 0.99 at the same costs; with every byte an
// entry holds counted, 0.94 to 0.98, and 0.95 to 0.985 once entries held
// less (bodies in two allocations, compact fields and entries: see
// bench/RESULTS.md). ristretto
// is given a MaxCost above this budget (storeSlack) so that it evicts
// nothing itself unless something slips past this accounting; what it
// evicts or expires is removed here too (store.forget).

// Sizes of the policy, per KiB of the budget.
const (
	// sketchCountersPerKiB is the counters in each of the sketch's four
	// rows (rounded up to a power of two). In simulation, from 0.6 to 5
	// per KiB gave the same hit ratio (lognormal objects, 16 KiB median).
	sketchCountersPerKiB = 1
	// sketchWindowPerKiB is how many increments pass between halvings. In
	// simulation, 1.25 to 5 per KiB made no difference on fixed
	// popularity; on a trace that replaces 5% of the catalogue every 50k
	// requests 2.5 gained a point over 5, 1.25 another half point and
	// lost half a point on fixed popularity.
	sketchWindowPerKiB = 2.5
	// victimSample is how many resident objects each eviction draws: 5
	// and 16 were within 0.3 points of each other; 32 gained 0.2 over 16
	// at 64 and 256 MiB (costs as counted since bodies are split, see
	// body.go), 64 nothing more.
	victimSample = 32
	// residentOverhead is what one resident key costs beside its entry:
	// its record here and in ristretto (its item, its cost, its expiry
	// bucket: three map slots). Measured (TestResidentOverhead, and
	// StoreSim from 1,000 to 128,000 keys) between 217 and 318 bytes,
	// as the maps and the record slice stand in their doublings (they
	// never shrink): the most, so that no store size holds more than it
	// counts.
	residentOverhead = 320
)

// freqSketch is a count-min sketch of 16-bit saturating counters, four
// rows, safe for concurrent use without a lock: each counter is half of
// an atomic uint32. It forgets by halving every counter every window
// increments.
type freqSketch struct {
	words  []atomic.Uint32 // four rows of width counters, two per word
	shift  uint            // 64 - log2(width): a row index is a hash's top bits
	window int64           // increments between halvings

	// Increments are counted approximately, one in windowSample at
	// random, as windowSample each, in stripes, so that a hit does not
	// pay for one more atomic add on a line every hit shares.
	stripes [sketchStripes]struct {
		n atomic.Int64
		_ [56]byte // a cache line each
	}
	ticks  atomic.Int64 // stripes that completed their share of a window
	halved atomic.Int64 // halvings so far, for tests
}

const (
	sketchRows    = 4
	sketchStripes = 8
	windowSample  = 64
)

// Multipliers that make four row indexes out of one hash (odd, from
// splitmix64 and the golden ratio).
var sketchMul = [4]uint64{0x9e3779b97f4a7c15, 0xbf58476d1ce4e5b9, 0x94d049bb133111eb, 0xd6e8feb86659fd93}

func newFreqSketch(width, window int64) *freqSketch {
	w := uint64(1) << bits.Len64(uint64(max(width, 64)-1)) // a power of two
	return &freqSketch{
		words:  make([]atomic.Uint32, sketchRows*w/2),
		shift:  uint(64 - bits.TrailingZeros64(w)),
		window: max(window, sketchStripes*windowSample),
	}
}

// bytes is the sketch's memory.
func (s *freqSketch) bytes() int64 { return int64(len(s.words)) * 4 }

// slot is the word and bit shift of row r's counter for hash h.
func (s *freqSketch) slot(h uint64, r int) (*atomic.Uint32, uint32) {
	width := uint64(len(s.words) * 2 / sketchRows) // counters per row
	i := uint64(r)*width + (h*sketchMul[r])>>s.shift
	return &s.words[i/2], uint32(i&1) * 16
}

// increment counts one request for the key of hash h.
func (s *freqSketch) increment(h uint64) {
	for r := range sketchRows {
		w, sh := s.slot(h, r)
		for {
			old := w.Load()
			if (old>>sh)&0xffff == 0xffff || w.CompareAndSwap(old, old+1<<sh) {
				break
			}
		}
	}
	if rand.Uint32()%windowSample != 0 {
		return
	}
	per := s.window / sketchStripes
	st := &s.stripes[h>>61]
	if n := st.n.Add(windowSample); n >= per && st.n.CompareAndSwap(n, n-per) && s.ticks.Add(1)%sketchStripes == 0 {
		s.halve()
	}
}

// estimate is the count for the key of hash h: at least its requests
// since the last halving, and their halves before that.
func (s *freqSketch) estimate(h uint64) int64 {
	m := uint32(0xffff)
	for r := range sketchRows {
		w, sh := s.slot(h, r)
		m = min(m, (w.Load()>>sh)&0xffff)
	}
	return int64(m)
}

func (s *freqSketch) halve() {
	for i := range s.words {
		w := &s.words[i]
		for {
			old := w.Load()
			if w.CompareAndSwap(old, (old>>1)&0x7fff7fff) {
				break
			}
		}
	}
	s.halved.Add(1)
}

// admission decides which objects the store keeps within its budget (see
// above). Keys are the store's full keys; values are what the store
// holds under them, so that an eviction by ristretto of a value already
// replaced does not remove its successor.
type admission struct {
	freq   *freqSketch
	budget int64 // for resident objects

	mu        sync.Mutex // guards used, items, index, rng, evictions
	used      int64
	items     []resident
	index     map[string]int32 // key -> its position in items
	rng       uint64
	evictions int64
}

// resident is an object the store holds.
type resident struct {
	key  string
	v    any
	cost int64
}

func newAdmission(budget int64, freq *freqSketch) *admission {
	return &admission{freq: freq, budget: budget, index: map[string]int32{}, rng: 0x853c49e6748fea9b}
}

// count counts one request for key.
func (a *admission) count(key string) { a.freq.increment(keyHash(key)) }

// admit decides whether v may be stored under key at cost, and which
// resident objects it evicts to fit. On true, v is resident and victims
// are not; the caller removes them from the store. On false nothing
// changed, except that a key that was resident (with another value) is
// not any more: replaced reports it, for the caller to remove it from the
// store too.
func (a *admission) admit(key string, v any, cost int64) (victims []resident, ok, replaced bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i, ok := a.index[key]; ok {
		a.removeAt(int(i)) // an update: it competes like a new object
		replaced = true
	}
	n, ok := a.choose(key, cost)
	if !ok {
		return nil, false, replaced
	}
	victims = append(victims, a.items[n:]...)
	for len(a.items) > n {
		a.removeAt(len(a.items) - 1)
	}
	a.evictions += int64(len(victims))
	a.index[key] = int32(len(a.items))
	a.items = append(a.items, resident{key: key, v: v, cost: cost})
	a.used += cost
	return victims, true, replaced
}

// wouldAdmit is admit's decision for a new object, without admitting it:
// the cache asks before it buffers a response, so that one the store
// would refuse streams through without a copy. (admit decides again when
// it is stored, on a new draw of candidates.)
func (a *admission) wouldAdmit(key string, cost int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.index[key]; ok {
		return true // an update
	}
	_, ok := a.choose(key, cost)
	return ok
}

// choose draws the victims for a newcomer of cost: it moves them to the
// end of items, from n on, or reports false if the newcomer is refused.
// Candidates taken so far are at the end, so that the next draws are
// among the rest.
func (a *admission) choose(key string, cost int64) (n int, ok bool) {
	if cost > a.budget {
		return 0, false
	}
	inc := a.freq.estimate(keyHash(key))
	n, free := len(a.items), a.budget-a.used
	for free < cost {
		if n == 0 {
			return 0, false
		}
		best, bestF := -1, int64(0)
		for range min(victimSample, n) {
			i := int(a.next() % uint64(n))
			if f := a.freq.estimate(keyHash(a.items[i].key)); best < 0 || f < bestF {
				best, bestF = i, f
			}
		}
		if bestF > inc {
			return 0, false
		}
		n--
		a.swap(best, n)
		free += a.items[n].cost
	}
	return n, true
}

// remove forgets key if v is its resident value (any value if v is nil).
func (a *admission) remove(key string, v any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if i, ok := a.index[key]; ok && (v == nil || a.items[i].v == v) {
		a.removeAt(int(i))
	}
}

// removeAt removes items[i], moving the last item into its place.
func (a *admission) removeAt(i int) {
	last := len(a.items) - 1
	a.swap(i, last)
	r := a.items[last]
	a.used -= r.cost
	delete(a.index, r.key)
	a.items[last] = resident{}
	a.items = a.items[:last]
}

func (a *admission) swap(i, j int) {
	if i == j {
		return
	}
	a.items[i], a.items[j] = a.items[j], a.items[i]
	a.index[a.items[i].key] = int32(i)
	a.index[a.items[j].key] = int32(j)
}

// next is a xorshift64* draw.
func (a *admission) next() uint64 {
	a.rng ^= a.rng >> 12
	a.rng ^= a.rng << 25
	a.rng ^= a.rng >> 27
	return a.rng * 0x2545f4914f6cdd1d
}

// usage reports the bytes resident and the evictions so far.
func (a *admission) usage() (used, evictions int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.used, a.evictions
}
