package upstream

import (
	"hash/fnv"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync/atomic"
	"time"
)

// balancer picks a server for a request among those available and not yet
// tried, and takes the server's breaker (the half-open trial, if it is one).
type balancer interface {
	pick(r *http.Request, tried []*server, now time.Time) *server
}

func newBalancer(name string, servers []*server) balancer {
	switch name {
	case "least_outstanding":
		return &p2c{servers: servers}
	case "hash":
		return newHashRing(servers)
	}
	return &roundRobin{servers: servers}
}

func available(s *server, tried []*server, now time.Time) bool {
	return s.healthy.Load() && !slices.Contains(tried, s) && s.breaker.usable(now)
}

// take returns s if its breaker admits the request.
func take(s *server, now time.Time) *server {
	if s.breaker.acquire(now) {
		return s
	}
	return nil
}

type roundRobin struct {
	servers []*server
	next    atomic.Uint64
}

func (b *roundRobin) pick(_ *http.Request, tried []*server, now time.Time) *server {
	n := uint64(len(b.servers))
	start := b.next.Add(1) - 1
	for i := range n {
		s := b.servers[(start+i)%n]
		if available(s, tried, now) {
			if got := take(s, now); got != nil {
				return got
			}
		}
	}
	return nil
}

// p2c samples two available servers and takes the one with fewer requests
// in flight (power of two choices).
type p2c struct {
	servers []*server
}

func (b *p2c) pick(_ *http.Request, tried []*server, now time.Time) *server {
	var cand []*server
	for _, s := range b.servers {
		if available(s, tried, now) {
			cand = append(cand, s)
		}
	}
	for len(cand) > 0 {
		i := rand.IntN(len(cand))
		best := i
		if len(cand) > 1 {
			j := rand.IntN(len(cand) - 1)
			if j >= i {
				j++
			}
			if cand[j].outstanding.Load() < cand[i].outstanding.Load() {
				best = j
			}
		}
		if got := take(cand[best], now); got != nil {
			return got
		}
		cand = slices.Delete(cand, best, best+1)
	}
	return nil
}

// hashRing is a consistent-hash ring with virtual nodes: a URL maps to the
// first available server clockwise from its hash, so removing a server
// moves only its own URLs.
type hashRing struct {
	points []ringPoint
}

type ringPoint struct {
	hash uint64
	s    *server
}

const virtualNodes = 160

func newHashRing(servers []*server) *hashRing {
	r := &hashRing{}
	for _, s := range servers {
		for v := range virtualNodes {
			r.points = append(r.points, ringPoint{hash64(s.url.Host + "#" + strconv.Itoa(v)), s})
		}
	}
	sort.Slice(r.points, func(i, j int) bool { return r.points[i].hash < r.points[j].hash })
	return r
}

func hash64(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	// fnv's last bytes mix poorly into the high bits; finish with a
	// splitmix64 step so ring positions spread evenly.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (r *hashRing) pick(req *http.Request, tried []*server, now time.Time) *server {
	key := hash64(req.URL.RequestURI())
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i].hash >= key })
	for k := range len(r.points) {
		s := r.points[(i+k)%len(r.points)].s
		if available(s, tried, now) {
			if got := take(s, now); got != nil {
				return got
			}
			tried = append(tried, s)
		}
	}
	return nil
}
