// Package upstream is a PoP's pool of warm, persistent connections to one
// origin group.
//
// A Group holds several origin servers and is an http.RoundTripper. Start
// dials and TLS-handshakes connections to every server before the first
// client request (HTTP/2 when the origin offers it by ALPN, keep-alive
// HTTP/1.1 otherwise) and keeps them warm: HTTP/2 connections are PINGed
// when idle, HTTP/1.1 ones re-warmed by periodic health requests. Each
// request picks a server with a balancer (round robin, least outstanding by
// power of two choices, or a consistent hash of the URL), skipping servers
// that failed an active health check or whose breaker is open (passive
// ejection after consecutive failures, half-open after a pause). Requests
// are bounded by connect, TLS, response-header and total timeouts and by a
// concurrency cap (the bulkhead), and idempotent requests that sent nothing
// are retried on another server within a retry budget.
package upstream

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"
)

// Errors RoundTrip returns, wrapped with the server and phase; test with errors.Is.
var (
	// ErrOverloaded: the group already has MaxConcurrent requests in flight.
	ErrOverloaded = errors.New("upstream overloaded")
	// ErrUnavailable: no server is healthy with a closed or half-open breaker.
	ErrUnavailable = errors.New("no upstream server available")
	// ErrTimeout: a connect, TLS, response-header or total timeout expired.
	ErrTimeout = errors.New("upstream timeout")
)

// Config configures a Group. Zero values take the defaults given.
type Config struct {
	// Name labels the group in logs. If empty, "upstream".
	Name string
	// Servers are origin base URLs, "https://host:port" or "http://host:port",
	// without path or query. At least one.
	Servers []string
	// Balancer is "round_robin" (if empty), "least_outstanding" (power of two
	// choices on requests in flight) or "hash" (consistent hash of the URL
	// path and query: a URL sticks to one server while it is available).
	Balancer string
	// RootCAs verifies https origins. If nil, the system roots.
	RootCAs *x509.CertPool
	// ServerName is the TLS name sent and verified. If empty, each server
	// URL's host.
	ServerName string
	// ConnectTimeout bounds a TCP connect. If zero, 5s.
	ConnectTimeout time.Duration
	// TLSTimeout bounds a TLS handshake. If zero, 5s.
	TLSTimeout time.Duration
	// ResponseHeaderTimeout bounds the wait for response headers after the
	// request is written. If zero, 30s.
	ResponseHeaderTimeout time.Duration
	// TotalTimeout bounds the whole exchange, body included. If zero, 60s.
	TotalTimeout time.Duration
	// MaxConcurrent caps requests in flight for the group (the bulkhead);
	// beyond it RoundTrip fails at once with ErrOverloaded. If zero, 1024.
	MaxConcurrent int
	// WarmConns is how many connections per server Start opens. HTTP/2 needs
	// one (it multiplexes); HTTP/1.1 keeps this many idle. If zero, 2.
	WarmConns int
	// MaxIdleConnsPerServer caps idle keep-alive connections. If zero, 256.
	MaxIdleConnsPerServer int
	// KeepAlive is the idle time after which an HTTP/2 connection is PINGed,
	// and the period at which HTTP/1.1 connections are re-warmed. If zero, 15s.
	KeepAlive time.Duration
	// HealthPath is requested by active health checks; any status below 500
	// is healthy (an origin without that path is still up). If
	// empty, "/healthz"; "-" disables active checks (servers are then healthy
	// unless their breaker is open).
	HealthPath string
	// HealthInterval is the period of health checks. If zero, 2s.
	HealthInterval time.Duration
	// HealthTimeout bounds one health check. If zero, 1s.
	HealthTimeout time.Duration
	// FailThreshold is how many consecutive failures (connection errors,
	// timeouts, 502/503/504) open a server's breaker. If zero, 5.
	FailThreshold int
	// OpenDuration is how long a breaker stays open before one trial
	// request is let through (half-open). If zero, 5s.
	OpenDuration time.Duration
	// Retries is how many other servers an idempotent request that sent
	// nothing may try. If zero, 1; negative: no retries.
	Retries int
	// RetryBudget caps retries at this fraction of requests (plus 10 per
	// second), so retries cannot multiply load on a failing origin. If zero, 0.2.
	RetryBudget float64
	// Logger receives health changes. If nil, slog.Default().
	Logger *slog.Logger
	// Now is the clock of breakers and the budget. If nil, time.Now.
	Now func() time.Time
}

// DefaultConfig returns a Config with every default filled in and no servers.
func DefaultConfig() Config {
	c := Config{}
	c.fill()
	return c
}

func (c *Config) fill() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d == 0 {
			*d = v
		}
	}
	if c.Name == "" {
		c.Name = "upstream"
	}
	if c.Balancer == "" {
		c.Balancer = "round_robin"
	}
	def(&c.ConnectTimeout, 5*time.Second)
	def(&c.TLSTimeout, 5*time.Second)
	def(&c.ResponseHeaderTimeout, 30*time.Second)
	def(&c.TotalTimeout, 60*time.Second)
	defInt(&c.MaxConcurrent, 1024)
	defInt(&c.WarmConns, 2)
	defInt(&c.MaxIdleConnsPerServer, 256)
	def(&c.KeepAlive, 15*time.Second)
	if c.HealthPath == "" {
		c.HealthPath = "/healthz"
	}
	def(&c.HealthInterval, 2*time.Second)
	def(&c.HealthTimeout, time.Second)
	defInt(&c.FailThreshold, 5)
	def(&c.OpenDuration, 5*time.Second)
	defInt(&c.Retries, 1)
	if c.RetryBudget == 0 {
		c.RetryBudget = 0.2
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports every problem at once, each naming its field.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Servers) == 0 {
		add("servers: empty, want at least one origin URL")
	}
	for i, s := range c.Servers {
		u, err := url.Parse(s)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			add("servers[%d]: %q is not an http or https URL with a host", i, s)
		case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil:
			add("servers[%d]: %q, want scheme://host[:port] without path, query or user", i, s)
		}
	}
	switch c.Balancer {
	case "", "round_robin", "least_outstanding", "hash":
	default:
		add("balancer: %q, want round_robin, least_outstanding or hash", c.Balancer)
	}
	for name, d := range map[string]time.Duration{
		"connect_timeout": c.ConnectTimeout, "tls_timeout": c.TLSTimeout,
		"response_header_timeout": c.ResponseHeaderTimeout, "total_timeout": c.TotalTimeout,
		"keep_alive": c.KeepAlive, "health_interval": c.HealthInterval, "health_timeout": c.HealthTimeout,
		"open_duration": c.OpenDuration,
	} {
		if d < 0 {
			add("%s: %v, want a positive duration", name, d)
		}
	}
	if c.MaxConcurrent < 0 || c.WarmConns < 0 || c.MaxIdleConnsPerServer < 0 || c.FailThreshold < 0 {
		add("max_concurrent, warm_conns, max_idle_conns_per_server, fail_threshold: want 0 (default) or more")
	}
	if c.RetryBudget < 0 || c.RetryBudget > 1 {
		add("retry_budget: %v, want a fraction between 0 and 1", c.RetryBudget)
	}
	if c.HealthPath != "" && c.HealthPath != "-" && c.HealthPath[0] != '/' {
		add("health_path: %q, want a path starting with /", c.HealthPath)
	}
	return errors.Join(errs...)
}
