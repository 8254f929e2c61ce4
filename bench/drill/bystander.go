package drill

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/edgecdn/cdn/bench"
)

// A bystander is a well-behaved client that keeps asking a PoP for objects
// while a drill attacks it, and must not notice.

// bystanderResult is what a bystander got.
type bystanderResult struct {
	ok, failed int
	statuses   map[string]int
	slowest    time.Duration
}

func (r bystanderResult) String() string {
	return fmt.Sprintf("%d requests 200, %d failed %v, slowest %v", r.ok, r.failed, sortedCounts(r.statuses), r.slowest.Round(time.Millisecond))
}

// bystand requests url every 100 ms until stop.
func bystand(ctx context.Context, hc *http.Client, url string, stop chan struct{}) bystanderResult {
	return bystandMisses(ctx, hc, func() string { return url }, stop)
}

// bystandMisses requests next() every 100 ms until stop (a new URL each
// time: misses).
func bystandMisses(ctx context.Context, hc *http.Client, next func() string, stop chan struct{}) bystanderResult {
	r := bystanderResult{statuses: map[string]int{}}
	for {
		select {
		case <-stop:
			return r
		case <-time.After(100 * time.Millisecond):
		}
		o := fetch(ctx, hc, next())
		r.slowest = max(r.slowest, o.took)
		if o.err == nil && o.status == 200 {
			r.ok++
			continue
		}
		r.failed++
		if o.err != nil {
			r.statuses["error: "+bench.ErrorKind(o.err)]++
		} else {
			r.statuses[fmt.Sprint(o.status)]++
		}
	}
}
