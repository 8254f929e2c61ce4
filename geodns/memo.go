package geodns

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/maphash"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
)

// memo holds the fast path's precomputed answers (see fast.go), by the
// hash of their memo key. It holds at most max bytes of them: a client
// can send ECS for millions of prefixes, so a full memo forgets entries at
// random to take a new one. Entries of an older generation are never
// returned, and the first entry of a new generation stored clears it.
//
// One lock guards it; the Linux loop looks up a whole batch under one
// hold of it (getAll).
type memo struct {
	max  int // bytes
	seed maphash.Seed
	mu   sync.RWMutex // guards m, bytes, gen
	// m is keyed by the memo key's hash: a map of integers keeps its keys
	// in its own groups, where strings would send each lookup to the key's
	// bytes first. The entry holds the key itself, and a lookup compares
	// it; two keys of one hash take turns in the slot.
	m      map[uint64]*entry
	bytes  int
	gen    uint64
	shared shared
}

// shared is what the entries of one generation have in common: the
// options of their routes with the metrics' series of each option, and
// their answers. A busy memo holds thousands of entries (one per ECS
// prefix) answering with a few sets of replies; shared, these stay in the
// CPU's caches, where an entry's own copies would be cache misses in
// every query it answers.
type shared struct {
	mu      sync.Mutex // guards gen, routes, answers
	gen     uint64
	routes  map[string]sharedRoute
	answers map[string]*answers // by answers.shareKey
}

type sharedRoute struct {
	options []option
	steered [][]prometheus.Counter // per option
}

// maxSharedAnswers bounds shared.answers; an entry built when it is full
// keeps its answers to itself.
const maxSharedAnswers = 4096

// at readies sh for generation gen, forgetting an older one's, and
// reports whether gen is sh's: an entry of an older generation shares
// nothing. sh.mu is held.
func (sh *shared) at(gen uint64) bool {
	if gen > sh.gen || sh.routes == nil {
		sh.gen, sh.routes, sh.answers = gen, map[string]sharedRoute{}, map[string]*answers{}
	}
	return gen == sh.gen
}

// route returns r's options and their series, those of generation gen's
// first route equal to r.
func (sh *shared) route(gen uint64, m *metrics, r route) sharedRoute {
	k := []byte{0}
	if r.steered {
		k[0] = 1
	}
	for _, o := range r.options {
		k = binary.LittleEndian.AppendUint64(k, math.Float64bits(o.share))
		k = append(k, byte(len(o.pops)))
		if o.explore {
			k[len(k)-1] |= 0x80
		}
		for _, p := range o.pops {
			k = binary.LittleEndian.AppendUint64(k, uint64(uintptr(unsafe.Pointer(p))))
		}
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	current := sh.at(gen)
	if sr, ok := sh.routes[string(k)]; ok && current {
		return sr
	}
	sr := sharedRoute{options: slices.Clone(r.options)}
	for i := range r.options {
		sr.steered = append(sr.steered, m.steeredCounters(r, &r.options[i]))
	}
	if current {
		sh.routes[string(k)] = sr
	}
	return sr
}

// intern returns generation gen's answers equal to a (see answers.same)
// if it holds one, else a, which it holds from then on if there is room.
// It reports whether a is new: the entry that built it then pays for it.
func (sh *shared) intern(gen uint64, a *answers) (*answers, bool) {
	k := a.shareKey()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if !sh.at(gen) {
		return a, true
	}
	if old, ok := sh.answers[k]; ok && old.same(a) {
		return old, false
	}
	if len(sh.answers) < maxSharedAnswers {
		sh.answers[k] = a
	}
	return a, true
}

// maxMemoBytes bounds the memo: some 100,000 keys (an entry is about
// entryOverhead bytes beside the answers it shares), more than a server's
// resolvers and their ECS prefixes that are busy at one time.
const maxMemoBytes = 16 << 20

func newMemo(max int) *memo {
	return &memo{max: max, seed: maphash.MakeSeed(), m: map[uint64]*entry{}}
}

// entry is the precomputed answer for one memo key: the key, what
// decides whether it still holds, and its answers, which entries with
// the same replies share (shared.intern). A lookup in a busy memo, past
// the CPU's caches, waits for the entry's line and its key's; the
// answers are among a few that stay in the caches.
type entry struct {
	gen uint64
	// expires is when (UnixNano) a measurement the route counted goes
	// stale; 0 if none did.
	expires int64
	// seed is rollSeed of the client, for a geo answer.
	seed uint64
	key  []byte
	// ans is nil for a key the slow path answers (a forwarded name, an
	// answer too big for the client's UDP size, ...).
	ans  *answers
	size int // bytes held, about
	// inline holds the key when it fits (keyHeader and the name in wire
	// form: www.cdn.lab's is 38 bytes), so that the entry and its key are
	// two adjacent lines of one allocation (128 bytes), not two.
	inline [64]byte
}

// answers is what entries answer with: the replies in wire form for
// each option of a route, the option picked per query for a geo name.
type answers struct {
	// geo is set when the answer is one of pick's options, picked per
	// query (pick holds only the options).
	geo     bool
	pick    route
	nameLen int
	// first is the reply for the route's first option (or the only one);
	// rest are the others' in turn.
	first wire
	slip  wire // the reply that rate limiting slips
	rest  []wire
	// queries and steered are the metrics' series the answer counts in.
	queries prometheus.Counter
	steered [][]prometheus.Counter // per option
	size    int                    // bytes held, about
}

// wire is a reply with ID 0, the query's name in lowercase at each of
// names[:n] (nameLen bytes), and, in its last tail bytes, the address of
// the query's ECS option, which ends the query too.
type wire struct {
	b     []byte
	names [maxNameCopies]uint16
	n     uint8
	tail  uint8
}

// option returns the reply for route's option i.
func (a *answers) option(i int) *wire {
	if i == 0 {
		return &a.first
	}
	return &a.rest[i-1]
}

// wires calls f with each of a's replies.
func (a *answers) wires(f func(w *wire)) {
	f(&a.first)
	f(&a.slip)
	for i := range a.rest {
		f(&a.rest[i])
	}
}

// shareKey is a's replies without their tails, with where they are
// patched: answers of equal keys differ at most in what the patching
// overwrites, and in their route and series, which same compares.
func (a *answers) shareKey() string {
	k := []byte{0}
	if a.geo {
		k[0] = 1
	}
	k = binary.LittleEndian.AppendUint16(k, uint16(a.nameLen))
	a.wires(func(w *wire) {
		k = binary.LittleEndian.AppendUint16(k, uint16(len(w.b)))
		k = append(k, w.n, w.tail)
		for _, at := range w.names[:w.n] {
			k = binary.LittleEndian.AppendUint16(k, at)
		}
		k = append(k, w.b[:len(w.b)-int(w.tail)]...)
	})
	return string(k)
}

// same reports whether b answers as a does, given equal share keys: the
// same route options (shared.route's) and series.
func (a *answers) same(b *answers) bool {
	if a.queries != b.queries || len(a.pick.options) != len(b.pick.options) || len(a.steered) != len(b.steered) {
		return false
	}
	if len(a.pick.options) > 0 && &a.pick.options[0] != &b.pick.options[0] {
		return false
	}
	return len(a.steered) == 0 || &a.steered[0] == &b.steered[0]
}

// maxNameCopies is how many copies of the query's name a memoised reply
// may hold (the question's and one per record, as replies are not
// compressed); one with more is left to the slow path.
const maxNameCopies = 8

// entryOverhead is about what an entry costs besides a key too long for
// it: the struct and its map slot.
const entryOverhead = 160

func (c *memo) hash(key []byte) uint64 { return maphash.Bytes(c.seed, key) }

// get returns key's entry if it is of generation gen and fresh at now.
func (c *memo) get(key []byte, gen uint64, now time.Time) *entry {
	c.mu.RLock()
	e := c.lookup(key, gen, now)
	c.mu.RUnlock()
	return e
}

// lookup is get for a caller that holds c.mu for reading.
func (c *memo) lookup(key []byte, gen uint64, now time.Time) *entry {
	if e := c.m[c.hash(key)]; e.answers(key, gen, now) {
		return e
	}
	return nil
}

// answers reports whether e is key's entry of generation gen, fresh at now.
func (e *entry) answers(key []byte, gen uint64, now time.Time) bool {
	return e != nil && e.gen == gen && (e.expires == 0 || now.UnixNano() < e.expires) && bytes.Equal(e.key, key)
}

// getAll sets found[i] to keys[i]'s entry, as get does, for a batch of
// keys (nil ones are skipped), using hashes (as long as keys) as scratch.
// It goes in stages, each over the whole batch: hashes; map slots, under
// one hold of the lock; the entries' first lines; their bytes' first
// lines; the checks. In a busy memo, past the CPU's caches, each stage's
// loads miss independently of each other, so the CPU has them in flight at
// once; a lookup after another would wait for each of its misses in turn,
// and a lock per lookup, an atomic instruction no load may cross, would
// too. It returns a sum of what it read, which the caller keeps so that
// the compiler keeps the loads.
func (c *memo) getAll(keys [][]byte, hashes []uint64, found []*entry, gen uint64, now time.Time) (touched uint64) {
	for i, k := range keys {
		if k != nil {
			hashes[i] = c.hash(k)
		}
	}
	c.mu.RLock()
	for i, k := range keys {
		found[i] = nil
		if k != nil {
			found[i] = c.m[hashes[i]]
		}
	}
	c.mu.RUnlock()
	for _, e := range found {
		if e != nil {
			touched += e.gen
		}
	}
	for _, e := range found {
		if e != nil && len(e.key) > 0 {
			touched += uint64(e.key[0])
		}
	}
	for i, e := range found {
		if !e.answers(keys[i], gen, now) {
			found[i] = nil
		}
	}
	return touched
}

// put stores e under its key, unless a newer generation is stored already.
func (c *memo) put(e *entry) {
	key := c.hash(e.key)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case e.gen < c.gen:
		return
	case e.gen > c.gen:
		clear(c.m)
		c.bytes, c.gen = 0, e.gen
	}
	if old := c.m[key]; old != nil {
		delete(c.m, key)
		c.bytes -= old.size
	}
	for k, old := range c.m {
		if c.bytes+e.size <= c.max {
			break
		}
		delete(c.m, k) // map order: at random
		c.bytes -= old.size
	}
	if c.bytes+e.size > c.max {
		return
	}
	c.m[key] = e
	c.bytes += e.size
}

// held is what the memo holds, in bytes, about.
func (c *memo) held() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes
}

// buildEntry answers the plain query pkt from src by running the slow
// path (reply, withOPT, finishUDP, Pack) once for each option of its
// route, and once more slipped, on two spellings of it: the name in
// lowercase and in uppercase. Where the two replies differ is where the
// query's name is copied, which the fast path patches with the name as
// asked. A reply that cannot be patched so, or that the slow path should
// answer each time, makes a slow entry.
func (s *Server) buildEntry(st *state, gen uint64, pkt []byte, p plain, src netip.AddrPort, now time.Time) *entry {
	e := &entry{gen: gen, size: entryOverhead}
	if len(p.key) <= len(e.inline) {
		e.key = e.inline[:len(p.key):len(p.key)]
		copy(e.key, p.key)
	} else {
		e.key = slices.Clone(p.key)
		e.size += len(p.key)
	}
	key := e.key
	a := &answers{nameLen: p.nameEnd - 12}
	b := &entryBuilder{s: s, st: st, w: memoWriter{net.UDPAddrFromAddrPort(src)}}
	if key[0]&keyECS != 0 {
		b.ecs = pkt[len(pkt)-(int(key[8])+7)/8:]
	}
	lower, upper := spell(pkt, p.nameEnd, false), spell(pkt, p.nameEnd, true)
	if err := b.fill(e, a, lower, upper); err != nil {
		return e
	}
	a.pack()
	var isNew bool
	if e.ans, isNew = s.memo.shared.intern(gen, a); isNew {
		e.size += a.size
	}
	if b.saved != nil && !b.saved.until.IsZero() {
		s.rtt.mu.Lock()
		rttNow := s.rtt.now()
		s.rtt.mu.Unlock()
		e.expires = now.Add(b.saved.until.Sub(rttNow)).UnixNano()
	}
	return e
}

// spell copies the query pkt with ID 0 and the name's letters (before
// nameEnd) in one case.
func spell(pkt []byte, nameEnd int, upper bool) []byte {
	q := append([]byte(nil), pkt...)
	q[0], q[1] = 0, 0
	for i := 12; i < nameEnd; i++ {
		switch c := q[i]; {
		case upper && 'a' <= c && c <= 'z':
			q[i] = c - 'a' + 'A'
		case !upper && 'A' <= c && c <= 'Z':
			q[i] = c - 'A' + 'a'
		}
	}
	return q
}

var (
	errForwarded  = errors.New("forwarded")
	errCompressed = errors.New("truncated (compressed)")
	errSpelling   = errors.New("the name's spelling changes more than its copies")
	errNameCopies = errors.New("more copies of the name than a memoised reply patches")
)

// entryBuilder runs the slow path for buildEntry.
type entryBuilder struct {
	s  *Server
	st *state
	w  memoWriter
	// ecs is the address of the query's ECS option (its last bytes), nil
	// without one.
	ecs []byte
	// saved is the route of the first reply; later ones answer its
	// options in turn. client is the address it was decided for.
	saved  *route
	client netip.Addr
}

func (b *entryBuilder) fill(e *entry, a *answers, lower, upper []byte) error {
	w, queries, err := b.spelt(a, lower, upper, 0, send)
	if err != nil {
		return err
	}
	a.queries = queries
	a.first = w
	if b.saved != nil {
		a.geo, e.seed = true, rollSeed(b.client)
		for i := range b.saved.options {
			if i > 0 {
				if w, _, err = b.spelt(a, lower, upper, i, send); err != nil {
					return err
				}
				a.rest = append(a.rest, w)
			}
		}
		sr := b.s.memo.shared.route(e.gen, b.s.metrics, *b.saved)
		a.pick.options, a.steered = sr.options, sr.steered
	}
	if a.slip, _, err = b.spelt(a, lower, upper, 0, slipTC); err != nil {
		return err
	}
	a.size = 256 // the struct, its options, counters, slice headers
	a.wires(func(w *wire) { a.size += len(w.b) + 64 })
	return nil
}

// pack copies the replies' bytes into one allocation.
func (a *answers) pack() {
	n := 0
	a.wires(func(w *wire) { n += len(w.b) })
	buf := make([]byte, 0, n)
	a.wires(func(w *wire) {
		buf = append(buf, w.b...)
		w.b = buf[len(buf)-len(w.b) : len(buf) : len(buf)]
	})
}

// spelt is the reply for option i and verdict v to both spellings, as one
// wire: where the two differ is where the name is copied. Its tail is
// the ECS address if the reply ends with it, past every copy of the name.
func (b *entryBuilder) spelt(a *answers, lower, upper []byte, i int, v verdict) (wire, prometheus.Counter, error) {
	wireL, queries, err := b.reply(lower, i, v)
	if err != nil {
		return wire{}, nil, err
	}
	wireU, _, err := b.reply(upper, i, v)
	if err != nil {
		return wire{}, nil, err
	}
	at, err := namesAt(wireL, wireU, upper[12:12+a.nameLen])
	if err != nil {
		return wire{}, nil, err
	}
	w := wire{b: wireL, n: uint8(len(at))}
	if len(b.ecs) > 0 && bytes.HasSuffix(wireL, b.ecs) && (len(at) == 0 || at[len(at)-1]+a.nameLen <= len(wireL)-len(b.ecs)) {
		w.tail = uint8(len(b.ecs))
	}
	for i, a := range at {
		w.names[i] = uint16(a)
	}
	return w, queries, nil
}

// reply is ServeDNS's UDP reply to q, with the geo route's option i and
// rate limiting's verdict v, and the series geodns_queries_total counts
// it in.
func (b *entryBuilder) reply(q []byte, i int, v verdict) ([]byte, prometheus.Counter, error) {
	req := new(dns.Msg)
	if err := req.Unpack(q); err != nil {
		return nil, nil, err
	}
	if len(req.Question) == 1 && findZone(b.st.zones, strings.ToLower(req.Question[0].Name)) == nil && len(b.st.fwd.upstreams) > 0 {
		return nil, nil, errForwarded
	}
	m := b.s.reply(b.st, b.w, req, func(r *route, client netip.Addr) *option {
		if b.saved == nil {
			saved := *r
			b.saved, b.client = &saved, client
		}
		return &b.saved.options[i]
	})
	withOPT(m, req)
	queries := b.s.metrics.queryCounter(req, m)
	finishUDP(m, req, v)
	if m.Compress {
		return nil, nil, errCompressed
	}
	wire, err := m.Pack()
	return wire, queries, err
}

// namesAt finds where the replies to the two spellings of the query
// differ, each where wireU has a copy of the name nameU (none for a name
// without letters, which has one spelling).
func namesAt(wireL, wireU, nameU []byte) ([]int, error) {
	var at []int
	for i := 0; len(wireL) == len(wireU); {
		j := bytes.Index(wireU[i:], nameU)
		if j < 0 {
			break
		}
		if i += j; !bytes.Equal(wireL[i:i+len(nameU)], nameU) {
			at = append(at, i)
		}
		i++
	}
	if !patches(wireL, wireU, at, nameU) {
		return nil, errSpelling
	}
	if len(at) > maxNameCopies {
		return nil, errNameCopies
	}
	return at, nil
}

// patches reports whether wireL with name copied at each of at is wireU.
func patches(wireL, wireU []byte, at []int, name []byte) bool {
	if len(wireL) != len(wireU) {
		return false
	}
	w := append([]byte(nil), wireL...)
	for _, i := range at {
		if i+len(name) > len(w) {
			return false
		}
		copy(w[i:], name)
	}
	return bytes.Equal(w, wireU)
}

// memoWriter is the ResponseWriter of the replies buildEntry runs: only
// the client's address is read.
type memoWriter struct{ remote *net.UDPAddr }

var errMemoWrite = errors.New("memo: replies are packed, not written")

func (w memoWriter) LocalAddr() net.Addr       { return &net.UDPAddr{} }
func (w memoWriter) RemoteAddr() net.Addr      { return w.remote }
func (w memoWriter) WriteMsg(*dns.Msg) error   { return errMemoWrite }
func (w memoWriter) Write([]byte) (int, error) { return 0, errMemoWrite }
func (w memoWriter) Close() error              { return nil }
func (w memoWriter) TsigStatus() error         { return nil }
func (w memoWriter) TsigTimersOnly(bool)       {}
func (w memoWriter) Hijack()                   {}
