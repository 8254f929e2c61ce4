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
// options of their routes and the metrics' series of each option. A busy
// memo holds thousands of entries (one per ECS prefix) naming a few
// routes; shared, these stay in the CPU's caches, where an entry's own
// copies would be cache misses in every query it answers.
type shared struct {
	mu     sync.Mutex // guards gen, routes
	gen    uint64
	routes map[string]sharedRoute
}

type sharedRoute struct {
	options []option
	steered [][]prometheus.Counter // per option
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
	if gen > sh.gen || sh.routes == nil {
		sh.gen, sh.routes = gen, map[string]sharedRoute{}
	}
	if sr, ok := sh.routes[string(k)]; ok && gen == sh.gen {
		return sr
	}
	sr := sharedRoute{options: slices.Clone(r.options)}
	for i := range r.options {
		sr.steered = append(sr.steered, m.steeredCounters(r, &r.options[i]))
	}
	if gen == sh.gen {
		sh.routes[string(k)] = sr
	}
	return sr
}

// maxMemoBytes bounds the memo: some 20,000 keys of a geo name with three
// PoPs, more than a server's resolvers and their ECS prefixes that are
// busy at one time.
const maxMemoBytes = 16 << 20

func newMemo(max int) *memo {
	return &memo{max: max, seed: maphash.MakeSeed(), m: map[uint64]*entry{}}
}

// entry is the precomputed answer for one memo key. What a query reads
// comes first, and the key and the replies' bytes share one allocation
// (pack): a lookup in a busy memo, past the CPU's caches, then waits for
// two lines of memory, the entry's and its bytes', where pointers to
// separate pieces cost a wait each.
type entry struct {
	key []byte
	gen uint64
	// expires is when (UnixNano) a measurement the route counted goes
	// stale; 0 if none did.
	expires int64
	size    int // bytes held, about
	// slow is set for a key the slow path answers (a forwarded name, an
	// answer too big for the client's UDP size, ...).
	slow bool
	// geo is set when the answer is one of route's options, picked per
	// query; seed is rollSeed of the client.
	geo     bool
	route   route
	seed    uint64
	nameLen int
	// first is the reply for route's first option (or the only one);
	// rest are the others' in turn.
	first wire
	slip  wire // the reply that rate limiting slips
	rest  []wire
	// queries and steered are the metrics' series the answer counts in.
	queries prometheus.Counter
	steered [][]prometheus.Counter // per option
}

// wire is a reply with ID 0 and the query's name in lowercase at each of
// names[:n] (nameLen bytes).
type wire struct {
	b     []byte
	names [maxNameCopies]uint16
	n     uint8
}

// maxNameCopies is how many copies of the query's name a memoised reply
// may hold (the question's and one per record, as replies are not
// compressed); one with more is left to the slow path.
const maxNameCopies = 8

// option returns the reply for route's option i.
func (e *entry) option(i int) *wire {
	if i == 0 {
		return &e.first
	}
	return &e.rest[i-1]
}

// entryOverhead is about what an entry costs besides its bytes: the
// struct, its slices' headers, map slot and counters.
const entryOverhead = 512

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
	e := &entry{gen: gen, nameLen: p.nameEnd - 12, size: entryOverhead + len(p.key)}
	b := &entryBuilder{s: s, st: st, w: memoWriter{net.UDPAddrFromAddrPort(src)}}
	lower, upper := spell(pkt, p.nameEnd, false), spell(pkt, p.nameEnd, true)
	if err := b.fill(e, lower, upper); err != nil {
		return &entry{key: slices.Clone(p.key), gen: gen, slow: true, size: entryOverhead + len(p.key)}
	}
	e.pack(p.key)
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
	// saved is the route of the first reply; later ones answer its
	// options in turn. client is the address it was decided for.
	saved  *route
	client netip.Addr
}

func (b *entryBuilder) fill(e *entry, lower, upper []byte) error {
	w, queries, err := b.spelt(e, lower, upper, 0, send)
	if err != nil {
		return err
	}
	e.queries = queries
	e.first = w
	if b.saved != nil {
		e.geo, e.route, e.seed = true, *b.saved, rollSeed(b.client)
		for i := range e.route.options {
			if i > 0 {
				if w, _, err = b.spelt(e, lower, upper, i, send); err != nil {
					return err
				}
				e.rest = append(e.rest, w)
			}
		}
		sr := b.s.memo.shared.route(e.gen, b.s.metrics, e.route)
		e.route.options, e.steered = sr.options, sr.steered
	}
	if e.slip, _, err = b.spelt(e, lower, upper, 0, slipTC); err != nil {
		return err
	}
	e.size += len(e.first.b) + len(e.slip.b) + 256 // and their options, counters, slice headers
	for _, w := range e.rest {
		e.size += len(w.b) + 128
	}
	return nil
}

// pack copies key and the replies' bytes into one allocation.
func (e *entry) pack(key []byte) {
	n := len(key) + len(e.first.b) + len(e.slip.b)
	for _, w := range e.rest {
		n += len(w.b)
	}
	buf := make([]byte, 0, n)
	put := func(b []byte) []byte {
		buf = append(buf, b...)
		return buf[len(buf)-len(b) : len(buf) : len(buf)]
	}
	e.key = put(key)
	e.first.b = put(e.first.b)
	e.slip.b = put(e.slip.b)
	for i := range e.rest {
		e.rest[i].b = put(e.rest[i].b)
	}
}

// spelt is the reply for option i and verdict v to both spellings, as one
// wire: where the two differ is where the name is copied.
func (b *entryBuilder) spelt(e *entry, lower, upper []byte, i int, v verdict) (wire, prometheus.Counter, error) {
	wireL, queries, err := b.reply(lower, i, v)
	if err != nil {
		return wire{}, nil, err
	}
	wireU, _, err := b.reply(upper, i, v)
	if err != nil {
		return wire{}, nil, err
	}
	at, err := namesAt(wireL, wireU, upper[12:12+e.nameLen])
	if err != nil {
		return wire{}, nil, err
	}
	w := wire{b: wireL, n: uint8(len(at))}
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
