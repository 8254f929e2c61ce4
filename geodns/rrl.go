package geodns

import (
	"net/netip"
	"sync"
	"time"
)

// RateLimit is response rate limiting (RRL) per client prefix over UDP, so
// the server cannot be used as an amplifier with spoofed sources. It is on
// by default, BIND-like: 20 responses a second per /24 (IPv4) or /56
// (IPv6), a burst of 100, every 2nd limited response slipped. With every
// UDP answer at most 1232 bytes, that is at most ~25 KB/s towards a victim
// prefix once its burst is spent. A resolver behind such a prefix
// refreshing our answers (TTL 20s for geo names) stays far below it, as
// does a stub or a browser resolving a few names a second; a prefix that
// asks for more gets every 2nd extra answer as an empty TC reply and
// retries over TCP, which is never limited (a spoofer cannot complete a
// TCP handshake).
type RateLimit struct {
	// ResponsesPerSecond per client prefix (/24 for IPv4, /56 for IPv6).
	// If zero, 20; negative turns rate limiting off.
	ResponsesPerSecond float64 `yaml:"responses_per_second"`
	// Burst is the bucket size: what a prefix that has been quiet may get
	// at once (a browser's first page, a resolver's cold cache). If zero,
	// five seconds' worth: 5 x ResponsesPerSecond (at least 1).
	Burst int `yaml:"burst"`
	// Slip: every Slip-th limited response is sent truncated and empty
	// (TC set) instead of dropped, so real clients behind a limited prefix
	// retry over TCP, which spoofers cannot. If zero, 2; 1 slips all.
	Slip int `yaml:"slip"`
}

// The defaults RateLimit documents.
const (
	defaultResponsesPerSecond = 20
	defaultBurstSeconds       = 5
	defaultSlip               = 2
)

// rrl is a token bucket per prefix; at most maxPrefixes are remembered
// (when full, the buckets that have refilled are forgotten).
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

// newRRL applies c's defaults; nil means no limit.
func newRRL(c RateLimit) *rrl {
	rate := c.ResponsesPerSecond
	switch {
	case rate < 0:
		return nil
	case rate == 0:
		rate = defaultResponsesPerSecond
	}
	burst := float64(c.Burst)
	if burst <= 0 {
		burst = max(rate*defaultBurstSeconds, 1)
	}
	slip := c.Slip
	if slip == 0 {
		slip = defaultSlip
	}
	return &rrl{rate: rate, burst: burst, slip: slip, now: time.Now, buckets: map[netip.Prefix]*bucket{}}
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
