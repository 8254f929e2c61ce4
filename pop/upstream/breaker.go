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

// breaker ejects a server after threshold consecutive failures (passive
// ejection). After openFor it is half-open and lets exactly one trial
// request through: success closes it, failure opens it again. A trial whose
// client gave up decides nothing and frees the slot for another.
type breaker struct {
	threshold int
	openFor   time.Duration

	mu       sync.Mutex // guards open, fails, openedAt, trial
	open     bool
	fails    int       // consecutive failures
	openedAt time.Time // when it last opened
	trial    bool      // a half-open trial is in flight
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

// usable reports whether acquire would admit a request now, without
// taking the trial.
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

// acquire admits one request: always when closed, one trial at a time when
// half-open, never when open. trial reports that the request is the
// half-open trial; its outcome must reach success, failure or abandon.
func (b *breaker) acquire(now time.Time) (ok, trial bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.stateLocked(now) {
	case BreakerClosed:
		return true, false
	case BreakerHalfOpen:
		if b.trial {
			return false, false
		}
		b.trial = true
		return true, true
	}
	return false, false
}

// success closes the breaker. It reports whether it was open.
func (b *breaker) success() (wasOpen bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	wasOpen = b.open
	b.open, b.fails, b.trial = false, 0, false
	return wasOpen
}

// failure counts a failure; it reports whether the breaker opened (or
// opened again after a failed trial). Late failures of requests sent
// before it opened do not extend an open breaker.
func (b *breaker) failure(now time.Time) (opened bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fails++
	if b.trial || (!b.open && b.fails >= b.threshold) {
		b.open, b.openedAt, b.trial = true, now, false
		return true
	}
	return false
}

// abandon frees the half-open trial slot of a request that decided
// nothing (its client went away, or it was picked but never sent).
func (b *breaker) abandon(trial bool) {
	if !trial {
		return
	}
	b.mu.Lock()
	b.trial = false
	b.mu.Unlock()
}
