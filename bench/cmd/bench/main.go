// Command bench measures a CDN and drills it, one job per subcommand:
//
//   - ttfb times requests one at a time by phase (DNS, connect, TLS or
//     QUIC handshake, first byte, total) over HTTP/1.1, HTTP/2 or HTTP/3,
//     on cold, warm, resumed or 0-RTT connections, or as a browser's first
//     visit (first, first-https: the protocol chosen from DNS, with or
//     without the HTTPS record); with the PoP's Server-Timing it splits
//     each TTFB into client<->PoP, PoP and PoP<->origin.
//   - load sends closed- or open-loop load and reports req/s, latency
//     percentiles, statuses and the hit ratio.
//   - replay sends a trace (generated, or read from CSV) to a cache and
//     reports its object and byte hit ratios, by its headers and by what
//     the origin served, beside an exact LRU and the hindsight static
//     oracle at the same budget: the offload.
//   - compare sets two runs of ttfb or load (their JSON) side by side.
//   - lab measures, from every client of the running native lab, hits,
//     misses and requests direct to the origin, each phase's p50 and p99
//     beside its floor, and writes a report.
//   - drill brings up a private lab and breaks it on purpose (the origin
//     down or slow, a PoP down, drained, restarted cold, flooded or
//     attacked), printing each expectation, what was measured and PASS or
//     FAIL, and writing them to a report.
//
// Usage:
//
//	bench ttfb -proto h1|h2|h3 -mode cold|warm|resumed|0rtt|first|first-https -n N [-resolver ADDR] [-cacert FILE] [-o json] URL...
//	bench load -proto h1|h2|h3 (-c N [-m N] | -rate R) (-d DUR | -n N) [-keys N] [-watch-pid PID] [-cacert FILE] [-o json] URL
//	bench replay [-trace FILE.csv | -objects N -requests N -warmup N -zipf S ...] -budget BYTES (-offline | -target URL [-origin-listen ADDR | -origin URL] [-pid PID]) [-o json]
//	bench compare A.json B.json
//	bench lab [-out DIR] [-cacert FILE]   (as root, with the native lab up)
//	bench drill [-out DIR] [NAME...]      (as root; no names: all)
//
// Package bench does the measuring and package bench/drill the drills;
// this command parses flags, calls them and prints.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgecdn/cdn/bench"
	"github.com/edgecdn/cdn/bench/drill"
	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/compose"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bench:", err)
		}
		os.Exit(2)
	}
}

const usage = `usage:
  bench ttfb -proto h1|h2|h3 -mode cold|warm|resumed|0rtt|first|first-https -n N [-resolver ADDR] [-cacert FILE] [-o json] URL...
  bench load -proto h1|h2|h3 (-c N [-m N] | -rate R) (-d DUR | -n N) [-keys N] [-watch-pid PID] [-cacert FILE] [-o json] URL
  ` + replayUsage + `
  bench compare A.json B.json
  bench lab [-out DIR] [-cacert FILE]   (as root, with the native lab up)
  bench drill [-out DIR] [origin-down] [origin-slow] [pop-down] [pop-drain] [cold-restart] [flood] [hostile]
                                        (as root: brings up a lab of its own; no names: all)`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "ttfb":
		return ttfb(ctx, args[1:], stdout, stderr)
	case "load":
		return load(ctx, args[1:], stdout, stderr)
	case "replay":
		return replay(ctx, args[1:], stdout, stderr)
	case "compare":
		return compare(args[1:], stdout)
	case "lab":
		return lab(ctx, args[1:], stdout, stderr)
	case "drill":
		return drills(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown command %q; %s", args[0], usage)
}

func ttfb(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench ttfb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	proto := fs.String("proto", "h2", "`protocol`: h1, h2 or h3")
	mode := fs.String("mode", "cold", "`mode`: cold (new connection each time), warm (reused), resumed (TLS resumption), 0rtt (h3 early data), or a browser's first visit, where DNS picks the protocol (-proto is ignored): first (A record only: h2) or first-https (A and HTTPS records: h3 when offered)")
	n := fs.Int("n", 10, "measured `requests`")
	resolver := fs.String("resolver", "", "DNS server `host:port` to resolve the URL's host with")
	cacert := fs.String("cacert", "", "PEM `file` of CA certificates to trust (the lab CA's root.pem)")
	output := fs.String("o", "table", "output `format`: table or json (one object per request)")
	timeout := fs.Duration("timeout", 10*time.Second, "per-request `timeout`")
	connectTo := fs.String("connect-to", "", "connect to this `host:port` instead of the URL's host, which stays the TLS name and Host (as curl --connect-to); e.g. a published PoP: 127.77.2.20:443")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("ttfb: no URL; " + usage)
	}
	if err := checkConnectTo(*connectTo); err != nil {
		return err
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	cfg := bench.ProbeConfig{Proto: *proto, Mode: *mode, N: *n, Resolver: *resolver, Timeout: *timeout, ConnectTo: *connectTo}
	if *cacert != "" {
		pool, err := certs.LoadPool(*cacert)
		if err != nil {
			return fmt.Errorf("-cacert: %w", err)
		}
		cfg.RootCAs = pool
	}
	for _, u := range fs.Args() {
		rs, err := bench.Probe(ctx, cfg, u)
		if err != nil {
			return err
		}
		if *output == "json" {
			err = bench.WriteJSON(stdout, rs)
		} else {
			err = bench.WriteTable(stdout, rs)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func load(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	proto := fs.String("proto", "h2", "`protocol`: h1, h2 or h3")
	conns := fs.Int("c", 1, "`connections` (closed loop)")
	streams := fs.Int("m", 1, "requests in flight per connection (h2, h3)")
	rate := fs.Float64("rate", 0, "open loop: requests per `second`, latency from the intended send time")
	dur := fs.Duration("d", 0, "run for this `long`")
	n := fs.Int64("n", 0, "run this many `requests`")
	cacert := fs.String("cacert", "", "PEM `file` of CA certificates to trust")
	output := fs.String("o", "table", "output `format`: table or json (one object for the run)")
	keys := fs.Int64("keys", 0, "spread the requests over this `many` distinct URLs (k=0..N-1 added to the query): a working set")
	connectTo := fs.String("connect-to", "", "connect to this `host:port` instead of the URL's host, which stays the TLS name and Host (as curl --connect-to)")
	watch := fs.Int("watch-pid", 0, "sample this `process`'s resident size during the run and report its peak")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("load: want exactly one URL; " + usage)
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	cfg := bench.LoadConfig{Proto: *proto, Conns: *conns, Streams: *streams, Rate: *rate, Duration: *dur, N: *n, Progress: stderr,
		Keys: *keys, WatchPID: *watch, ConnectTo: *connectTo}
	if err := checkConnectTo(*connectTo); err != nil {
		return err
	}
	if *cacert != "" {
		pool, err := certs.LoadPool(*cacert)
		if err != nil {
			return fmt.Errorf("-cacert: %w", err)
		}
		cfg.RootCAs = pool
	}
	res, err := bench.Load(ctx, cfg, fs.Arg(0))
	if err != nil {
		return err
	}
	if *output == "json" {
		return json.NewEncoder(stdout).Encode(res)
	}
	bench.WriteLoad(stdout, res)
	return nil
}

func compare(args []string, stdout io.Writer) error {
	if len(args) != 2 {
		return errors.New("compare: want two JSON files; " + usage)
	}
	var sums [2]map[string]map[string]float64
	for i, path := range args {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("compare: %w", err)
		}
		sums[i], err = bench.Summarize(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("compare %s: %w", path, err)
		}
	}
	return bench.WriteCompare(stdout, bench.Compare(sums[0], sums[1]))
}

func lab(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench lab", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "lab-report", "`directory` for report.md and report.html")
	cacert := fs.String("cacert", compose.CARoot(compose.DefaultStateDir), "the lab CA's root `file`")
	topoFile := fs.String("topology", "docker-compose.yml", "the lab topology `file`")
	n := fs.Int("n", 5, "measured `requests` per scenario")
	if err := fs.Parse(args); err != nil {
		return err
	}
	topo, err := compose.Load(ctx, *topoFile)
	if err != nil {
		return err
	}
	pool, err := certs.LoadPool(*cacert)
	if err != nil {
		return fmt.Errorf("-cacert: %w (is the lab up?)", err)
	}
	cfg, err := bench.LabConfigFrom(topo, compose.Attach(topo, ""), pool, *n)
	if err != nil {
		return err
	}
	rows, err := bench.RunLab(ctx, cfg)
	if err != nil {
		return err
	}
	bench.WriteLabTable(stdout, rows)
	if err := bench.WriteLabReport(*out, rows); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s/report.md and %s/report.html\n", *out, *out)
	return nil
}

func drills(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench drill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "drill-report", "`directory` for drills.md and drills.json")
	load := fs.Duration("load", 6*time.Second, "how `long` clients keep requesting while the origin is down")
	if err := fs.Parse(args); err != nil {
		return err
	}
	checks, err := drill.Run(ctx, drill.Config{Drills: fs.Args(), Load: *load})
	if err != nil {
		return err
	}
	if err := drill.WriteTable(stdout, checks); err != nil {
		return err
	}
	if err := drill.WriteReport(*out, checks); err != nil {
		return err
	}
	if !drill.Passed(checks) {
		return errors.New("drill: some expectations failed")
	}
	return nil
}

// checkConnectTo validates a -connect-to value.
func checkConnectTo(v string) error {
	if v == "" {
		return nil
	}
	if _, port, err := net.SplitHostPort(v); err != nil || port == "" {
		return fmt.Errorf("-connect-to %q: want host:port, such as 127.77.2.20:443", v)
	}
	return nil
}
