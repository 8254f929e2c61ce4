package upstream

import (
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

// balancer picks a server for a request among the available ones not yet
// tried, and takes that server's breaker admission (trial reports the
// half-open trial). It returns nil when no server is available. In panic
// (no server of the group was available) every server not yet tried is
// available, and no admission is taken.
type balancer interface {
	pick(r *http.Request, tried []*server, now time.Time, panicking bool) (s *server, trial bool)
}

func newBalancer(name string, servers []*server) balancer {
	switch name {
	case LeastOutstanding:
		return &p2c{servers: servers}
	case Hash:
		return newHashRing(servers)
	}
	return &roundRobin{servers: servers}
}

// available reports whether s may take a request: not tried yet by this
// request and, unless in panic, healthy with its breaker admitting.
func available(s *server, tried []*server, now time.Time, panicking bool) bool {
	return !slices.Contains(tried, s) && (panicking || s.healthy.Load() && s.breaker.usable(now))
}

// admit takes the admission of s's breaker, unless in panic.
func admit(s *server, now time.Time, panicking bool) (ok, trial bool) {
	if panicking {
		return true, false
	}
	return s.breaker.acquire(now)
}

// roundRobin takes servers in turn, skipping unavailable ones.
type roundRobin struct {
	servers []*server
	next    atomic.Uint64
}

func (b *roundRobin) pick(_ *http.Request, tried []*server, now time.Time, panicking bool) (*server, bool) {
	n := uint64(len(b.servers))
	start := b.next.Add(1) - 1
	for i := range n {
		s := b.servers[(start+i)%n]
		if !available(s, tried, now, panicking) {
			continue
		}
		if ok, trial := admit(s, now, panicking); ok {
			return s, trial
		}
	}
	b.next.Add(^uint64(0)) // no server took the turn: the next pick (in panic, say) has it
	return nil, false
}

// p2c samples two available servers and takes the one with fewer requests
// in flight (power of two choices): nearly as good as least-loaded, without
// a global scan or herding onto one server.
type p2c struct {
	servers []*server
}

func (b *p2c) pick(_ *http.Request, tried []*server, now time.Time, panicking bool) (*server, bool) {
	var buf [16]*server
	cand := buf[:0]
	for _, s := range b.servers {
		if available(s, tried, now, panicking) {
			cand = append(cand, s)
		}
	}
	for len(cand) > 0 {
		best := rand.IntN(len(cand))
		if len(cand) > 1 {
			j := rand.IntN(len(cand) - 1)
			if j >= best {
				j++
			}
			if cand[j].outstanding.Load() < cand[best].outstanding.Load() {
				best = j
			}
		}
		if ok, trial := admit(cand[best], now, panicking); ok {
			return cand[best], trial
		}
		cand = slices.Delete(cand, best, best+1) // lost a race for its trial
	}
	return nil, false
}

// hashRing is a consistent-hash ring with virtual nodes: a URL goes to the
// first available server clockwise from the URL's hash, so a URL sticks to
// one server, and taking a server out moves only that server's URLs.
type hashRing struct {
	points  []ringPoint // sorted by hash
	servers int
}

type ringPoint struct {
	hash uint64
	s    *server
}

// virtualNodes per server: enough for an even spread over a few servers.
const virtualNodes = 160

func newHashRing(servers []*server) *hashRing {
	r := &hashRing{servers: len(servers)}
	for _, s := range servers {
		for v := range virtualNodes {
			r.points = append(r.points, ringPoint{mix(fnvString(fnvOffset, s.url.String()+"#"+strconv.Itoa(v))), s})
		}
	}
	slices.SortFunc(r.points, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	return r
}

func (r *hashRing) pick(req *http.Request, tried []*server, now time.Time, panicking bool) (*server, bool) {
	key := requestHash(req)
	i, _ := slices.BinarySearchFunc(r.points, key, func(p ringPoint, k uint64) int {
		switch {
		case p.hash < k:
			return -1
		case p.hash > k:
			return 1
		}
		return 0
	})
	var seen []*server // servers already considered, on the slow path
	for k := range len(r.points) {
		s := r.points[(i+k)%len(r.points)].s
		if slices.Contains(seen, s) {
			continue
		}
		if available(s, tried, now, panicking) {
			if ok, trial := admit(s, now, panicking); ok {
				return s, trial
			}
		}
		if seen = append(seen, s); len(seen) == r.servers {
			break
		}
	}
	return nil, false
}

// requestHash hashes the URL's path and query (FNV-1a, then a splitmix64
// finish so that ring positions spread evenly).
func requestHash(r *http.Request) uint64 {
	h := fnvString(fnvOffset, r.URL.EscapedPath())
	if r.URL.RawQuery != "" {
		h = fnvString(fnvString(h, "?"), r.URL.RawQuery)
	}
	return mix(h)
}

const fnvOffset = 14695981039346656037

func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is splitmix64's finaliser: FNV's last bytes reach the high bits
// poorly, and the ring is ordered by them.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
