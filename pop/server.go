package pop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/pop/accesslog"
	"github.com/edgecdn/cdn/pop/fleet"
	"github.com/edgecdn/cdn/pop/upstream"
)

var errUnknownHost = errors.New("host is not served by this CDN node")

// Server is a PoP.
type Server struct {
	cfg    Config
	log    *slog.Logger
	tls    *tlsSetup
	router *router
	groups map[string]*upstream.Group
	sites  []*site
	purges *recentPurges // what was purged a moment ago, for sites with a parent tier
	peers  *peers        // Limits.Peers
	// fleetRoots verify the control plane's certificate (fleet.ca_file);
	// nil: the system roots, or plain TCP.
	fleetRoots *x509.CertPool
	metrics    *metrics
	cache      *cache.Cache // nil when caching is disabled
	limiter    *ipLimiter
	// inflight counts requests being served; above maxInflight (> 0) the
	// PoP sheds with 503.
	inflight    atomic.Int64
	maxInflight int64
	buffers     *bufferPool
	maxBody     int64
	tcpConns    *connLimiter // nil: no limit
	quicConns   *connLimiter // nil: no limit
	upShare     *connLimiter // origin requests in flight per client address; nil: no limit

	servedBy []string  // X-Served-By value
	altSvc   []string  // Alt-Svc value, nil until the QUIC port is known
	stPrefix []byte    // the start of every Server-Timing value (timing.go)
	stHit    []byte    // stPrefix, "hit" and the edge entry's start
	epoch    time.Time // for monotonic clock readings (time.Since(epoch)) on fast paths

	alog       *accesslog.Logger // the access log and /logs (logs.go)
	alogCloser io.Closer         // the access_log file, or nil

	tcpLn   net.Listener
	udpConn *net.UDPConn
	httpLn  net.Listener
	adminLn net.Listener

	front    *front  // the TLS TCP listener: handshakes, HTTP/1.1 hits
	hits3    *h3Hits // plain HTTP/3 hits without the http3 response writer; nil when off
	fastHits *fastHitCounters
	rtt      *rttSampler                 // round trips to client prefixes, for /rtt
	fleet    atomic.Pointer[fleet.Fleet] // nil until joined (fleet.url)
	h12      *http.Server
	h3       *http3.Server
	quic     *quic.Transport
	plain    *http.Server
	admin    *http.Server

	ready    atomic.Bool
	draining atomic.Bool
	warmed   chan struct{} // closed when the first warm-up of every group ends

	startCtx    context.Context // cancelled by Shutdown/Close: stops pool warm-up
	startCancel context.CancelFunc
	wg          sync.WaitGroup // owns the serve and warm-up goroutines
	closeOnce   sync.Once
}

// New validates cfg and builds the server: certificates, upstream groups
// (not yet dialled), sites and metrics. Errors name the config field.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fillDefaults(&cfg)
	s := &Server{cfg: cfg, log: cfg.Logger, router: newRouter(), groups: map[string]*upstream.Group{},
		buffers: &bufferPool{}, warmed: make(chan struct{}), maxBody: cfg.Limits.MaxBodyBytes, maxInflight: int64(cfg.Limits.MaxInflight), servedBy: []string{cfg.Name},
		stPrefix: stPrefix(cfg.Name), epoch: time.Now(), purges: newRecentPurges(recentPurgeWindow)}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.stHit = append(append(append([]byte(nil), s.stPrefix...), cache.ResultHit...), `", edge;dur=`...)
	w, closer, err := openAccessLog(&cfg)
	if err != nil {
		return nil, err
	}
	if s.alog, err = accesslog.New(accesslog.Config{Name: cfg.Name, Writer: w, Logger: s.log,
		BufferBytes: cfg.AccessLogBufferBytes, FollowerBufferBytes: cfg.AccessLogBufferBytes}); err != nil {
		if closer != nil {
			closer.Close()
		}
		return nil, err
	}
	s.alogCloser = closer
	if s.fleetRoots, err = loadFleetRoots(cfg.Fleet); err != nil {
		s.closeAccessLog()
		return nil, err
	}
	t, err := buildTLS(&cfg)
	if err != nil {
		s.closeAccessLog()
		return nil, err
	}
	s.tls = t
	for name, uc := range cfg.Upstreams {
		g, err := newGroup(name, uc, t, s.log)
		if err != nil {
			s.closeGroups()
			s.closeAccessLog()
			return nil, err
		}
		s.groups[name] = g
	}
	s.metrics = newMetrics(s.groups)
	s.fastHits = newFastHitCounters(s.metrics)
	if s.rtt, err = newRTTSampler(cfg.ClientRTT, s.metrics.reg); err != nil {
		s.closeGroups()
		s.closeAccessLog()
		return nil, fmt.Errorf("client_rtt.%w", err)
	}
	s.peers, _ = parsePeers(cfg.Limits.Peers) // validated above
	s.upShare = newConnLimiter(0, cfg.Limits.MaxUpstreamPerAddr, s.peers)
	s.metrics.reg.MustRegister(accessLogCollector{s.alog})
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pop_degraded",
		Help: "1 if some upstream group has no healthy server: the PoP is ready but serves only what it has cached.",
	}, func() float64 {
		if s.Degraded() {
			return 1
		}
		return 0
	}))
	s.metrics.reg.MustRegister(t.reloadFailures, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pop_tls_certificate_expiry_seconds",
		Help: "Seconds until the served certificate expires; 0 when it is not known up front (ACME).",
	}, func() float64 {
		if leaf := t.currentLeaf(); leaf != nil {
			return time.Until(leaf.NotAfter).Seconds()
		}
		return 0
	}))
	for i, sc := range cfg.Sites {
		name := sc.Name
		if name == "" {
			name = sc.Hosts[0]
		}
		var parent *upstream.Group
		if sc.Parent != "" {
			parent = s.groups[sc.Parent]
		}
		st := s.newSite(name, sc.Upstream, s.groups[sc.Upstream], sc.Parent, parent)
		s.sites = append(s.sites, st)
		st.route.Query, _ = cache.ParseQuery(sc.CacheQuery) // validated above
		strip := sc.StripRequestHeaders
		if strip == nil {
			strip = DefaultStripRequestHeaders
		}
		for _, h := range strip {
			st.strip = append(st.strip, http.CanonicalHeaderKey(h))
		}
		cookies := sc.SetCookie
		if cookies == "" {
			cookies = cfg.Cache.SetCookie
		}
		st.route.SetCookie, _ = cache.ParseCookiePolicy(cookies) // validated above
		st.deny = sc.DenyPaths
		if st.deny == nil {
			st.deny = DefaultDenyPaths
		}
		for _, h := range cfg.Sites[i].Hosts {
			s.router.add(h, st)
		}
	}
	if !cfg.Cache.Disabled {
		var vouch func(time.Time) (bool, time.Time)
		if cfg.Fleet.URL != "" {
			vouch = s.vouch
			s.metrics.reg.MustRegister(s.fleetGauge())
		}
		c, err := cache.New(cache.Config{
			Vouch: vouch,
			// No Transport: every request comes with its site's Route
			// (ServeRoute), resolved once in serve.
			MaxBytes: cfg.Cache.MaxBytes, MaxObjectBytes: cfg.Cache.MaxObjectBytes,
			TargetedFields: cfg.Cache.TargetedFields, Name: cfg.Name, Logger: s.log,
			MaxVariants: cfg.Cache.MaxVariants, MaxVaryValueBytes: cfg.Cache.MaxVaryValueBytes,
			WriteStallTimeout: cfg.Cache.WriteStallTimeout,
			SliceBytes:        cfg.Cache.SliceBytes, CompressMinBytes: cfg.Cache.CompressMinBytes,
		})
		if err != nil {
			s.closeGroups()
			s.closeAccessLog()
			return nil, fmt.Errorf("cache: %w", err)
		}
		s.cache = c
		s.metrics.reg.MustRegister(cacheCollector{c})
	}
	s.tcpConns = newConnLimiter(cfg.Limits.MaxConns, cfg.Limits.MaxConnsPerAddr, s.peers)

	s.quicConns = newConnLimiter(cfg.Limits.MaxQUICConns, cfg.Limits.MaxQUICConnsPerAddr, s.peers)
	if cfg.Limits.RateLimit > 0 {
		s.limiter = newIPLimiter(cfg.Limits.RateLimit, cfg.Limits.RateBurst, 100_000)
	}
	if s.cache != nil && !cfg.DisableFastPath {
		s.hits3 = newH3Hits(s)
	}
	s.startCtx, s.startCancel = context.WithCancel(context.Background())
	return s, nil
}

func fillDefaults(c *Config) {
	d := DefaultConfig()
	orDefault(&c.Name, d.Name)
	orDefault(&c.CDN, d.CDN)
	orDefault(&c.AltSvcMaxAge, d.AltSvcMaxAge)
	orDefault(&c.DrainTimeout, d.DrainTimeout)
	l, dl := &c.Limits, d.Limits
	orDefault(&l.MaxHeaderBytes, dl.MaxHeaderBytes)
	orDefault(&l.ReadHeaderTimeout, dl.ReadHeaderTimeout)
	orDefault(&l.IdleTimeout, dl.IdleTimeout)
	orDefault(&l.MaxConcurrentStreams, dl.MaxConcurrentStreams)
	orDefault(&l.MaxBodyBytes, dl.MaxBodyBytes)
	orDefault(&l.MaxInflight, dl.MaxInflight)
	orDefault(&l.MaxConns, dl.MaxConns)
	orDefault(&l.MaxConnsPerAddr, dl.MaxConnsPerAddr)
	orDefault(&l.MaxQUICConns, dl.MaxQUICConns)
	orDefault(&l.MaxQUICConnsPerAddr, dl.MaxQUICConnsPerAddr)
	orDefault(&l.MaxUpstreamPerAddr, dl.MaxUpstreamPerAddr)
}

// orDefault sets *v to d when *v is its type's zero value.
func orDefault[T comparable](v *T, d T) {
	var zero T
	if *v == zero {
		*v = d
	}
}

func newGroup(name string, uc UpstreamConfig, t *tlsSetup, logger *slog.Logger) (*upstream.Group, error) {
	gc := uc.Config
	gc.Name, gc.Logger = name, logger
	switch {
	case uc.CAFile != "":
		pool, err := certs.LoadPool(uc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("upstreams.%s.ca_file: %w", name, err)
		}
		gc.RootCAs = pool
	case t.labCA != nil:
		// A lab-CA origin is trusted when the PoP uses the same CA.
		gc.RootCAs = certs.SystemPoolWith(t.labCA.Root())
	}
	g, err := upstream.New(gc)
	if err != nil {
		return nil, fmt.Errorf("upstreams.%s: %w", name, err)
	}
	return g, nil
}

// Listen binds the TCP, UDP, plain-HTTP and admin sockets.
func (s *Server) Listen() error {
	var err error
	s.tcpLn, err = net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	if !s.cfg.DisableHTTP3 {
		// QUIC on the same port as TCP, so Alt-Svc can say h3=":port".
		tcpAddr := s.tcpLn.Addr().(*net.TCPAddr)
		s.udpConn, err = net.ListenUDP("udp", &net.UDPAddr{IP: tcpAddr.IP, Port: tcpAddr.Port, Zone: tcpAddr.Zone})
		if err != nil {
			s.tcpLn.Close()
			return fmt.Errorf("listen (udp for HTTP/3): %w", err)
		}
		s.altSvc = []string{`h3=":` + strconv.Itoa(tcpAddr.Port) + `"; ma=` + strconv.Itoa(int(s.cfg.AltSvcMaxAge.Seconds()))}
	}
	if s.cfg.HTTP != "" {
		if s.httpLn, err = net.Listen("tcp", s.cfg.HTTP); err != nil {
			s.closeListeners()
			return fmt.Errorf("http: %w", err)
		}
	}
	if s.cfg.Admin != "" {
		if s.adminLn, err = net.Listen("tcp", s.cfg.Admin); err != nil {
			s.closeListeners()
			return fmt.Errorf("admin: %w", err)
		}
	}
	return nil
}

func (s *Server) closeListeners() {
	for _, c := range []io.Closer{s.tcpLn, s.httpLn, s.adminLn} {
		if c != nil && c != io.Closer(nil) {
			c.Close()
		}
	}
	if s.udpConn != nil {
		s.udpConn.Close()
	}
}

// Addr is the TLS (TCP) and QUIC (UDP) address.
func (s *Server) Addr() net.Addr { return s.tcpLn.Addr() }

// HTTPAddr is the plain-HTTP address, or nil.
func (s *Server) HTTPAddr() net.Addr { return addrOf(s.httpLn) }

// AdminAddr is the admin address, or nil.
func (s *Server) AdminAddr() net.Addr { return addrOf(s.adminLn) }

func addrOf(ln net.Listener) net.Addr {
	if ln == nil {
		return nil
	}
	return ln.Addr()
}

// Leaf returns the certificate served, when it is known up front (lab CA,
// files), for clients that pin it.
func (s *Server) Leaf() *tls.Certificate {
	leaf := s.tls.currentLeaf()
	if leaf == nil {
		return nil
	}
	return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, Leaf: leaf}
}

// WaitCache blocks until responses being fetched are stored and the
// cache has applied its pending stores (they are asynchronous); for tests
// and tools that must see a just-fetched object as a hit.
func (s *Server) WaitCache() {
	if s.cache != nil {
		s.cache.Wait()
	}
}

// LabCA returns the lab CA the certificate came from, or nil.
func (s *Server) LabCA() *certs.LabCA { return s.tls.labCA }

// Ready reports whether the PoP can serve and so should receive traffic:
// listening, certificates loaded, the first upstream warm-up attempted, and
// not draining. An origin that is down does not make the PoP unready: it
// still serves cached and stale content, and every other PoP would reach
// the same origin. That is Degraded.
func (s *Server) Ready() bool { return s.ready.Load() && !s.draining.Load() }

// Degraded reports whether some upstream group has no healthy warm server:
// the PoP is ready but can serve only what it has cached (and errors for
// the rest) until the origin returns.
func (s *Server) Degraded() bool { return len(s.degradedGroups()) > 0 }

// Serve serves on the bound sockets until Shutdown or Close. It warms the
// upstream pools in the background and becomes ready once each pool has
// warmed or given up (a pool whose origin is down leaves it Degraded).
// It returns the first error of any listener, or nil after a shutdown.
func (s *Server) Serve() error {
	if s.tcpLn == nil {
		return errors.New("serve: Listen was not called")
	}
	if s.cfg.Fleet.URL != "" {
		s.wg.Go(s.joinFleet)
	}
	errc := make(chan error, 4)
	serve := func(name string, f func() error) {
		s.wg.Go(func() {
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, quic.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				errc <- fmt.Errorf("%s: %w", name, err)
				return
			}
			errc <- nil
		})
	}
	n := 0
	s.h12 = s.newHTTPServer(s)
	tcpTLS := s.tls.config.Clone()
	tcpTLS.VerifyConnection = s.metrics.handshake("tcp")
	if !slices.Contains(tcpTLS.NextProtos, "h2") {
		tcpTLS.NextProtos = append([]string{"h2", "http/1.1"}, tcpTLS.NextProtos...)
	}
	s.front = newFront(s, s.tcpLn, tcpTLS)
	s.h12.ConnContext = s.front.connContext
	s.wg.Go(s.front.acceptLoop)
	serve("tls", func() error { return s.h12.Serve(s.front) })
	n++
	if s.udpConn != nil {
		ln, err := s.listenQUIC()
		if err != nil {
			return err
		}
		var qln http3.QUICListener = ln
		if s.quicConns != nil {
			qln = &quicLimitListener{QUICListener: ln, l: s.quicConns, refused: s.connRefused}
		}
		serve("quic", func() error { return s.h3.ServeListener(qln) })
		n++
	}
	if s.httpLn != nil {
		var h http.Handler = s
		if s.tls.acme != nil {
			// With ACME the plain listener is port 80 for HTTP-01 challenges;
			// everything else is redirected to https.
			h = s.tls.acme.HTTPHandler(nil)
		}
		s.plain = s.newHTTPServer(h)
		ln := s.httpLn
		if s.tcpConns != nil {
			ln = &limitListener{Listener: ln, l: s.tcpConns, refused: s.connRefused}
		}
		serve("http", func() error { return s.plain.Serve(ln) })
		n++
	}
	if s.adminLn != nil {
		s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(slogWriter{s.log}, "", 0)}
		serve("admin", func() error { return s.admin.Serve(s.adminLn) })
		n++
	}
	s.wg.Go(s.warm)
	var first error
	for range n {
		if err := <-errc; err != nil && first == nil {
			first = err
			go s.Close() // one listener failed: stop the others so Serve returns
		}
	}
	return first
}

// connRefused counts a connection closed by a connection limit.
func (s *Server) connRefused() { s.metrics.rejected.WithLabelValues("conn_limit").Inc() }

func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	l := s.cfg.Limits
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          l.MaxConcurrentStreams,
			MaxReceiveBufferPerStream:     1 << 20,
			MaxReceiveBufferPerConnection: 4 << 20,
		},
		ErrorLog: log.New(slogWriter{s.log}, "", 0),
	}
}

func (s *Server) listenQUIC() (*quic.EarlyListener, error) {
	token, reset := s.quicKeys() // the fleet's, in a fleet (fleet.go)
	tk, rk := quic.TokenGeneratorKey(token), quic.StatelessResetKey(reset)
	s.quic = &quic.Transport{Conn: s.udpConn, TokenGeneratorKey: &tk, StatelessResetKey: &rk}
	l := s.cfg.Limits
	s.h3 = &http3.Server{
		Handler:        s,
		MaxHeaderBytes: l.MaxHeaderBytes,
		IdleTimeout:    l.IdleTimeout,
		ConnContext: func(ctx context.Context, c *quic.Conn) context.Context {
			if c.ConnectionState().Used0RTT {
				s.metrics.quicConns0RTT.Inc()
			}
			s.rtt.watchQUIC(c)
			return context.WithValue(ctx, connKey{}, c) // for connRTT
		},
	}
	tc := s.tls.config.Clone()
	tc.MinVersion = tls.VersionTLS13
	tc.VerifyConnection = s.metrics.handshake("quic")
	qc := &quic.Config{
		Allow0RTT:                      true,
		MaxIncomingStreams:             int64(l.MaxConcurrentStreams),
		MaxIdleTimeout:                 l.IdleTimeout,
		InitialStreamReceiveWindow:     512 << 10,
		MaxStreamReceiveWindow:         6 << 20,
		InitialConnectionReceiveWindow: 1 << 20,
		MaxConnectionReceiveWindow:     15 << 20,
	}
	ln, err := s.quic.ListenEarly(http3.ConfigureTLSConfig(tc), qc)
	if err != nil {
		return nil, fmt.Errorf("listen quic: %w", err)
	}
	return ln, nil
}

// warm starts every upstream group and marks the server ready once each has
// warmed or given up. A group whose origin is down keeps trying in the
// background, and the server reports Degraded until it succeeds.
func (s *Server) warm() {
	var wg sync.WaitGroup
	for name, g := range s.groups {
		wg.Go(func() {
			if err := g.Start(s.startCtx); err != nil && s.startCtx.Err() == nil {
				s.log.Warn("upstream warm-up", "upstream", name, "error", err)
			}
		})
	}
	wg.Wait()
	// From here on the groups' own health is Degraded, not Ready.
	s.ready.Store(true)
	close(s.warmed)
}

// Warmed is closed when the upstream groups have finished their first
// warm-up (or given up on a down origin, which they keep retrying).
func (s *Server) Warmed() <-chan struct{} { return s.warmed }

// degradedGroups returns the names of the upstream groups of the sites
// that can reach no upstream: neither their origin group nor their parent
// tier has a healthy warm server. Sorted.
func (s *Server) degradedGroups() []string {
	var names []string
	for _, st := range s.sites {
		if !st.down() {
			continue
		}
		for _, g := range st.groups {
			if name := g.Name(); !slices.Contains(names, name) {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return names
}

// Shutdown drains the server: it reports not ready at once, waits
// DrainDelay so that health checkers notice, then stops accepting, sends
// GOAWAY on HTTP/2 and HTTP/3 and waits for in-flight requests until ctx
// ends or DrainTimeout passes, whichever is first. Then it closes
// everything.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	if d := s.cfg.DrainDelay; d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DrainTimeout)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex // guards errs
		errs []error
	)
	shut := func(f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	if s.h12 != nil {
		shut(s.h12.Shutdown)
		shut(s.front.shutdown)
	}
	if s.h3 != nil {
		shut(s.h3.Shutdown)
	}
	if s.plain != nil {
		shut(s.plain.Shutdown)
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Close stops everything at once: listeners, connections, pools. It may be
// called more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(s.close)
	return nil
}

func (s *Server) close() {
	s.draining.Store(true)
	s.startCancel()
	if s.front != nil {
		s.front.close()
	}
	for _, srv := range []*http.Server{s.h12, s.plain, s.admin} {
		if srv != nil {
			srv.Close()
		}
	}
	if s.h3 != nil {
		s.h3.Close()
	}
	if s.quic != nil {
		s.quic.Close()
	}
	s.closeListeners()
	s.wg.Wait()
	s.leaveFleet() // after the join loop (in s.wg) has ended
	s.rtt.close()  // after s.quic.Close, which ends the watched connections
	s.closeGroups()
	if s.cache != nil {
		s.cache.Close()
	}
	s.closeAccessLog() // after every server: the lines of the last responses are written
}

func (s *Server) closeAccessLog() {
	s.alog.Close()
	if s.alogCloser != nil {
		s.alogCloser.Close()
	}
}

func (s *Server) closeGroups() {
	for _, g := range s.groups {
		g.Close()
	}
}
