package bench

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/edgecdn/cdn/compose"
)

// LabClient is a client host of the lab, with ways to open sockets from
// inside its network namespace.
type LabClient struct {
	Name         string // client-na, ...
	Dial         func(ctx context.Context, network, addr string) (net.Conn, error)
	ListenPacket func() (net.PacketConn, error)
	// RTTs the floors are computed from (from the lab's matrix).
	// PoPOriginRTT is the PoP's way to the origin on a miss: through its
	// parent tier when it has one (-parent), the two round trips added.
	PoPOriginRTT, PoPRTT, OriginRTT, DNSRTT time.Duration
}

// LabConfig configures RunLab.
type LabConfig struct {
	Clients  []LabClient
	Resolver string // the lab's DNS server, host:port
	RootCAs  *x509.CertPool
	// CDNURL is the base URL of the CDN name (https://www.cdn.lab), OriginURL
	// the origin's (https://origin.lab). Paths are appended.
	CDNURL, OriginURL string
	// N is the number of measured requests per scenario. If zero, 5.
	N int
}

// LabConfigFrom builds the configuration of a running lab: a client per
// region that has both a client and a PoP host in topo, each opening its
// sockets inside its namespace of n and carrying the RTTs of topo's matrix
// its floors come from; GeoDNS as the resolver; roots as the CA. count is
// LabConfig.N.
func LabConfigFrom(topo *compose.Topology, n *compose.Net, roots *x509.CertPool, count int) (LabConfig, error) {
	geo, ok := topo.Host("geodns")
	origin, ok2 := topo.Host("origin")
	if !ok || !ok2 {
		return LabConfig{}, errors.New("lab: the topology has no geodns or origin host")
	}
	cfg := LabConfig{Resolver: net.JoinHostPort(geo.Addr.String(), "53"), RootCAs: roots,
		CDNURL: "https://www.cdn.lab", OriginURL: "https://origin.lab", N: count}
	for _, region := range []string{"na", "eu", "ap"} {
		client, ok := topo.Host("client-" + region)
		pop, ok2 := topo.Host("pop-" + region)
		if !ok || !ok2 {
			continue
		}
		name := client.Name
		cfg.Clients = append(cfg.Clients, LabClient{
			Name:         name,
			Dial:         n.Dialer(name),
			ListenPacket: func() (net.PacketConn, error) { return n.ListenPacket(name, client.Addr.String()+":0") },
			PoPRTT:       topo.RTTBetween(client, pop),
			OriginRTT:    topo.RTTBetween(client, origin),
			PoPOriginRTT: missRTT(topo, pop, origin),
			DNSRTT:       topo.RTTBetween(client, geo),
		})
	}
	return cfg, nil
}

// missRTT is the round trip a miss at pop costs beyond the client's: to
// the origin, or to pop's parent tier (its -parent flag, a PoP of topo)
// and on from there.
func missRTT(topo *compose.Topology, pop, origin compose.Host) time.Duration {
	if raw, ok := pop.Flag("parent"); ok {
		first, _, _ := strings.Cut(raw, ",")
		if u, err := url.Parse(first); err == nil {
			for _, name := range topo.HostNames() {
				if h, _ := topo.Host(name); h.Addr.String() == u.Hostname() {
					return topo.RTTBetween(pop, h) + topo.RTTBetween(h, origin)
				}
			}
		}
	}
	return topo.RTTBetween(pop, origin)
}

// LabRow is one scenario from one client, set beside its floor.
type LabRow struct {
	Client    string  `json:"client"`
	Target    string  `json:"target"` // hit, miss or direct
	Proto     string  `json:"proto"`
	Mode      string  `json:"mode"`
	TTFBms    float64 `json:"ttfb_p50_ms"`
	TTFBP99ms float64 `json:"ttfb_p99_ms"`
	Floorms   float64 `json:"floor_ms"` // the TTFB's floor
	Ratio     float64 `json:"ratio"`    // TTFB p50 over its floor
	// Phases are the TTFB's parts before the request: DNS, connect (TCP;
	// 0 for QUIC) and TLS (or the QUIC handshake), each beside its floor.
	Phases []LabPhase `json:"phases,omitempty"`
	PoP    string     `json:"pop"`
	Error  string     `json:"error,omitempty"`
}

// LabPhase is one phase of a scenario's requests: p50 and p99 beside the
// floor the lab's RTT matrix sets.
type LabPhase struct {
	Name    string  `json:"name"` // dns, connect, tls
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	Floorms float64 `json:"floor_ms"`
}

// phaseFloors are the floors of DNS, connect and TLS for a request of
// proto and mode to a server rtt away, dns away from the resolver: one
// round trip each, except that QUIC has no separate connect (its
// handshake is the "tls" phase) and 0-RTT waits for no handshake.
func phaseFloors(proto, mode string, dns, rtt time.Duration) []LabPhase {
	connect, tls := rtt, rtt
	switch {
	case mode == ZeroRTT:
		connect, tls = 0, 0
	case proto == H3 || mode == FirstHTTPS:
		connect = 0
	}
	return []LabPhase{{Name: "dns", Floorms: ms(dns)}, {Name: "connect", Floorms: ms(connect)}, {Name: "tls", Floorms: ms(tls)}}
}

// roundTrips is how many round trips a request needs before its first
// byte: TCP + TLS 1.3 + request = 3, QUIC + request = 2, 0-RTT = 1.
func roundTrips(proto, mode string) int {
	switch {
	case mode == ZeroRTT:
		return 1
	case proto == H3 || mode == FirstHTTPS:
		return 2
	}
	return 3
}

// RunLab measures, from every client, hits and misses through the CDN and
// requests direct to the origin, and sets each beside its physical floor:
// one DNS round trip plus the handshake round trips to the server, plus the
// PoP's round trip to the origin on a miss (through its parent tier, if
// any).
func RunLab(ctx context.Context, cfg LabConfig) ([]LabRow, error) {
	if cfg.N == 0 {
		cfg.N = 5
	}
	var rows []LabRow
	stamp := time.Now().UnixNano()
	for _, c := range cfg.Clients {
		probe := func(proto, mode, url string, n int) ([]Result, error) {
			return Probe(ctx, ProbeConfig{Proto: proto, Mode: mode, N: n, Resolver: cfg.Resolver, RootCAs: cfg.RootCAs,
				Dial: c.Dial, ListenPacket: c.ListenPacket}, url)
		}
		hitURL := fmt.Sprintf("%s/gen/1k?lab=%d-%s", cfg.CDNURL, stamp, c.Name)
		if _, err := probe(H2, Cold, hitURL, 1); err != nil { // fill this PoP's cache
			return nil, fmt.Errorf("%s: fill: %w", c.Name, err)
		}
		add := func(target, proto, mode string, rs []Result, err error, floor, serverRTT time.Duration) {
			row := LabRow{Client: c.Name, Target: target, Proto: proto, Mode: mode, Floorms: ms(floor),
				Phases: phaseFloors(proto, mode, c.DNSRTT, serverRTT)}
			if err != nil {
				row.Error = err.Error()
				rows = append(rows, row)
				return
			}
			var ttfb []float64
			phases := make([][]float64, len(row.Phases))
			for _, r := range rs {
				if r.Error != "" {
					row.Error = r.Error
					continue
				}
				ttfb = append(ttfb, r.TTFBms)
				for i, v := range []float64{r.DNSms, r.Connectms, r.TLSms} {
					phases[i] = append(phases[i], v)
				}
				row.PoP = r.PoP
			}
			p := percentiles(ttfb)
			row.TTFBms, row.TTFBP99ms = p.P50, p.P99
			for i := range row.Phases {
				p := percentiles(phases[i])
				row.Phases[i].P50ms, row.Phases[i].P99ms = p.P50, p.P99
			}
			if row.Floorms > 0 {
				row.Ratio = row.TTFBms / row.Floorms
			}
			rows = append(rows, row)
		}
		// A first visit picks its protocol from DNS: h2 from the A record
		// alone, h3 straight away when the HTTPS record offers it.
		for _, s := range []struct{ proto, mode string }{{H1, Cold}, {H2, Cold}, {H3, Cold}, {H2, Resumed}, {H3, Resumed}, {H3, ZeroRTT}, {H2, First}, {H3, FirstHTTPS}} {
			rs, err := probe(s.proto, s.mode, hitURL, cfg.N)
			add("hit", s.proto, s.mode, rs, err, c.DNSRTT+time.Duration(roundTrips(s.proto, s.mode))*c.PoPRTT, c.PoPRTT)
		}
		for _, proto := range []string{H2, H3} {
			var all []Result
			var ferr error
			for i := range cfg.N {
				url := fmt.Sprintf("%s/gen/1k?lab=%d-%s-miss-%s-%d", cfg.CDNURL, stamp, c.Name, proto, i)
				rs, err := probe(proto, Cold, url, 1)
				if err != nil {
					ferr = err
					break
				}
				all = append(all, rs...)
			}
			add("miss", proto, Cold, all, ferr, c.DNSRTT+time.Duration(roundTrips(proto, Cold))*c.PoPRTT+c.PoPOriginRTT, c.PoPRTT)
		}
		for _, proto := range []string{H1, H2} {
			rs, err := probe(proto, Cold, cfg.OriginURL+"/gen/1k?cc=no-store", cfg.N)
			add("direct", proto, Cold, rs, err, c.DNSRTT+time.Duration(roundTrips(proto, Cold))*c.OriginRTT, c.OriginRTT)
		}
	}
	return rows, nil
}

// WriteLabTable prints the rows: per phase p50/p99 and its floor in
// brackets, then the TTFB's p50, p99, floor and p50 over floor.
func WriteLabTable(w io.Writer, rows []LabRow) {
	fmt.Fprintf(w, "%-10s %-6s %-3s %-11s %-19s %-19s %-19s %-19s %7s %6s  %s\n", "client", "target", "p", "mode",
		"dns p50/p99 [floor]", "connect", "tls/quic", "ttfb p50/p99", "floor", "ratio", "pop")
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(w, "%-10s %-6s %-3s %-11s error: %s\n", r.Client, r.Target, r.Proto, r.Mode, r.Error)
			continue
		}
		fmt.Fprintf(w, "%-10s %-6s %-3s %-11s", r.Client, r.Target, r.Proto, r.Mode)
		for _, ph := range r.Phases {
			fmt.Fprintf(w, " %-19s", fmt.Sprintf("%.1f/%.1f [%.0f]", ph.P50ms, ph.P99ms, ph.Floorms))
		}
		fmt.Fprintf(w, " %-19s %7.1f %6.2f  %s\n", fmt.Sprintf("%.1f/%.1f", r.TTFBms, r.TTFBP99ms), r.Floorms, r.Ratio, r.PoP)
	}
}
