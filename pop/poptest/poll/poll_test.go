package poll

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeTB fails as t.Fatalf does, ending the goroutine, but records the
// message instead of failing the real test.
type fakeTB struct {
	testing.TB
	failure string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Fatalf(format string, args ...any) {
	f.failure = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// failure runs wait on a goroutine of its own, as a test's, and returns
// its failure message, or "" if it returned.
func failure(wait func(testing.TB)) string {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		wait(f)
	}()
	<-done
	return f.failure
}

func TestUntilWaitsForTheCondition(t *testing.T) {
	var set atomic.Bool
	time.AfterFunc(20*time.Millisecond, func() { set.Store(true) })
	calls := 0
	Until(t, "the flag", func() bool { calls++; return set.Load() })
	if !set.Load() || calls < 2 {
		t.Errorf("Until returned after %d calls, flag %v; want it to wait for the flag", calls, set.Load())
	}
}

func TestWithinFailsAtItsDeadline(t *testing.T) {
	start := time.Now()
	msg := failure(func(tb testing.TB) {
		Within(tb, 50*time.Millisecond, "what never happens", func() bool { return false })
	})
	if took := time.Since(start); took < 50*time.Millisecond || !strings.Contains(msg, "timed out after 50ms waiting for what never happens") {
		t.Errorf("Within(50ms, never) failed with %q after %v; want a timeout naming what, after 50ms", msg, took)
	}
	if msg := failure(func(tb testing.TB) { Within(tb, time.Hour, "what is so", func() bool { return true }) }); msg != "" {
		t.Errorf("Within(true) failed: %q", msg)
	}
}

func TestSteadyWaitsForTheValueToStop(t *testing.T) {
	var n atomic.Int64
	moving := func() int64 { return min(n.Add(1), 20) * 1000 }
	if got := Steady(t, "the count", 20*time.Millisecond, 100, moving); got != 20000 {
		t.Errorf("Steady = %d, want 20000, where the count stopped", got)
	}
	if n.Load() < 20 {
		t.Errorf("Steady sampled %d times, want it to wait until the count stopped at the 20th", n.Load())
	}
	var m atomic.Int64
	noisy := func() int64 { return 1000 + 50*(m.Add(1)%2) }
	if got := Steady(t, "the noisy count", 20*time.Millisecond, 100, noisy); got < 1000 || got > 1050 {
		t.Errorf("Steady(noise within slack) = %d, want 1000 or 1050", got)
	}
}
