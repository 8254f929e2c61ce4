package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgecdn/cdn/bench"
	"github.com/edgecdn/cdn/certs"
)

const replayUsage = `bench replay [-trace FILE.csv | -seed N -objects N -requests N -warmup N -zipf S -size-median B ...]
               -budget BYTES (-offline | -target URL [-origin-listen ADDR | -origin URL] [-pid PID] [-proto h1|h2] [-c N] [-cacert FILE] [-anchors varnish]) [-o json]`

// replayArgs are bench replay's flags, parsed and checked.
type replayArgs struct {
	trace                 bench.TraceConfig
	traceFile, writeTrace string
	budget                int64
	offline               bool
	simStore              bool
	replay                bench.ReplayConfig
	cacert                string
	originListen, origin  string
	varnish               bool // the Varnish anchor
	output                string
}

func replay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a, err := parseReplayArgs(args, stderr)
	if err != nil {
		return err
	}
	reqs, source, err := loadTrace(a.trace, a.traceFile)
	if err != nil {
		return err
	}
	warmup := a.replay.Warmup
	if warmup >= len(reqs) {
		return fmt.Errorf("-warmup %d: want fewer than the trace's %d requests", warmup, len(reqs))
	}
	if a.writeTrace != "" {
		if err := writeTraceFile(a.writeTrace, reqs); err != nil {
			return err
		}
	}
	offline := []bench.OfflineResult{bench.SimulateLRU(reqs, warmup, a.budget), bench.StaticOracle(reqs, warmup, a.budget)}
	if a.simStore {
		fmt.Fprintf(stderr, "replay: simulating the PoP's store at %d bytes\n", a.budget)
		st, err := bench.SimulateStore(reqs, warmup, a.budget)
		if err != nil {
			return err
		}
		offline = append(offline, st)
	}
	var res *bench.ReplayResult
	var anchors []bench.AnchorResult
	if !a.offline {
		if res, anchors, err = runReplay(ctx, a, reqs, stderr); err != nil {
			return err
		}
	}
	report := bench.NewReplayReport(source, bench.SummarizeTrace(reqs, warmup), a.budget, offline, res, anchors)
	if a.output == "json" {
		return json.NewEncoder(stdout).Encode(report)
	}
	return bench.WriteReplay(stdout, report)
}

func parseReplayArgs(args []string, stderr io.Writer) (replayArgs, error) {
	var a replayArgs
	fs := flag.NewFlagSet("bench replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s\n\nReplays a trace against a cache in front of the project's origin (/gen/<size>?o=<id>) and reports\n"+
			"its object and byte hit ratios, by its headers and by what the origin served, beside an exact LRU and\n"+
			"the hindsight static oracle at -budget. Give the cache the same budget (pop -cache-bytes).\n\nFlags:\n", replayUsage)
		fs.PrintDefaults()
	}
	tc := &a.trace
	fs.StringVar(&a.traceFile, "trace", "", "read the trace from this CSV `file` (time,id,size a line) instead of generating one")
	fs.StringVar(&a.writeTrace, "write-trace", "", "also write the trace as CSV to this `file`")
	fs.Uint64Var(&tc.Seed, "seed", 1, "generator `seed`: the same seed and parameters make the same trace")
	fs.IntVar(&tc.Objects, "objects", 100_000, "catalogue `size` (objects)")
	fs.IntVar(&tc.Requests, "requests", 1_000_000, "trace length in `requests`, warm-up included")
	fs.IntVar(&tc.Warmup, "warmup", 200_000, "first `requests` that warm the cache and are not measured (also for -trace)")
	fs.Float64Var(&tc.Zipf, "zipf", 0.8, "popularity `skew` s: rank r is requested in proportion to 1/r^s")
	sizeMedian := fs.String("size-median", "16k", "median object `size` (lognormal)")
	fs.Float64Var(&tc.SizeSigma, "size-sigma", 1, "`sigma` of the sizes' logarithm; 0: every object is the median")
	minSize := fs.String("min-size", "128", "smallest object `size`")
	maxSize := fs.String("max-size", "4m", "largest object `size`")
	fs.Float64Var(&tc.OneHitWonders, "one-hit", 0, "`share` of requests for objects requested only once")
	fs.IntVar(&tc.ChurnEvery, "churn-every", 0, "every this many `requests`, replace -churn-share of the catalogue with new objects; 0: fixed popularity")
	fs.Float64Var(&tc.ChurnShare, "churn-share", 0.01, "`share` of the catalogue each churn replaces")
	budget := fs.String("budget", "64m", "cache `size` for the offline references (LRU, oracle), such as 64m or 1g; give the cache the same")
	fs.BoolVar(&a.offline, "offline", false, "print the trace and the offline references only; no replay")
	fs.BoolVar(&a.simStore, "sim-store", true, "also simulate the PoP's cache store (its admission and eviction, no HTTP) at -budget, a few seconds per million requests")
	rc := &a.replay
	fs.StringVar(&rc.Target, "target", "", "the cache's base `URL`, such as https://127.0.0.1:8443")
	fs.StringVar(&a.originListen, "origin-listen", "", "run the origin here (`host:port`) and count what it serves; point the cache at http://host:port")
	fs.StringVar(&a.origin, "origin", "", "read what an origin running elsewhere served from its /_origin/stats (its `URL`)")
	fs.StringVar(&rc.Proto, "proto", bench.H1, "`protocol`: h1 (one kept-alive connection per worker) or h2")
	fs.IntVar(&rc.Workers, "c", 8, "`requests` in flight")
	fs.IntVar(&rc.WatchPID, "pid", 0, "the cache's `process`: report its peak resident size")
	fs.StringVar(&a.cacert, "cacert", "", "PEM `file` of CA certificates to trust")
	fs.DurationVar(&rc.Timeout, "timeout", 30*time.Second, "per-request `timeout`")
	fs.StringVar(&a.output, "o", "table", "output `format`: table or json (one object)")
	anchors := fs.String("anchors", "", "also replay against these `caches` of known policy, started here at -budget: varnish (malloc storage, lru_interval=0: a true LRU)")
	if err := fs.Parse(args); err != nil {
		return a, err
	}
	if fs.NArg() > 0 {
		return a, fmt.Errorf("replay: unexpected argument %q; usage: %s", fs.Arg(0), replayUsage)
	}
	rc.Warmup = tc.Warmup
	var errs []error
	if a.output != "table" && a.output != "json" {
		errs = append(errs, fmt.Errorf("-o %q: want table or json", a.output))
	}
	for _, s := range []struct {
		name, v string
		dst     *int64
	}{{"size-median", *sizeMedian, &tc.SizeMedian}, {"min-size", *minSize, &tc.MinSize}, {"max-size", *maxSize, &tc.MaxSize}, {"budget", *budget, &a.budget}} {
		var err error
		if *s.dst, err = parseBytes(s.v); err != nil {
			errs = append(errs, fmt.Errorf("-%s: %w", s.name, err))
		}
	}
	for _, name := range strings.Split(*anchors, ",") {
		switch strings.TrimSpace(name) {
		case "":
		case "varnish":
			a.varnish = true
		case "nginx":
			errs = append(errs, errors.New("-anchors nginx: not an anchor: nginx's cache manager evicts behind the writes, so at high miss rates it holds more than max_size and its hit ratio is not that of the budget; want varnish"))
		default:
			errs = append(errs, fmt.Errorf("-anchors %q: want varnish", name))
		}
	}
	if !a.offline && rc.Target == "" && !a.varnish {
		errs = append(errs, errors.New("-target: want the cache's URL, such as https://127.0.0.1:8443, -anchors varnish, or -offline for the references only"))
	}
	if a.originListen != "" && a.origin != "" {
		errs = append(errs, errors.New("-origin-listen and -origin: want one origin, the one run here or one elsewhere"))
	}
	return a, errors.Join(errs...)
}

// runReplay replays reqs as a says, against the target and the anchors,
// with the origin it runs or reads.
func runReplay(ctx context.Context, a replayArgs, reqs []bench.TraceRequest, stderr io.Writer) (*bench.ReplayResult, []bench.AnchorResult, error) {
	cfg := a.replay
	cfg.Progress = stderr
	if a.cacert != "" {
		pool, err := certs.LoadPool(a.cacert)
		if err != nil {
			return nil, nil, fmt.Errorf("-cacert: %w", err)
		}
		cfg.RootCAs = pool
	}
	var originAddr string // host:port, for the anchors
	if a.origin != "" {
		cfg.Origin = bench.OriginStats{URL: a.origin}
		originAddr = strings.TrimSuffix(strings.TrimPrefix(a.origin, "http://"), "/")
	}
	if a.originListen == "" && a.origin == "" && a.varnish {
		a.originListen = "127.0.0.1:0" // an origin for the anchors
	}
	if a.originListen != "" {
		o, err := bench.ListenReplayOrigin(a.originListen)
		if err != nil {
			return nil, nil, fmt.Errorf("-origin-listen: %w", err)
		}
		done := make(chan error, 1)
		go func() { done <- o.Serve() }()
		defer func() { o.Close(); <-done }()
		fmt.Fprintf(stderr, "replay: origin on %s\n", o.URL())
		cfg.Origin, originAddr = o, strings.TrimPrefix(o.URL(), "http://")
	}
	var res *bench.ReplayResult
	if cfg.Target != "" {
		r, err := bench.Replay(ctx, cfg, reqs)
		if err != nil {
			return nil, nil, err
		}
		res = &r
	}
	var anchors []bench.AnchorResult
	if a.varnish {
		fmt.Fprintf(stderr, "replay: the varnish anchor, in front of %s\n", originAddr)
		r, err := bench.RunVarnishAnchor(ctx, cfg, originAddr, a.budget, reqs)
		if err != nil {
			return nil, nil, err
		}
		anchors = append(anchors, r)
	}
	return res, anchors, nil
}

// loadTrace reads the trace file, or generates the trace if there is none.
func loadTrace(tc bench.TraceConfig, file string) ([]bench.TraceRequest, string, error) {
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, "", fmt.Errorf("-trace: %w", err)
		}
		defer f.Close()
		reqs, err := bench.ReadTraceCSV(f)
		if err != nil {
			return nil, "", fmt.Errorf("-trace %s: %w", file, err)
		}
		return reqs, file, nil
	}
	reqs, err := bench.GenerateTrace(tc)
	if err != nil {
		return nil, "", err
	}
	source := fmt.Sprintf("generated: seed %d, %d objects, zipf %g, lognormal sizes (median %d B, sigma %g, %d to %d B), one-hit %g",
		tc.Seed, tc.Objects, tc.Zipf, tc.SizeMedian, tc.SizeSigma, tc.MinSize, tc.MaxSize, tc.OneHitWonders)
	if tc.ChurnEvery > 0 {
		source += fmt.Sprintf(", churn %g every %d requests", tc.ChurnShare, tc.ChurnEvery)
	}
	return reqs, source, nil
}

func writeTraceFile(name string, reqs []bench.TraceRequest) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("-write-trace: %w", err)
	}
	if err := bench.WriteTraceCSV(f, reqs); err != nil {
		f.Close()
		return fmt.Errorf("-write-trace %s: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("-write-trace %s: %w", name, err)
	}
	return nil
}

// parseBytes parses a size such as 1234, 16k, 64m, 64MiB or 1g (k, m, g
// are KiB, MiB, GiB; a trailing B or iB is allowed).
func parseBytes(s string) (int64, error) {
	num, mult := strings.ToLower(s), int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30},
		{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1}} {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("%q: want bytes with an optional k, m or g suffix, such as 16k or 64MiB", s)
	}
	return v * mult, nil
}
