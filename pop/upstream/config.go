package upstream

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"
)

// Config configures a Group. Every zero value takes the default given in its
// field's comment; DefaultConfig returns them filled in. The YAML names are
// those of the PoP's config file (upstreams.NAME.*); fields that are not
// configuration (Name, RootCAs, Logger, Now) have none.
type Config struct {
	// Name labels the group in logs and errors. If empty, "upstream".
	Name string `yaml:"-"`
	// Servers are the origin base URLs, "https://host:port" or
	// "http://host:port", without path, query or user. At least one.
	Servers []string `yaml:"servers"`
	// Weights gives servers a share of requests other than 1, by their
	// URL as in Servers: with {"https://a:443": 3}, a takes three
	// requests for every one of each other server, under every balancer
	// (round robin interleaves them; least_outstanding samples in
	// proportion to weight and compares requests in flight per unit of
	// weight; hash gives a server virtual nodes in proportion). Weight 0
	// makes a server a backup, sent requests only when no server of
	// positive weight is available; moving traffic gradually from one
	// server to another is a sequence of weights (9:1, 1:1, 1:9, 0:1).
	// From 0 to 100; at least one server above 0.
	Weights map[string]int `yaml:"weights"`
	// Balancer picks a server per request: "round_robin" (if empty),
	// "least_outstanding" (power of two choices on requests in flight) or
	// "hash" (consistent hash ring on the URL path and query, so a URL sticks
	// to one server while that server is available).
	Balancer string `yaml:"balancer"`
	// RootCAs verifies https origins. If nil, the system roots.
	RootCAs *x509.CertPool `yaml:"-"`
	// ServerName is the TLS SNI and verification name for every server, and
	// the Host of health checks. If empty, each server URL's host.
	ServerName string `yaml:"server_name"`

	// ConnectTimeout bounds one TCP connect (DNS included). If zero, 5s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	// TLSTimeout bounds one TLS handshake. If zero, 5s.
	TLSTimeout time.Duration `yaml:"tls_timeout"`
	// ResponseHeaderTimeout bounds the wait for response headers once the
	// request is written. If zero, 30s.
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	// TotalTimeout bounds the whole exchange, retries and reading the
	// response body included. If zero, 60s.
	TotalTimeout time.Duration `yaml:"total_timeout"`

	// MaxConcurrent caps the group's requests in flight (the bulkhead): a
	// request beyond it fails at once with ErrOverloaded. A request is in
	// flight until its response body is read to the end or closed. If zero, 1024.
	MaxConcurrent int `yaml:"max_concurrent"`
	// WarmConns is how many connections per server Start dials and
	// handshakes, and the keep-warm loop keeps open. An HTTP/2 server needs
	// one (it multiplexes), so only HTTP/1.1 servers get more. If zero, 2.
	WarmConns int `yaml:"warm_conns"`
	// MaxIdleConnsPerServer caps idle keep-alive connections per server. If zero, 256.
	MaxIdleConnsPerServer int `yaml:"max_idle_conns_per_server"`
	// StreamWindow is the HTTP/2 receive window per response: what a
	// server may send ahead of what the caller has read. A caller that
	// stops reading (a client that does not read a pass-through response)
	// holds at most this much. If zero, 1 MiB.
	StreamWindow int `yaml:"stream_window"`
	// ConnWindow is the HTTP/2 receive window per connection, shared by
	// its responses: the most one connection to a server can buffer. If
	// zero, 16 MiB (Go's own default is 1 GiB).
	ConnWindow int `yaml:"conn_window"`
	// KeepAlive is how long an HTTP/2 connection may sit idle before it is
	// PINGed (a PING unanswered within 5s closes it), the TCP keep-alive
	// period, and how often the pool re-warms WarmConns connections per
	// server. If zero, 15s.
	KeepAlive time.Duration `yaml:"keep_alive"`

	// HealthPath is the path of active health checks: any answer below 500
	// is healthy (an origin without that path is still up); an error,
	// timeout or 5xx takes the server out of rotation until a check passes.
	// If empty, "/healthz"; "-" disables active checks (servers are then in
	// rotation unless their breaker is open).
	HealthPath string `yaml:"health_path"`
	// HealthInterval is the period of health checks, and of warm-up
	// attempts for servers not reached yet. If zero, 2s.
	HealthInterval time.Duration `yaml:"health_interval"`
	// HealthTimeout bounds one health check; a check that may need a new
	// connection also gets ConnectTimeout and TLSTimeout. If zero, 1s.
	HealthTimeout time.Duration `yaml:"health_timeout"`

	// FailThreshold is how many consecutive connect failures (a refused or
	// timed-out dial, a failed or timed-out TLS handshake) eject a server
	// (passive ejection: its breaker opens). No request path can cause those,
	// so they are counted one by one. If zero, 5.
	FailThreshold int `yaml:"fail_threshold"`
	// FailureRate ejects a server when, over the last FailureWindow, more
	// than this fraction of its evidence is failures, with at least
	// FailureMinRequests pieces of evidence. A piece of evidence is a request
	// answered with anything but 500, 502, 503 or 504; a connect failure; or
	// a path that failed: answered 500, 502, 503 or 504, timed out or broke
	// off after the request was sent. A path's failures count once per window
	// (its host and path, the query left out), so that a client repeating a
	// URL the origin fails on, on purpose or not, adds one failure while
	// every success counts: it takes failures on many paths, and few
	// successes, to eject a server. If zero, 0.5; 1 turns the rule off.
	FailureRate float64 `yaml:"failure_rate"`
	// FailureWindow is how far back FailureRate looks, at a resolution of a
	// tenth of it. If zero, 10s.
	FailureWindow time.Duration `yaml:"failure_window"`
	// FailureMinRequests is the least evidence in FailureWindow that
	// FailureRate judges. If zero, 20.
	FailureMinRequests int `yaml:"failure_min_requests"`
	// MaxEjectionPercent caps the servers of the group ejected at once, as a
	// percentage of the group rounded down: a breaker that would open beyond
	// it stays closed. At the default, one of two or three servers may be
	// ejected, two of four, and a group of one server never is: with no other
	// server to take its requests, ejecting it would help nothing (requests
	// would go to it anyway, routed in panic: see the package doc), so only
	// active health checks take a lone server out of rotation. Health checks are not
	// capped: they are the origin's own word, not inferred from clients'
	// requests. If zero, 50; at most 100.
	MaxEjectionPercent int `yaml:"max_ejection_percent"`
	// OpenDuration is how long an ejected server's breaker stays open before
	// it lets exactly one trial request through (half-open), or until a
	// passing health check, whichever comes first. If zero, 5s.
	OpenDuration time.Duration `yaml:"open_duration"`

	// Retries is how many more servers an idempotent request may try after
	// one that failed before anything was sent (connect or TLS failure), or
	// answered 500, 502, 503 or 504. A request that timed out or broke off
	// after it was sent is not retried: the origin may still be working on it.
	// The last answer or error is what RoundTrip returns. If zero, 1;
	// negative: none. Apart from these, a request that failed on a pooled
	// connection the origin had closed, before any of it was written (or
	// an idempotent one, before any answer), is sent once more to the same
	// server on a new connection: see the package doc.
	Retries int `yaml:"retries"`
	// RetryBudget caps retries at this fraction of recent requests, plus a
	// floor of 10 per second, so retries cannot multiply the load on a
	// failing origin. If zero, 0.2.
	RetryBudget float64 `yaml:"retry_budget"`

	// Logger receives health and breaker changes. If nil, slog.Default().
	Logger *slog.Logger `yaml:"-"`
	// Now is the clock of breakers, their failure windows and the retry
	// budget (a test seam). If nil, time.Now.
	Now func() time.Time `yaml:"-"`
}

// Balancer names.
const (
	RoundRobin       = "round_robin"
	LeastOutstanding = "least_outstanding"
	Hash             = "hash"
)

// noHealthChecks as HealthPath disables active checks.
const noHealthChecks = "-"

// DefaultConfig returns a Config with every default filled in and no servers.
func DefaultConfig() Config {
	var c Config
	c.fill()
	return c
}

// fill replaces zero values with defaults.
func (c *Config) fill() {
	str := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	dur := func(p *time.Duration, v time.Duration) {
		if *p == 0 {
			*p = v
		}
	}
	num := func(p *int, v int) {
		if *p == 0 {
			*p = v
		}
	}
	str(&c.Name, "upstream")
	str(&c.Balancer, RoundRobin)
	dur(&c.ConnectTimeout, 5*time.Second)
	dur(&c.TLSTimeout, 5*time.Second)
	dur(&c.ResponseHeaderTimeout, 30*time.Second)
	dur(&c.TotalTimeout, 60*time.Second)
	num(&c.MaxConcurrent, 1024)
	num(&c.WarmConns, 2)
	num(&c.MaxIdleConnsPerServer, 256)
	num(&c.StreamWindow, 1<<20)
	num(&c.ConnWindow, 16<<20)
	dur(&c.KeepAlive, 15*time.Second)
	str(&c.HealthPath, "/healthz")
	dur(&c.HealthInterval, 2*time.Second)
	dur(&c.HealthTimeout, time.Second)
	num(&c.FailThreshold, 5)
	if c.FailureRate == 0 {
		c.FailureRate = 0.5
	}
	dur(&c.FailureWindow, 10*time.Second)
	num(&c.FailureMinRequests, 20)
	num(&c.MaxEjectionPercent, 50)
	dur(&c.OpenDuration, 5*time.Second)
	num(&c.Retries, 1)
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

// serverKey is a server URL's identity: scheme and host.
func serverKey(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// weight is u's share (Weights), 1 when not given.
func (c Config) weight(u *url.URL) int {
	for raw, w := range c.Weights {
		if v, err := url.Parse(raw); err == nil && serverKey(v) == serverKey(u) {
			return w
		}
	}
	return 1
}

// Validate reports every problem at once, each naming its field as the PoP's
// YAML spells it.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if len(c.Servers) == 0 {
		add("servers: empty, want at least one origin URL such as https://origin.example:443")
	}
	seen := map[string]int{}
	for i, s := range c.Servers {
		u, err := url.Parse(s)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			add("servers[%d]: %q is not an http or https URL with a host, want e.g. https://origin.example:443", i, s)
		case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			add("servers[%d]: %q has a path, query or user, want scheme://host[:port] only", i, s)
		default:
			key := serverKey(u)
			if j, dup := seen[key]; dup {
				add("servers[%d]: %q repeats servers[%d]", i, s, j)
			}
			seen[key] = i
		}
	}
	positive := len(c.Servers) - len(c.Weights)
	for raw, w := range c.Weights {
		u, err := url.Parse(raw)
		if _, listed := seen[serverKey(u)]; err != nil || !listed {
			add("weights: %q is not one of servers, want a server's URL as listed there", raw)
		}
		if w < 0 || w > 100 {
			add("weights[%q]: %d, want 0 (a backup) to 100", raw, w)
		}
		if w > 0 {
			positive++
		}
	}
	if len(c.Servers) > 0 && positive <= 0 {
		add("weights: every server has weight 0, want at least one above 0 (0 is a backup)")
	}
	switch c.Balancer {
	case "", RoundRobin, LeastOutstanding, Hash:
	default:
		add("balancer: %q, want %s, %s or %s", c.Balancer, RoundRobin, LeastOutstanding, Hash)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"connect_timeout", c.ConnectTimeout}, {"tls_timeout", c.TLSTimeout},
		{"response_header_timeout", c.ResponseHeaderTimeout}, {"total_timeout", c.TotalTimeout},
		{"keep_alive", c.KeepAlive}, {"health_interval", c.HealthInterval},
		{"health_timeout", c.HealthTimeout}, {"open_duration", c.OpenDuration},
		{"failure_window", c.FailureWindow},
	} {
		if d.v < 0 {
			add("%s: %v, want a positive duration or 0 for the default", d.name, d.v)
		}
	}
	for _, n := range []struct {
		name string
		v    int
	}{
		{"max_concurrent", c.MaxConcurrent}, {"warm_conns", c.WarmConns},
		{"max_idle_conns_per_server", c.MaxIdleConnsPerServer}, {"fail_threshold", c.FailThreshold},
		{"failure_min_requests", c.FailureMinRequests},
	} {
		if n.v < 0 {
			add("%s: %d, want a positive number or 0 for the default", n.name, n.v)
		}
	}
	if c.FailureRate < 0 || c.FailureRate > 1 {
		add("failure_rate: %v, want a fraction of requests between 0 and 1 (1 turns the rule off)", c.FailureRate)
	}
	if c.MaxEjectionPercent < 0 || c.MaxEjectionPercent > 100 {
		add("max_ejection_percent: %d, want a percentage of the group's servers from 1 to 100, or 0 for the default", c.MaxEjectionPercent)
	}
	if c.RetryBudget < 0 || c.RetryBudget > 1 {
		add("retry_budget: %v, want a fraction of requests between 0 and 1", c.RetryBudget)
	}
	if p := c.HealthPath; p != "" && p != noHealthChecks && p[0] != '/' {
		add("health_path: %q, want a path starting with / (or - to disable checks)", p)
	}
	return errors.Join(errs...)
}
