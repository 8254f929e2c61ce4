package pop

import (
	"container/list"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// ipLimiter is a token bucket per client IP. It remembers at most max
// addresses, forgetting the least recently seen, so a flood from many
// addresses cannot grow memory without bound.
type ipLimiter struct {
	limit rate.Limit
	burst int
	max   int
	now   func() time.Time

	mu    sync.Mutex // guards byIP, order
	byIP  map[string]*list.Element
	order *list.List // of *ipEntry, most recent at the front
}

type ipEntry struct {
	ip string
	l  *rate.Limiter
}

func newIPLimiter(perSecond float64, burst, max int) *ipLimiter {
	if burst <= 0 {
		burst = max1(int(2 * perSecond))
	}
	return &ipLimiter{limit: rate.Limit(perSecond), burst: burst, max: max, now: time.Now,
		byIP: make(map[string]*list.Element), order: list.New()}
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

func (l *ipLimiter) allow(ip string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.byIP[ip]; ok {
		l.order.MoveToFront(e)
		return e.Value.(*ipEntry).l.AllowN(l.now(), 1)
	}
	if l.order.Len() >= l.max {
		oldest := l.order.Back()
		l.order.Remove(oldest)
		delete(l.byIP, oldest.Value.(*ipEntry).ip)
	}
	ent := &ipEntry{ip: ip, l: rate.NewLimiter(l.limit, l.burst)}
	l.byIP[ip] = l.order.PushFront(ent)
	return ent.l.AllowN(l.now(), 1)
}

// remembered is how many addresses the limiter holds.
func (l *ipLimiter) remembered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}
