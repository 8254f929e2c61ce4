package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/compose"
	"github.com/edgecdn/cdn/compose/view"
)

// defaultViewAddr is where lab up and lab view serve the live view.
const defaultViewAddr = "127.0.0.1:8099"

// startView serves the live view of topo on addr until stop is called (or
// ctx ends), dialling through dialFrom (nil: directly) and trusting the
// lab CA in roots.
func startView(ctx context.Context, topo *compose.Topology, dialFrom func(string) func(context.Context, string, string) (net.Conn, error),
	roots *x509.CertPool, addr string, logger *slog.Logger) (stop func(), err error) {
	v, err := view.New(view.Config{Topo: topo, DialFrom: dialFrom, RootCAs: roots, Logger: logger})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("live view: %w (another lab up or lab view running? -view picks another address)", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	srv := &http.Server{Handler: v.Handler(), ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { v.Run(ctx) })
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("live view", "err", err)
		}
	})
	return func() {
		cancel()
		srv.Close() // the event streams never end on their own
		wg.Wait()
	}, nil
}

// serveView is lab view: the live view of a running lab, until stopped.
// In Docker (the view service) it runs on the lab network and dials
// directly; -native runs it beside a native lab, through its namespaces.
func serveView(ctx context.Context, root string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("lab view", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", defaultViewAddr, "`address` to serve the live view on")
	native := fs.Bool("native", false, "a native lab (lab up): open connections from inside its namespaces")
	topoFile := fs.String("topology", "", "the lab topology `file`; if empty, docker-compose.yml here, else the image's copy")
	cacert := fs.String("cacert", "", "the lab CA's root `file`; if empty, the Docker lab's /lab/ca/root.pem, else the native lab's")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("view: unexpected argument %q; every option is a flag", fs.Arg(0))
	}
	file := firstExisting(*topoFile, filepath.Join(root, "docker-compose.yml"), "/etc/edgecdn/docker-compose.yml")
	topo, err := compose.Load(ctx, file)
	if err != nil {
		return err
	}
	ca := firstExisting(*cacert, "/lab/ca/"+certs.RootCertFile, compose.CARoot(stateDir))
	roots, err := certs.LoadPool(ca)
	if err != nil {
		return fmt.Errorf("-cacert: %w (is the lab up?)", err)
	}
	var dialFrom func(string) func(context.Context, string, string) (net.Conn, error)
	if *native {
		dialFrom = compose.Attach(topo, "").Dialer
	}
	logger := slog.New(slog.NewTextHandler(stderr, nil))
	stop, err := startView(ctx, topo, dialFrom, roots, *listen, logger)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "live view: http://%s/\n", *listen)
	<-ctx.Done()
	stop()
	return nil
}

// firstExisting returns want if set, else the first of paths that exists,
// else the last.
func firstExisting(want string, paths ...string) string {
	if want != "" {
		return want
	}
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return paths[len(paths)-1]
}
