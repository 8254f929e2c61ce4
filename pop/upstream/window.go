package upstream

import "time"

// failureWindow is a server's evidence over the last span of time, kept in
// windowBuckets buckets (a sliding window at a tenth of span's resolution):
// requests that succeeded, and failures, where a path's failures count
// once. It has no lock of its own: its breaker's guards it.
type failureWindow struct {
	span    time.Duration
	buckets [windowBuckets]bucket
}

// bucket is one slot of a failureWindow.
type bucket struct {
	start     time.Time // the start of the slot; zero: never used
	successes int
	failures  int
	paths     map[uint64]struct{} // keys of the paths counted in failures
}

const (
	windowBuckets = 10
	// maxPathsPerBucket bounds the memory of a window. Failures of more
	// distinct paths than this in one bucket still count, but a path not
	// remembered may count again: on the side of ejecting, as failures on
	// that many paths say the server is unwell.
	maxPathsPerBucket = 256
)

// current returns the bucket for now, emptied if it held an older slot.
func (w *failureWindow) current(now time.Time) *bucket {
	width := w.span / windowBuckets
	if width <= 0 {
		width = 1
	}
	slot := now.UnixNano() / int64(width)
	b := &w.buckets[uint64(slot)%windowBuckets]
	if start := time.Unix(0, slot*int64(width)); !b.start.Equal(start) {
		clear(b.paths)
		b.start, b.successes, b.failures = start, 0, 0
	}
	return b
}

// live reports whether b's slot lies within the window ending at now.
func (w *failureWindow) live(b *bucket, now time.Time) bool {
	return !b.start.IsZero() && now.Sub(b.start) < w.span
}

// success records a request that succeeded.
func (w *failureWindow) success(now time.Time) {
	w.current(now).successes++
}

// failure records a failure. A path failure (path true) counts unless key
// already failed within the window.
func (w *failureWindow) failure(now time.Time, path bool, key uint64) {
	b := w.current(now)
	if !path {
		b.failures++
		return
	}
	for i := range w.buckets {
		o := &w.buckets[i]
		if _, seen := o.paths[key]; seen && w.live(o, now) {
			return
		}
	}
	b.failures++
	if b.paths == nil {
		b.paths = make(map[uint64]struct{})
	}
	if len(b.paths) < maxPathsPerBucket {
		b.paths[key] = struct{}{}
	}
}

// totals sums the evidence within the window ending at now.
func (w *failureWindow) totals(now time.Time) (successes, failures int) {
	for i := range w.buckets {
		if b := &w.buckets[i]; w.live(b, now) {
			successes += b.successes
			failures += b.failures
		}
	}
	return successes, failures
}

// reset forgets everything.
func (w *failureWindow) reset() {
	for i := range w.buckets {
		b := &w.buckets[i]
		clear(b.paths)
		b.start, b.successes, b.failures = time.Time{}, 0, 0
	}
}
