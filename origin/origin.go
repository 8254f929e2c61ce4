// Package origin is a real origin server for the CDN's lab, tests and
// benchmarks.
//
// It serves a directory with strong ETags, Last-Modified, conditional GET
// (304), HEAD, single and multipart byte ranges and Content-Type (through
// http.ServeContent), with Cache-Control chosen by path rules. It also
// generates objects of any size:
//
//	GET /gen/<size>            size as 1234, 1k, 100k, 1m (KiB, MiB), at most 1g
//	    ?cc=no-store           Cache-Control of the response (default: public, max-age=3600)
//	    ?delay=2s              wait before answering (ends early if the client goes away)
//	    ?status=503            answer with this status instead
//	    ?vary=Accept-Encoding  set Vary
//
// and answers GET /healthz (200 ok) and GET /_origin/stats (JSON request
// counts by path and TLS handshakes, so tests in other processes can count
// origin hits). Every other request is logged when it ends.
package origin

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gopkg.in/yaml.v3"
)

// Config configures an origin Server.
type Config struct {
	// Root is the directory served. If empty, only /gen, /healthz and
	// /_origin/stats exist.
	Root string `yaml:"root"`
	// Rules choose Cache-Control by path; the first match wins.
	Rules []Rule `yaml:"rules"`
	// DefaultCacheControl applies to files no rule matches. If empty,
	// "public, max-age=60".
	DefaultCacheControl string `yaml:"default_cache_control"`
	// LogRequests logs one line per request at Info. If false, none.
	LogRequests bool `yaml:"log_requests"`
	// Logger receives request lines. If nil, slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// Rule sets Cache-Control for paths matching Path: a path.Match glob such
// as "/static/*.css", or a prefix ending in "/" such as "/img/".
type Rule struct {
	Path         string `yaml:"path"`
	CacheControl string `yaml:"cache_control"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{DefaultCacheControl: "public, max-age=60", LogRequests: true}
}

// ParseConfig decodes YAML over DefaultConfig strictly and validates it.
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return cfg, cfg.Validate()
}

// Validate reports every problem at once, each naming its field.
func (c Config) Validate() error {
	var errs []error
	if c.Root != "" {
		if fi, err := os.Stat(c.Root); err != nil || !fi.IsDir() {
			errs = append(errs, fmt.Errorf("root: %q is not a directory", c.Root))
		}
	}
	for i, r := range c.Rules {
		if !strings.HasPrefix(r.Path, "/") {
			errs = append(errs, fmt.Errorf("rules[%d].path: %q, want a path starting with /", i, r.Path))
		} else if _, err := path.Match(r.Path, "/"); err != nil {
			errs = append(errs, fmt.Errorf("rules[%d].path: bad glob %q: %v", i, r.Path, err))
		}
		if strings.TrimSpace(r.CacheControl) == "" {
			errs = append(errs, fmt.Errorf("rules[%d].cache_control: empty, want a Cache-Control value such as \"public, max-age=60\"", i))
		}
	}
	return errors.Join(errs...)
}

// Server is an origin: an http.Handler plus listeners.
type Server struct {
	cfg  Config
	log  *slog.Logger
	root *os.Root // nil without a Root
	mux  *http.ServeMux

	requests   atomic.Int64
	handshakes atomic.Int64
	mu         sync.Mutex // guards byPath
	byPath     map[string]int64

	srvMu   sync.Mutex // guards servers
	servers []*http.Server
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.DefaultCacheControl == "" {
		cfg.DefaultCacheControl = DefaultConfig().DefaultCacheControl
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, byPath: map[string]int64{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	if cfg.Root != "" {
		root, err := os.OpenRoot(cfg.Root)
		if err != nil {
			return nil, fmt.Errorf("root: %w", err)
		}
		s.root = root
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("/_origin/stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(s.Stats())
	})
	s.mux.HandleFunc("/gen/", s.serveGen)
	s.mux.HandleFunc("/", s.serveFile)
	return s, nil
}

// Stats counts what the origin served.
type Stats struct {
	Requests      int64            `json:"requests"`
	ByPath        map[string]int64 `json:"by_path"`
	TLSHandshakes int64            `json:"tls_handshakes"`
}

// Stats returns the counts so far. Health and stats requests are not counted.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := make(map[string]int64, len(s.byPath))
	for k, v := range s.byPath {
		m[k] = v
	}
	return Stats{Requests: s.requests.Load(), ByPath: m, TLSHandshakes: s.handshakes.Load()}
}

// Requests returns how many requests for path were served.
func (s *Server) Requests(path string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byPath[path]
}

// ServeHTTP counts, logs and dispatches a request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	internal := r.URL.Path == "/healthz" || r.URL.Path == "/_origin/stats"
	if !internal {
		s.requests.Add(1)
		s.mu.Lock()
		s.byPath[r.URL.Path]++
		s.mu.Unlock()
	}
	// Health checks come every few seconds from every PoP: not logged.
	if !s.cfg.LogRequests || internal {
		s.mux.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	lw := &logWriter{ResponseWriter: w, status: http.StatusOK}
	s.mux.ServeHTTP(lw, r)
	s.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", lw.status, "bytes", lw.bytes,
		"proto", r.Proto, "remote", r.RemoteAddr, "duration", time.Since(start))
}

type logWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *logWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *logWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *logWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TLSConfig returns a server TLS config for cert offering h2 and
// http/1.1, counting completed handshakes for Stats.
func (s *Server) TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"h2", "http/1.1"},
		VerifyConnection: func(tls.ConnectionState) error {
			s.handshakes.Add(1)
			return nil
		},
	}
}

func (s *Server) newHTTPServer() *http.Server {
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute, // a CDN's pooled connections stay open
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	s.srvMu.Lock()
	s.servers = append(s.servers, srv)
	s.srvMu.Unlock()
	return srv
}

// ServeTLS serves HTTPS (HTTP/2 and HTTP/1.1) on ln until Shutdown or Close.
func (s *Server) ServeTLS(ln net.Listener, cert tls.Certificate) error {
	srv := s.newHTTPServer()
	srv.TLSConfig = s.TLSConfig(cert)
	return srv.ServeTLS(ln, "", "")
}

// Serve serves plain HTTP/1.1 on ln until Shutdown or Close.
func (s *Server) Serve(ln net.Listener) error {
	return s.newHTTPServer().Serve(ln)
}

// Shutdown stops the listeners and waits for requests in flight.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range s.snapshot() {
		errs = append(errs, srv.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// Close stops everything at once.
func (s *Server) Close() error {
	var errs []error
	for _, srv := range s.snapshot() {
		errs = append(errs, srv.Close())
	}
	if s.root != nil {
		s.root.Close()
	}
	return errors.Join(errs...)
}

func (s *Server) snapshot() []*http.Server {
	s.srvMu.Lock()
	defer s.srvMu.Unlock()
	return append([]*http.Server(nil), s.servers...)
}
