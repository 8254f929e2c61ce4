// Command origin runs the lab's origin server: a directory over HTTPS
// (HTTP/2 and HTTP/1.1) and, if asked, plain HTTP, plus generated objects
// (/gen/<size>), /healthz and /_origin/stats. See package origin.
//
//	origin -listen 127.0.0.1:9443 -root DIR [-http 127.0.0.1:9080] [-ca-dir DIR]
//
// When it is ready it prints one line to stdout with the addresses it bound:
//
//	origin ready https=127.0.0.1:9443 http=127.0.0.1:9080 root=/srv/www
//
// SIGINT or SIGTERM drains requests in flight (up to 10 s) and exits 0.
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
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/origin"
)

// shutdownTimeout bounds the drain after a signal.
const shutdownTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var usage usageError
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case errors.As(err, &usage):
		os.Exit(2) // the flag package has printed the problem and the usage
	default:
		fmt.Fprintln(os.Stderr, "origin:", err)
		os.Exit(1)
	}
}

// usageError is a command line the flag package refused.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// options are the command line.
type options struct {
	listen, http, root, caDir, cert, key, config string
	logRequests                                  bool
	set                                          map[string]bool // flags given
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{set: map[string]bool{}}
	fs := flag.NewFlagSet("origin", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:9443", "HTTPS `address` (HTTP/2 and HTTP/1.1); port 0 picks a free one; empty: no HTTPS")
	fs.StringVar(&o.http, "http", "", "plain-HTTP `address` such as 127.0.0.1:9080; empty: no plain HTTP")
	fs.StringVar(&o.root, "root", "", "`directory` to serve; empty: no files, only /gen/<size>, /healthz and /_origin/stats")
	fs.StringVar(&o.caDir, "ca-dir", "", "lab CA `directory` (created on first use) to issue the HTTPS certificate from, for\nlocalhost, 127.0.0.1, ::1, origin.lab and the host of -listen; clients trust DIR/root.pem\n(default "+certs.DefaultDir("ca")+" unless -cert is given)")
	fs.StringVar(&o.cert, "cert", "", "certificate chain PEM `file` to serve instead of one from the lab CA; needs -key")
	fs.StringVar(&o.key, "key", "", "private key PEM `file` of -cert")
	fs.StringVar(&o.config, "config", "", "YAML `file` holding origin.Config: root, rules (path, cache_control),\ndefault_cache_control, log_requests; flags given on the command line win")
	fs.BoolVar(&o.logRequests, "log-requests", true, "log one line per request to stderr")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: origin -listen 127.0.0.1:9443 -root DIR [-http 127.0.0.1:9080] [-ca-dir DIR]\n\n"+
			"A static origin for the CDN lab: files with strong ETags, ranges and Cache-Control rules,\n"+
			"and generated objects: /gen/100k?cc=no-store&delay=2s&status=503&vary=Accept-Encoding.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err}
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: every option is a flag, such as -root %s", fs.Arg(0), fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	switch {
	case o.listen == "" && o.http == "":
		return nil, errors.New("-listen and -http are both empty: want at least one address to serve on, such as -listen 127.0.0.1:9443")
	case (o.cert == "") != (o.key == ""):
		return nil, errors.New("-cert and -key: want both files or neither")
	case o.cert != "" && o.set["ca-dir"]:
		return nil, errors.New("-cert and -ca-dir: want one source of certificate, not both")
	}
	return o, nil
}

// config builds the origin.Config: the file's, if any, with the flags given
// on top.
func (o *options) originConfig(stderr io.Writer) (origin.Config, error) {
	cfg := origin.DefaultConfig()
	if o.config != "" {
		var err error
		if cfg, err = origin.LoadConfig(o.config); err != nil {
			return cfg, fmt.Errorf("-config: %w", err)
		}
	}
	if o.set["root"] || o.config == "" {
		cfg.Root = o.root
		if o.root != "" {
			if fi, err := os.Stat(o.root); err != nil {
				return cfg, fmt.Errorf("-root: %w; want a directory to serve", err)
			} else if !fi.IsDir() {
				return cfg, fmt.Errorf("-root: %q is not a directory; want a directory to serve", o.root)
			}
		}
	}
	if cfg.Root != "" {
		abs, err := filepath.Abs(cfg.Root)
		if err != nil {
			return cfg, fmt.Errorf("-root: %w", err)
		}
		cfg.Root = abs
	}
	if o.set["log-requests"] || o.config == "" {
		cfg.LogRequests = o.logRequests
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, nil))
	return cfg, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	cfg, err := o.originConfig(stderr)
	if err != nil {
		return err
	}
	log := cfg.Logger
	srv, err := origin.New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()

	var tlsLn, httpLn net.Listener
	defer func() {
		for _, ln := range []net.Listener{tlsLn, httpLn} {
			if ln != nil {
				ln.Close() // Serve has closed it already, if it ran
			}
		}
	}()
	var ready []string
	if o.listen != "" {
		if tlsLn, err = net.Listen("tcp", o.listen); err != nil {
			return fmt.Errorf("-listen: %w", err)
		}
		ready = append(ready, "https="+tlsLn.Addr().String())
	}
	if o.http != "" {
		if httpLn, err = net.Listen("tcp", o.http); err != nil {
			return fmt.Errorf("-http: %w", err)
		}
		ready = append(ready, "http="+httpLn.Addr().String())
	}
	var cert tls.Certificate
	if tlsLn != nil {
		if cert, err = certificate(o, log); err != nil {
			return err
		}
	}

	var wg sync.WaitGroup
	errc := make(chan error, 2)
	if tlsLn != nil {
		wg.Go(func() { errc <- srv.ServeTLS(tlsLn, cert) })
	}
	if httpLn != nil {
		wg.Go(func() { errc <- srv.Serve(httpLn) })
	}
	root := cfg.Root
	if root == "" {
		root = "(none)"
	}
	fmt.Fprintf(stdout, "origin ready %s root=%s\n", strings.Join(ready, " "), root)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "timeout", shutdownTimeout)
	case serveErr = <-errc:
		serveErr = fmt.Errorf("serve: %w", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	shutErr := srv.Shutdown(sctx)
	if shutErr != nil {
		srv.Close()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if !errors.Is(err, http.ErrServerClosed) && serveErr == nil {
			serveErr = fmt.Errorf("serve: %w", err)
		}
	}
	return errors.Join(serveErr, shutErr)
}

// certificate returns the HTTPS certificate: -cert and -key, or one issued
// by the lab CA.
func certificate(o *options, log *slog.Logger) (tls.Certificate, error) {
	if o.cert != "" {
		cert, err := tls.LoadX509KeyPair(o.cert, o.key)
		if err != nil {
			return cert, fmt.Errorf("-cert and -key: %w", err)
		}
		return cert, nil
	}
	dir := o.caDir
	if dir == "" {
		dir = certs.DefaultDir("ca")
		log.Info("no -ca-dir or -cert: using the default lab CA directory", "dir", dir)
	}
	ca, err := certs.OpenLabCA(dir)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("-ca-dir: %w", err)
	}
	names := []string{"localhost", "127.0.0.1", "::1", "origin.lab"}
	if host, _, err := net.SplitHostPort(o.listen); err == nil && host != "" && !slices.Contains(names, host) {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			names = append(names, host)
		}
	}
	cert, err := ca.Issue(names...)
	if err != nil {
		return cert, fmt.Errorf("-ca-dir: issue a certificate for %s: %w", strings.Join(names, ", "), err)
	}
	log.Info("certificate from the lab CA", "names", names, "trust", ca.RootPath())
	return cert, nil
}
