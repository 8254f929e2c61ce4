package drill

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/edgecdn/cdn/bench"
)

// floodPlan is the open-loop load of the flood drill and the limits the
// PoP runs with during it.
type floodPlan struct {
	Rate     float64       // requests per second, on a fixed schedule
	Duration time.Duration // of the schedule
	Conns    int           // HTTP/2 connections the requests share
	// MaxOutstanding caps the client's requests in flight; a scheduled
	// request above it is not sent and counted as "client gave up".
	MaxOutstanding int
	// UncachedEvery: every n-th request is for a new object the origin
	// answers after OriginDelay (no-store); the others are hits on a few
	// hot objects.
	UncachedEvery int
	OriginDelay   time.Duration
	// MaxInflight and RateLimit are the PoP's -max-inflight and
	// -rate-limit for the drill (it is restarted with them, then with its
	// own flags again).
	MaxInflight int
	RateLimit   float64
}

// defaultFloodPlan is what one 2-core machine sends steadily: 4000 req/s
// for 4 s over 8 connections. The PoP's default in-flight limit (4096) is
// out of reach of that (8 connections of 250 streams hold at most 2000
// requests), so the drill lowers it to 64, with a per-IP limit of 1000
// req/s.
func defaultFloodPlan() floodPlan {
	return floodPlan{Rate: 4000, Duration: 4 * time.Second, Conns: 8, MaxOutstanding: 1000,
		UncachedEvery: 4, OriginDelay: 200 * time.Millisecond, MaxInflight: 64, RateLimit: 1000}
}

// floodTally counts the flood's outcomes.
type floodTally struct {
	mu       sync.Mutex // guards the fields below
	status   map[string]int
	errs     map[string]int
	errEx    string
	ok, shed bench.Histogram // latency from the intended send time: 200s, 503/429s
}

func (t *floodTally) add(status int, body string, err error, took time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case err != nil:
		k := bench.ErrorKind(err)
		if strings.Contains(err.Error(), "stream error") {
			k = "stream reset"
		}
		t.errs[k]++
		if t.errEx == "" {
			t.errEx = err.Error()
		}
	case status == http.StatusServiceUnavailable && strings.Contains(body, "at its limit"):
		t.status["503 (in-flight limit)"]++
		t.shed.Record(took.Microseconds())
	case status == http.StatusTooManyRequests:
		t.status["429"]++
		t.shed.Record(took.Microseconds())
	case status == http.StatusOK:
		t.status["200"]++
		t.ok.Record(took.Microseconds())
	default:
		t.status[fmt.Sprint(status)]++
	}
}

// dialH2 opens an HTTP/2 connection to a PoP from a client's namespace.
func dialH2(ctx context.Context, c bench.LabClient, popAddr string, roots *tls.Config) (*http2.ClientConn, error) {
	raw, err := c.Dial(ctx, "tcp", net.JoinHostPort(popAddr, "443"))
	if err != nil {
		return nil, err
	}
	cfg := roots.Clone()
	cfg.NextProtos = []string{"h2"}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	t := &http2.Transport{TLSClientConfig: cfg, StrictMaxConcurrentStreams: true}
	cc, err := t.NewClientConn(tc)
	if err != nil {
		tc.Close()
	}
	return cc, err
}

// flood sends open-loop load above a PoP's capacity from one client:
// the PoP must shed (503 at its in-flight limit, 429 at its per-IP rate
// limit) instead of collapsing, keep the latency of what it admits
// bounded, keep its memory bounded, and serve normally afterwards.
func flood(ctx context.Context, lab Lab, t Target, plan floodPlan) (checks []Check, err error) {
	client, err := clientByName(lab.LabConfig, t.Client)
	if err != nil {
		return nil, err
	}
	if err := lab.StopService(t.PoP); err != nil {
		return nil, err
	}
	limits := []string{"-max-inflight", fmt.Sprint(plan.MaxInflight), "-rate-limit", fmt.Sprint(plan.RateLimit)}
	if err := lab.StartServiceArgs(ctx, t.PoP, limits...); err != nil {
		return nil, err
	}
	defer func() {
		// Back to the PoP's own flags for the drills that follow.
		restore := lab.StopService(t.PoP)
		if restore == nil {
			restore = lab.StartService(ctx, t.PoP)
		}
		if restore == nil {
			restore = lab.WaitGeoDNS(ctx)
		}
		checks = append(checks, Check{Drill: "flood", Expectation: t.PoP + " restarts with its own limits after the drill",
			Measured: fmt.Sprintf("restart: %v", restore), Pass: restore == nil})
	}()
	pid := lab.PID(t.PoP)
	admin := adminClient(client)
	roots := &tls.Config{RootCAs: lab.RootCAs, ServerName: strings.TrimPrefix(lab.CDNURL, "https://")}
	stamp := time.Now().UnixNano()
	hot := func(i int) string { return fmt.Sprintf("%s/gen/1k?flood=%d-hot%d", lab.CDNURL, stamp, i%8) }
	warm := popClient(client, t.PoPAddr, roots, true)
	for i := range 8 {
		if o := fetch(ctx, warm, hot(i)); o.err != nil || o.status != 200 {
			return nil, fmt.Errorf("prefetch %s: %v %d", hot(i), o.err, o.status)
		}
	}
	warm.CloseIdleConnections()
	before := settle(ctx, admin, t.PoPAddr, pid, 0, time.Second) // a baseline, once the prefetch is gone

	urlOf := func(i int) string {
		if i%plan.UncachedEvery == plan.UncachedEvery-1 {
			return fmt.Sprintf("%s/gen/1k?cc=no-store&delay=%v&flood=%d-u%d", lab.CDNURL, plan.OriginDelay, stamp, i)
		}
		return hot(i)
	}
	tally, sent, gaveUp, took, peak := runFlood(ctx, plan, client, t.PoPAddr, roots, urlOf, admin, pid)
	if sent == 0 {
		return nil, errors.New("the flood sent nothing")
	}
	metrics, _ := popMetrics(ctx, admin, t.PoPAddr)
	overload := metricValue(metrics, `pop_rejected_requests_total{reason="overload"}`)
	rateLimited := metricValue(metrics, `pop_rejected_requests_total{reason="rate_limit"}`)

	// After: a burst of normal requests, then the goroutines settle.
	time.Sleep(time.Second) // the per-IP bucket refills
	after := normalBurst(ctx, popClient(client, t.PoPAddr, roots, true), lab.CDNURL, stamp, hot)
	settled := settle(ctx, admin, t.PoPAddr, pid, before.goroutines+20, 10*time.Second)

	other5xx, errs := 0, 0
	for k, v := range tally.status {
		if strings.HasPrefix(k, "5") && !strings.Contains(k, "in-flight") {
			other5xx += v
		}
	}
	for _, v := range tally.errs {
		errs += v
	}
	const maxErrs = 20
	q := func(h *bench.Histogram, p float64) time.Duration {
		return time.Duration(h.Quantile(p)) * time.Microsecond
	}
	p50, p99 := q(&tally.ok, 0.5), q(&tally.ok, 0.99)
	const p99Bound = 2 * time.Second
	shed503, shed429 := tally.status["503 (in-flight limit)"], tally.status["429"]
	streamBound := before.goroutines + 2*plan.Conns*250
	const rssBound = 256 << 10 // KiB
	return []Check{
		{"flood", fmt.Sprintf("open loop %.0f req/s for %v over %d h2 connections (1 in %d uncached, origin %v) at %s restarted with -max-inflight %d -rate-limit %.0f (its default 4096 is more than %d connections x 250 streams can hold in flight): sheds with 503 and 429, zero other 5xx, at most %d connection errors",
			plan.Rate, plan.Duration, plan.Conns, plan.UncachedEvery, plan.OriginDelay, t.PoP, plan.MaxInflight, plan.RateLimit, plan.Conns, maxErrs),
			fmt.Sprintf("sent %d in %v (%.0f/s); statuses %v; errors %v %s; client gave up %d (cap %d outstanding); PoP counted overload %.0f, rate_limit %.0f; shed answered in p50 %v",
				sent, took.Round(time.Millisecond), float64(sent)/took.Seconds(), sortedCounts(tally.status), sortedCounts(tally.errs), short(tally.errEx), gaveUp, plan.MaxOutstanding, overload, rateLimited, q(&tally.shed, 0.5).Round(time.Microsecond)),
			shed503 > 0 && shed429 > 0 && other5xx == 0 && errs <= maxErrs && tally.status["200"] > 0, false},
		{"flood", fmt.Sprintf("admitted requests (200) keep a bounded latency from their scheduled time: p99 under %v", p99Bound),
			fmt.Sprintf("200s: p50 %v, p99 %v, max %v", p50.Round(time.Millisecond), p99.Round(time.Millisecond), (time.Duration(tally.ok.Max()) * time.Microsecond).Round(time.Millisecond)),
			tally.ok.Count() > 0 && p99 < p99Bound, false},
		{"flood", fmt.Sprintf("memory stays bounded: peak RSS under before + 256 MiB, peak goroutines under before + 2 x %d conns x 250 streams", plan.Conns),
			fmt.Sprintf("before %v; peak %d goroutines, %.1f MiB RSS; after %v", before, peak.goroutines, float64(peak.rssKiB)/1024, settled),
			before.rssKiB > 0 && peak.rssKiB > 0 && peak.rssKiB-before.rssKiB < rssBound && peak.goroutines < streamBound, false},
		{"flood", "after the flood it serves normally: 50 requests all 200, goroutines back within 20 of before in 10 s",
			fmt.Sprintf("burst %v; goroutines before %d, after %d", sortedCounts(after), before.goroutines, settled.goroutines),
			after["200"] == 50 && settled.goroutines >= 0 && settled.goroutines <= before.goroutines+20, false},
	}, nil
}

// runFlood runs the schedule and samples the PoP's memory while it runs.
func runFlood(ctx context.Context, plan floodPlan, client bench.LabClient, popAddr string, roots *tls.Config, urlOf func(int) string,
	admin *http.Client, pid int) (tally *floodTally, sent, gaveUp int, took time.Duration, peak popSample) {
	tally = &floodTally{status: map[string]int{}, errs: map[string]int{}}
	conns := make([]*http2.ClientConn, plan.Conns)
	for i := range conns {
		cc, err := dialH2(ctx, client, popAddr, roots)
		if err != nil {
			tally.add(0, "", fmt.Errorf("dial: %w", err), 0)
			continue
		}
		conns[i] = cc
	}
	defer func() {
		for _, cc := range conns {
			if cc != nil {
				cc.Close()
			}
		}
	}()
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			if rss, err := bench.RSSKiB(pid); err == nil {
				peak.rssKiB = max(peak.rssKiB, rss)
			}
			if n%5 == 0 {
				peak.goroutines = max(peak.goroutines, goroutines(ctx, admin, popAddr))
			}
		}
	})
	var outstanding atomic.Int64
	var wg sync.WaitGroup
	total := int(plan.Rate * plan.Duration.Seconds())
	start := time.Now()
	for i := 0; i < total && ctx.Err() == nil; {
		due := min(int(time.Since(start).Seconds()*plan.Rate)+1, total)
		for ; i < due; i++ {
			intended := start.Add(time.Duration(float64(i) / plan.Rate * float64(time.Second)))
			cc := conns[i%len(conns)]
			if cc == nil {
				continue
			}
			if outstanding.Load() >= int64(plan.MaxOutstanding) {
				gaveUp++
				continue
			}
			url := urlOf(i)
			sent++
			outstanding.Add(1)
			wg.Go(func() {
				defer outstanding.Add(-1)
				status, body, err := floodRequest(ctx, cc, url)
				tally.add(status, body, err, time.Since(intended))
			})
		}
		time.Sleep(time.Millisecond)
	}
	took = time.Since(start)
	wg.Wait()
	close(stopSampling)
	sampler.Wait()
	return tally, sent, gaveUp, took, peak
}

// floodRequest sends one request on a connection; it returns the body of
// anything but a 200 (to tell the PoP's 503 from an origin's).
func floodRequest(ctx context.Context, cc *http2.ClientConn, url string) (int, string, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		_, err = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, "", err
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, string(b), err
}

// normalBurst sends 50 requests, 10 at a time: hits and new objects.
func normalBurst(ctx context.Context, hc *http.Client, base string, stamp int64, hot func(int) string) map[string]int {
	defer hc.CloseIdleConnections()
	var mu sync.Mutex // guards counts
	counts := map[string]int{}
	var wg sync.WaitGroup
	for w := range 10 {
		wg.Go(func() {
			for i := w; i < 50; i += 10 {
				url := hot(i)
				if i%2 == 1 {
					url = fmt.Sprintf("%s/gen/1k?flood=%d-after%d", base, stamp, i)
				}
				o := fetch(ctx, hc, url)
				k := fmt.Sprint(o.status)
				if o.err != nil {
					k = "error: " + bench.ErrorKind(o.err)
				}
				mu.Lock()
				counts[k]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return counts
}
