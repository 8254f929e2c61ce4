package geodns

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"
)

// Config is the whole configuration of a GeoDNS server (YAML).
type Config struct {
	// Listen is the UDP and TCP address. Required.
	Listen string `yaml:"listen"`
	// Admin serves /healthz, /status and /metrics. If empty, none.
	Admin string `yaml:"admin"`
	// TTL of geo-routed answers, seconds. If zero, 20.
	TTL uint32 `yaml:"ttl"`
	// Answers is how many nearest healthy PoPs each geo answer lists. If zero, 1.
	Answers int `yaml:"answers"`

	Zones   []Zone  `yaml:"zones"`
	PoPs    []PoP   `yaml:"pops"`
	Locator Locator `yaml:"locator"`
	Forward Forward `yaml:"forward"`
	// RateLimit limits UDP responses per client prefix. If zero, 20 a
	// second per /24 or /56 with a burst of 100, every 2nd limited
	// response slipped (see RateLimit); responses_per_second: -1 turns it
	// off.
	RateLimit RateLimit `yaml:"rate_limit"`
	// Latency steers clients by the round trips the PoPs measure (see
	// Latency); on when any PoP has an rtt_url.
	Latency Latency `yaml:"latency"`

	// SlowUDP turns the UDP fast path off: every query is read and
	// answered by miekg/dns, one at a time. If false, a socket bound to
	// one address (not a wildcard) is read and written in batches and
	// plain queries are answered from precomputed answers (fast.go).
	SlowUDP bool `yaml:"slow_udp"`

	// UDPHold is how long a batch loop pauses, after answering a batch
	// that found at least holdMin queries waiting (and fewer than a
	// whole batch), before it reads the next one (Linux). Under load the
	// queries that come meanwhile are then read and answered together,
	// as a network card's interrupt moderation gathers packets: fewer
	// system calls and wakeups per query; a query that comes during a
	// pause waits at most this long more to be read. A loop that keeps
	// up, reading one query or a few at a time, never pauses. If zero,
	// 50µs; negative turns it off; at most 1ms. Like listen, it takes
	// effect when the server starts, not on a reload.
	UDPHold time.Duration `yaml:"udp_hold"`

	// Logger receives health transitions and reloads. If nil, slog.Default().
	Logger *slog.Logger `yaml:"-"`
}

// Zone is one authoritative zone.
type Zone struct {
	// Origin is the zone's name, such as "cdn.lab.". Required.
	Origin string `yaml:"origin"`
	// NS are the zone's name servers. At least one.
	NS []string `yaml:"ns"`
	// SOA fields; zero values take the defaults given.
	Mbox    string `yaml:"mbox"`    // if empty, hostmaster.<origin>
	Serial  uint32 `yaml:"serial"`  // if zero, 1
	Refresh uint32 `yaml:"refresh"` // if zero, 3600
	Retry   uint32 `yaml:"retry"`   // if zero, 600
	Expire  uint32 `yaml:"expire"`  // if zero, 86400
	MinTTL  uint32 `yaml:"minttl"`  // negative-caching TTL; if zero, 30
	// Records are static records in RFC 1035 text, relative to Origin.
	Records string `yaml:"records"`
	// File is an RFC 1035 zone file with more static records.
	File string `yaml:"file"`
	// Geo names are answered with the nearest healthy PoPs.
	Geo []GeoName `yaml:"geo"`
}

// GeoName is a name answered from a PoP list.
type GeoName struct {
	// Name, relative to the zone ("www") or absolute ("www.cdn.lab.").
	Name string `yaml:"name"`
	// PoPs names entries of Config.PoPs. If empty, all of them.
	PoPs []string `yaml:"pops"`
}

// PoP is a point of presence that geo names route to.
type PoP struct {
	Name string   `yaml:"name"`
	A    []string `yaml:"a"`
	AAAA []string `yaml:"aaaa"`
	// Region names an entry of Locator.Regions: clients located in it
	// prefer this PoP when distance cannot tell, and a PoP without Lat
	// and Lon of its own is placed at the region's coordinates.
	Region string `yaml:"region"`
	// Lat and Lon locate the PoP for great-circle distance. If both are
	// zero, the region's; a PoP with neither is refused.
	Lat float64 `yaml:"lat"`
	Lon float64 `yaml:"lon"`
	// Weight is the PoP's share of the answers among equally good PoPs
	// (equally near, or equally fast within latency.tolerance): PoPs of
	// weights 3 and 1 get 75% and 25% of them, as Route 53 weighted
	// records. If zero, 1.
	Weight int `yaml:"weight"`
	// HTTPSPort is the port the PoP serves HTTPS and HTTP/3 on, which
	// HTTPS records (RFC 9460) give clients as port=. If zero, 443, which
	// the records leave out (a client's default).
	HTTPSPort int   `yaml:"https_port"`
	Check     Check `yaml:"check"`
	// RTTURL is the PoP's table of measured client round trips (its admin
	// /rtt), pulled every latency.pull_interval. If empty, the PoP's
	// latency is unknown and geography decides for it.
	RTTURL string `yaml:"rtt_url"`
}

// Check is a PoP's active health check. Without URL or TCP the PoP is
// always healthy.
type Check struct {
	// URL is fetched (GET); a 2xx is healthy. TLS certificates are not
	// verified: the check asks "is it serving", not "is it trusted". A 2xx
	// with X-PoP-Degraded: 1 (a PoP's /readyz while its origin is down) is
	// healthy but degraded: a non-degraded PoP of the same region is
	// answered first, never one of another region (see the package doc).
	URL string `yaml:"url"`
	// TCP is dialled instead when URL is empty.
	TCP      string        `yaml:"tcp"`
	Interval time.Duration `yaml:"interval"` // if zero, 2s
	Timeout  time.Duration `yaml:"timeout"`  // if zero, 1s
	Rise     int           `yaml:"rise"`     // successes to become healthy; if zero, 2
	Fall     int           `yaml:"fall"`     // failures to become unhealthy; if zero, 2
}

// Locator says where clients are.
type Locator struct {
	// Networks map client prefixes to regions and/or coordinates; the
	// longest matching prefix wins.
	Networks []Network `yaml:"networks"`
	// Regions give each region's coordinates and, optionally, an explicit
	// PoP preference order that overrides distance.
	Regions map[string]Region `yaml:"regions"`
	// MMDB is a MaxMind-format city database, consulted when no network
	// matches.
	MMDB string `yaml:"mmdb"`
}

// Network is a client prefix.
type Network struct {
	Prefix string  `yaml:"prefix"`
	Region string  `yaml:"region"`
	Lat    float64 `yaml:"lat"`
	Lon    float64 `yaml:"lon"`
}

// Region is a named area.
type Region struct {
	Lat  float64  `yaml:"lat"`
	Lon  float64  `yaml:"lon"`
	PoPs []string `yaml:"pops"`
}

// Forward makes the server a resolver for names outside its zones.
type Forward struct {
	// Upstreams are resolvers (host:port) asked in order. If empty, names
	// outside the zones are REFUSED.
	Upstreams []string `yaml:"upstreams"`
	// Allow are the client networks that may use forwarding. If nil,
	// loopback and the private ranges.
	Allow []string `yaml:"allow"`
	// ResolvConf names a resolv.conf whose nameservers are added to
	// Upstreams at start (in a container, /etc/resolv.conf: the resolver
	// Docker gave it). If empty, none.
	ResolvConf string `yaml:"resolv_conf"`
	// Timeout per upstream query. If zero, 2s.
	Timeout time.Duration `yaml:"timeout"`
	// CacheSize is how many forwarded answers are kept for their TTL
	// (at most an hour). If zero, 4096; negative turns the cache off.
	CacheSize int `yaml:"cache_size"`
}

// ParseConfig decodes YAML strictly (unknown fields are errors naming the
// line) and validates it.
func ParseConfig(data []byte) (Config, error) {
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
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
	if c.Listen == "" {
		add("listen: empty, want host:port such as 127.0.0.1:5353")
	}
	if c.Answers < 0 {
		add("answers: %d, want 1 or more", c.Answers)
	}
	pops := map[string]bool{}
	for i, p := range c.PoPs {
		if p.Name == "" {
			add("pops[%d].name: empty", i)
		}
		if pops[p.Name] {
			add("pops[%d].name: %q is defined twice", i, p.Name)
		}
		pops[p.Name] = true
		if len(p.A) == 0 && len(p.AAAA) == 0 {
			add("pops[%d] (%s): no a or aaaa addresses", i, p.Name)
		}
		for j, a := range p.A {
			if ip, err := netip.ParseAddr(a); err != nil || !ip.Is4() {
				add("pops[%d].a[%d]: %q is not an IPv4 address", i, j, a)
			}
		}
		for j, a := range p.AAAA {
			if ip, err := netip.ParseAddr(a); err != nil || !ip.Is6() || ip.Is4In6() {
				add("pops[%d].aaaa[%d]: %q is not an IPv6 address", i, j, a)
			}
		}
		if p.Lat < -90 || p.Lat > 90 || p.Lon < -180 || p.Lon > 180 {
			add("pops[%d]: lat/lon %v,%v out of range", i, p.Lat, p.Lon)
		}
		if p.HTTPSPort < 0 || p.HTTPSPort > 65535 {
			add("pops[%d].https_port: %d, want 1-65535 (0 for 443)", i, p.HTTPSPort)
		}
		if _, _, ok := c.popLocation(p); !ok {
			r, defined := c.Locator.Regions[p.Region]
			switch {
			case p.Region == "":
				add("pops[%d] (%s): no location, want lat and lon, or a region with lat and lon under locator.regions", i, p.Name)
			case !defined:
				add("pops[%d].region: %q is not defined under locator.regions, and the PoP has no lat and lon of its own", i, p.Region)
			case r.Lat == 0 && r.Lon == 0:
				add("pops[%d].region: locator.regions.%s has no lat and lon, and the PoP has none of its own: set either", i, p.Region)
			}
		}
		if p.Check.URL != "" {
			if u, err := url.Parse(p.Check.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add("pops[%d].check.url: %q, want an http(s) URL", i, p.Check.URL)
			}
		}
		if p.RTTURL != "" {
			if u, err := url.Parse(p.RTTURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				add("pops[%d].rtt_url: %q, want an http(s) URL such as http://10.77.1.20:9901/rtt", i, p.RTTURL)
			}
		}
		if p.Weight < 0 {
			add("pops[%d].weight: %d, want 1 or more (0 for 1)", i, p.Weight)
		}
		if p.Check.Rise < 0 || p.Check.Fall < 0 || p.Check.Interval < 0 || p.Check.Timeout < 0 {
			add("pops[%d].check: negative values are not allowed", i)
		}
	}
	if len(c.Zones) == 0 {
		add("zones: empty, want at least one zone")
	}
	for i, z := range c.Zones {
		if _, ok := dns.IsDomainName(z.Origin); !ok || z.Origin == "" {
			add("zones[%d].origin: %q is not a domain name", i, z.Origin)
			continue
		}
		if len(z.NS) == 0 {
			add("zones[%d].ns: empty, want at least one name server", i)
		}
		if _, err := z.records(); err != nil {
			add("zones[%d]: %v", i, err)
		}
		for j, g := range z.Geo {
			if _, ok := dns.IsDomainName(g.Name); !ok || g.Name == "" {
				add("zones[%d].geo[%d].name: %q is not a domain name", i, j, g.Name)
			}
			for k, p := range g.PoPs {
				if !pops[p] {
					add("zones[%d].geo[%d].pops[%d]: %q is not defined under pops", i, j, k, p)
				}
			}
		}
	}
	for i, n := range c.Locator.Networks {
		if _, err := netip.ParsePrefix(n.Prefix); err != nil {
			add("locator.networks[%d].prefix: %q, want a prefix such as 10.77.1.0/24", i, n.Prefix)
		}
		if n.Region != "" {
			if _, ok := c.Locator.Regions[n.Region]; !ok {
				add("locator.networks[%d].region: %q is not defined under locator.regions", i, n.Region)
			}
		}
	}
	for name, r := range c.Locator.Regions {
		for k, p := range r.PoPs {
			if !pops[p] {
				add("locator.regions.%s.pops[%d]: %q is not defined under pops", name, k, p)
			}
		}
	}
	if r := c.RateLimit.ResponsesPerSecond; math.IsNaN(r) || math.IsInf(r, 0) {
		add("rate_limit.responses_per_second: %v, want a number (0 for the default 20, negative for no limit)", r)
	}
	if b := c.RateLimit.Burst; b < 0 {
		add("rate_limit.burst: %d, want 0 (five seconds' worth) or more", b)
	}
	if s := c.RateLimit.Slip; s < 0 {
		add("rate_limit.slip: %d, want 0 (every 2nd limited response) or more", s)
	}
	if c.UDPHold > maxUDPHold {
		add("udp_hold: %v, want at most %v (0 for the default %v, negative for none)", c.UDPHold, maxUDPHold, defaultUDPHold)
	}
	c.Latency.validate(add)
	for i, a := range c.Forward.Allow {
		if _, err := netip.ParsePrefix(a); err != nil {
			add("forward.allow[%d]: %q, want a prefix", i, a)
		}
	}
	for i, u := range c.Forward.Upstreams {
		if _, _, err := splitHostPort(u); err != nil {
			add("forward.upstreams[%d]: %q, want host:port", i, u)
		}
	}
	return errors.Join(errs...)
}

// popLocation is where p is for distance: its own coordinates, else its
// region's. ok is false when it has neither (0,0 counts as unset, as for
// networks and regions).
func (c *Config) popLocation(p PoP) (lat, lon float64, ok bool) {
	if p.Lat != 0 || p.Lon != 0 {
		return p.Lat, p.Lon, true
	}
	if r, found := c.Locator.Regions[p.Region]; found && (r.Lat != 0 || r.Lon != 0) {
		return r.Lat, r.Lon, true
	}
	return 0, 0, false
}

func splitHostPort(s string) (string, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return "", "", fmt.Errorf("missing port")
	}
	return s[:i], s[i+1:], nil
}

// records parses the zone's static records (inline and file).
func (z Zone) records() ([]dns.RR, error) {
	origin := dns.Fqdn(z.Origin)
	var out []dns.RR
	parse := func(r io.Reader, file string) error {
		zp := dns.NewZoneParser(r, origin, file)
		zp.SetDefaultTTL(300)
		for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
			if !dns.IsSubDomain(origin, rr.Header().Name) {
				return fmt.Errorf("record %s is outside the zone %s", rr.Header().Name, origin)
			}
			out = append(out, rr)
		}
		return zp.Err()
	}
	if z.Records != "" {
		if err := parse(strings.NewReader(z.Records), "records"); err != nil {
			return nil, fmt.Errorf("records: %w", err)
		}
	}
	if z.File != "" {
		f, err := os.Open(z.File)
		if err != nil {
			return nil, fmt.Errorf("file: %w", err)
		}
		defer f.Close()
		if err := parse(f, z.File); err != nil {
			return nil, fmt.Errorf("file: %w", err)
		}
	}
	return out, nil
}
