package geodns

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// forwarder resolves names outside the zones through upstream resolvers:
// UDP first, TCP when the answer comes back truncated, the next upstream
// on error, SERVFAIL when none answers (an unreachable upstream fails at
// once; a silent one after the timeout). Good answers are kept in a small
// cache for their TTL.
type forwarder struct {
	upstreams []string
	udp, tcp  *dns.Client
	cache     *answerCache // nil: no caching
}

// newForwarder builds the forwarder; an upstream equal to self (the
// server's own listen address) is left out, so a resolv.conf naming this
// server cannot make it ask itself in a loop.
func newForwarder(cfg Forward, self string) (*forwarder, error) {
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	ups := append([]string(nil), cfg.Upstreams...)
	if cfg.ResolvConf != "" {
		more, err := readResolvConf(cfg.ResolvConf)
		if err != nil {
			return nil, fmt.Errorf("forward.resolv_conf: %w", err)
		}
		ups = append(ups, more...)
	}
	ups = slices.DeleteFunc(ups, func(u string) bool { return u == self })
	f := &forwarder{
		upstreams: ups,
		udp:       &dns.Client{Net: "udp", Timeout: timeout, UDPSize: dns.DefaultMsgSize},
		tcp:       &dns.Client{Net: "tcp", Timeout: timeout},
	}
	switch {
	case cfg.CacheSize == 0:
		f.cache = newAnswerCache(4096)
	case cfg.CacheSize > 0:
		f.cache = newAnswerCache(cfg.CacheSize)
	}
	return f, nil
}

// readResolvConf returns the nameservers of a resolv.conf as host:53.
func readResolvConf(path string) ([]string, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var out []string
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, net.JoinHostPort(a.String(), "53"))
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no nameserver line", path)
	}
	return out, sc.Err()
}

// exchange answers req from the cache or the upstreams; nil when no
// upstream answered.
func (f *forwarder) exchange(req *dns.Msg) *dns.Msg {
	key := cacheKey(req)
	if f.cache != nil {
		if m := f.cache.get(key, time.Now()); m != nil {
			m.Id = req.Id
			return m
		}
	}
	for _, up := range f.upstreams {
		resp, _, err := f.udp.Exchange(req, up)
		if err == nil && resp != nil && resp.Truncated {
			resp, _, err = f.tcp.Exchange(req, up)
		}
		if err != nil || resp == nil {
			continue
		}
		resp.Id = req.Id
		if f.cache != nil {
			f.cache.put(key, resp, time.Now())
		}
		return resp
	}
	return nil
}

func cacheKey(req *dns.Msg) string {
	q := req.Question[0]
	do := false
	if opt := req.IsEdns0(); opt != nil {
		do = opt.Do()
	}
	return fmt.Sprintf("%s/%d/%d/%t/%t", strings.ToLower(q.Name), q.Qtype, q.Qclass, do, req.CheckingDisabled)
}

// answerCache holds packed answers until their smallest TTL runs out; at
// most max entries (a full cache drops an arbitrary one).
type answerCache struct {
	max int
	mu  sync.Mutex // guards m
	m   map[string]cached
}

type cached struct {
	msg     []byte
	stored  time.Time
	expires time.Time
}

const (
	maxCacheTTL = time.Hour
	negCacheTTL = 30 * time.Second // an NXDOMAIN or NODATA without SOA
)

func newAnswerCache(max int) *answerCache {
	return &answerCache{max: max, m: map[string]cached{}}
}

// put stores good answers (NOERROR, NXDOMAIN; never truncated ones) for
// the least TTL of their records, capped at an hour.
func (c *answerCache) put(key string, m *dns.Msg, now time.Time) {
	if m.Truncated || (m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError) {
		return
	}
	ttl := time.Duration(-1)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns} {
		for _, rr := range sec {
			if d := time.Duration(rr.Header().Ttl) * time.Second; ttl < 0 || d < ttl {
				ttl = d
			}
		}
	}
	switch {
	case ttl < 0:
		ttl = negCacheTTL
	case ttl == 0:
		return
	case ttl > maxCacheTTL:
		ttl = maxCacheTTL
	}
	b, err := m.Pack()
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[key] = cached{msg: b, stored: now, expires: now.Add(ttl)}
}

// get returns a copy with every TTL lowered by the time spent in the cache.
func (c *answerCache) get(key string, now time.Time) *dns.Msg {
	c.mu.Lock()
	e, ok := c.m[key]
	if ok && !now.Before(e.expires) {
		delete(c.m, key)
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return nil
	}
	m := new(dns.Msg)
	if err := m.Unpack(e.msg); err != nil {
		return nil
	}
	age := uint32(now.Sub(e.stored) / time.Second)
	for _, sec := range [][]dns.RR{m.Answer, m.Ns, m.Extra} {
		for _, rr := range sec {
			if h := rr.Header(); h.Rrtype != dns.TypeOPT {
				h.Ttl -= min(age, h.Ttl)
			}
		}
	}
	return m
}
