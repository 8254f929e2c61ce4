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
	return newRoundRobin(servers)
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

// roundRobin takes servers in turn, skipping unavailable ones: each as
// often as its weight says, interleaved (order), and a backup (weight 0)
// only when no weighted server is available.
type roundRobin struct {
	order   []*server // the weighted servers, each weight times, spread out
	backups []*server
	next    atomic.Uint64
}

func newRoundRobin(servers []*server) *roundRobin {
	weighted, backups := splitBackups(servers)
	return &roundRobin{order: smoothOrder(weighted), backups: backups}
}

func (b *roundRobin) pick(_ *http.Request, tried []*server, now time.Time, panicking bool) (*server, bool) {
	n := uint64(len(b.order))
	start := b.next.Add(1) - 1
	for i := range n {
		s := b.order[(start+i)%n]
		if !available(s, tried, now, panicking) {
			continue
		}
		if ok, trial := admit(s, now, panicking); ok {
			return s, trial
		}
	}
	b.next.Add(^uint64(0)) // no server took the turn: the next pick (in panic, say) has it
	return pickBackup(b.backups, tried, now, panicking)
}

// splitBackups separates the servers of weight 0 (backups) from the rest.
func splitBackups(servers []*server) (weighted, backups []*server) {
	for _, s := range servers {
		if s.weight == 0 {
			backups = append(backups, s)
		} else {
			weighted = append(weighted, s)
		}
	}
	return weighted, backups
}

// pickBackup takes the first available backup, in configuration order.
func pickBackup(backups []*server, tried []*server, now time.Time, panicking bool) (*server, bool) {
	for _, s := range backups {
		if available(s, tried, now, panicking) {
			if ok, trial := admit(s, now, panicking); ok {
				return s, trial
			}
		}
	}
	return nil, false
}

// smoothOrder lists each server weight/g times (g the weights' greatest
// common divisor) in nginx's smooth weighted round-robin order: weights
// 5, 1, 1 give a a b a c a a, not a a a a a b c.
func smoothOrder(servers []*server) []*server {
	g := 0
	for _, s := range servers {
		g = gcd(g, s.weight)
	}
	total := 0
	for _, s := range servers {
		total += s.weight / g
	}
	current := make([]int, len(servers))
	order := make([]*server, 0, total)
	for range total {
		best := 0
		for i, s := range servers {
			current[i] += s.weight / g
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		order = append(order, servers[best])
	}
	return order
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// p2c samples two available servers, each with a probability in
// proportion to its weight, and takes the one with fewer requests in
// flight for its weight (power of two choices): nearly as good as
// least-loaded, without a global scan or herding onto one server. Backups
// (weight 0) are sampled only when no weighted server is available.
type p2c struct {
	servers []*server
}

func (b *p2c) pick(_ *http.Request, tried []*server, now time.Time, panicking bool) (*server, bool) {
	var buf [16]*server
	cand := buf[:0]
	total := 0
	for _, s := range b.servers {
		if s.weight > 0 && available(s, tried, now, panicking) {
			cand = append(cand, s)
			total += s.weight
		}
	}
	if len(cand) == 0 {
		for _, s := range b.servers {
			if available(s, tried, now, panicking) {
				cand = append(cand, s) // backups, all weight 0: sampled evenly
			}
		}
	}
	for len(cand) > 0 {
		best := sample(cand, total)
		if len(cand) > 1 {
			j := sample(cand, total)
			for j == best {
				j = sample(cand, total)
			}
			// Fewer in flight per unit of weight: a server of weight 2
			// is as loaded with 4 as one of weight 1 with 2.
			if lighter(cand[j], cand[best]) {
				best = j
			}
		}
		if ok, trial := admit(cand[best], now, panicking); ok {
			return cand[best], trial
		}
		total -= cand[best].weight
		cand = slices.Delete(cand, best, best+1) // lost a race for its trial
	}
	return nil, false
}

// sample returns an index into cand with a probability in proportion to
// its weight (total is their sum), or evenly when every weight is 0.
func sample(cand []*server, total int) int {
	if total <= 0 {
		return rand.IntN(len(cand))
	}
	x := rand.IntN(total)
	for i, s := range cand {
		if x -= s.weight; x < 0 {
			return i
		}
	}
	return len(cand) - 1
}

// lighter reports whether a has fewer requests in flight than b for its weight.
func lighter(a, b *server) bool {
	wa, wb := int64(max(a.weight, 1)), int64(max(b.weight, 1))
	return a.outstanding.Load()*wb < b.outstanding.Load()*wa
}

// hashRing is a consistent-hash ring with virtual nodes: a URL goes to the
// first available server clockwise from the URL's hash, so a URL sticks to
// one server, and taking a server out moves only that server's URLs. A
// server has virtual nodes in proportion to its weight, so its share of
// URLs too; backups (weight 0) have none and take URLs only when no
// weighted server is available.
type hashRing struct {
	points  []ringPoint // sorted by hash
	servers int         // weighted servers on the ring
	backups []*server
}

type ringPoint struct {
	hash uint64
	s    *server
}

// virtualNodes per server: enough for an even spread over a few servers.
const virtualNodes = 160

func newHashRing(servers []*server) *hashRing {
	weighted, backups := splitBackups(servers)
	r := &hashRing{servers: len(weighted), backups: backups}
	for _, s := range weighted {
		for v := range virtualNodes * s.weight {
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
	return pickBackup(r.backups, tried, now, panicking)
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
