package upstream

import (
	"sync"
	"time"
)

// retryBudget allows retries as a fraction of requests plus a floor per
// second (a token bucket in the manner of Finagle's RetryBudget): each
// request deposits ratio tokens, the floor drips in perSec tokens a second,
// and a retry withdraws one. When an origin fails wholesale, retries stay
// near ratio of the traffic instead of multiplying it. A new budget starts
// full, as after a quiet spell (Finagle's, too, has its floor's reserve at
// once): a group that has just started may retry the burst of failures it
// takes to eject a server that fails every request.
type retryBudget struct {
	ratio    float64
	perSec   float64
	capacity float64 // the most that can pile up: a burst after quiet
	now      func() time.Time

	mu     sync.Mutex // guards tokens, last
	tokens float64
	last   time.Time
}

func newRetryBudget(ratio, perSec float64, now func() time.Time) *retryBudget {
	capacity := perSec + 100*ratio
	return &retryBudget{ratio: ratio, perSec: perSec, capacity: capacity, now: now, tokens: capacity, last: now()}
}

// refillLocked drips the floor in since the last call.
func (b *retryBudget) refillLocked() {
	now := b.now()
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.capacity, b.tokens+d.Seconds()*b.perSec)
	}
	b.last = now
}

// deposit credits one request.
func (b *retryBudget) deposit() {
	b.mu.Lock()
	b.refillLocked()
	b.tokens = min(b.capacity, b.tokens+b.ratio)
	b.mu.Unlock()
}

// withdraw takes one retry if the budget allows it.
func (b *retryBudget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
