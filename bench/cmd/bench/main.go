// Command bench measures a CDN: time to first byte by phase.
//
//	bench ttfb -proto h1|h2|h3 -mode cold|warm|resumed|0rtt -n N [-resolver ADDR] [-cacert FILE] [-o json] URL...
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/edgecdn/cdn/bench"
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
  bench ttfb -proto h1|h2|h3 -mode cold|warm|resumed|0rtt -n N [-resolver ADDR] [-cacert FILE] [-o json] URL...
  bench load -proto h1|h2|h3 (-c N [-m N] | -rate R) (-d DUR | -n N) [-keys N] [-watch-pid PID] [-cacert FILE] [-o json] URL
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
	case "compare":
		return compare(args[1:], stdout)
	case "lab":
		return lab(ctx, args[1:], stdout, stderr)
	case "drill":
		return drill(ctx, args[1:], stdout, stderr)
	}
	return fmt.Errorf("unknown command %q; %s", args[0], usage)
}

func ttfb(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench ttfb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	proto := fs.String("proto", "h2", "`protocol`: h1, h2 or h3")
	mode := fs.String("mode", "cold", "`mode`: cold (new connection each time), warm (reused), resumed (TLS resumption) or 0rtt (h3 early data)")
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
	cacert := fs.String("cacert", "/var/lib/edgecdn-lab/volume-lab-ca/ca/root.pem", "the lab CA's root `file`")
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
	cfg, err := labConfig(topo, compose.Attach(topo, ""), pool, *n)
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

// labConfig builds the clients of the lab with their namespaces' sockets
// and the RTTs their floors come from.
func labConfig(topo *compose.Topology, n *compose.Net, pool *x509.CertPool, count int) (bench.LabConfig, error) {
	geo, ok := topo.Host("geodns")
	origin, ok2 := topo.Host("origin")
	if !ok || !ok2 {
		return bench.LabConfig{}, errors.New("lab: the topology has no geodns or origin host")
	}
	cfg := bench.LabConfig{Resolver: net.JoinHostPort(geo.Addr.String(), "53"), RootCAs: pool,
		CDNURL: "https://www.cdn.lab", OriginURL: "https://origin.lab", N: count}
	for _, region := range []string{"na", "eu", "ap"} {
		client, ok := topo.Host("client-" + region)
		pop, ok2 := topo.Host("pop-" + region)
		if !ok || !ok2 {
			continue
		}
		name := client.Name
		cfg.Clients = append(cfg.Clients, bench.LabClient{
			Name:         name,
			Dial:         n.Dialer(name),
			ListenPacket: func() (net.PacketConn, error) { return n.ListenPacket(name, client.Addr.String()+":0") },
			PoPRTT:       topo.RTTBetween(client, pop),
			OriginRTT:    topo.RTTBetween(client, origin),
			PoPOriginRTT: topo.RTTBetween(pop, origin),
			DNSRTT:       topo.RTTBetween(client, geo),
		})
	}
	return cfg, nil
}

func drill(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench drill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "drill-report", "`directory` for drills.md and drills.json")
	load := fs.Duration("load", 6*time.Second, "how `long` clients keep requesting while the origin is down")
	if err := fs.Parse(args); err != nil {
		return err
	}
	names := fs.Args()
	if len(names) == 0 {
		names = drillNames
	}
	for _, n := range names {
		if !slices.Contains(drillNames, n) {
			return fmt.Errorf("drill %q: want one of %s", n, strings.Join(drillNames, ", "))
		}
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	state, err := os.MkdirTemp("", "edgecdn-drill-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	checks, err := runDrills(ctx, root, state, fmt.Sprintf("edd%d-", os.Getpid()), names, *load)
	if err != nil {
		return err
	}
	bench.WriteDrillTable(stdout, checks)
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	bench.WriteDrillTable(&md, checks)
	os.WriteFile(filepath.Join(*out, "drills.md"), []byte(md.String()), 0o644)
	b, _ := json.MarshalIndent(checks, "", "  ")
	os.WriteFile(filepath.Join(*out, "drills.json"), b, 0o644)
	for _, c := range checks {
		if !c.Pass {
			return errors.New("drill: some expectations failed")
		}
	}
	return nil
}

// drillNames are the drills, in the order they run by default.
var drillNames = []string{"origin-down", "origin-slow", "pop-down", "pop-drain", "cold-restart", "flood", "hostile"}

// runDrills brings up a private lab (its own namespaces and state) and
// runs the named drills against it.
func runDrills(ctx context.Context, root, state, prefix string, names []string, load time.Duration) ([]bench.DrillCheck, error) {
	r, err := compose.StartLab(ctx, compose.RunnerConfig{Root: root, StateDir: state, Prefix: prefix})
	if err != nil {
		return nil, err
	}
	defer r.Stop()
	pool, err := certs.LoadPool(filepath.Join(state, "volume-lab-ca", "ca", "root.pem"))
	if err != nil {
		return nil, err
	}
	cfg, err := labConfig(r.Topo, r.Net, pool, 1)
	if err != nil {
		return nil, err
	}
	var checks []bench.DrillCheck
	for _, n := range names {
		var cs []bench.DrillCheck
		switch n {
		case "origin-down":
			cs, err = bench.DrillOriginDown(ctx, cfg, r, load)
		case "pop-down":
			pop, _ := r.Topo.Host("pop-eu")
			cs, err = bench.DrillPoPDown(ctx, cfg, r, "pop-eu", pop.Addr.String(), "client-eu")
		case "origin-slow":
			cs, err = bench.DrillOriginSlow(ctx, cfg, r, "client-na", 300)
		case "pop-drain":
			pop, _ := r.Topo.Host("pop-eu")
			cs, err = bench.DrillPoPDrain(ctx, cfg, r, "pop-eu", pop.Addr.String(), "client-eu")
		case "cold-restart":
			pop, _ := r.Topo.Host("pop-na")
			cs, err = bench.DrillColdRestart(ctx, cfg, r, "pop-na", pop.Addr.String(), "client-na")
		case "flood":
			pop, _ := r.Topo.Host("pop-na")
			cs, err = bench.DrillFlood(ctx, cfg, r, bench.DefaultFloodPlan(), "pop-na", pop.Addr.String(), "client-na")
		case "hostile":
			pop, _ := r.Topo.Host("pop-na")
			cs, err = bench.DrillHostile(ctx, cfg, r, "pop-na", pop.Addr.String(), "client-na", "client-eu")
		}
		if err != nil {
			return checks, fmt.Errorf("%s: %w", n, err)
		}
		checks = append(checks, cs...)
		// What each drill left the PoPs with (informational).
		pops := map[string]string{}
		for _, name := range []string{"pop-na", "pop-eu", "pop-ap"} {
			if h, ok := r.Topo.Host(name); ok {
				pops[name] = h.Addr.String()
			}
		}
		if res, err := bench.PoPResources(ctx, cfg, r, "client-na", pops); err == nil {
			checks = append(checks, bench.DrillCheck{Drill: n, Expectation: "PoPs at the end of the drill", Measured: res, Pass: true, Info: true})
		}
	}
	return checks, nil
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
