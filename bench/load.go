package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// LoadConfig configures a load run.
type LoadConfig struct {
	Proto string // h1, h2 or h3
	// Conns is the number of connections (closed loop). If zero, 1.
	Conns int
	// Streams is the requests in flight per connection (h2, h3). If zero, 1.
	Streams int
	// Rate, when set, makes the run open-loop: requests are sent on a
	// fixed schedule of Rate per second whatever the server does, and each
	// latency is measured from its intended send time, so a stalled
	// server shows in the percentiles (no coordinated omission).
	Rate float64
	// Duration or N bound the run; at least one is required.
	Duration time.Duration
	N        int64
	RootCAs  *x509.CertPool
	// Timeout bounds each request. If zero, 10s.
	Timeout time.Duration
	// MaxInFlight caps open-loop concurrency. If zero, 10000.
	MaxInFlight int
	// Progress receives a live status line every second. If nil, none.
	Progress io.Writer
	// Keys, when set, spreads the requests over this many distinct URLs:
	// the i-th request adds k=i%Keys to the query, so a run sweeps a
	// working set of Keys objects (all misses on the first pass).
	Keys int64
	// WatchPID, when set, is a process (the server under test) whose
	// resident size is sampled every 100 ms during the run.
	WatchPID int
	// ConnectTo, when set (host:port), is where every connection goes
	// instead of the URL's host, which stays the TLS name and the Host
	// (curl's --connect-to): a published PoP reached under its real name.
	ConnectTo string
}

// LoadResult summarises a run.
type LoadResult struct {
	Proto       string           `json:"proto"`
	Mode        string           `json:"mode"` // closed or open
	URL         string           `json:"url"`
	Requests    int64            `json:"requests"`
	Bytes       int64            `json:"bytes"`
	Seconds     float64          `json:"seconds"`
	RPS         float64          `json:"rps"`
	BytesPerSec float64          `json:"bytes_per_sec"`
	P50ms       float64          `json:"p50_ms"`
	P90ms       float64          `json:"p90_ms"`
	P99ms       float64          `json:"p99_ms"`
	P999ms      float64          `json:"p999_ms"`
	Maxms       float64          `json:"max_ms"`
	Status      map[string]int64 `json:"status"`
	Errors      map[string]int64 `json:"errors"`
	HitRatio    float64          `json:"hit_ratio"`
	// PeakRSSMiB and EndRSSMiB are WatchPID's largest sampled and last
	// resident size, HWMMiB the kernel's high-water mark for it (VmHWM,
	// since the process started, so it also catches peaks between
	// samples); zero without WatchPID.
	PeakRSSMiB float64 `json:"peak_rss_mib,omitempty"`
	EndRSSMiB  float64 `json:"end_rss_mib,omitempty"`
	HWMMiB     float64 `json:"hwm_rss_mib,omitempty"`
	// The per-request fields of ttfb's JSON, summarised for the run: the
	// p50 time to first byte and to the end, the most frequent
	// Cache-Status and PoP. Connections are reused, so the DNS, connect
	// and TLS phases are not measured per request (0) and nothing is
	// resumed or sent as early data.
	DNSms       float64 `json:"dns_ms"`
	Connectms   float64 `json:"connect_ms"`
	TLSms       float64 `json:"tls_ms"`
	TTFBms      float64 `json:"ttfb_ms"`
	Totalms     float64 `json:"total_ms"`
	CacheStatus string  `json:"cache_status"`
	PoP         string  `json:"pop"`
	Resumed     bool    `json:"resumed"`
	EarlyData   bool    `json:"early_data"`
}

// worker state is per goroutine and merged at the end: no locks on the hot path.
type tally struct {
	hist   Histogram
	ttfb   Histogram
	pops   map[string]int64
	caches map[string]int64
	bytes  int64
	status map[string]int64
	errs   map[string]int64
	hits   int64
	misses int64
}

func newTally() *tally {
	return &tally{status: map[string]int64{}, errs: map[string]int64{}, pops: map[string]int64{}, caches: map[string]int64{}}
}

// Load runs a load test against rawURL.
func Load(ctx context.Context, cfg LoadConfig, rawURL string) (LoadResult, error) {
	if !strings.HasPrefix(rawURL, "https://") {
		return LoadResult{}, fmt.Errorf("url %q: want an https:// URL", rawURL)
	}
	switch cfg.Proto {
	case H1, H2, H3:
	default:
		return LoadResult{}, fmt.Errorf("proto %q: want h1, h2 or h3", cfg.Proto)
	}
	if cfg.Duration <= 0 && cfg.N <= 0 {
		return LoadResult{}, errors.New("load: want -d DURATION or -n COUNT")
	}
	if cfg.Rate < 0 {
		return LoadResult{}, fmt.Errorf("rate %v: want a positive rate", cfg.Rate)
	}
	if cfg.Keys < 0 {
		return LoadResult{}, fmt.Errorf("keys %d: want a positive number of distinct URLs", cfg.Keys)
	}
	if cfg.WatchPID != 0 {
		if _, err := RSSKiB(cfg.WatchPID); err != nil {
			return LoadResult{}, fmt.Errorf("watch pid %d: %w", cfg.WatchPID, err)
		}
	}
	cfg.Conns, cfg.Streams = max(cfg.Conns, 1), max(cfg.Streams, 1)
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 10000
	}
	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	clients := make([]*http.Client, cfg.Conns)
	for i := range clients {
		clients[i] = newLoadClient(cfg)
	}
	defer func() {
		for _, c := range clients {
			c.CloseIdleConnections()
			if t, ok := c.Transport.(*http3.Transport); ok {
				t.Close()
			}
		}
	}()
	var issued, done, seq atomic.Int64
	stopProgress := progress(cfg.Progress, &done)
	defer stopProgress()
	target := func() string { return rawURL }
	if cfg.Keys > 0 {
		sep := "?"
		if strings.Contains(rawURL, "?") {
			sep = "&"
		}
		target = func() string { return rawURL + sep + "k=" + strconv.FormatInt((seq.Add(1)-1)%cfg.Keys, 10) }
	}
	var peak, last atomic.Int64 // KiB
	stopWatch := func() {}
	if cfg.WatchPID != 0 {
		stopWatch = watchRSS(cfg.WatchPID, &peak, &last)
	}
	start := time.Now()
	var tallies []*tally
	var mu sync.Mutex // guards tallies
	var wg sync.WaitGroup
	take := func() bool { return cfg.N <= 0 || issued.Add(1) <= cfg.N }
	mode := "closed"
	if cfg.Rate == 0 {
		for i := range cfg.Conns * cfg.Streams {
			c := clients[i%cfg.Conns]
			wg.Go(func() {
				t := newTally()
				for ctx.Err() == nil && take() {
					do(ctx, c, target(), cfg.Timeout, time.Now(), t)
					done.Add(1)
				}
				mu.Lock()
				tallies = append(tallies, t)
				mu.Unlock()
			})
		}
	} else {
		mode = "open"
		sem := make(chan struct{}, cfg.MaxInFlight)
		interval := time.Duration(float64(time.Second) / cfg.Rate)
		t := newTally() // shared by the open-loop goroutines under tmu
		var tmu sync.Mutex
		tallies = append(tallies, t)
		for i := int64(0); ctx.Err() == nil && take(); i++ {
			intended := start.Add(time.Duration(i) * interval)
			if d := time.Until(intended); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
				}
			}
			if ctx.Err() != nil {
				break
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			if ctx.Err() != nil {
				break
			}
			c, url := clients[int(i)%cfg.Conns], target()
			wg.Go(func() {
				defer func() { <-sem }()
				local := newTally()
				do(ctx, c, url, cfg.Timeout, intended, local)
				done.Add(1)
				tmu.Lock()
				mergeTally(t, local)
				tmu.Unlock()
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopWatch()
	all := newTally()
	for _, t := range tallies {
		mergeTally(all, t)
	}
	res := LoadResult{Proto: cfg.Proto, Mode: mode, URL: rawURL, Requests: all.hist.Count(), Bytes: all.bytes, Seconds: elapsed.Seconds(),
		Status: all.status, Errors: all.errs}
	res.RPS = float64(res.Requests) / res.Seconds
	res.BytesPerSec = float64(res.Bytes) / res.Seconds
	q := func(p float64) float64 { return float64(all.hist.Quantile(p)) / 1000 }
	res.P50ms, res.P90ms, res.P99ms, res.P999ms, res.Maxms = q(0.5), q(0.9), q(0.99), q(0.999), float64(all.hist.Max())/1000
	if all.hits+all.misses > 0 {
		res.HitRatio = float64(all.hits) / float64(all.hits+all.misses)
	}
	res.TTFBms, res.Totalms = float64(all.ttfb.Quantile(0.5))/1000, res.P50ms
	res.PoP, res.CacheStatus = mostFrequent(all.pops), mostFrequent(all.caches)
	res.PeakRSSMiB, res.EndRSSMiB = float64(peak.Load())/1024, float64(last.Load())/1024
	if cfg.WatchPID != 0 {
		if hwm, err := procStatusKiB(cfg.WatchPID, "VmHWM:"); err == nil {
			res.HWMMiB = float64(hwm) / 1024
		}
	}
	return res, nil
}

// watchRSS samples pid's resident size every 100 ms into peak and last
// until the returned function is called (which takes a last sample).
func watchRSS(pid int, peak, last *atomic.Int64) (stop func()) {
	sample := func() {
		if kib, err := RSSKiB(pid); err == nil {
			last.Store(kib)
			if kib > peak.Load() {
				peak.Store(kib)
			}
		}
	}
	sample()
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				sample()
				return
			case <-tick.C:
				sample()
			}
		}
	}()
	return func() { close(done); <-finished }
}

func mergeTally(dst, src *tally) {
	dst.hist.Merge(&src.hist)
	dst.ttfb.Merge(&src.ttfb)
	for k, v := range src.pops {
		dst.pops[k] += v
	}
	for k, v := range src.caches {
		dst.caches[k] += v
	}
	dst.bytes += src.bytes
	dst.hits += src.hits
	dst.misses += src.misses
	for k, v := range src.status {
		dst.status[k] += v
	}
	for k, v := range src.errs {
		dst.errs[k] += v
	}
}

func newLoadClient(cfg LoadConfig) *http.Client {
	tc := &tls.Config{RootCAs: cfg.RootCAs, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	if cfg.Proto == H3 {
		h3 := &http3.Transport{TLSClientConfig: tc}
		if cfg.ConnectTo != "" {
			h3.Dial = func(ctx context.Context, _ string, tlsCfg *tls.Config, qc *quic.Config) (*quic.Conn, error) {
				return quic.DialAddrEarly(ctx, cfg.ConnectTo, tlsCfg, qc)
			}
		}
		return &http.Client{Transport: h3}
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: cfg.Proto == H2, MaxIdleConnsPerHost: cfg.Streams, DisableCompression: true}
	if cfg.ConnectTo != "" {
		tr.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, cfg.ConnectTo)
		}
	}
	tr.Protocols = new(http.Protocols)
	if cfg.Proto == H2 {
		tr.Protocols.SetHTTP2(true)
	} else {
		tr.Protocols.SetHTTP1(true)
		tr.MaxConnsPerHost = cfg.Streams
	}
	return &http.Client{Transport: tr}
}

// do sends one request and records its latency from intended.
func do(ctx context.Context, c *http.Client, url string, timeout time.Duration, intended time.Time, t *tally) {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var first time.Time
	rctx = httptrace.WithClientTrace(rctx, &httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }})
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return // the run ended: not an error of the server
		}
		t.errs[ErrorKind(err)]++
		t.hist.Record(time.Since(intended).Microseconds())
		return
	}
	if first.IsZero() {
		first = time.Now() // HTTP/3 does not report it: the headers are here
	}
	t.ttfb.Record(first.Sub(intended).Microseconds())
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	t.hist.Record(time.Since(intended).Microseconds())
	t.bytes += n
	t.pops[resp.Header.Get("X-Served-By")]++
	t.caches[CacheVerdict(resp.Header.Get("Cache-Status"))]++
	if err != nil {
		t.errs["body: "+ErrorKind(err)]++
	}
	t.status[fmt.Sprint(resp.StatusCode)]++
	switch CacheVerdict(resp.Header.Get("Cache-Status")) {
	case "hit", "stale":
		t.hits++
	case "miss":
		t.misses++
	}
}

func mostFrequent(m map[string]int64) string {
	best, n := "", int64(-1)
	for k, v := range m {
		if v > n || (v == n && k < best) {
			best, n = k, v
		}
	}
	return best
}

// ErrorKind names the kind of a request's error, as load runs and the
// drills count them: timeout, connection refused, connection reset, eof or
// other.
func ErrorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "timeout"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	case strings.Contains(err.Error(), "reset"):
		return "connection reset"
	case strings.Contains(err.Error(), "EOF"):
		return "eof"
	}
	return "other"
}

// progress prints a live line each second until stopped.
func progress(w io.Writer, done *atomic.Int64) func() {
	if w == nil {
		return func() {}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		start, last := time.Now(), int64(0)
		for {
			select {
			case <-stop:
				fmt.Fprintln(w)
				return
			case <-tick.C:
				n := done.Load()
				fmt.Fprintf(w, "\r%5.0fs  %d requests  %d/s   ", time.Since(start).Seconds(), n, n-last)
				last = n
			}
		}
	})
	return func() { close(stop); wg.Wait() }
}

// WriteLoad prints a load summary.
func WriteLoad(w io.Writer, r LoadResult) {
	fmt.Fprintf(w, "%s %s-loop %s\n", r.Proto, r.Mode, r.URL)
	fmt.Fprintf(w, "  requests %d in %.2fs: %.0f req/s, %.1f MB/s, hit ratio %.2f\n", r.Requests, r.Seconds, r.RPS, r.BytesPerSec/1e6, r.HitRatio)
	fmt.Fprintf(w, "  latency ms: p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n", r.P50ms, r.P90ms, r.P99ms, r.P999ms, r.Maxms)
	if r.PeakRSSMiB > 0 {
		fmt.Fprintf(w, "  server RSS MiB: peak %.1f  end %.1f  high-water mark (VmHWM) %.1f\n", r.PeakRSSMiB, r.EndRSSMiB, r.HWMMiB)
	}
	writeCounts(w, r.Status, r.Errors)
}

// writeCounts prints a run's responses by status and its errors by kind,
// one per line in key order.
func writeCounts(w io.Writer, status, errs map[string]int64) {
	for _, m := range []struct {
		name string
		v    map[string]int64
	}{{"status", status}, {"errors", errs}} {
		keys := make([]string, 0, len(m.v))
		for k := range m.v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %s %s: %d\n", m.name, k, m.v[k])
		}
	}
}
