package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// firstVisit resolves as a browser's first visit does and makes one cold
// request with the protocol DNS offers (see First and FirstHTTPS).
func (p *prober) firstVisit(ctx context.Context, r Result) (Result, error) {
	start := time.Now()
	addr, proto, err := p.resolveFirst(ctx)
	took := time.Since(start)
	r.DNSms = ms(took)
	if err != nil {
		return r, err
	}
	q := &prober{cfg: p.cfg, u: p.u, resolver: p.resolver, pinned: addr, pinnedTook: took}
	q.cfg.Proto, q.cfg.Mode = proto, Cold
	defer q.close()
	if proto == H3 {
		r, err = q.oneH3(ctx, r)
	} else {
		r, err = q.oneH12(ctx, r, false)
	}
	// Both paths time from after the lookup they did not make; a first
	// visit waits for DNS first.
	r.Proto, r.Mode, r.DNSms = proto, p.cfg.Mode, ms(took)
	if err == nil {
		r.TTFBms += ms(took)
		r.Totalms += ms(took)
	}
	return r, err
}

// resolveFirst asks the resolver for the host's A record and, for
// FirstHTTPS, its HTTPS record at the same time, and returns where to
// connect and with which protocol.
func (p *prober) resolveFirst(ctx context.Context) (string, string, error) {
	host, port := p.u.Hostname(), p.u.Port()
	if port == "" {
		port = "443"
	}
	if net.ParseIP(host) != nil {
		return "", "", fmt.Errorf("mode %s: %s is an address; a first visit needs a name to look up", p.cfg.Mode, host)
	}
	server := p.cfg.Resolver
	if server == "" {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil || len(conf.Servers) == 0 {
			return "", "", fmt.Errorf("mode %s: no -resolver and none in /etc/resolv.conf: %v", p.cfg.Mode, err)
		}
		server = net.JoinHostPort(conf.Servers[0], conf.Port)
	}
	types := []uint16{dns.TypeA}
	if p.cfg.Mode == FirstHTTPS {
		types = append(types, dns.TypeHTTPS)
	}
	answers := make([]*dns.Msg, len(types))
	errs := make([]error, len(types))
	var wg sync.WaitGroup
	for i, t := range types {
		wg.Go(func() { answers[i], errs[i] = p.exchange(ctx, server, host, t) })
	}
	wg.Wait()
	if errs[0] != nil {
		return "", "", errs[0]
	}
	var a []string
	for _, rr := range answers[0].Answer {
		if rec, ok := rr.(*dns.A); ok {
			a = append(a, rec.A.String())
		}
	}
	if len(types) > 1 && errs[1] == nil {
		// The first ServiceMode record for the name itself that offers h3.
		for _, rr := range answers[1].Answer {
			h, ok := rr.(*dns.HTTPS)
			if !ok || h.Priority == 0 || (h.Target != "." && h.Target != dns.Fqdn(host)) {
				continue
			}
			alpn, svcPort, hints := []string(nil), port, []string(nil)
			for _, kv := range h.Value {
				switch v := kv.(type) {
				case *dns.SVCBAlpn:
					alpn = v.Alpn
				case *dns.SVCBPort:
					svcPort = fmt.Sprint(v.Port)
				case *dns.SVCBIPv4Hint:
					for _, ip := range v.Hint {
						hints = append(hints, ip.String())
					}
				}
			}
			if !slices.Contains(alpn, H3) {
				continue
			}
			target := a
			if len(target) == 0 {
				target = hints
			}
			if len(target) > 0 {
				return net.JoinHostPort(target[0], svcPort), H3, nil
			}
		}
	}
	if len(a) == 0 {
		return "", "", fmt.Errorf("dns %s: no A record", host)
	}
	return net.JoinHostPort(a[0], port), H2, nil
}

// exchange asks server one question over UDP (TCP if truncated), through
// the probe's dialer so it works from a lab client's namespace.
func (p *prober) exchange(ctx context.Context, server, host string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(host), qtype)
	m.SetEdns0(1232, false)
	for _, network := range []string{"udp", "tcp"} {
		conn, err := p.cfg.Dial(ctx, network, server)
		if err != nil {
			return nil, fmt.Errorf("dns %s: %w", host, err)
		}
		if d, ok := ctx.Deadline(); ok {
			conn.SetDeadline(d)
		}
		co := &dns.Conn{Conn: conn, UDPSize: 1232}
		err = co.WriteMsg(m)
		var resp *dns.Msg
		if err == nil {
			resp, err = co.ReadMsg()
		}
		conn.Close()
		if err != nil {
			return nil, fmt.Errorf("dns %s %s: %w", host, dns.TypeToString[qtype], err)
		}
		if resp.Truncated && network == "udp" {
			continue
		}
		if resp.Rcode != dns.RcodeSuccess {
			return nil, fmt.Errorf("dns %s %s: %s", host, dns.TypeToString[qtype], dns.RcodeToString[resp.Rcode])
		}
		return resp, nil
	}
	return nil, errors.New("unreachable")
}
