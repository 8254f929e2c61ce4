package pop

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/clientrtt"
	"github.com/edgecdn/cdn/pop/upstream"
)

// Config is the whole configuration of a PoP. The YAML form uses the yaml
// tags; ParseConfig decodes it strictly (unknown fields are errors).
type Config struct {
	// Name identifies this PoP in Via, X-Served-By, Cache-Status and
	// CDN-Loop. If empty, "pop".
	Name string `yaml:"name"`
	// CDN identifies the CDN this PoP belongs to in CDN-Loop (RFC 8586):
	// every request the PoP sends upstream carries "CDN; pop=NAME". A
	// request that already carries this CDN's id came from another PoP
	// of it (a child of a parent tier) and is never sent to a parent;
	// one that already passed this PoP, or this CDN twice, is a loop and
	// gets 508. If empty, "edgecdn".
	CDN string `yaml:"cdn"`
	// Listen is the TCP address for TLS (h1, h2) and the UDP address for
	// QUIC (h3). Required.
	Listen string `yaml:"listen"`
	// HTTP is an optional plain-HTTP listener. It serves the sites and, with
	// ACME, answers HTTP-01 challenges. If empty, none.
	HTTP string `yaml:"http"`
	// Admin is the address of /livez, /readyz and /metrics. If empty, none.
	// It should stay on loopback or a management network.
	Admin string `yaml:"admin"`
	// DisableFastPath serves HTTP/1.1 and HTTP/2 through net/http instead
	// of the PoP's own loop and HTTP/2 server, and HTTP/3 cache hits
	// through quic-go's response writer instead of a precomputed header
	// block written to the stream (for comparison).
	DisableFastPath bool `yaml:"disable_fast_path"`
	// Pprof serves Go's profiles under /debug/pprof/ on the admin listener.
	Pprof bool `yaml:"pprof"`
	// DisableHTTP3 turns the QUIC listener (and Alt-Svc) off.
	DisableHTTP3 bool `yaml:"disable_http3"`
	// AltSvcMaxAge is the ma= of the Alt-Svc header. If zero, 24h.
	AltSvcMaxAge time.Duration `yaml:"alt_svc_max_age"`

	TLS       TLSConfig                 `yaml:"tls"`
	Sites     []Site                    `yaml:"sites"`
	Upstreams map[string]UpstreamConfig `yaml:"upstreams"`
	Limits    Limits                    `yaml:"limits"`
	Cache     CacheConfig               `yaml:"cache"`
	// ClientRTT bounds the table of round-trip times to client prefixes
	// that the admin listener serves on /rtt (client_rtt.max_prefixes;
	// package clientrtt documents its fields and defaults).
	ClientRTT clientrtt.Config `yaml:"client_rtt"`
	// Fleet joins the PoP to the fleet's control plane (global purge).
	// If fleet.url is empty, the PoP is alone.
	Fleet FleetConfig `yaml:"fleet"`

	// AccessLog is where the access log goes, one line of JSON per
	// request (package accesslog documents the fields): a file, created
	// if missing and appended to, or "-" for standard output. If empty,
	// no file; the admin listener's GET /logs streams the lines anyway.
	AccessLog string `yaml:"access_log"`
	// AccessLogBufferBytes bounds the lines waiting for the access_log
	// file, and those waiting for each GET /logs follower: beyond it,
	// lines for the file are dropped (pop_access_log_dropped_total: the
	// disk is too slow) and a follower is dropped (its stream ends). If
	// zero, 4 MiB.
	AccessLogBufferBytes int `yaml:"access_log_buffer_bytes"`
	// AccessLogWriter, if not nil, receives the access log instead of
	// standard output when AccessLog is "-" or empty (for programs that
	// embed a PoP, and tests).
	AccessLogWriter io.Writer `yaml:"-"`

	// DrainDelay is how long the PoP reports not ready before it stops
	// accepting, so that GeoDNS and load balancers move traffic away first.
	// If zero, no delay.
	DrainDelay time.Duration `yaml:"drain_delay"`
	// DrainTimeout bounds the graceful shutdown after the delay: in-flight
	// requests get this long to finish. If zero, 25s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`

	// Logger receives request-independent events. If nil, slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// TLSConfig says where certificates and ticket keys come from. Exactly one
// certificate source is used: cert_file/key_file, then acme, then ca_dir.
type TLSConfig struct {
	// CADir is a lab CA directory; the PoP issues itself a certificate for
	// its site hosts, its listen address and localhost.
	CADir string `yaml:"ca_dir"`
	// CertFile and KeyFile are PEM files, reloaded when they change.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ACME gets certificates from an ACME CA.
	ACME *ACMEConfig `yaml:"acme"`
	// TicketKeyFile holds the secret shared by every PoP of these names
	// (hex, base64 or raw, at least 32 bytes). Session tickets, QUIC tokens
	// and stateless resets derive from it. If empty, a per-process secret.
	// In a fleet (fleet.url) the fleet's secret replaces it once the PoP
	// has joined: the file then only bridges the time until the fleet
	// answers.
	TicketKeyFile string `yaml:"ticket_key_file"`
	// TicketRotation is how long one ticket key issues tickets. If zero, 6h.
	TicketRotation time.Duration `yaml:"ticket_rotation"`
	// AllowTLS12 admits TLS 1.2 on TCP. If false, TLS 1.3 only.
	AllowTLS12 bool `yaml:"allow_tls12"`
	// MinValidity makes /readyz answer 503 when the served certificate
	// expires within this long (a renewal that keeps failing takes the PoP
	// out of rotation before clients see an expired certificate). If
	// zero, 24h; negative turns the check off.
	MinValidity time.Duration `yaml:"min_validity"`
}

// ACMEConfig configures ACME certificates.
type ACMEConfig struct {
	// Hosts are the names to obtain certificates for. Required.
	Hosts []string `yaml:"hosts"`
	// Dir is the autocert cache directory, shared by the PoPs. Required
	// unless the PoP is in a fleet (fleet.url), whose key-value store then
	// holds the cache and Dir is not used.
	Dir string `yaml:"dir"`
	// Email is the account contact. If empty, none.
	Email string `yaml:"email"`
	// DirectoryURL is the ACME directory. If empty, Let's Encrypt.
	DirectoryURL string `yaml:"directory_url"`
}

// Site maps host names to an upstream group.
type Site struct {
	// Name labels the site in the logs of its upstream errors. If empty,
	// its first host.
	Name string `yaml:"name"`
	// Hosts are exact names ("www.cdn.lab", "10.77.1.20") or wildcards of
	// one leading label ("*.cdn.lab"). At least one.
	Hosts []string `yaml:"hosts"`
	// Upstream names an entry of Config.Upstreams. Required.
	Upstream string `yaml:"upstream"`
	// Parent names an entry of Config.Upstreams whose servers are PoPs of
	// this CDN (a parent tier, the origin shield): a miss goes there
	// first, over its warm pool, and the parent answers from its cache
	// or fetches from the origin, coalescing its children's misses. A
	// request that came from another PoP (CDN-Loop) goes to Upstream
	// directly, so tiers never loop. When the parent group has no server
	// in rotation (its health checks, on PoPs' ReadyPath, failing), or
	// cannot be reached, the request goes to Upstream directly too, until
	// the parent is back. If empty, no parent.
	Parent string `yaml:"parent"`
	// CacheQuery is how the query string enters this site's cache key:
	// keep (if empty), sort (parameter order does not matter) or ignore.
	CacheQuery string `yaml:"cache_query"`
	// StripRequestHeaders are removed from every request before the PoP
	// looks at the cache or the origin: fields that make some origins
	// serve another URL, method or scheme than the one the cache keys on
	// (cache poisoning). If nil (absent), DefaultStripRequestHeaders; an
	// empty list strips nothing.
	StripRequestHeaders []string `yaml:"strip_request_headers"`
	// DenyPaths are path prefixes the PoP never forwards: a request whose
	// cleaned path is under one gets 404 at the edge. If nil (absent),
	// DefaultDenyPaths (the origin's own /_origin/ endpoints, which the
	// lab's tools read directly); an empty list denies nothing.
	DenyPaths []string `yaml:"deny_paths"`
	// SetCookie overrides cache.set_cookie for this site: strip, store or
	// pass. If empty, cache.set_cookie.
	SetCookie string `yaml:"set_cookie"`
}

// DefaultStripRequestHeaders are the override fields removed from requests
// unless a site says otherwise: URL rewrites (IIS, Symfony), method
// overrides, and forwarded port, scheme, server and host fields an origin
// may trust to build links or redirects.
var DefaultStripRequestHeaders = []string{
	"X-Original-URL", "X-Rewrite-URL",
	"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override",
	"X-Forwarded-Port", "X-Forwarded-Scheme", "X-Forwarded-Server", "X-Forwarded-Prefix",
	"X-Host", "X-Forwarded-SSL", "Front-End-Https",
}

// DefaultDenyPaths are the path prefixes a site never forwards unless it
// says otherwise.
var DefaultDenyPaths = []string{"/_origin/"}

// CacheConfig configures the PoP's shared cache (package cache).
type CacheConfig struct {
	// Disabled turns caching off: every request goes to the origin.
	Disabled bool `yaml:"disabled"`
	// MaxBytes is the memory budget. If zero, 256 MiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// MaxObjectBytes is the largest body stored. If zero, 8 MiB or a
	// sixteenth of MaxBytes, whichever is less.
	MaxObjectBytes int64 `yaml:"max_object_bytes"`
	// TargetedFields replace Cache-Control for this cache when present
	// (RFC 9213). If empty, CDN-Cache-Control then Surrogate-Control.
	TargetedFields []string `yaml:"targeted_fields"`
	// PurgeToken authorises purges on the admin listener (Authorization:
	// Bearer TOKEN). If empty, purging is off.
	PurgeToken string `yaml:"purge_token"`
	// MaxVariants caps the stored variants of one URL whose response
	// varies (Vary); the oldest is evicted. If zero, 64.
	MaxVariants int `yaml:"max_variants"`
	// MaxVaryValueBytes caps a request field a Vary names for the cache to
	// key on it; a longer one is passed to the origin uncached. If zero,
	// 1 KiB.
	MaxVaryValueBytes int `yaml:"max_vary_value_bytes"`
	// SetCookie is what happens to storable responses with Set-Cookie:
	// strip (if empty: stored without it, the fetching client still gets
	// it), store (RFC 9111: replayed to everyone) or pass (not stored).
	// A site's set_cookie overrides it.
	SetCookie string `yaml:"set_cookie"`
	// WriteStallTimeout bounds each write of a relayed body: a client that
	// stops reading for this long loses the response (and the origin
	// stream it held). If zero, 30s.
	WriteStallTimeout time.Duration `yaml:"write_stall_timeout"`
	// SliceBytes, when set (1048576 is a good size), makes the cache
	// fetch, store and serve objects larger than max_object_bytes, and
	// objects a Range request misses, in range slices of that size (see
	// package cache). If zero, no slicing: such objects stream through
	// uncached. Each response being sent then holds up to two slices, so
	// stalled clients of distinct large objects cost up to two slices
	// each beside the budget.
	SliceBytes int64 `yaml:"slice_bytes"`
	// CompressMinBytes is the smallest textual response the PoP
	// compresses at the edge (Brotli, zstd and gzip, stored beside the
	// identity body). If zero, 1 KiB; negative: no compression.
	CompressMinBytes int `yaml:"compress_min_bytes"`
}

// UpstreamConfig is an upstream group: upstream.Config, whose fields,
// YAML names and defaults are documented there (upstreams.NAME.servers,
// balancer, timeouts, health checks, breakers, retries, windows), and the
// file of the CA that verifies https servers.
type UpstreamConfig struct {
	upstream.Config `yaml:",inline"`
	// CAFile is a PEM file of CA certificates for https servers. If empty,
	// the system roots, plus the lab CA when the PoP's certificate comes
	// from it.
	CAFile string `yaml:"ca_file"`
}

// Limits are the hardening settings.
type Limits struct {
	// MaxHeaderBytes caps a request's header block; more gets 431. If zero, 32 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// ReadHeaderTimeout bounds reading a request's headers (slowloris). If zero, 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes idle client connections. If zero, 120s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxConcurrentStreams per HTTP/2 or HTTP/3 connection. If zero, 250.
	MaxConcurrentStreams int `yaml:"max_concurrent_streams"`
	// MaxBodyBytes caps a request body; more gets 413. If zero, 10 MiB.
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// RateLimit is requests per second per client IP. If zero, no limit.
	RateLimit float64 `yaml:"rate_limit"`
	// RateBurst is the bucket size of the rate limit. If zero, 2*RateLimit (at least 1).
	RateBurst int `yaml:"rate_burst"`
	// MaxInflight caps the requests the PoP serves at once, over every
	// listener; more get 503 with Retry-After at once, so a flood is shed
	// instead of queueing without bound. If zero, 4096; -1: no limit.
	MaxInflight int `yaml:"max_inflight"`
	// MaxConns caps open TCP client connections (TLS and plain HTTP);
	// more are closed as they arrive. If zero, 50000; -1: no limit.
	MaxConns int `yaml:"max_conns"`
	// MaxConnsPerAddr caps open TCP client connections from one address.
	// If zero, 512; -1: no limit.
	MaxConnsPerAddr int `yaml:"max_conns_per_addr"`
	// MaxQUICConns caps open QUIC connections; more are closed with
	// H3_EXCESSIVE_LOAD. If zero, 20000; -1: no limit.
	MaxQUICConns int `yaml:"max_quic_conns"`
	// MaxQUICConnsPerAddr caps open QUIC connections from one address. If
	// zero, 256; -1: no limit.
	MaxQUICConnsPerAddr int `yaml:"max_quic_conns_per_addr"`
	// Peers are the addresses (IPs or CIDR prefixes) of this CDN's other
	// PoPs: a parent tier's children, whose requests carry many clients'
	// each. They are held only to the totals (max_inflight, max_conns,
	// max_quic_conns), not to the limits per client address (rate_limit,
	// max_conns_per_addr, max_quic_conns_per_addr, max_upstream_per_addr),
	// which would otherwise refuse a busy child's misses. If empty, none.
	Peers []string `yaml:"peers"`
	// MaxUpstreamPerAddr caps the origin requests one client address has
	// in flight at once (its fair share of the upstream groups'
	// concurrency, however many connections it opens); more get 503 with
	// Retry-After. A coalesced fetch counts once, for the client that
	// started it. If zero, 64; -1: no limit.
	MaxUpstreamPerAddr int `yaml:"max_upstream_per_addr"`
}

// DefaultConfig returns a configuration with every default filled in and no
// sites: a caller adds at least Listen, a site and its upstream.
func DefaultConfig() Config {
	return Config{
		Name:         "pop",
		CDN:          "edgecdn",
		AltSvcMaxAge: 24 * time.Hour,
		DrainTimeout: 25 * time.Second,
		TLS:          TLSConfig{TicketRotation: 6 * time.Hour},
		Upstreams:    map[string]UpstreamConfig{},
		ClientRTT:    clientrtt.Config{MaxPrefixes: clientrtt.DefaultMaxPrefixes},
		Limits: Limits{
			MaxHeaderBytes:       32 << 10,
			ReadHeaderTimeout:    10 * time.Second,
			IdleTimeout:          120 * time.Second,
			MaxConcurrentStreams: 250,
			MaxBodyBytes:         10 << 20,
			MaxInflight:          4096,
			MaxConns:             50000,
			MaxConnsPerAddr:      512,
			MaxQUICConns:         20000,
			MaxQUICConnsPerAddr:  256,
			MaxUpstreamPerAddr:   64,
		},
	}
}

// ParseConfig decodes YAML over DefaultConfig and validates the result.
// Errors name the field (and line, for decoding errors).
func ParseConfig(data []byte) (Config, error) {
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) { // io.EOF: empty document, all defaults
		return Config{}, fmt.Errorf("config: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// LoadConfig reads and parses a YAML file.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Validate reports every problem at once, each naming its field.
func (c *Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	checkAddr := func(field, addr string, required bool) {
		if addr == "" {
			if required {
				add("%s: empty, want host:port such as 127.0.0.1:8443", field)
			}
			return
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			add("%s: %q, want host:port such as 127.0.0.1:8443", field, addr)
		}
	}
	c.Fleet.validate(add)
	checkAddr("listen", c.Listen, true)
	checkAddr("http", c.HTTP, false)
	checkAddr("admin", c.Admin, false)
	if c.TLS.CertFile != "" || c.TLS.KeyFile != "" {
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			add("tls.cert_file, tls.key_file: want both or neither")
		}
	}
	if a := c.TLS.ACME; a != nil {
		if len(a.Hosts) == 0 {
			add("tls.acme.hosts: empty, want the names to get certificates for")
		}
		if a.Dir == "" && c.Fleet.URL == "" {
			add("tls.acme.dir: empty, want a cache directory shared by the PoPs (or fleet.url)")
		}
	}
	if c.TLS.CertFile == "" && c.TLS.ACME == nil && c.TLS.CADir == "" {
		add("tls: no certificate source, want ca_dir, cert_file and key_file, or acme")
	}
	if c.TLS.TicketRotation < 0 {
		add("tls.ticket_rotation: %v, want a positive duration", c.TLS.TicketRotation)
	}
	if len(c.Sites) == 0 {
		add("sites: empty, want at least one site with hosts and an upstream")
	}
	seen := map[string]string{}
	for i, s := range c.Sites {
		if len(s.Hosts) == 0 {
			add("sites[%d].hosts: empty, want at least one host name", i)
		}
		for j, h := range s.Hosts {
			n, err := normalizeHostPattern(h)
			if err != nil {
				add("sites[%d].hosts[%d]: %v", i, j, err)
				continue
			}
			if prev, dup := seen[n]; dup {
				add("sites[%d].hosts[%d]: %q already belongs to %s", i, j, h, prev)
			}
			seen[n] = fmt.Sprintf("sites[%d]", i)
		}
		if _, err := cache.ParseQuery(s.CacheQuery); err != nil {
			add("sites[%d].cache_query: %v", i, err)
		}
		if _, err := cache.ParseCookiePolicy(s.SetCookie); err != nil {
			add("sites[%d].set_cookie: %v", i, err)
		}
		for j, d := range s.DenyPaths {
			if !strings.HasPrefix(d, "/") {
				add("sites[%d].deny_paths[%d]: %q, want a path prefix starting with /", i, j, d)
			}
		}
		for j, h := range s.StripRequestHeaders {
			if !validToken([]byte(h)) {
				add("sites[%d].strip_request_headers[%d]: %q, want a header field name", i, j, h)
			}
		}
		if s.Upstream == "" {
			add("sites[%d].upstream: empty, want one of %s", i, upstreamNames(c.Upstreams))
		} else if _, ok := c.Upstreams[s.Upstream]; !ok {
			add("sites[%d].upstream: %q is not defined, want one of %s", i, s.Upstream, upstreamNames(c.Upstreams))
		}
		if _, ok := c.Upstreams[s.Parent]; s.Parent != "" && !ok {
			add("sites[%d].parent: %q is not defined, want one of %s", i, s.Parent, upstreamNames(c.Upstreams))
		} else if s.Parent != "" && s.Parent == s.Upstream {
			add("sites[%d].parent: %q is also the site's upstream, want a group of parent PoPs", i, s.Parent)
		}
	}
	if c.Name != "" && !validToken([]byte(c.Name)) {
		add("name: %q, want a token (letters, digits, -, _ and the like; it goes into Via, Cache-Status and CDN-Loop)", c.Name)
	}
	if c.CDN != "" && !validToken([]byte(c.CDN)) {
		add("cdn: %q, want a token (letters, digits and -._~ and the like, no spaces, commas or semicolons)", c.CDN)
	}
	for _, name := range slices.Sorted(maps.Keys(c.Upstreams)) {
		// The group's own checks, each named as upstreams.NAME.field.
		if err := c.Upstreams[name].Config.Validate(); err != nil {
			for _, e := range unjoin(err) {
				add("upstreams.%s.%v", name, e)
			}
		}
	}
	l := c.Limits
	if _, err := parsePeers(l.Peers); err != nil {
		add("limits.peers: %v", err)
	}
	if l.MaxHeaderBytes < 0 || l.MaxConcurrentStreams < 0 || l.MaxBodyBytes < 0 || l.RateLimit < 0 || l.RateBurst < 0 || l.MaxInflight < -1 {
		add("limits: negative values are not allowed")
	}
	if c.Cache.MaxBytes < 0 || c.Cache.MaxObjectBytes < 0 {
		add("cache.max_bytes, cache.max_object_bytes: want 0 (default) or more")
	}
	if _, err := cache.ParseCookiePolicy(c.Cache.SetCookie); err != nil {
		add("cache.set_cookie: %v", err)
	}
	if c.Cache.MaxVariants < 0 || c.Cache.MaxVaryValueBytes < 0 {
		add("cache.max_variants, cache.max_vary_value_bytes: want 0 (default) or more")
	}
	if err := c.ClientRTT.Validate(); err != nil {
		add("client_rtt.%v", err)
	}
	if c.AccessLogBufferBytes < 0 {
		add("access_log_buffer_bytes: %d, want 0 (default: 4 MiB) or more", c.AccessLogBufferBytes)
	}
	if c.DrainDelay < 0 || c.DrainTimeout < 0 {
		add("drain_delay, drain_timeout: want durations of 0 or more")
	}
	return errors.Join(errs...)
}

func upstreamNames(m map[string]UpstreamConfig) string {
	if len(m) == 0 {
		return "the names under upstreams (none defined)"
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// unjoin returns the errors errors.Join joined, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// normalizeHostPattern lowercases a site host and checks its form: a DNS
// name, an IP address, or "*." followed by a DNS name.
func normalizeHostPattern(h string) (string, error) {
	n := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(h)), ".")
	if n == "" {
		return "", fmt.Errorf("empty host, want a name such as www.example.com")
	}
	if ip := net.ParseIP(strings.Trim(n, "[]")); ip != nil {
		return ip.String(), nil
	}
	rest := strings.TrimPrefix(n, "*.")
	if strings.Contains(rest, "*") {
		return "", fmt.Errorf("%q: a wildcard may only be the whole first label, as in *.example.com", h)
	}
	for _, label := range strings.Split(rest, ".") {
		if label == "" || len(label) > 63 {
			return "", fmt.Errorf("%q: empty or overlong label, want a host name", h)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("%q: character %q, want a host name", h, c)
			}
		}
	}
	return n, nil
}
