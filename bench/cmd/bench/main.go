// Command bench measures a CDN: time to first byte by phase.
//
//	bench ttfb -proto h1|h2|h3 -mode cold|warm|resumed|0rtt -n N [-resolver ADDR] [-cacert FILE] [-o json] URL...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/edgecdn/cdn/bench"
	"github.com/edgecdn/cdn/certs"
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

const usage = `usage: bench ttfb -proto h1|h2|h3 -mode cold|warm|resumed|0rtt -n N [-resolver ADDR] [-cacert FILE] [-o json] URL...`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "ttfb":
		return ttfb(ctx, args[1:], stdout, stderr)
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
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("ttfb: no URL; " + usage)
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	cfg := bench.ProbeConfig{Proto: *proto, Mode: *mode, N: *n, Resolver: *resolver, Timeout: *timeout}
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
