package bench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// Protocols and modes.
const (
	H1 = "h1"
	H2 = "h2"
	H3 = "h3"

	Cold    = "cold"    // a new connection, full handshake, every request
	Warm    = "warm"    // one connection reused (the first request opens it)
	Resumed = "resumed" // a new connection each time, resuming the TLS session
	ZeroRTT = "0rtt"    // HTTP/3 with the request in 0-RTT early data

	// First and FirstHTTPS are a browser's first visit: no session ticket
	// and no Alt-Svc learnt yet, so the protocol is chosen from DNS
	// alone. First asks for the A record only and opens HTTP/2 over TCP;
	// FirstHTTPS also asks for the name's HTTPS record (RFC 9460), in
	// parallel as browsers do, and goes straight to HTTP/3 when it
	// offers h3 (to its ipv4hint, else the A record). Proto is then the
	// protocol chosen; TTFB counts from the first DNS query.
	First      = "first"
	FirstHTTPS = "first-https"
)

// ProbeConfig configures a TTFB probe.
type ProbeConfig struct {
	Proto string // h1, h2 or h3
	Mode  string // cold, warm, resumed or 0rtt (h3 only)
	// N is the number of measured requests. If zero, 1. Resumed and 0rtt
	// make one unmeasured request first to get a session ticket.
	N int
	// Resolver is a DNS server (host:port) asked instead of the system's.
	Resolver string
	// ConnectTo, when set (host:port), is where every connection goes
	// instead of the URL's host, which stays the TLS name and the Host
	// (curl's --connect-to). No DNS lookup is made.
	ConnectTo string
	// RootCAs verifies the server. If nil, the system roots.
	RootCAs *x509.CertPool
	// Timeout bounds each request. If zero, 10s.
	Timeout time.Duration
	// PoPHeader names the response header that says which PoP answered.
	// If empty, X-Served-By.
	PoPHeader string
	// Dial opens TCP connections (and DNS queries). If nil, a net.Dialer.
	// The lab sets it to dial from inside a client's network namespace.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ListenPacket opens the UDP socket of each QUIC connection. If nil,
	// net.ListenPacket on an ephemeral port.
	ListenPacket func() (net.PacketConn, error)
}

// Result is one measured request. Durations are milliseconds; a phase that
// did not happen (DNS for an IP literal, connect on a warm connection) is 0.
type Result struct {
	Proto       string  `json:"proto"`
	Mode        string  `json:"mode"`
	URL         string  `json:"url"`
	Status      int     `json:"status"`
	DNSms       float64 `json:"dns_ms"`
	Connectms   float64 `json:"connect_ms"`
	TLSms       float64 `json:"tls_ms"`
	TTFBms      float64 `json:"ttfb_ms"`
	Totalms     float64 `json:"total_ms"`
	Bytes       int64   `json:"bytes"`
	CacheStatus string  `json:"cache_status"`
	PoP         string  `json:"pop"`
	Resumed     bool    `json:"resumed"`
	EarlyData   bool    `json:"early_data"`
	Negotiated  string  `json:"negotiated"` // the protocol actually used
	// Timing is what the PoP's Server-Timing said (nil without one), and
	// Split the TTFB divided with it: client<->PoP, PoP, PoP<->origin.
	Timing *EdgeTiming `json:"server_timing,omitempty"`
	Split  *TTFBSplit  `json:"split,omitempty"`
	// ServerTimingError says why a Server-Timing field was not understood
	// (the request itself succeeded).
	ServerTimingError string `json:"server_timing_error,omitempty"`
	Error             string `json:"error,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// Probe runs cfg.N requests for rawURL and returns one Result each.
func Probe(ctx context.Context, cfg ProbeConfig, rawURL string) ([]Result, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("url %q: want an https:// URL", rawURL)
	}
	if cfg.Mode == First || cfg.Mode == FirstHTTPS {
		cfg.Proto = H2 // what the first visit uses unless an HTTPS record offers h3
	}
	switch cfg.Proto {
	case H1, H2, H3:
	default:
		return nil, fmt.Errorf("proto %q: want h1, h2 or h3", cfg.Proto)
	}
	switch cfg.Mode {
	case First, FirstHTTPS:
		if cfg.ConnectTo != "" {
			return nil, fmt.Errorf("mode %s: the protocol comes from DNS; do not combine it with -connect-to", cfg.Mode)
		}
	case Cold, Warm, Resumed:
	case ZeroRTT:
		if cfg.Proto != H3 {
			return nil, fmt.Errorf("mode 0rtt: only with -proto h3 (TCP has no early data in Go)")
		}
	default:
		return nil, fmt.Errorf("mode %q: want cold, warm, resumed, 0rtt, first or first-https", cfg.Mode)
	}
	if cfg.N <= 0 {
		cfg.N = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.PoPHeader == "" {
		cfg.PoPHeader = "X-Served-By"
	}
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{}).DialContext
	}
	if cfg.ListenPacket == nil {
		cfg.ListenPacket = func() (net.PacketConn, error) { return net.ListenPacket("udp", ":0") }
	}
	p := &prober{cfg: cfg, u: u, resolver: newResolver(cfg.Resolver, cfg.Dial)}
	if cfg.Mode == Resumed || cfg.Mode == ZeroRTT {
		p.sessions = tls.NewLRUClientSessionCache(16)
		if _, err := p.one(ctx, true); err != nil { // prime the session ticket
			return nil, fmt.Errorf("first request (to get a session ticket): %w", err)
		}
	}
	defer p.close()
	var out []Result
	for range cfg.N {
		r, err := p.one(ctx, false)
		if err != nil {
			r.Error = err.Error()
		} else if r.Timing != nil {
			split := r.Timing.Split(r.TTFBms)
			r.Split = &split
		}
		out = append(out, r)
	}
	return out, nil
}

type prober struct {
	cfg      ProbeConfig
	u        *url.URL
	resolver *net.Resolver
	sessions tls.ClientSessionCache

	mu                sync.Mutex // guards dnsTook, connTook
	dnsTook, connTook time.Duration

	// pinned is the address a first visit's DNS chose (lookup returns it
	// with pinnedTook instead of asking again).
	pinned     string
	pinnedTook time.Duration

	// kept open in warm mode
	h12    *http.Transport
	h3conn *http3.ClientConn
	h3quic *quic.Conn
	h3tr   *quic.Transport
}

func (p *prober) close() {
	if p.h12 != nil {
		p.h12.CloseIdleConnections()
	}
	if p.h3quic != nil {
		p.h3quic.CloseWithError(0, "")
		p.h3tr.Close()
	}
}

func newResolver(addr string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *net.Resolver {
	if addr == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dial(ctx, network, addr)
	}}
}

func (p *prober) tlsConfig() *tls.Config {
	c := &tls.Config{RootCAs: p.cfg.RootCAs, ServerName: p.u.Hostname(), ClientSessionCache: p.sessions}
	if p.sessions == nil && p.cfg.Mode != Warm {
		c.SessionTicketsDisabled = true // cold means a full handshake every time
	}
	return c
}

// lookup resolves the URL's host, timing it.
func (p *prober) lookup(ctx context.Context) (string, time.Duration, error) {
	if p.cfg.ConnectTo != "" {
		return p.cfg.ConnectTo, 0, nil
	}
	if p.pinned != "" {
		return p.pinned, p.pinnedTook, nil
	}
	host := p.u.Hostname()
	port := p.u.Port()
	if port == "" {
		port = "443"
	}
	if ip := net.ParseIP(host); ip != nil {
		return net.JoinHostPort(host, port), 0, nil
	}
	start := time.Now()
	addrs, err := p.resolver.LookupIPAddr(ctx, host)
	took := time.Since(start)
	if err != nil {
		return "", took, fmt.Errorf("dns %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return "", took, fmt.Errorf("dns %s: no addresses", host)
	}
	ip := addrs[0].IP
	for _, a := range addrs {
		if a.IP.To4() != nil {
			ip = a.IP
			break
		}
	}
	return net.JoinHostPort(ip.String(), port), took, nil
}

func (p *prober) one(ctx context.Context, priming bool) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	r := Result{Proto: p.cfg.Proto, Mode: p.cfg.Mode, URL: p.u.String()}
	if p.cfg.Mode == First || p.cfg.Mode == FirstHTTPS {
		return p.firstVisit(ctx, r)
	}
	if p.cfg.Proto == H3 {
		return p.oneH3(ctx, r)
	}
	return p.oneH12(ctx, r, priming)
}

func (p *prober) oneH12(ctx context.Context, r Result, priming bool) (Result, error) {
	tr := p.h12
	if tr == nil || p.cfg.Mode != Warm {
		tr = &http.Transport{TLSClientConfig: p.tlsConfig(), ForceAttemptHTTP2: p.cfg.Proto == H2, DisableCompression: true, DialContext: p.dial}
		tr.Protocols = new(http.Protocols)
		if p.cfg.Proto == H2 {
			tr.Protocols.SetHTTP2(true)
		} else {
			tr.Protocols.SetHTTP1(true)
		}
		if p.cfg.Mode == Warm {
			p.h12 = tr
		} else {
			defer tr.CloseIdleConnections()
		}
	}
	p.mu.Lock()
	p.dnsTook, p.connTook = 0, 0
	p.mu.Unlock()
	var start, tlsStart, tlsDone, first time.Time
	trace := &httptrace.ClientTrace{
		TLSHandshakeStart:    func() { tlsStart = time.Now() },
		TLSHandshakeDone:     func(tls.ConnectionState, error) { tlsDone = time.Now() },
		GotFirstResponseByte: func() { first = time.Now() },
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, r.URL, nil)
	if err != nil {
		return r, err
	}
	start = time.Now()
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return r, err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	end := time.Now()
	if err != nil {
		return r, fmt.Errorf("read body: %w", err)
	}
	p.mu.Lock()
	r.DNSms, r.Connectms = ms(p.dnsTook), ms(p.connTook)
	p.mu.Unlock()
	if !tlsStart.IsZero() {
		r.TLSms = ms(tlsDone.Sub(tlsStart))
	}
	r.TTFBms, r.Totalms = ms(first.Sub(start)), ms(end.Sub(start))
	fill(&r, resp, n, p.cfg.PoPHeader)
	return r, nil
}

// dial resolves (timed, with a context of its own so the request's trace
// does not see the resolver's sockets) and connects (timed).
func (p *prober) dial(ctx context.Context, network, _ string) (net.Conn, error) {
	lctx, cancel := context.WithTimeout(context.Background(), p.cfg.Timeout)
	defer cancel()
	addr, dnsTook, err := p.lookup(lctx)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	conn, err := p.cfg.Dial(ctx, network, addr)
	p.mu.Lock()
	p.dnsTook, p.connTook = dnsTook, time.Since(start)
	p.mu.Unlock()
	return conn, err
}

func fill(r *Result, resp *http.Response, n int64, popHeader string) {
	r.Status, r.Bytes = resp.StatusCode, n
	r.CacheStatus = resp.Header.Get("Cache-Status")
	r.PoP = resp.Header.Get(popHeader)
	r.Negotiated = fmt.Sprintf("h%d", resp.ProtoMajor)
	if v := resp.Header.Values("Server-Timing"); len(v) > 0 {
		metrics, err := ParseServerTiming(v...)
		if err != nil {
			r.ServerTimingError = err.Error()
		} else if t, ok := EdgeTimingFrom(metrics); ok {
			r.Timing = &t
		}
	}
	if resp.TLS != nil {
		r.Resumed = resp.TLS.DidResume
	}
}

func (p *prober) oneH3(ctx context.Context, r Result) (Result, error) {
	start := time.Now()
	addr, dnsTook, err := p.lookup(ctx)
	if err != nil {
		return r, err
	}
	r.DNSms = ms(dnsTook)
	if p.cfg.Mode == Warm && p.h3conn != nil {
		return p.requestH3(ctx, r, start)
	}
	tc := http3.ConfigureTLSConfig(p.tlsConfig())
	hsStart := time.Now()
	pc, err := p.cfg.ListenPacket()
	if err != nil {
		return r, fmt.Errorf("udp socket: %w", err)
	}
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		pc.Close()
		return r, err
	}
	tr := &quic.Transport{Conn: pc}
	var conn *quic.Conn
	if p.cfg.Mode == ZeroRTT {
		conn, err = tr.DialEarly(ctx, udpAddr, tc, &quic.Config{})
	} else {
		conn, err = tr.Dial(ctx, udpAddr, tc, &quic.Config{})
	}
	if err != nil {
		tr.Close()
		return r, fmt.Errorf("quic: %w", err)
	}
	cc := (&http3.Transport{}).NewClientConn(conn)
	if p.cfg.Mode == Warm {
		p.h3conn, p.h3quic, p.h3tr = cc, conn, tr
	} else {
		defer tr.Close()
		defer conn.CloseWithError(0, "")
	}
	if p.cfg.Mode != ZeroRTT {
		r.TLSms = ms(time.Since(hsStart)) // QUIC: connect and TLS are one handshake
	}
	method := http.MethodGet
	if p.cfg.Mode == ZeroRTT {
		method = http3.MethodGet0RTT
	}
	req, err := http.NewRequestWithContext(ctx, method, r.URL, nil)
	if err != nil {
		return r, err
	}
	var first time.Time
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }}))
	resp, err := cc.RoundTrip(req)
	if err != nil {
		return r, err
	}
	if first.IsZero() {
		first = time.Now()
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	end := time.Now()
	if err != nil {
		return r, fmt.Errorf("read body: %w", err)
	}
	r.TTFBms, r.Totalms = ms(first.Sub(start)), ms(end.Sub(start))
	fill(&r, resp, n, p.cfg.PoPHeader)
	r.Negotiated = H3
	cs := conn.ConnectionState()
	r.Resumed, r.EarlyData = cs.TLS.DidResume, cs.Used0RTT
	return r, nil
}

// requestH3 sends a request on the warm HTTP/3 connection.
func (p *prober) requestH3(ctx context.Context, r Result, start time.Time) (Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL, nil)
	if err != nil {
		return r, err
	}
	var first time.Time
	req = req.WithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotFirstResponseByte: func() { first = time.Now() }}))
	resp, err := p.h3conn.RoundTrip(req)
	if err != nil {
		return r, err
	}
	if first.IsZero() {
		first = time.Now()
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return r, err
	}
	r.TTFBms, r.Totalms = ms(first.Sub(start)), ms(time.Since(start))
	fill(&r, resp, n, p.cfg.PoPHeader)
	r.Negotiated = H3
	return r, nil
}
