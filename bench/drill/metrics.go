package drill

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgecdn/cdn/bench"
)

// What a PoP process holds: its goroutines (its admin /metrics) and its
// resident memory (/proc), and whether it is still the same live process.

// popMetrics returns the text of a PoP's admin /metrics.
func popMetrics(ctx context.Context, hc *http.Client, popAddr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(popAddr, "9901")+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("metrics: status %d", resp.StatusCode)
	}
	return string(b), err
}

// metricValue finds a sample in Prometheus text: series is the name with
// its labels as exposed, e.g. `pop_rejected_requests_total{reason="overload"}`.
// A missing series is 0.
func metricValue(text, series string) float64 {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// metricSum adds every sample of a metric (all label sets).
func metricSum(text, name string) float64 {
	sum := 0.0
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		if i := strings.LastIndexByte(rest, ' '); i >= 0 {
			f, _ := strconv.ParseFloat(strings.TrimSpace(rest[i+1:]), 64)
			sum += f
		}
	}
	return sum
}

// goroutines is a PoP's go_goroutines, or -1 if its admin does not answer.
func goroutines(ctx context.Context, hc *http.Client, popAddr string) int {
	text, err := popMetrics(ctx, hc, popAddr)
	if err != nil || !strings.Contains(text, "go_goroutines ") {
		return -1
	}
	return int(metricValue(text, "go_goroutines"))
}

// popSample is a PoP's goroutines and resident memory at one moment.
type popSample struct {
	goroutines int
	rssKiB     int64
}

func (s popSample) String() string {
	return fmt.Sprintf("%d goroutines, %.1f MiB RSS", s.goroutines, float64(s.rssKiB)/1024)
}

func samplePoP(ctx context.Context, hc *http.Client, popAddr string, pid int) popSample {
	rss, err := bench.RSSKiB(pid)
	if err != nil {
		rss = -1
	}
	return popSample{goroutines: goroutines(ctx, hc, popAddr), rssKiB: rss}
}

// settle waits up to limit for a PoP's goroutines to come back to at most
// want, and returns the last sample.
func settle(ctx context.Context, hc *http.Client, popAddr string, pid, want int, limit time.Duration) popSample {
	deadline := time.Now().Add(limit)
	for {
		s := samplePoP(ctx, hc, popAddr, pid)
		if (s.goroutines >= 0 && s.goroutines <= want) || time.Now().After(deadline) || ctx.Err() != nil {
			return s
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...; comm may hold spaces, so look after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}
