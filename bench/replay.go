package bench

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Replay sends a trace to a cache and measures the offload: the requests
// and bytes the cache kept away from the origin. Each request of the
// trace becomes GET <Target>/gen/<size>?o=<id>, which the project's origin
// answers with <size> bytes, cacheable for an hour; the cache under test
// must stand in front of such an origin. Workers take the requests in
// trace order, the warm-up first; once every warm-up answer is in, the
// origin's counts are read, the measured window is sent, and they are
// read again. Hits are counted twice: from the cache's own headers, and
// from what the origin says it served (when Origin is set), and the two
// are set side by side.

// ReplayConfig configures Replay.
type ReplayConfig struct {
	// Target is the cache's base URL, such as https://127.0.0.1:8443 (or
	// http:// for caches without TLS). Required.
	Target string
	// Proto is h1 (HTTP/1.1 over kept-alive connections, one per worker)
	// or h2 (one HTTP/2 connection, needs https). If empty, h1.
	Proto string
	// Workers is the requests in flight. If zero, 8.
	Workers int
	// Warmup is how many of the trace's first requests are warm-up, sent
	// but not measured.
	Warmup int
	// RootCAs verifies the cache's certificate. If nil, the system's.
	RootCAs *x509.CertPool
	// Timeout bounds each request. If zero, 30s.
	Timeout time.Duration
	// WaitReady is how long Replay waits, before it starts, for the target
	// to answer a 1-byte object (/gen/1?o=ready) with 200: a cache whose
	// origin comes up with the replay. If zero, 30s.
	WaitReady time.Duration
	// Origin reads what the origin behind the cache has served. If nil,
	// only the cache's headers are counted.
	Origin OriginCounter
	// WatchPID, when set, is the cache's process, whose resident size is
	// sampled every 100 ms.
	WatchPID int
	// Progress receives a status line every ProgressEvery. If nil, none.
	Progress io.Writer
	// ProgressEvery is the period of the status lines. If zero, 5s.
	ProgressEvery time.Duration
}

// OriginCounter tells what an origin has served so far.
type OriginCounter interface {
	Served(ctx context.Context) (OriginServed, error)
}

// OriginServed is what an origin has served since it started.
type OriginServed struct {
	Requests int64 `json:"requests"`
	Bytes    int64 `json:"bytes"`
	// Uncounted is the requests whose bytes are not in Bytes.
	Uncounted int64 `json:"uncounted"`
}

// ReplayResult is what a replay measured over the trace's window.
type ReplayResult struct {
	Target  string `json:"target"`
	Proto   string `json:"proto"`
	Workers int    `json:"workers"`
	// Requests and Bytes are the window's requests and the bytes they ask
	// for (the trace's sizes).
	Requests      int64   `json:"requests"`
	Bytes         int64   `json:"bytes"`
	WarmupSeconds float64 `json:"warmup_seconds"`
	Seconds       float64 `json:"seconds"`
	RPS           float64 `json:"rps"`
	// BytesPerSec is the body bytes received per second.
	BytesPerSec float64          `json:"bytes_per_sec"`
	P50ms       float64          `json:"p50_ms"`
	P99ms       float64          `json:"p99_ms"`
	Status      map[string]int64 `json:"status"`
	Errors      map[string]int64 `json:"errors"`

	// Header is the hits by the cache's own account.
	Header HeaderCount `json:"header"`
	// Origin is the hits by the origin's account: nil without
	// ReplayConfig.Origin.
	Origin *OriginCount `json:"origin,omitempty"`

	// PeakRSSMiB is the cache process's largest sampled resident size
	// during the replay, HWMMiB the kernel's high-water mark for it
	// (VmHWM, since the process started); zero without WatchPID.
	PeakRSSMiB float64 `json:"peak_rss_mib,omitempty"`
	HWMMiB     float64 `json:"hwm_rss_mib,omitempty"`
}

// HeaderCount counts the window's answers by their Cache-Status (or, for
// caches without it, X-Cache-Status, X-Cache or X-Varnish).
type HeaderCount struct {
	// Hits were served from the cache. Misses went to the origin (a
	// revalidation, fwd=stale, is a miss); Coalesced of them waited for
	// another request's fetch (detail=coalesced), so the origin served
	// them once. Unknown had no verdict.
	Hits      int64 `json:"hits"`
	Misses    int64 `json:"misses"`
	Coalesced int64 `json:"coalesced"`
	Unknown   int64 `json:"unknown"`
	// HitBytes and CoalescedBytes are the body bytes of the hits and of
	// the coalesced misses.
	HitBytes       int64   `json:"hit_bytes"`
	CoalescedBytes int64   `json:"coalesced_bytes"`
	ObjectHitRatio float64 `json:"object_hit_ratio"`
	ByteHitRatio   float64 `json:"byte_hit_ratio"`
}

// OriginCount is the window's hits as the origin saw them: every request
// it did not serve was a hit.
type OriginCount struct {
	OriginServed
	// BytesExact is false when some of the requests' bytes could not be
	// counted (Uncounted > 0): ByteHitRatio then overstates the offload.
	BytesExact     bool    `json:"bytes_exact"`
	ObjectHitRatio float64 `json:"object_hit_ratio"`
	ByteHitRatio   float64 `json:"byte_hit_ratio"`
	// Difference and ByteDifference are the cross-check: the header
	// misses less the coalesced ones, less the requests the origin
	// served; and the window's bytes less the hits' and the coalesced
	// misses', less the bytes the origin served. Zero when both accounts
	// agree.
	Difference     int64 `json:"difference"`
	ByteDifference int64 `json:"byte_difference"`
}

// Replay sends reqs to cfg.Target and measures the requests after the
// warm-up.
func Replay(ctx context.Context, cfg ReplayConfig, reqs []TraceRequest) (ReplayResult, error) {
	if err := cfg.check(reqs); err != nil {
		return ReplayResult{}, err
	}
	cfg.setDefaults()
	base := strings.TrimSuffix(cfg.Target, "/")
	c := newLoadClient(LoadConfig{Proto: cfg.Proto, Streams: cfg.Workers, RootCAs: cfg.RootCAs})
	defer c.CloseIdleConnections()
	if err := waitReady(ctx, c, base, cfg.WaitReady); err != nil {
		return ReplayResult{}, err
	}
	var peak, last atomic.Int64 // KiB
	stopWatch := func() {}
	if cfg.WatchPID != 0 {
		stopWatch = sync.OnceFunc(watchRSS(cfg.WatchPID, &peak, &last))
	}
	defer stopWatch()
	r := &replayer{cfg: cfg, c: c, base: base}

	start := time.Now()
	if cfg.Warmup > 0 {
		r.phase(ctx, "warm-up", reqs[:cfg.Warmup])
	}
	warm := time.Since(start)
	if err := ctx.Err(); err != nil {
		return ReplayResult{}, fmt.Errorf("replay warm-up: %w", err)
	}
	var before OriginServed
	if cfg.Origin != nil {
		var err error
		if before, err = cfg.Origin.Served(ctx); err != nil {
			return ReplayResult{}, fmt.Errorf("origin counts before the window: %w", err)
		}
	}
	start = time.Now()
	t := r.phase(ctx, "window", reqs[cfg.Warmup:])
	elapsed := time.Since(start)
	if err := ctx.Err(); err != nil {
		return ReplayResult{}, fmt.Errorf("replay: %w", err)
	}
	res := ReplayResult{Target: cfg.Target, Proto: cfg.Proto, Workers: cfg.Workers, WarmupSeconds: warm.Seconds(), Seconds: elapsed.Seconds(),
		Status: t.status, Errors: t.errs, Header: t.header}
	for _, q := range reqs[cfg.Warmup:] {
		res.Requests++
		res.Bytes += q.Size
	}
	res.RPS = float64(res.Requests) / res.Seconds
	res.BytesPerSec = float64(t.received) / res.Seconds
	res.P50ms, res.P99ms = float64(t.hist.Quantile(0.5))/1000, float64(t.hist.Quantile(0.99))/1000
	res.Header.ObjectHitRatio = ratio(res.Header.Hits, res.Requests)
	res.Header.ByteHitRatio = ratio(res.Header.HitBytes, res.Bytes)
	if cfg.Origin != nil {
		after, err := cfg.Origin.Served(ctx)
		if err != nil {
			return ReplayResult{}, fmt.Errorf("origin counts after the window: %w", err)
		}
		res.Origin = originCount(res, before, after)
	}
	stopWatch()
	if cfg.WatchPID != 0 {
		res.PeakRSSMiB = float64(peak.Load()) / 1024
		if hwm, err := procStatusKiB(cfg.WatchPID, "VmHWM:"); err == nil {
			res.HWMMiB = float64(hwm) / 1024
		}
	}
	return res, nil
}

// originCount is the window's hits by the origin's account, what it
// served between before and after, checked against res's headers.
func originCount(res ReplayResult, before, after OriginServed) *OriginCount {
	o := &OriginCount{OriginServed: OriginServed{Requests: after.Requests - before.Requests, Bytes: after.Bytes - before.Bytes,
		Uncounted: after.Uncounted - before.Uncounted}}
	o.BytesExact = o.Uncounted == 0
	o.ObjectHitRatio = 1 - ratio(o.Requests, res.Requests)
	o.ByteHitRatio = 1 - ratio(o.Bytes, res.Bytes)
	o.Difference = res.Header.Misses - res.Header.Coalesced - o.Requests
	o.ByteDifference = res.Bytes - res.Header.HitBytes - res.Header.CoalescedBytes - o.Bytes
	return o
}

func (cfg *ReplayConfig) check(reqs []TraceRequest) error {
	var errs []error
	switch {
	case strings.HasPrefix(cfg.Target, "https://"):
	case strings.HasPrefix(cfg.Target, "http://"):
		if cfg.Proto == H2 {
			errs = append(errs, fmt.Errorf("proto h2 with target %q: h2 needs an https:// target", cfg.Target))
		}
	default:
		errs = append(errs, fmt.Errorf("target %q: want the cache's base URL, such as https://127.0.0.1:8443", cfg.Target))
	}
	if cfg.Proto != "" && cfg.Proto != H1 && cfg.Proto != H2 {
		errs = append(errs, fmt.Errorf("proto %q: want h1 or h2", cfg.Proto))
	}
	if cfg.Workers < 0 {
		errs = append(errs, fmt.Errorf("workers %d: want a positive number of requests in flight", cfg.Workers))
	}
	if cfg.Warmup < 0 || cfg.Warmup >= len(reqs) {
		errs = append(errs, fmt.Errorf("warmup %d: want 0 to %d, fewer than the trace's %d requests", cfg.Warmup, max(len(reqs)-1, 0), len(reqs)))
	}
	if cfg.WatchPID != 0 {
		if _, err := RSSKiB(cfg.WatchPID); err != nil {
			errs = append(errs, fmt.Errorf("watch pid %d: %w", cfg.WatchPID, err))
		}
	}
	return errors.Join(errs...)
}

func (cfg *ReplayConfig) setDefaults() {
	if cfg.Proto == "" {
		cfg.Proto = H1
	}
	if cfg.Workers == 0 {
		cfg.Workers = 8
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.WaitReady == 0 {
		cfg.WaitReady = 30 * time.Second
	}
	if cfg.ProgressEvery == 0 {
		cfg.ProgressEvery = 5 * time.Second
	}
}

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// waitReady asks base for a 1-byte object until it answers 200.
func waitReady(ctx context.Context, c *http.Client, base string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	url := base + "/gen/1?o=ready"
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("target %s not ready after %v: GET %s: %s", base, d, url, last)
		case <-tick.C:
		}
	}
}

// replayer sends the phases of one replay.
type replayer struct {
	cfg  ReplayConfig
	c    *http.Client
	base string
}

// replayTally is one worker's count of a phase, merged at its end.
type replayTally struct {
	hist     Histogram
	header   HeaderCount
	received int64
	status   map[string]int64
	errs     map[string]int64
}

func (t *replayTally) merge(o *replayTally) {
	t.hist.Merge(&o.hist)
	t.header.Hits += o.header.Hits
	t.header.Misses += o.header.Misses
	t.header.Coalesced += o.header.Coalesced
	t.header.Unknown += o.header.Unknown
	t.header.HitBytes += o.header.HitBytes
	t.header.CoalescedBytes += o.header.CoalescedBytes
	t.received += o.received
	for k, v := range o.status {
		t.status[k] += v
	}
	for k, v := range o.errs {
		t.errs[k] += v
	}
}

func newReplayTally() *replayTally {
	return &replayTally{status: map[string]int64{}, errs: map[string]int64{}}
}

// phaseProgress is what the status line shows, shared by the workers.
type phaseProgress struct {
	done, bytes, hitBytes atomic.Int64
}

// phase sends reqs with the configured workers and returns their tally.
func (r *replayer) phase(ctx context.Context, name string, reqs []TraceRequest) *replayTally {
	var next atomic.Int64
	var prog phaseProgress
	stop := r.progress(name, len(reqs), &prog)
	defer stop()
	all := newReplayTally()
	var mu sync.Mutex // guards all
	var wg sync.WaitGroup
	for range r.cfg.Workers {
		wg.Go(func() {
			t := newReplayTally()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(len(reqs)) {
					break
				}
				r.send(ctx, reqs[i], t, &prog)
			}
			mu.Lock()
			all.merge(t)
			mu.Unlock()
		})
	}
	wg.Wait()
	return all
}

// send sends one request of the trace and counts its answer.
func (r *replayer) send(ctx context.Context, q TraceRequest, t *replayTally, prog *phaseProgress) {
	rctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	url := r.base + "/gen/" + strconv.FormatInt(q.Size, 10) + "?o=" + strconv.FormatUint(q.ID, 10)
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	start := time.Now()
	resp, err := r.c.Do(req)
	defer prog.done.Add(1)
	prog.bytes.Add(q.Size)
	if err != nil {
		if ctx.Err() == nil {
			t.errs[ErrorKind(err)]++
		}
		return
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	t.hist.Record(time.Since(start).Microseconds())
	t.received += n
	t.status[strconv.Itoa(resp.StatusCode)]++
	switch {
	case err != nil:
		t.errs["body: "+ErrorKind(err)]++
	case resp.StatusCode == http.StatusOK && n != q.Size:
		t.errs["wrong size"]++
	}
	verdict, coalesced := replayVerdict(resp.Header)
	switch verdict {
	case "hit":
		t.header.Hits++
		t.header.HitBytes += n
		prog.hitBytes.Add(n)
	case "miss", "stale":
		t.header.Misses++
		if coalesced {
			t.header.Coalesced++
			t.header.CoalescedBytes += n
		}
	default:
		t.header.Unknown++
	}
}

// replayVerdict reads a response's cache verdict, hit or miss ("" if
// none), and whether it waited for another request's fetch. It reads
// Cache-Status (RFC 9211: the PoP, Varnish 7.4+ if configured), else
// X-Cache-Status or X-Cache (HIT..., MISS...: nginx, Squid, most CDNs),
// else X-Varnish (two transaction IDs on a hit, one on a miss).
func replayVerdict(h http.Header) (verdict string, coalesced bool) {
	if cs := h.Get("Cache-Status"); cs != "" {
		entries := strings.Split(cs, ",")
		return CacheVerdict(cs), strings.Contains(entries[len(entries)-1], "detail=coalesced")
	}
	for _, name := range []string{"X-Cache-Status", "X-Cache"} {
		v := strings.ToUpper(strings.TrimSpace(h.Get(name)))
		switch {
		case v == "":
		case strings.HasPrefix(v, "HIT"):
			return "hit", false
		default:
			return "miss", false
		}
	}
	if v := h.Get("X-Varnish"); v != "" {
		if len(strings.Fields(v)) >= 2 {
			return "hit", false
		}
		return "miss", false
	}
	return "", false
}

// progress prints a status line every ProgressEvery until stopped.
func (r *replayer) progress(name string, total int, p *phaseProgress) (stop func()) {
	w := r.cfg.Progress
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(r.cfg.ProgressEvery)
		defer tick.Stop()
		start, last := time.Now(), int64(0)
		for {
			select {
			case <-done:
				n := p.done.Load()
				fmt.Fprintf(w, "replay %s: %d requests in %.1fs, byte hit ratio %.3f (cache headers)\n", name, n, time.Since(start).Seconds(), ratio(p.hitBytes.Load(), p.bytes.Load()))
				return
			case <-tick.C:
				n := p.done.Load()
				fmt.Fprintf(w, "replay %s: %d/%d requests (%.0f%%)  %.0f req/s  byte hit ratio %.3f so far\n", name, n, total, 100*float64(n)/float64(total),
					float64(n-last)/r.cfg.ProgressEvery.Seconds(), ratio(p.hitBytes.Load(), p.bytes.Load()))
				last = n
			}
		}
	})
	return func() { close(done); wg.Wait() }
}
