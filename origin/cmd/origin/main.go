// Command origin runs the lab's origin server: a directory over HTTPS
// (HTTP/2 and HTTP/1.1) and plain HTTP, plus generated objects.
//
//	origin -listen 127.0.0.1:9443 -root DIR [-http 127.0.0.1:9080] [-ca-dir DIR]
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/origin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "origin:", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		listen     = fs.String("listen", "127.0.0.1:9443", "HTTPS `address` (h2 and http/1.1); empty: no HTTPS")
		httpAddr   = fs.String("http", "", "plain-HTTP `address`; empty: none")
		root       = fs.String("root", "", "`directory` to serve; empty: only /gen, /healthz, /_origin/stats")
		caDir      = fs.String("ca-dir", "", "lab CA `directory` to get a certificate from (default: under the user cache dir)")
		certFile   = fs.String("cert", "", "certificate PEM `file` instead of the lab CA; needs -key")
		keyFile    = fs.String("key", "", "private key PEM `file`")
		configFile = fs.String("config", "", "YAML `file` with root, rules (path, cache_control), default_cache_control, log_requests")
		logReqs    = fs.Bool("log-requests", true, "log one line per request")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; flags come as -name value", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg := origin.DefaultConfig()
	if *configFile != "" {
		data, err := os.ReadFile(*configFile)
		if err != nil {
			return fmt.Errorf("-config: %w", err)
		}
		if cfg, err = origin.ParseConfig(data); err != nil {
			return fmt.Errorf("%s: %w", *configFile, err)
		}
	}
	if set["root"] || *configFile == "" {
		cfg.Root = *root
	}
	if set["log-requests"] || *configFile == "" {
		cfg.LogRequests = *logReqs
	}
	if *listen == "" && *httpAddr == "" {
		return errors.New("-listen and -http are both empty; want at least one address")
	}
	if (*certFile == "") != (*keyFile == "") {
		return errors.New("-cert and -key: want both or neither")
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	srv, err := origin.New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()

	errc := make(chan error, 2)
	var ready []string
	if *listen != "" {
		cert, err := loadCert(*certFile, *keyFile, *caDir, *listen)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return fmt.Errorf("-listen: %w", err)
		}
		ready = append(ready, "https="+ln.Addr().String())
		go func() { errc <- srv.ServeTLS(ln, cert) }()
	}
	if *httpAddr != "" {
		ln, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			return fmt.Errorf("-http: %w", err)
		}
		ready = append(ready, "http="+ln.Addr().String())
		go func() { errc <- srv.Serve(ln) }()
	}
	rootDesc := cfg.Root
	if rootDesc == "" {
		rootDesc = "(none)"
	}
	fmt.Fprintf(stdout, "origin ready %s root=%s\n", strings.Join(ready, " "), rootDesc)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func loadCert(certFile, keyFile, caDir, listen string) (tls.Certificate, error) {
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return c, fmt.Errorf("-cert/-key: %w", err)
		}
		return c, nil
	}
	if caDir == "" {
		caDir = certs.DefaultDir("ca")
	}
	ca, err := certs.OpenLabCA(caDir)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("-ca-dir: %w", err)
	}
	names := []string{"localhost", "127.0.0.1", "::1", "origin.lab"}
	if h, _, err := net.SplitHostPort(listen); err == nil && h != "" {
		if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
			names = append(names, h)
		}
	}
	return ca.Issue(names...)
}
