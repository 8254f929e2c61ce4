// Package poll waits, in tests, for state that changes in the background
// and sends no event when it does: a breaker opening, a health check
// marking an origin down, a count a server moves, goroutines ending. Each
// wait has a deadline and fails the test when it passes, instead of a
// time.Sleep that is too short on a loaded machine and too long on an
// idle one. Where there is an event (a channel, a callback), wait on it
// instead, in a select with a deadline.
//
// poll imports nothing of this module, so that the tests of any package,
// internal tests included, may use it; poptest builds on it.
package poll

import (
	"runtime"
	"testing"
	"time"
)

// Timeout is how long Until, Steady and CheckGoroutines wait before they
// fail the test: long enough for a busy two-core machine, short enough
// that a test waiting for what never happens fails in its own name rather
// than in the test binary's timeout.
const Timeout = 10 * time.Second

// maxPause is the longest pause between two calls of a condition.
const maxPause = 20 * time.Millisecond

// Until calls cond until it returns true and fails the test if it has
// not within Timeout. what names the awaited state for the failure
// message ("timed out after 10s waiting for <what>"). cond runs on the
// test's goroutine, so it may call t.Fatal itself.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Timeout, what, cond)
}

// Within is Until with a deadline of d, for state that takes longer than
// Timeout to come about, such as a DNS answer whose TTL must run out.
//
// It calls cond at once, then after pauses growing from 1ms to 20ms, and
// never more often than cond takes to run, so an expensive condition (a
// command in a container) is not run back to back.
func Within(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for pause := time.Millisecond; ; pause = min(2*pause, maxPause) {
		start := time.Now()
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		timer.Reset(max(pause, time.Since(start)))
		<-timer.C
	}
}

// Steady samples value until it has stayed within slack of one sample for
// quiet, and returns the last sample; it fails the test if value is still
// moving after Timeout. It is for a count a server moves in the
// background with no event at its end: how many requests of a flood it
// answered, how much heap unread responses filled. quiet must be well
// over the pauses between the server's moves; the test takes at least
// that long.
func Steady(t testing.TB, what string, quiet time.Duration, slack int64, value func() int64) int64 {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	tick := time.NewTicker(max(quiet/10, time.Millisecond))
	defer tick.Stop()
	base, since := value(), time.Now()
	for {
		<-tick.C
		v := value()
		if v > base+slack || v < base-slack {
			base, since = v, time.Now()
		}
		if time.Since(since) >= quiet {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s to stay within %d of %d for %v (now %d)", Timeout, what, slack, base, quiet, v)
		}
	}
}

// CheckGoroutines fails the test if, once its cleanups have run, more
// goroutines are left than when CheckGoroutines was called, after giving
// them Timeout to end. Call it first in a test, so that its cleanup runs
// last, after those stopping the test's servers and clients. The failure
// lists every goroutine's stack.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(Timeout)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines left, %d before the test:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
				return
			}
			<-tick.C
		}
	})
}
