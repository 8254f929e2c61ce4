package cache

import (
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// entry is one stored response. It is immutable once stored, except for
// the soft-purge mark: an update stores a new entry.
type entry struct {
	key       string // full key: primary key plus the Vary part
	status    int
	header    http.Header
	body      []byte
	pol       policy
	lifetime  time.Duration
	heuristic bool
	tags      []string    // surrogate keys
	purged    atomic.Bool // soft purge: treat as stale
	fast      fastState   // for LookupFast
}

// varyIndex is stored under a primary key whose responses vary: it names
// the request fields of the secondary key and remembers the variants.
type varyIndex struct {
	key      string
	names    []string // canonical header names, as the origin's Vary listed them
	mu       sync.Mutex
	variants map[string]struct{} // guarded by mu
}

// store wraps ristretto: values are *entry or *varyIndex under string keys;
// ristretto keeps only hashes, so every Get compares the full key.
type store struct {
	rc *ristretto.Cache[string, any]

	mu   sync.Mutex                     // guards tags
	tags map[string]map[string]struct{} // surrogate key -> entry keys
}

func newStore(maxBytes int64) (*store, error) {
	s := &store{tags: map[string]map[string]struct{}{}}
	rc, err := ristretto.NewCache(&ristretto.Config[string, any]{
		NumCounters: max(maxBytes/1024*10, 10_000), // ~10 counters per expected 1 KiB+ object
		MaxCost:     maxBytes,
		BufferItems: 64,
		Metrics:     true,
		OnEvict:     func(it *ristretto.Item[any]) { s.forgetTags(it.Value) },
	})
	if err != nil {
		return nil, err
	}
	s.rc = rc
	return s, nil
}

func (s *store) close() { s.rc.Close() }

func (s *store) getEntry(key string) *entry {
	v, ok := s.rc.Get(key)
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
	v, ok := s.rc.Get(key)
	if !ok {
		return nil
	}
	vi, ok := v.(*varyIndex)
	if !ok || vi.key != key {
		return nil
	}
	return vi
}

// cost is the bytes an entry holds: body plus headers.
func (e *entry) cost() int64 {
	n := int64(len(e.body) + len(e.key) + 64)
	for k, vs := range e.header {
		n += int64(len(k))
		for _, v := range vs {
			n += int64(len(v) + 16)
		}
	}
	return n
}

// put stores e for ttl (freshness plus the longest stale window).
func (s *store) put(e *entry, ttl time.Duration) bool {
	if ttl <= 0 {
		ttl = time.Second
	}
	ok := s.rc.SetWithTTL(e.key, e, e.cost(), ttl)
	if ok && len(e.tags) > 0 {
		s.mu.Lock()
		for _, t := range e.tags {
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

func (s *store) putVary(vi *varyIndex, ttl time.Duration) {
	s.rc.SetWithTTL(vi.key, vi, int64(len(vi.key)+64), ttl)
}

func (s *store) forgetTags(v any) {
	e, ok := v.(*entry)
	if !ok || len(e.tags) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range e.tags {
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
	n := 0
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
		s.rc.Del(key)
	}
	remove(primary)
	if vi := s.getVary(primary); vi != nil {
		vi.mu.Lock()
		keys := make([]string, 0, len(vi.variants))
		for k := range vi.variants {
			keys = append(keys, k)
		}
		vi.mu.Unlock()
		for _, k := range keys {
			remove(k)
		}
		if !soft {
			s.rc.Del(primary)
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
			continue
		}
		n++
		if soft {
			e.purged.Store(true)
		} else {
			s.forgetTags(e)
			s.rc.Del(k)
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
func varyNames(h http.Header) (names []string, star bool) {
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
