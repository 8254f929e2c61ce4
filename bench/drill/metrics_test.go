package drill

import (
	"os"
	"testing"

	"github.com/edgecdn/cdn/bench"
)

func TestMetricValueAndRSS(t *testing.T) {
	text := "# HELP go_goroutines x\ngo_goroutines 42\npop_rejected_requests_total{reason=\"overload\"} 7\n"
	if got := metricValue(text, "go_goroutines"); got != 42 {
		t.Errorf("metricValue(go_goroutines) = %v, want 42", got)
	}
	if got := metricValue(text, `pop_rejected_requests_total{reason="overload"}`); got != 7 {
		t.Errorf("metricValue(overload) = %v, want 7", got)
	}
	if got := metricValue(text, `pop_rejected_requests_total{reason="rate_limit"}`); got != 0 {
		t.Errorf("metricValue(rate_limit) = %v, want 0", got)
	}
	if rss, err := bench.RSSKiB(os.Getpid()); err != nil || rss <= 0 {
		t.Errorf("RSSKiB(self) = %d, %v", rss, err)
	}
	if !alive(os.Getpid()) || alive(1<<30) {
		t.Error("alive: wrong for this process or a missing one")
	}
}
