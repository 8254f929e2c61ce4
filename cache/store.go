package cache

import (
	"fmt"
	"hash/maphash"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/dgraph-io/ristretto/v2"
)

// entry is one stored response. It is immutable once stored, except for
// the soft-purge mark: an update stores a new entry.
type entry struct {
	key      string // full key: primary key plus the Vary part
	status   int
	header   Fields // see fields.go
	data     body   // see body.go
	pol      storedPolicy
	lifetime time.Duration
	tags     string    // surrogate keys, separated by spaces (one string: every stored response holds an entry)
	fast     fastState // for LookupFast
	reps     []*rep    // identity then encodings, when compressed at the edge (compress.go); else nil

	vary    *varyIndex // the index listing this variant, or nil
	varySeq uint64     // the listing's seq in vary

	// The small fields together, without padding between them: every
	// stored response holds an entry (see entryOverhead).
	purged    atomic.Bool // soft purge: treat as stale
	heuristic bool
	encoded   bool // encode has run
}

// varyIndex is stored under a primary key whose responses vary: it names
// the request fields of the secondary key and lists the variants stored,
// so that a purge finds them all. A client that sends a new value with
// every request cannot grow it without bound: it lists at most
// Config.MaxVariants variants, and a variant ristretto evicts or rejects
// leaves it (see store.forget). Its fixed part is its own cost in the
// store; each listing is charged to the entry it lists (entry.cost), so
// that it is counted at its real size without the index's cost changing
// (ristretto evicts for new items only, never for cost updates).
type varyIndex struct {
	key   string
	names []string // canonical header names, as the origin's Vary listed them

	mu       sync.Mutex        // guards variants, seq
	variants map[string]uint64 // secondary key -> seq when last stored
	seq      uint64
}

// Sizes for the costs: a varyIndex with its map header and ristretto's
// item; one listing (a map slot: key string header, value, control byte,
// the table's spare room).
const (
	varyIndexOverhead = 256
	variantOverhead   = 48
)

// cost is the bytes of the index's fixed part.
func (vi *varyIndex) cost() int64 {
	n := int64(varyIndexOverhead + len(vi.key))
	for _, name := range vi.names {
		n += int64(16 + len(name))
	}
	return n
}

// has reports whether the index lists variant key.
func (vi *varyIndex) has(key string) bool {
	vi.mu.Lock()
	_, ok := vi.variants[key]
	vi.mu.Unlock()
	return ok
}

// keys returns the listed variants.
func (vi *varyIndex) keys() []string {
	vi.mu.Lock()
	defer vi.mu.Unlock()
	keys := make([]string, 0, len(vi.variants))
	for k := range vi.variants {
		keys = append(keys, k)
	}
	return keys
}

// add lists variant key as the most recently stored, first unlisting the
// least recently stored ones to keep at most limit. It returns the
// listing's seq and the keys it unlisted.
func (vi *varyIndex) add(key string, limit int) (seq uint64, evicted []string) {
	vi.mu.Lock()
	defer vi.mu.Unlock()
	if _, ok := vi.variants[key]; !ok {
		for len(vi.variants) >= limit {
			oldest, oldestSeq := "", uint64(0)
			for k, seq := range vi.variants { // at most limit: no heap needed
				if oldest == "" || seq < oldestSeq {
					oldest, oldestSeq = k, seq
				}
			}
			delete(vi.variants, oldest)
			evicted = append(evicted, oldest)
		}
	}
	vi.seq++
	vi.variants[key] = vi.seq
	return vi.seq, evicted
}

// remove unlists key if it is still the listing seq made.
func (vi *varyIndex) remove(key string, seq uint64) {
	vi.mu.Lock()
	if vi.variants[key] == seq {
		delete(vi.variants, key)
	}
	vi.mu.Unlock()
}

// store wraps ristretto: values are *entry or *varyIndex (or, for
// slices, *sliced and *unsliceable) under string keys; ristretto keeps
// only hashes, so every Get compares the full key. Which values stay is
// adm's decision (admission.go): every get and set goes through look and
// set here, never to rc directly.
type store struct {
	rc  *ristretto.Cache[string, any]
	adm *admission

	mu   sync.Mutex                     // guards tags
	tags map[string]map[string]struct{} // surrogate key -> entry keys

	varyMu sync.Mutex // guards creating and replacing Vary indexes (serialises addVariant)

	setMu sync.Mutex // serialises set, so ristretto applies evictions and sets in the order adm decided them

	counted [countedSlots]atomic.Uint64 // key hashes the fast path counted and missed
}

// storeSlack is ristretto's MaxCost beyond adm's budget: room for sets
// that race, so that ristretto itself evicts nothing.
func storeSlack(budget int64) int64 { return budget/8 + 1<<20 }

// newStore makes a store whose contents, the frequency sketch and every
// resident key's bookkeeping included, stay within maxBytes.
func newStore(maxBytes int64) (*store, error) {
	s := &store{tags: map[string]map[string]struct{}{}}
	kib := max(maxBytes>>10, 1)
	freq := newFreqSketch(kib*sketchCountersPerKiB, int64(float64(kib)*sketchWindowPerKiB))
	budget := maxBytes - freq.bytes()
	if budget <= 0 {
		return nil, fmt.Errorf("max bytes %d: want more than the %d bytes the store's frequency sketch takes", maxBytes, freq.bytes())
	}
	s.adm = newAdmission(budget, freq)
	rc, err := ristretto.NewCache(&ristretto.Config[string, any]{
		// ristretto's own admission and eviction see only what adm
		// admitted, within a MaxCost it never reaches: its sketch may be
		// small.
		NumCounters:        1 << 12,
		MaxCost:            budget + storeSlack(budget),
		IgnoreInternalCost: true, // in residentOverhead
		BufferItems:        64,
		OnEvict:            func(it *ristretto.Item[any]) { s.forget(it.Value) },
		OnReject:           func(it *ristretto.Item[any]) { s.forget(it.Value) },
	})
	if err != nil {
		return nil, err
	}
	s.rc = rc
	return s, nil
}

// look is rc.Get, counting one request for key in adm's sketch as
// ristretto counts it in its own.
func (s *store) look(key string) (any, bool) {
	s.adm.count(key)
	return s.rc.Get(key)
}

// set stores v under key at cost (plus residentOverhead) for ttl if adm
// admits it, evicting what adm says; it reports whether v is stored (or
// will be: ristretto applies sets asynchronously, Wait for it).
func (s *store) set(key string, v any, cost int64, ttl time.Duration) bool {
	s.setMu.Lock()
	defer s.setMu.Unlock()
	victims, ok, replaced := s.adm.admit(key, v, cost+residentOverhead)
	for _, r := range victims {
		s.rc.Del(r.key)
		s.forget(r.v)
	}
	if !ok {
		if replaced {
			s.drop(key)
		}
		return false
	}
	if !s.rc.SetWithTTL(key, v, cost+residentOverhead, ttl) {
		s.adm.remove(key, v) // dropped: ristretto's buffer was full
		return false
	}
	return true
}

// wouldAdmit reports whether set would store a new value of cost under
// key now (see admission.wouldAdmit).
func (s *store) wouldAdmit(key string, cost int64) bool {
	return s.adm.wouldAdmit(key, cost+residentOverhead)
}

// drop removes key from the store.
func (s *store) drop(key string) {
	s.adm.remove(key, nil)
	s.rc.Del(key)
}

// valueKey is the key a stored value is stored under.
func valueKey(v any) string {
	switch v := v.(type) {
	case *entry:
		return v.key
	case *varyIndex:
		return v.key
	case *sliced:
		return v.e.key
	case *unsliceable:
		return v.key
	}
	return ""
}

func (s *store) close() { s.rc.Close() }

// Every look counts an access in adm's frequency sketch (and ristretto's
// Get in its own), hit or miss, and admission and eviction compare those
// counts: a request must
// count once, whatever path it takes, or objects that miss (and take more
// paths) look more popular than objects that hit. present and peek look
// without counting an absent key; markCounted and lookFirst keep the fast
// path's look and ServeHTTP's from counting one miss twice.

// present reports whether key is stored (and not expired), without
// counting an access. It costs a clock read: not for the hit path.
func (s *store) present(key string) bool {
	_, ok := s.rc.GetTTL(key)
	return ok
}

// get is the value under key, an *entry or a *varyIndex, counting one
// access.
func (s *store) get(key string) any {
	v, _ := s.look(key)
	return v
}

// peek is get for a key that another path already counted for this
// request: an absent key is not counted again.
func (s *store) peek(key string) any {
	if !s.present(key) {
		return nil
	}
	return s.get(key)
}

// The fast path counts its look at a key; when it misses, ServeHTTP looks
// at the same key again. counted remembers the keys the fast path just
// missed, by hash in a small lossy table, so that ServeHTTP's look peeks
// instead of counting a second access. Lossy: two misses of one key at
// once, or two keys sharing a slot, may still count twice; hits pay
// nothing.
const countedSlots = 1024

func keyHash(key string) uint64 { return maphash.String(countedSeed, key) | 1 }

var countedSeed = maphash.MakeSeed()

// markCounted notes that the fast path counted a look at key, which missed.
func (s *store) markCounted(key string) {
	h := keyHash(key)
	s.counted[h%countedSlots].Store(h)
}

// lookFirst is get, or peek when the fast path has just counted key.
func (s *store) lookFirst(key string) any {
	h := keyHash(key)
	if s.counted[h%countedSlots].CompareAndSwap(h, 0) {
		return s.peek(key)
	}
	return s.get(key)
}

func (s *store) getEntry(key string) *entry {
	v, ok := s.look(key)
	if !ok {
		return nil
	}
	e, ok := v.(*entry)
	if !ok || e.key != key {
		return nil
	}
	return e
}

func (s *store) getVary(key string) *varyIndex {
	v, ok := s.look(key)
	if !ok {
		return nil
	}
	vi, ok := v.(*varyIndex)
	if !ok || vi.key != key {
		return nil
	}
	return vi
}

// cost is the bytes an entry holds on the heap: its body's allocation,
// its key, its own structure, its fields, its representations compressed
// at the edge (each a body and fields), and for a variant its listing in
// the Vary index (which keeps the key after the entry goes, until the
// index unlists it). TestResidentOverhead holds it to what the heap
// grows by.
func (e *entry) cost() int64 {
	n := e.data.alloc() + allocSize(int64(len(e.key))) + entryOverhead + e.prepareBytes() + e.header.bytes()
	if len(e.reps) == 0 {
		n += encodingCost(&e.header)
	}
	for i, r := range e.reps {
		if i > 0 { // the identity body is e.data
			n += r.data.alloc()
		}
		n += repOverhead + r.header.bytes() + encodingCost(&r.header)
	}
	if e.vary != nil {
		n += int64(len(e.key) + variantOverhead)
	}
	return n
}

// Heap sizes for the costs: an entry's struct (as allocated; what
// prepare adds is prepareBytes); a representation's (as allocated) with
// its place in the entry's list, its Content-Length value and room for
// what encode leaves. Fields count their own (Fields.bytes).
var (
	entryOverhead = allocSize(int64(unsafe.Sizeof(entry{})))
	repOverhead   = allocSize(int64(unsafe.Sizeof(rep{}))) + 112
)

// encodingCost is the heap of the header block a fast path encodes for a
// stored response's hits (Encodings, filled on its first hit, see
// Fields.EncodingBytes). One protocol's, the usual case.
func encodingCost(h *Fields) int64 { return h.EncodingBytes() }

// EncodingBytes is what the store counts for the header block a fast
// path encodes for the hits of a response with these fields (Encodings):
// the fields as HTTP/1.1 text, and encodingOverhead for what a hit adds.
// A fast path keeps its block in an allocation of its length (its size
// class) to stay within it.
func (f *Fields) EncodingBytes() int64 {
	n := int64(encodingOverhead)
	for _, s := range f.kv {
		n += int64(len(s) + 2) // name, value: ": " and CRLF
	}
	return n
}

// encodingOverhead is what a hit's header block adds to the stored
// fields: the PoP's status line and fields (X-Served-By, Alt-Svc,
// Timing-Allow-Origin, Content-Length, Accept-Ranges: 160 bytes for a
// PoP named in 27 characters, TestEncodingsWithinTheirCost),
// the block's size-class rounding and the slot's pointer (24). It was
// 256 while blocks kept the spare room their appends grew (an HTTP/2
// block of 282 bytes took 512).
const encodingOverhead = 208

// put stores e for ttl (freshness plus the longest stale window).
func (s *store) put(e *entry, ttl time.Duration) bool {
	if ttl <= 0 {
		ttl = time.Second
	}
	ok := s.set(e.key, e, e.cost(), ttl)
	if ok && len(e.tags) > 0 {
		s.mu.Lock()
		for t := range strings.FieldsSeq(e.tags) {
			m := s.tags[t]
			if m == nil {
				m = map[string]struct{}{}
				s.tags[t] = m
			}
			m[e.key] = struct{}{}
		}
		s.mu.Unlock()
	}
	return ok
}

// addVariant lists e, a variant of primary key pkey (with the request
// fields names), in pkey's Vary index, creating the index, or replacing
// one whose fields differ (its variants go: no request finds them any
// more). The least recently stored variants beyond limit go too. Call it
// before storing e: it sets e.vary.
func (s *store) addVariant(pkey string, names []string, e *entry, limit int, ttl time.Duration) {
	s.varyMu.Lock()
	defer s.varyMu.Unlock()
	vi := s.getVary(pkey)
	created := false
	if vi == nil || !slices.Equal(vi.names, names) {
		if vi != nil {
			for _, k := range vi.keys() {
				s.delEntry(k)
			}
		}
		vi = &varyIndex{key: pkey, names: names, variants: map[string]uint64{}}
		created = true
	}
	seq, evicted := vi.add(e.key, limit)
	e.vary, e.varySeq = vi, seq
	for _, k := range evicted {
		s.delEntry(k)
	}
	// Set again when stored, for the TTL; the cost does not change.
	s.set(pkey, vi, vi.cost(), ttl)
	if created {
		// ristretto applies sets asynchronously: wait, so that a
		// concurrent save of another variant adds to this index instead
		// of replacing it with one that does not list this variant.
		s.rc.Wait()
	}
}

// delEntry removes the entry under key, if there is one.
func (s *store) delEntry(key string) {
	if e := s.getEntry(key); e != nil {
		s.forgetTags(e)
		s.drop(key)
	}
}

// forget is called when v leaves the store (ristretto evicts, expires or
// rejects it, or adm evicts it): its surrogate keys, its listing in a
// Vary index and its record in adm go.
func (s *store) forget(v any) {
	s.adm.remove(valueKey(v), v)
	if o, ok := v.(*sliced); ok {
		v = o.e // its surrogate keys are its entry's
	}
	s.forgetTags(v)
	if e, ok := v.(*entry); ok && e.vary != nil {
		e.vary.remove(e.key, e.varySeq)
	}
}

func (s *store) forgetTags(v any) {
	e, ok := v.(*entry)
	if !ok || len(e.tags) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range strings.FieldsSeq(e.tags) {
		if m := s.tags[t]; m != nil {
			delete(m, e.key)
			if len(m) == 0 {
				delete(s.tags, t)
			}
		}
	}
}

// del removes a primary key and all its variants; it returns how many
// responses it removed (soft: marks them stale instead).
func (s *store) del(primary string, soft bool) int {
	n := s.delSliced(primary, soft) // an object kept in slices (slice.go)
	remove := func(key string) {
		e := s.getEntry(key)
		if e == nil {
			return
		}
		n++
		if soft {
			e.purged.Store(true)
			return
		}
		s.forgetTags(e)
		s.drop(key)
	}
	remove(primary)
	if vi := s.getVary(primary); vi != nil {
		for _, k := range vi.keys() {
			remove(k)
		}
		if !soft {
			s.drop(primary)
		}
	}
	return n
}

// delTag removes (or soft-purges) every response carrying surrogate key tag.
func (s *store) delTag(tag string, soft bool) int {
	s.mu.Lock()
	keys := make([]string, 0, len(s.tags[tag]))
	for k := range s.tags[tag] {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	n := 0
	for _, k := range keys {
		e := s.getEntry(k)
		if e == nil {
			n += s.delSliced(k, soft)
			continue
		}
		n++
		if soft {
			e.purged.Store(true)
		} else {
			s.forgetTags(e)
			s.drop(k)
		}
	}
	return n
}

// secondaryKey appends the normalised values of the Vary fields to the
// primary key. Normalisation: field lines joined, list members trimmed,
// case-folded where the field is case-insensitive, and sorted where order
// carries no meaning (Accept-Encoding).
func secondaryKey(primary string, names []string, h http.Header) string {
	var b strings.Builder
	b.WriteString(primary)
	for _, n := range names {
		b.WriteString("\x00")
		b.WriteString(strings.ToLower(n))
		b.WriteByte('=')
		b.WriteString(normalizeField(n, h.Values(n)))
	}
	return b.String()
}

func normalizeField(name string, lines []string) string {
	if len(lines) == 0 {
		return "\x01" // absent differs from empty
	}
	var members []string
	for _, l := range lines {
		for _, m := range strings.Split(l, ",") {
			m = strings.TrimSpace(m)
			if m == "" {
				continue
			}
			// Parameters lose inner whitespace: "gzip ; q=1" == "gzip;q=1".
			m = strings.ReplaceAll(strings.ReplaceAll(m, " ", ""), "\t", "")
			members = append(members, m)
		}
	}
	switch strings.ToLower(name) {
	case "accept-encoding":
		for i := range members {
			members[i] = strings.ToLower(members[i])
		}
		sort.Strings(members)
	case "accept", "accept-language", "accept-charset":
		for i := range members {
			members[i] = strings.ToLower(members[i])
		}
	}
	return strings.Join(members, ",")
}

// varyNames parses a response's Vary into canonical names; star reports
// Vary: *, which is never reused.
func varyNames(h fieldReader) (names []string, star bool) {
	seen := map[string]bool{}
	for _, l := range h.Values("Vary") {
		for _, n := range strings.Split(l, ",") {
			n = strings.TrimSpace(n)
			if n == "" {
				continue
			}
			if n == "*" {
				return nil, true
			}
			c := http.CanonicalHeaderKey(n)
			if !seen[c] {
				seen[c] = true
				names = append(names, c)
			}
		}
	}
	sort.Strings(names)
	return names, false
}
