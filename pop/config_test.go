package pop

import (
	"fmt"
	"strings"
	"testing"
)

const goodConfig = `
name: pop-eu
listen: 127.0.0.1:8443
admin: 127.0.0.1:9901
tls:
  ca_dir: /tmp/ca
  ticket_rotation: 1h
sites:
  - name: www
    hosts: [www.cdn.lab, "*.cdn.lab"]
    upstream: origin
upstreams:
  origin:
    servers: [https://10.77.1.10:9443, https://10.77.1.11:9443]
    balancer: hash
    response_header_timeout: 5s
    max_idle_conns_per_server: 32
    ca_file: /tmp/ca/root.pem
limits:
  rate_limit: 100
cache:
  slice_bytes: 2097152
  compress_min_bytes: -1
client_rtt:
  max_prefixes: 100
`

func TestParseConfig(t *testing.T) {
	cfg, err := ParseConfig([]byte(goodConfig))
	if err != nil {
		t.Fatalf("ParseConfig(good) = %v", err)
	}
	if cfg.Name != "pop-eu" || cfg.Upstreams["origin"].Balancer != "hash" || cfg.Limits.MaxHeaderBytes != 32<<10 {
		t.Errorf("ParseConfig(good) = %+v, want fields from the file over defaults", cfg)
	}
	if cfg.Cache.SliceBytes != 2<<20 || cfg.Cache.CompressMinBytes != -1 {
		t.Errorf("cache.slice_bytes %d, compress_min_bytes %d; want 2097152 and -1", cfg.Cache.SliceBytes, cfg.Cache.CompressMinBytes)
	}
	if cfg.ClientRTT.MaxPrefixes != 100 {
		t.Errorf("client_rtt.max_prefixes %d, want 100", cfg.ClientRTT.MaxPrefixes)
	}
	// Every field of upstream.Config is settable: the group's config is
	// that type itself, embedded with its YAML names.
	if u := cfg.Upstreams["origin"]; u.ResponseHeaderTimeout.String() != "5s" || u.MaxIdleConnsPerServer != 32 || u.CAFile != "/tmp/ca/root.pem" {
		t.Errorf("upstreams.origin = %+v, want response_header_timeout 5s, max_idle_conns_per_server 32, ca_file /tmp/ca/root.pem", u)
	}
}

func TestParseConfigErrorsNameTheField(t *testing.T) {
	tests := []struct {
		name, edit, want string
	}{
		{"unknown field", "listen: 127.0.0.1:8443\nlisten_adress: x\n", "listen_adress"},
		{"bad listen", strings.Replace(goodConfig, "listen: 127.0.0.1:8443", "listen: nowhere", 1), "listen: \"nowhere\""},
		{"missing upstream", strings.Replace(goodConfig, "upstream: origin", "upstream: orign", 1), "sites[0].upstream: \"orign\" is not defined"},
		{"bad origin URL", strings.Replace(goodConfig, "https://10.77.1.11:9443", "ftp://x", 1), "upstreams.origin.servers[1]"},
		{"origin with path", strings.Replace(goodConfig, "https://10.77.1.11:9443", "https://x/path", 1), "upstreams.origin.servers[1]"},
		{"bad balancer", strings.Replace(goodConfig, "balancer: hash", "balancer: random", 1), "upstreams.origin.balancer"},
		{"bad host", strings.Replace(goodConfig, `"*.cdn.lab"`, `"a.*.lab"`, 1), "sites[0].hosts[1]"},
		{"bad duration", strings.Replace(goodConfig, "5s", "five", 1), "line"},
		{"no sites", "listen: 127.0.0.1:1\ntls: {ca_dir: /x}\n", "sites: empty"},
		{"no cert source", strings.Replace(goodConfig, "ca_dir: /tmp/ca", "allow_tls12: false", 1), "tls: no certificate source"},
		{"half a key pair", strings.Replace(goodConfig, "ca_dir: /tmp/ca", "cert_file: c.pem", 1), "tls.cert_file, tls.key_file"},
		{"missing parent", strings.Replace(goodConfig, "upstream: origin", "upstream: origin\n    parent: shield", 1), "sites[0].parent: \"shield\" is not defined"},
		{"parent is the upstream", strings.Replace(goodConfig, "upstream: origin", "upstream: origin\n    parent: origin", 1), "sites[0].parent: \"origin\" is also the site's upstream"},
		{"bad cdn", "cdn: \"edge cdn\"\n" + goodConfig, "cdn: \"edge cdn\", want a token"},
		{"bad name", strings.Replace(goodConfig, "name: pop-eu", "name: \"pop;eu\"", 1), "name: \"pop;eu\", want a token"},
		{"bad weight", strings.Replace(goodConfig, "balancer: hash", "balancer: hash\n    weights: {\"https://10.77.1.11:9443\": 500}", 1), "weights[\"https://10.77.1.11:9443\"]: 500"},
		{"bad peer", strings.Replace(goodConfig, "rate_limit: ", "peers: [10.77.2.20, pop-eu]\n  rate_limit: ", 1), `limits.peers: [1]: "pop-eu", want an IP address or a CIDR prefix`},
		{"negative client_rtt.max_prefixes", strings.Replace(goodConfig, "max_prefixes: 100", "max_prefixes: -1", 1), "client_rtt.max_prefixes: -1, want 0 (default, 4096) or more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tt.edit))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseConfig = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.Sites = []Site{{Upstream: "nope"}}
	err := c.Validate()
	for _, want := range []string{"listen: empty", "tls: no certificate source", "sites[0].hosts: empty", "sites[0].upstream"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to contain %q", err, want)
		}
	}
}

// TestFleetConfig: the control plane's address and credentials are
// checked up front, the credentials taken from fleet.user/password or
// from the URL.
func TestFleetConfig(t *testing.T) {
	for _, tt := range []struct {
		fc   FleetConfig
		want string // in the error; empty: valid
	}{
		{FleetConfig{}, ""},
		{FleetConfig{URL: "nats://10.77.0.5:4222", User: "pop", Password: "pw"}, ""},
		{FleetConfig{URL: "nats://pop:pw@10.77.0.5:4222"}, ""},
		{FleetConfig{URL: "nats://10.77.0.5:4222"}, "fleet.user, fleet.password: required"},
		{FleetConfig{URL: "http://10.77.0.5:4222", User: "u", Password: "p"}, `fleet.url: "http://10.77.0.5:4222", want nats://host:port`},
		{FleetConfig{URL: "nats://a:1,nats://:2", User: "u", Password: "p"}, `fleet.url: "nats://:2"`},
		{FleetConfig{URL: "nats://u:p@a:1", AckWait: -1}, "fleet.max_offline, fleet.ack_wait"},
	} {
		var errs []string
		tt.fc.validate(func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) })
		got := strings.Join(errs, "; ")
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("%+v: %q, want %q", tt.fc, got, tt.want)
		}
	}
	urls, user, pw, err := FleetConfig{URL: "nats://pop:s3@10.77.0.5:4222, nats://10.77.0.6:4222"}.split()
	if err != nil || strings.Join(urls, ",") != "nats://10.77.0.5:4222,nats://10.77.0.6:4222" || user != "pop" || pw != "s3" {
		t.Errorf("split = %v %q %q %v, want the URLs without credentials and pop/s3", urls, user, pw, err)
	}
}

func TestRouter(t *testing.T) {
	rt := newRouter()
	www, wild, ip := &site{name: "www"}, &site{name: "wild"}, &site{name: "ip"}
	rt.add("www.cdn.lab", www)
	rt.add("*.cdn.lab", wild)
	rt.add("10.77.1.20", ip)
	rt.add("::1", ip)
	tests := []struct {
		host string
		want *site
	}{
		{"www.cdn.lab", www},
		{"WWW.CDN.LAB.", www},
		{"www.cdn.lab:8443", www},
		{"pop-eu.cdn.lab", wild},
		{"a.b.cdn.lab", nil},
		{"cdn.lab", nil},
		{"10.77.1.20:443", ip},
		{"[::1]:8443", ip},
		{"::1", ip},
		{"evil.example", nil},
		{"", nil},
		{"www.cdn.lab.evil.example", nil},
	}
	for _, tt := range tests {
		if got := rt.lookup(tt.host); got != tt.want {
			t.Errorf("lookup(%q) = %v, want %v", tt.host, got, tt.want)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte("sites: [{hosts: ['*.*'], upstream: x}]"))
	f.Add([]byte("upstreams: {a: {servers: ['http://[::1']}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		// A config that parses must validate again and route its own hosts.
		if err := cfg.Validate(); err != nil {
			t.Fatalf("parsed config fails Validate: %v", err)
		}
		rt := newRouter()
		for i, s := range cfg.Sites {
			st := &site{name: s.Name}
			for _, h := range cfg.Sites[i].Hosts {
				rt.add(h, st)
			}
			for _, h := range s.Hosts {
				if !strings.HasPrefix(h, "*.") && rt.lookup(h) != st {
					t.Fatalf("host %q of site %d does not route to it", h, i)
				}
			}
		}
	})
}

func FuzzRouteHost(f *testing.F) {
	for _, s := range []string{"www.cdn.lab", "[::1]:80", "a:b:c", "WWW.cdn.LAB.:1", "[", "]:", "x.cdn.lab"} {
		f.Add(s)
	}
	rt := newRouter()
	only := &site{name: "only"}
	rt.add("www.cdn.lab", only)
	rt.add("*.cdn.lab", only)
	f.Fuzz(func(t *testing.T, host string) {
		got := rt.lookup(host)
		if got == nil {
			return
		}
		// Anything routed must canonicalise to www.cdn.lab or one label
		// under cdn.lab: no other host may reach the origin.
		h := canonicalHost(host)
		first, rest, _ := strings.Cut(h, ".")
		if h != "www.cdn.lab" && (rest != "cdn.lab" || first == "" || strings.ContainsAny(first, ":[]")) {
			t.Fatalf("lookup(%q) routed canonical host %q", host, h)
		}
	})
}
