package origin

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Timeouts and limits of the HTTP server.
const (
	readHeaderTimeout = 10 * time.Second
	// idleTimeout is long so that a CDN's pooled connections stay open
	// between bursts.
	idleTimeout    = 5 * time.Minute
	maxHeaderBytes = 64 << 10
)

// Paths of the operator endpoints, which Stats does not count.
const (
	healthPath = "/healthz"
	statsPath  = "/_origin/stats"
)

// statusClientClosed is the status logged for a request whose client went
// away before any answer, as nginx logs it.
const statusClientClosed = 499

// Server is an origin: an http.Handler for files, generated objects, health
// and stats, plus the listeners it serves. It is safe for concurrent use.
type Server struct {
	cfg  Config
	log  *slog.Logger
	root *os.Root // nil without Config.Root
	gen  []byte   // the generated objects' pattern, repeated; read only; see newGenBlock
	mux  *http.ServeMux
	hs   *http.Server
	now  func() time.Time // the clock of /clock; time.Now but in tests

	counters counters

	closeRoot func() error // closes root once
}

// New validates cfg and returns a Server, with Root open.
func New(cfg Config) (*Server, error) {
	if cfg.DefaultCacheControl == "" {
		cfg.DefaultCacheControl = defaultCacheControl
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("origin config: %w", err)
	}
	cfg.Rules = append([]Rule(nil), cfg.Rules...)
	s := &Server{cfg: cfg, log: cfg.Logger, gen: newGenBlock(), now: time.Now, closeRoot: func() error { return nil }}
	if s.log == nil {
		s.log = slog.Default()
	}
	if cfg.Root != "" {
		root, err := os.OpenRoot(cfg.Root)
		if err != nil {
			return nil, fmt.Errorf("open root: %w", err)
		}
		s.root = root
		s.closeRoot = sync.OnceValue(root.Close)
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc(healthPath, s.serveHealth)
	s.mux.HandleFunc(statsPath, s.serveStats)
	s.mux.HandleFunc(genPrefix, s.serveGen)
	s.mux.HandleFunc(clockPath, s.serveClock)
	s.mux.HandleFunc("/", s.serveFile)
	s.hs = &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		// TLS handshake errors from probes and scanners are noise.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// ServeHTTP counts the request, serves it and logs it when it ends.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	internal := r.URL.Path == healthPath || r.URL.Path == statsPath
	level := slog.LevelInfo
	if internal {
		// PoPs check health every few seconds: not worth an Info line.
		level = slog.LevelDebug
	} else {
		s.counters.count(r.URL.Path)
	}
	if !s.cfg.LogRequests || !s.log.Enabled(r.Context(), level) {
		s.mux.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	s.mux.ServeHTTP(rec, r)
	switch {
	case rec.status != 0:
	case r.Context().Err() != nil:
		// Nothing written and the client gone (a ?delay cut short):
		// nginx's "client closed request".
		rec.status = statusClientClosed
	default:
		rec.status = http.StatusOK // what net/http sends for an empty answer
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", rec.status),
		slog.Int64("bytes", rec.bytes),
		slog.String("proto", r.Proto),
		slog.String("remote", r.RemoteAddr),
		slog.Duration("duration", time.Since(start)),
	}
	if r.URL.RawQuery != "" {
		attrs = append(attrs, slog.String("query", r.URL.RawQuery))
	}
	s.log.LogAttrs(r.Context(), level, "request", attrs...)
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r) {
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.Write([]byte("ok\n"))
}

// allowMethod answers 405 to anything but GET and HEAD.
func allowMethod(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "405 method not allowed: "+strings.ToValidUTF8(r.Method, "?")+"; this origin serves GET and HEAD", http.StatusMethodNotAllowed)
	return false
}

// TLSConfig returns a server TLS configuration for cert: TLS 1.2 and up,
// offering h2 and http/1.1, counting handshakes for Stats. ServeTLS uses
// it; it is exported for callers that run their own listeners.
func (s *Server) TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
		// Called once per handshake, full or resumed, once the peer is
		// authenticated and before any request can be read.
		VerifyConnection: func(tls.ConnectionState) error {
			s.counters.handshakes.Add(1)
			return nil
		},
	}
}

// Serve serves plain HTTP/1.1 on ln until Shutdown or Close, and then
// returns http.ErrServerClosed. It closes ln.
func (s *Server) Serve(ln net.Listener) error {
	return s.hs.Serve(ln)
}

// ServeTLS serves HTTPS on ln with cert, HTTP/2 or HTTP/1.1 as the client
// chooses by ALPN, until Shutdown or Close, and then returns
// http.ErrServerClosed. It closes ln. Serve and ServeTLS may run at the same
// time on several listeners.
func (s *Server) ServeTLS(ln net.Listener, cert tls.Certificate) error {
	return s.hs.Serve(tls.NewListener(ln, s.TLSConfig(cert)))
}

// Shutdown stops accepting connections, closes idle ones and waits for
// requests in flight (a ?delay one included) until ctx ends. Once drained,
// Root is closed.
func (s *Server) Shutdown(ctx context.Context) error {
	if err := s.hs.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown origin: %w", err)
	}
	return s.closeRoot()
}

// Close closes the listeners and every connection now, and Root with them.
// Requests in flight fail.
func (s *Server) Close() error {
	return errors.Join(s.hs.Close(), s.closeRoot())
}
