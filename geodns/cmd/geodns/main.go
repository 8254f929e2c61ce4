// Command geodns runs the CDN's authoritative GeoDNS server and the lab's
// resolver.
//
//	geodns -config geodns.yaml [-listen 127.0.0.1:5353] [-admin 127.0.0.1:9953]
//
// SIGHUP reloads the configuration file without dropping queries.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/edgecdn/cdn/geodns"
)

func main() {
	if os.Getenv("GOMAXPROCS") == "" {
		// A P per CPU for the UDP batch loops, which keep theirs, and one
		// for everything else (see the geodns package's rawSocket).
		runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr, hup); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "geodns:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, reload <-chan os.Signal) error {
	fs := flag.NewFlagSet("geodns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configFile := fs.String("config", "", "YAML configuration `file` (zones, pops, locator, forward); required")
	listen := fs.String("listen", "", "UDP and TCP `address`, overriding the file's listen")
	admin := fs.String("admin", "", "admin `address` (/healthz, /status, /metrics), overriding the file's admin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; flags come as -name value", fs.Arg(0))
	}
	if *configFile == "" {
		return errors.New("-config: missing; want the YAML file with zones and pops")
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	load := func() (geodns.Config, error) {
		cfg, err := geodns.LoadConfig(*configFile)
		if err != nil {
			return cfg, err
		}
		if *listen != "" {
			cfg.Listen = *listen
		}
		if *admin != "" {
			cfg.Admin = *admin
		}
		cfg.Logger = logger
		return cfg, cfg.Validate()
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	srv, err := geodns.New(cfg)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	line := fmt.Sprintf("geodns ready listen=%s", srv.Addr())
	if a := srv.AdminAddr(); a != nil {
		line += fmt.Sprintf(" admin=%s", a)
	}
	fmt.Fprintln(stdout, line)
	for {
		select {
		case err := <-errc:
			return err
		case <-reload:
			cfg, err := load()
			if err == nil {
				err = srv.Reload(cfg)
			}
			if err != nil {
				logger.Error("reload failed; keeping the running configuration", "error", err)
			}
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		}
	}
}
