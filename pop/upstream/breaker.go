package upstream

import (
	"sync"
	"sync/atomic"
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

// breaker ejects its server from rotation (passive ejection) when requests
// say the server is unwell, by either of two rules:
//
//   - a streak: threshold consecutive connect failures, which no request
//     path can cause (any answer, even a 5xx, ends the streak);
//   - a rate: more than rate of the evidence in the window, with at least
//     minVolume pieces of it. Successes count one by one, a path's failures
//     once (see Config.FailureRate): one failing URL, however often
//     requested, cannot eject a server that answers others.
//
// Opening takes a slot of the group's ejection cap; without one the breaker
// stays closed and the next failure asks again. After openFor, or once a
// health check passes, it is half-open and lets exactly one trial request
// through: success closes it, failure of any kind opens it again. A trial
// whose client gave up decides nothing and frees the slot for another.
type breaker struct {
	threshold int
	openFor   time.Duration
	rate      float64
	minVolume int
	ejections *ejectionCap // the group's; nil: no cap

	mu       sync.Mutex // guards open, streak, openedAt, trial, window
	open     bool
	streak   int       // consecutive connect failures
	openedAt time.Time // when it last opened
	trial    bool      // a half-open trial is in flight
	window   failureWindow
}

// newBreaker builds a server's breaker from the group's config.
func newBreaker(c Config, ejections *ejectionCap) breaker {
	return breaker{
		threshold: c.FailThreshold, openFor: c.OpenDuration,
		rate: c.FailureRate, minVolume: c.FailureMinRequests, ejections: ejections,
		window: failureWindow{span: c.FailureWindow},
	}
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

// success counts an answer that was not a failure, and closes the breaker
// with a fresh window if it was open: a server that answers well is back.
// It reports whether it was open.
func (b *breaker) success(now time.Time) (wasOpen bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.streak = 0
	if !b.open {
		b.window.success(now)
		return false
	}
	b.open, b.trial = false, false
	b.window.reset()
	b.ejections.give()
	return true
}

// failure counts a failure: a connect failure (connect true), or a failure
// after the request was sent, of the path whose key is given. It reports
// whether the breaker opened (or opened again after a failed trial). Late
// failures of requests sent before it opened, and of requests routed to it
// in panic, do not extend an open breaker.
func (b *breaker) failure(now time.Time, connect bool, key uint64) (opened bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open {
		if !b.trial {
			return false
		}
		b.openedAt, b.trial = now, false
		return true
	}
	if connect {
		b.streak++
	} else {
		b.streak = 0 // it was reached
	}
	b.window.failure(now, !connect, key)
	if !b.tripped(now) || !b.ejections.take() {
		return false
	}
	b.open, b.openedAt, b.streak = true, now, 0
	return true
}

// tripped reports whether either rule calls for ejection.
func (b *breaker) tripped(now time.Time) bool {
	if b.streak >= b.threshold {
		return true
	}
	successes, failures := b.window.totals(now)
	n := successes + failures
	return n >= b.minVolume && float64(failures) > b.rate*float64(n)
}

// hasten makes an open breaker half-open now: a passing health check
// vouches for the server enough for one trial, not for full rotation.
func (b *breaker) hasten(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open && now.Sub(b.openedAt) < b.openFor {
		b.openedAt = now.Add(-b.openFor)
	}
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

// ejectionCap bounds how many breakers of a group are open at once
// (Config.MaxEjectionPercent). A nil cap bounds nothing.
type ejectionCap struct {
	max     int32
	open    atomic.Int32
	refused atomic.Int64 // ejections it held back
}

func newEjectionCap(servers, percent int) *ejectionCap {
	return &ejectionCap{max: int32(servers * percent / 100)}
}

// take reserves a slot for a breaker about to open.
func (c *ejectionCap) take() bool {
	if c == nil {
		return true
	}
	for {
		n := c.open.Load()
		if n >= c.max {
			c.refused.Add(1)
			return false
		}
		if c.open.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// give frees the slot of a breaker that closed.
func (c *ejectionCap) give() {
	if c != nil {
		c.open.Add(-1)
	}
}
