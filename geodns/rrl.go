package geodns

import (
	"net/netip"
	"sync"
	"time"
)

// RateLimit is response rate limiting (RRL) per client prefix over UDP, so
// the server cannot be used as an amplifier with spoofed sources.
type RateLimit struct {
	// ResponsesPerSecond per client prefix (/24 for IPv4, /56 for IPv6).
	// If zero, no limit.
	ResponsesPerSecond float64 `yaml:"responses_per_second"`
	// Burst is the bucket size. If zero, ResponsesPerSecond (at least 1).
	Burst int `yaml:"burst"`
	// Slip: every Slip-th limited response is sent truncated and empty
	// (TC set) instead of dropped, so real clients behind a limited prefix
	// retry over TCP, which spoofers cannot. If zero, 2; 1 slips all.
	Slip int `yaml:"slip"`
}

// rrl is a token bucket per prefix; at most maxPrefixes are remembered
// (the least recently used go first).
type rrl struct {
	rate  float64
	burst float64
	slip  int
	now   func() time.Time

	mu      sync.Mutex // guards buckets
	buckets map[netip.Prefix]*bucket
}

type bucket struct {
	tokens  float64
	last    time.Time
	limited int
}

const maxPrefixes = 65536

func newRRL(c RateLimit) *rrl {
	if c.ResponsesPerSecond <= 0 {
		return nil
	}
	burst := float64(c.Burst)
	if burst <= 0 {
		burst = max(c.ResponsesPerSecond, 1)
	}
	slip := c.Slip
	if slip == 0 {
		slip = 2
	}
	return &rrl{rate: c.ResponsesPerSecond, burst: burst, slip: slip, now: time.Now, buckets: map[netip.Prefix]*bucket{}}
}

// verdict is what to do with one UDP response.
type verdict int

const (
	send verdict = iota
	slipTC
	drop
)

func clientPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 56
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

func (l *rrl) check(a netip.Addr) verdict {
	p := clientPrefix(a)
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[p]
	if b == nil {
		if len(l.buckets) >= maxPrefixes {
			// Forget buckets that have refilled: they carry no state.
			for k, v := range l.buckets {
				if now.Sub(v.last).Seconds()*l.rate+v.tokens >= l.burst {
					delete(l.buckets, k)
				}
			}
			if len(l.buckets) >= maxPrefixes {
				return drop // under a flood from very many prefixes: shed
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[p] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return send
	}
	b.limited++
	if b.limited%l.slip == 0 {
		return slipTC
	}
	return drop
}
