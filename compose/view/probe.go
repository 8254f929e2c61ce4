package view

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// prober measures what one region's clients see: a request a second, on a
// new connection (DNS through GeoDNS, TCP, TLS, the request), its time to
// first byte kept in a window of the last samples.
type prober struct {
	dial   func(ctx context.Context, network, addr string) (net.Conn, error)
	geo    string // GeoDNS, host:53
	subnet netip.Prefix
	cfg    Config

	mu      sync.Mutex // guards samples, next, errs, lastErr, lastPoP
	samples []float64  // ms, a ring of Window; NaN for a failed probe
	next    int
	lastErr string
	lastPoP string
}

func newProber(dial func(ctx context.Context, network, addr string) (net.Conn, error), geo netip.Addr, client netip.Addr, cfg Config, window int) *prober {
	subnet, _ := client.Prefix(24)
	return &prober{dial: dial, geo: net.JoinHostPort(geo.String(), "53"), subnet: subnet, cfg: cfg, samples: make([]float64, 0, window)}
}

// run probes every interval until ctx ends; a probe takes at most one
// interval and a half, so they never pile up.
func (p *prober) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, interval*3/2)
		ttfb, pop, err := p.once(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		p.record(ttfb, pop, err)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *prober) record(ttfb time.Duration, pop string, err error) {
	v := float64(ttfb) / float64(time.Millisecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		v, p.lastErr = math.NaN(), err.Error()
	} else {
		p.lastErr, p.lastPoP = "", pop
	}
	if len(p.samples) < cap(p.samples) {
		p.samples = append(p.samples, v)
	} else {
		p.samples[p.next] = v
	}
	p.next = (p.next + 1) % cap(p.samples)
}

// summary fills st with the window's percentiles (nearest rank).
func (p *prober) summary(st *RegionState) {
	p.mu.Lock()
	var ok []float64
	for _, v := range p.samples {
		if math.IsNaN(v) {
			st.ProbeErrors++
		} else {
			ok = append(ok, v)
		}
	}
	st.Probes, st.LastError, st.LastPoP = len(p.samples), p.lastErr, p.lastPoP
	p.mu.Unlock()
	if len(ok) == 0 {
		return
	}
	sort.Float64s(ok)
	rank := func(q float64) float64 { return ok[max(0, min(len(ok)-1, int(math.Ceil(q*float64(len(ok))))-1))] }
	st.TTFBp50ms, st.TTFBp99ms = rank(0.50), rank(0.99)
}

// answer asks GeoDNS for name's A records as the region's clients get
// them: from the client's host, with its /24 as the client subnet.
func (p *prober) answer(ctx context.Context, name string) ([]string, string) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
	opt.SetUDPSize(1232)
	opt.Option = append(opt.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: uint8(p.subnet.Bits()), Address: p.subnet.Addr().AsSlice()})
	m.Extra = append(m.Extra, opt)
	conn, err := p.dial(ctx, "udp", p.geo)
	if err != nil {
		return nil, err.Error()
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	c := &dns.Conn{Conn: conn}
	if err := c.WriteMsg(m); err != nil {
		return nil, err.Error()
	}
	r, err := c.ReadMsg()
	if err != nil {
		return nil, err.Error()
	}
	if r.Rcode != dns.RcodeSuccess {
		return nil, dns.RcodeToString[r.Rcode]
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out, ""
}

// once makes one request as a new visitor would: resolve, connect, TLS,
// GET; it returns the time to the first byte and the PoP that answered.
func (p *prober) once(ctx context.Context) (time.Duration, string, error) {
	start := time.Now()
	addrs, errText := p.answer(ctx, p.cfg.CDNName)
	if errText != "" || len(addrs) == 0 {
		return 0, "", fmt.Errorf("dns %s: %s (answer %v)", p.cfg.CDNName, errText, addrs)
	}
	target := net.JoinHostPort(addrs[0], "443")
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: p.cfg.RootCAs, ServerName: p.cfg.CDNName, SessionTicketsDisabled: true},
		ForceAttemptHTTP2: true, DisableKeepAlives: true, DisableCompression: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) { return p.dial(ctx, network, target) },
	}
	defer tr.CloseIdleConnections()
	var first time.Time
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotFirstResponseByte: func() { first = time.Now() },
	}), http.MethodGet, "https://"+p.cfg.CDNName+p.cfg.ProbePath, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, "", err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, "", errors.New(resp.Status)
	}
	return first.Sub(start), resp.Header.Get("X-Served-By"), nil
}
