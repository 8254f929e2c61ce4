package pop

import (
	"net"
	"net/http"
	"strings"
)

// router maps a request's host to its site. Exact names win over wildcards;
// a wildcard "*.example.com" matches exactly one extra leading label.
type router struct {
	exact    map[string]*site
	wildcard map[string]*site // key: the suffix after "*."
}

func newRouter() *router {
	return &router{exact: map[string]*site{}, wildcard: map[string]*site{}}
}

// add registers a validated host pattern.
func (rt *router) add(pattern string, s *site) {
	n, _ := normalizeHostPattern(pattern)
	if suffix, ok := strings.CutPrefix(n, "*."); ok {
		rt.wildcard[suffix] = s
		return
	}
	rt.exact[n] = s
}

// lookup returns the site for a Host header or SNI value, or nil.
func (rt *router) lookup(host string) *site {
	h := canonicalHost(host)
	if h == "" {
		return nil
	}
	if s := rt.exact[h]; s != nil {
		return s
	}
	if first, suffix, ok := strings.Cut(h, "."); ok && first != "" && !strings.ContainsAny(first, ":[]") {
		return rt.wildcard[suffix]
	}
	return nil
}

// canonicalHost strips a port, brackets and a trailing dot and lowercases.
// It allocates only when the host is not already canonical.
func canonicalHost(host string) string {
	if host == "" {
		return ""
	}
	if host[0] == '[' {
		if i := strings.IndexByte(host, ']'); i > 0 {
			host = host[1:i]
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 && strings.IndexByte(host, ':') == i {
		host = host[:i]
	}
	host = strings.TrimSuffix(host, ".")
	for i := 0; i < len(host); i++ {
		if c := host[i]; c >= 'A' && c <= 'Z' {
			host = strings.ToLower(host)
			break
		}
	}
	if strings.IndexByte(host, ':') >= 0 { // IPv6 without brackets
		if ip := net.ParseIP(host); ip != nil {
			return ip.String()
		}
		return ""
	}
	return host
}

// route picks the site for r. It refuses a request whose TLS server name
// belongs to a different site than its Host (domain fronting), because the
// certificate the client checked was not the Host's.
func (rt *router) route(r *http.Request) (*site, bool) {
	s := rt.lookup(r.Host)
	if s == nil {
		return nil, false
	}
	if r.TLS != nil && r.TLS.ServerName != "" {
		if sni := rt.lookup(r.TLS.ServerName); sni != nil && sni != s {
			return nil, false
		}
	}
	return s, true
}
