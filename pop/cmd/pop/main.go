// Command pop runs a CDN edge server (PoP) in front of an origin.
//
// Quick start, flags only:
//
//	pop -listen 127.0.0.1:8443 -origin https://127.0.0.1:9443 -ca-dir /tmp/ca
//
// serves HTTP/1.1 and HTTP/2 over TLS 1.3 on TCP and HTTP/3 on UDP at the
// same address, with a certificate from the lab CA. Everything else (several
// sites, origin groups, ACME, limits) is in a YAML file given with -config;
// flags given explicitly override the file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/pop"
	"github.com/edgecdn/cdn/pop/upstream"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "pop:", err)
		}
		os.Exit(2)
	}
}

// defaultHosts are the names the quick-start site answers besides the
// listen address: loopback names and the lab's CDN names.
const defaultHosts = "localhost,127.0.0.1,::1,www.cdn.lab,*.cdn.lab"

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pop", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		configFile = fs.String("config", "", "YAML configuration `file`; flags given explicitly override it")
		name       = fs.String("name", "pop", "this PoP's `name`, sent in Via and X-Served-By")
		listen     = fs.String("listen", "127.0.0.1:8443", "TLS (TCP, h1+h2) and QUIC (UDP, h3) `address`")
		httpAddr   = fs.String("http", "", "plain-HTTP listener `address` (also ACME HTTP-01); empty: none")
		admin      = fs.String("admin", "127.0.0.1:9901", "admin `address` for /livez, /readyz, /metrics; empty: none")
		origin     = fs.String("origin", "", "origin `URLs`, comma-separated, http:// or https:// (quick start: one site)")
		parent     = fs.String("parent", "", "parent tier `URLs`, comma-separated: PoPs of this CDN that misses go to before the origin (origin shield); their certificates are checked against the lab CA or the system roots")
		hosts      = fs.String("hosts", defaultHosts, "host `names` the quick-start site answers, comma-separated; the listen host is added")
		balancer   = fs.String("balancer", upstream.RoundRobin, "origin `balancer`: "+upstream.RoundRobin+", "+upstream.LeastOutstanding+" or "+upstream.Hash)
		caDir      = fs.String("ca-dir", "", "lab CA `directory` (created if missing); the PoP issues itself a certificate and trusts lab-CA origins")
		certFile   = fs.String("cert", "", "certificate PEM `file` (reloaded on change); needs -key")
		keyFile    = fs.String("key", "", "private key PEM `file`")
		acmeHosts  = fs.String("acme-host", "", "get certificates by ACME for these `names`, comma-separated")
		acmeDir    = fs.String("acme-dir", "", "ACME cache `directory`, shared by the PoPs (default: under the user cache dir); unused with -fleet, whose key-value store holds the cache")
		acmeURL    = fs.String("acme-directory", "", "ACME directory `URL` (default: Let's Encrypt)")
		ticketKey  = fs.String("ticket-key", "", "session-ticket secret `file` shared by the PoPs (hex/base64/raw, >= 32 bytes); with -fleet, used only until the fleet's secret arrives")
		allowTLS12 = fs.Bool("allow-tls12", false, "also accept TLS 1.2 on TCP (default TLS 1.3 only)")
		noH3       = fs.Bool("no-h3", false, "disable HTTP/3 (QUIC) and Alt-Svc")
		rateLimit  = fs.Float64("rate-limit", 0, "requests per second per client IP; 0: off")
		maxInfl    = fs.Int("max-inflight", 4096, "requests served at once; more get 503 at once; -1: no limit")
		peerList   = fs.String("peers", "", "this CDN's other PoPs, IPs or CIDR `prefixes`, comma-separated: a parent tier's children, exempt from the limits per client address")
		cacheBytes = fs.Int64("cache-bytes", 256<<20, "cache memory budget in `bytes`")
		maxObject  = fs.Int64("cache-max-object", 0, "largest body the cache stores whole, in `bytes` (0: 8 MiB or a sixteenth of -cache-bytes, whichever is less)")
		noCache    = fs.Bool("no-cache", false, "disable the cache: every request goes to the origin")
		purgeToken = fs.String("purge-token", "", "bearer `token` for POST /purge on the admin listener; empty: purge off")
		fleetURL   = fs.String("fleet", "", "join the fleet's control plane (global purge) at this NATS `URL` with its credentials, nats://user:password@host:4222; empty: the PoP is alone")
		fleetCA    = fs.String("fleet-ca", "", "connect to the control plane over TLS, trusting this root `file` (the lab CA's root.pem)")
		fleetUser  = fs.String("fleet-user", "", "the control plane's `user` (instead of in the -fleet URL)")
		fleetPWF   = fs.String("fleet-password-file", "", "`file` holding the control plane's password (instead of in the -fleet URL)")
		purgeTF    = fs.String("purge-token-file", "", "`file` holding the bearer token for POST /purge (instead of -purge-token)")
		drainDelay = fs.Duration("drain-delay", 0, "on SIGTERM, report not ready for this `long` before draining")
		drainTime  = fs.Duration("drain-timeout", 25*time.Second, "on SIGTERM, let in-flight requests finish for at most this `long`")
		verbose    = fs.Bool("v", false, "log debug events")
		noFast     = fs.Bool("no-fast-path", false, "serve HTTP/1.1 and HTTP/2 through net/http and HTTP/3 hits through quic-go's response writer (for comparison)")
		pprofOn    = fs.Bool("pprof", false, "serve Go profiles under /debug/pprof/ on the admin listener")
		accessLog  = fs.String("access-log", "", "write one JSON line per request to this `file` (appended to; - for standard output); empty: none (GET /logs on the admin listener streams the lines anyway)")
	)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: pop -listen ADDR -origin URL [flags]\n       pop -config FILE [flags]\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q; flags come as -name value", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := pop.DefaultConfig()
	if *configFile != "" {
		c, err := pop.LoadConfig(*configFile)
		if err != nil {
			return err
		}
		cfg = c
	}
	override := func(flagName string, apply func()) {
		if *configFile == "" || set[flagName] {
			apply()
		}
	}
	override("name", func() { cfg.Name = *name })
	override("listen", func() { cfg.Listen = *listen })
	override("http", func() { cfg.HTTP = *httpAddr })
	override("admin", func() { cfg.Admin = *admin })
	override("allow-tls12", func() { cfg.TLS.AllowTLS12 = *allowTLS12 })
	override("no-h3", func() { cfg.DisableHTTP3 = *noH3 })
	override("rate-limit", func() { cfg.Limits.RateLimit = *rateLimit })
	override("no-fast-path", func() { cfg.DisableFastPath = *noFast })
	override("pprof", func() { cfg.Pprof = *pprofOn })
	override("max-inflight", func() { cfg.Limits.MaxInflight = *maxInfl })
	override("peers", func() { cfg.Limits.Peers = splitList(*peerList) })
	override("drain-delay", func() { cfg.DrainDelay = *drainDelay })
	override("cache-bytes", func() { cfg.Cache.MaxBytes = *cacheBytes })
	override("cache-max-object", func() { cfg.Cache.MaxObjectBytes = *maxObject })
	override("no-cache", func() { cfg.Cache.Disabled = *noCache })
	override("purge-token", func() { cfg.Cache.PurgeToken = *purgeToken })
	override("fleet", func() { cfg.Fleet.URL = *fleetURL })
	override("fleet-ca", func() { cfg.Fleet.CAFile = *fleetCA })
	override("fleet-user", func() { cfg.Fleet.User = *fleetUser })
	for _, sf := range []struct {
		flag, file string
		dst        *string
	}{{"fleet-password-file", *fleetPWF, &cfg.Fleet.Password}, {"purge-token-file", *purgeTF, &cfg.Cache.PurgeToken}} {
		if !set[sf.flag] {
			continue
		}
		b, err := os.ReadFile(sf.file)
		if err != nil {
			return fmt.Errorf("-%s: %w", sf.flag, err)
		}
		if *sf.dst = strings.TrimSpace(string(b)); *sf.dst == "" {
			return fmt.Errorf("-%s %s: empty, want the secret", sf.flag, sf.file)
		}
	}
	override("drain-timeout", func() { cfg.DrainTimeout = *drainTime })
	override("access-log", func() { cfg.AccessLog = *accessLog })
	if cfg.AccessLog == "-" {
		cfg.AccessLogWriter = stdout
	}
	if set["ticket-key"] {
		cfg.TLS.TicketKeyFile = *ticketKey
	}
	if set["cert"] || set["key"] {
		cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.ACME = *certFile, *keyFile, nil
	}
	if set["ca-dir"] {
		cfg.TLS.CADir = *caDir
	}
	if *acmeHosts != "" {
		dir := *acmeDir
		if dir == "" {
			dir = certs.DefaultDir("acme")
		}
		cfg.TLS.ACME = &pop.ACMEConfig{Hosts: splitList(*acmeHosts), Dir: dir, DirectoryURL: *acmeURL}
	}
	if cfg.TLS.CertFile == "" && cfg.TLS.ACME == nil && cfg.TLS.CADir == "" {
		cfg.TLS.CADir = certs.DefaultDir("ca")
	}
	if *origin != "" {
		if len(cfg.Sites) > 0 {
			return errors.New("-origin: the config file already defines sites; put the origin under upstreams there")
		}
		names := splitList(*hosts)
		if h, _, err := net.SplitHostPort(cfg.Listen); err == nil && h != "" && !isUnspecified(h) {
			names = append(names, h)
		}
		cfg.Sites = []pop.Site{{Name: "default", Hosts: dedupe(names), Upstream: "origin"}}
		cfg.Upstreams = map[string]pop.UpstreamConfig{"origin": {Config: upstream.Config{Servers: splitList(*origin), Balancer: *balancer}}}
		if *parent != "" {
			cfg.Sites[0].Parent = "parent"
			cfg.Upstreams["parent"] = pop.UpstreamConfig{Config: parentGroup(splitList(*parent))}
		}
	} else if *parent != "" {
		return errors.New("-parent: goes with -origin (the quick-start site); with -config, name the parent group in sites[].parent")
	} else if len(cfg.Sites) == 0 {
		return errors.New("-origin: missing; want the origin URL, e.g. -origin https://127.0.0.1:9443 (or -config FILE with sites)")
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	if os.Getenv("GOMEMLIMIT") == "" && !cfg.Cache.Disabled {
		// A soft memory limit a little above the cache budget: without it
		// Go's GC lets the heap grow to twice the live data, and the cache
		// is most of the live data. The budget counts everything the cache
		// holds (see package cache), so an eighth of it and 28 MiB are
		// room for connections, requests in flight and garbage: in bench
		// replay at 64 MiB (Zipf 0.8) peak RSS 105 MiB with 96 MiB here,
		// the binary's text beside the heap.
		budget := cfg.Cache.MaxBytes
		if budget == 0 {
			budget = 256 << 20
		}
		debug.SetMemoryLimit(budget + budget/8 + 28<<20)
	}
	srv, err := pop.New(cfg)
	if err != nil {
		return err
	}
	if err := srv.Listen(); err != nil {
		srv.Close()
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	select {
	case <-srv.Warmed():
	case <-time.After(5 * time.Second):
		cfg.Logger.Warn("upstream pool not warm after 5s; serving anyway, it keeps dialling")
	case err := <-errc:
		return err
	}
	fmt.Fprintln(stdout, readyLine(srv, cfg))

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	cfg.Logger.Info("draining", "delay", cfg.DrainDelay, "timeout", cfg.DrainTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.DrainDelay+cfg.DrainTimeout+5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return <-errc
}

// parentGroup is the upstream group of -parent: parent PoPs, checked on
// their ReadyPath every second (a parent whose origin is down still
// serves its cache, so its readiness is the PoP's own), and given up on
// after a second's connect attempt, so that children go to the origin
// themselves soon after a parent stops.
func parentGroup(servers []string) upstream.Config {
	return upstream.Config{Servers: servers, HealthPath: pop.ReadyPath, HealthInterval: time.Second,
		ConnectTimeout: time.Second, TLSTimeout: time.Second}
}

func readyLine(srv *pop.Server, cfg pop.Config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "pop ready name=%s listen=%s", cfg.Name, srv.Addr())
	if !cfg.DisableHTTP3 {
		b.WriteString(" h3=udp")
	}
	if a := srv.HTTPAddr(); a != nil {
		fmt.Fprintf(&b, " http=%s", a)
	}
	if a := srv.AdminAddr(); a != nil {
		fmt.Fprintf(&b, " admin=%s", a)
	}
	if ca := srv.LabCA(); ca != nil {
		fmt.Fprintf(&b, " ca=%s", ca.RootPath())
	}
	if leaf := srv.Leaf(); leaf != nil {
		fmt.Fprintf(&b, " spki=%s", certs.SPKIPin(leaf.Leaf))
	}
	return b.String()
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func dedupe(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		k := strings.ToLower(s)
		if !seen[k] {
			seen[k] = true
			out = append(out, s)
		}
	}
	return out
}

func isUnspecified(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}
