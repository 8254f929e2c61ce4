package upstream

import (
	"sync"
	"time"
)

// BreakerState is a server breaker's state.
type BreakerState int

// Breaker states.
const (
	BreakerClosed   BreakerState = iota // requests flow
	BreakerHalfOpen                     // one trial request decides
	BreakerOpen                         // the server is ejected
)

func (s BreakerState) String() string {
	switch s {
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return "closed"
}

// breaker ejects a server after threshold consecutive failures, for openFor;
// then it lets exactly one trial through: success closes it, failure opens
// it again.
type breaker struct {
	threshold int
	openFor   time.Duration

	mu       sync.Mutex // guards open, fails, openedAt, trial
	open     bool
	fails    int
	openedAt time.Time
	trial    bool // a half-open trial is in flight
}

// state reports the state at now.
func (b *breaker) state(now time.Time) BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stateLocked(now)
}

func (b *breaker) stateLocked(now time.Time) BreakerState {
	switch {
	case !b.open:
		return BreakerClosed
	case now.Sub(b.openedAt) >= b.openFor:
		return BreakerHalfOpen
	}
	return BreakerOpen
}

// usable reports whether acquire would succeed, without taking the trial.
func (b *breaker) usable(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.stateLocked(now) {
	case BreakerClosed:
		return true
	case BreakerHalfOpen:
		return !b.trial
	}
	return false
}

// acquire admits one request: always when closed, the single trial when
// half-open, never when open.
func (b *breaker) acquire(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.stateLocked(now) {
	case BreakerClosed:
		return true
	case BreakerHalfOpen:
		if b.trial {
			return false
		}
		b.trial = true
		return true
	}
	return false
}

func (b *breaker) success() {
	b.mu.Lock()
	b.open, b.fails, b.trial = false, 0, false
	b.mu.Unlock()
}

func (b *breaker) failure(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fails++
	if b.trial || b.fails >= b.threshold {
		b.open, b.openedAt, b.trial = true, now, false
	}
}

// retryBudget allows retries as a fraction of requests plus a floor per
// second, so a failing origin does not see its load multiplied.
type retryBudget struct {
	ratio    float64
	perSec   float64
	now      func() time.Time
	mu       sync.Mutex // guards tokens, last
	tokens   float64
	last     time.Time
	capacity float64
}

func newRetryBudget(ratio, perSec float64, now func() time.Time) *retryBudget {
	return &retryBudget{ratio: ratio, perSec: perSec, now: now, tokens: perSec, last: now(), capacity: perSec + 100*ratio}
}

func (b *retryBudget) refill() {
	now := b.now()
	b.tokens += now.Sub(b.last).Seconds() * b.perSec
	b.last = now
	if b.tokens > b.capacity {
		b.tokens = b.capacity
	}
}

// deposit credits one request.
func (b *retryBudget) deposit() {
	b.mu.Lock()
	b.refill()
	b.tokens += b.ratio
	if b.tokens > b.capacity {
		b.tokens = b.capacity
	}
	b.mu.Unlock()
}

// withdraw takes one retry, if the budget allows it.
func (b *retryBudget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
