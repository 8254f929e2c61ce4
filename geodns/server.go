// Package geodns is an authoritative GeoDNS server on miekg/dns that sends
// every client to its nearest healthy PoP, and a forwarding resolver for
// the lab's clients.
//
// Geo-routed names (www.cdn.lab) are answered with the N nearest healthy
// PoPs to the client, located by its EDNS Client Subnet (RFC 7871) or its
// source address, through a static prefix map (what the lab uses). The ECS
// option is echoed with the scope of the network that decided the answer.
// A PoP is located by its own coordinates or, without them, its region's.
// When the PoPs publish the RTTs they measure to their clients (rtt_url),
// a client prefix measured well enough is answered with the PoP of lowest
// measured RTT instead (latency steering, steer.go), and a bounded share
// of answers explores the other PoPs. PoPs that are equally good (equally
// near, or equally fast) share the answers by weight.
// The same PoPs answer A, AAAA and HTTPS (RFC 9460): a ServiceMode record
// for the name itself with alpn="h3,h2", the PoP's port unless 443 and its
// addresses as ipv4hint and ipv6hint, so that a browser that asks speaks
// HTTP/3 on its first visit.
// Every PoP is health-checked; an unhealthy one leaves the answers after
// interval x fall and returns after rise good checks; if every PoP is
// down, all are answered (fail open). A PoP whose check passes with
// X-PoP-Degraded: 1 (a PoP's /readyz says so when its origin has no healthy
// server; it still serves cached content) is degraded: a non-degraded PoP
// of the same region is answered before it, but never one of another
// region, which would reach the same dead origin from farther away; with
// every PoP of the region degraded the answer is as if none were. Static
// records come from the config
// or an RFC 1035 zone file. Names outside the zones are forwarded for
// allowed clients and REFUSED for others.
//
// Over UDP no answer is bigger than 1232 bytes (DNS Flag Day 2020),
// whatever buffer size the client's EDNS claims; a bigger one is truncated
// with TC set, and the client asks again over TCP. UDP answers are also
// rate limited per client prefix (RateLimit, on by default), so spoofed
// queries cannot turn the server into an amplifier. Queries whose EDNS is
// broken or of a version above 0 are refused (see ednsRcode).
//
// A UDP socket bound to one address is read and written in batches
// (recvmmsg, sendmmsg; batch.go), and plain queries (one question, at
// most an ECS option) are answered from replies the server built by
// running its own answer path once per key and route option, then
// patched with the query's ID and spelling (fast.go); they are rebuilt
// when health, latency data or the configuration change. Every other
// query goes through miekg/dns as described above.
package geodns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// state is everything a query needs, compiled from one Config and swapped
// whole on reload.
type state struct {
	cfg      Config
	zones    []*zone
	pops     []*popState
	networks []netEntry
	regions  map[string]Region
	allow    []netip.Prefix
	mmdb     *cityDB
	ttl      uint32
	answers  int
	fwd      *forwarder
	rrl      *rrl
	// steering is on when a PoP has an rtt_url; latency has its defaults.
	steering bool
	latency  Latency
}

func compile(cfg Config) (*state, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	st0 := &state{cfg: cfg, regions: cfg.Locator.Regions, ttl: cfg.TTL, answers: cfg.Answers}
	if cfg.Locator.MMDB != "" {
		db, err := openCityDB(cfg.Locator.MMDB)
		if err != nil {
			return nil, fmt.Errorf("locator.mmdb: %w", err)
		}
		st0.mmdb = db
	}
	st := st0
	if st.ttl == 0 {
		st.ttl = 20
	}
	if st.answers == 0 {
		st.answers = 1
	}
	st.latency = cfg.Latency.withDefaults()
	byName := map[string]*popState{}
	for _, p := range cfg.PoPs {
		lat, lon, _ := cfg.popLocation(p) // Validate refused a PoP with no location
		ps := newPopState(p, lat, lon)
		st.steering = st.steering || p.RTTURL != ""
		st.pops = append(st.pops, ps)
		byName[p.Name] = ps
	}
	for _, z := range cfg.Zones {
		cz, err := compileZone(z, byName, st.pops)
		if err != nil {
			return nil, err
		}
		st.zones = append(st.zones, cz)
	}
	sort.Slice(st.zones, func(i, j int) bool { return len(st.zones[i].origin) > len(st.zones[j].origin) })
	for _, n := range cfg.Locator.Networks {
		pfx := netip.MustParsePrefix(n.Prefix).Masked()
		loc := location{region: n.Region, lat: n.Lat, lon: n.Lon, hasCoord: n.Lat != 0 || n.Lon != 0, bits: pfx.Bits(), known: true}
		if pfx.Addr().Is4() {
			loc.bits = pfx.Bits()
		}
		st.networks = append(st.networks, netEntry{prefix: pfx, loc: loc})
	}
	sort.SliceStable(st.networks, func(i, j int) bool { return st.networks[i].prefix.Bits() > st.networks[j].prefix.Bits() })
	allow := cfg.Forward.Allow
	if allow == nil {
		allow = []string{"127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"}
	}
	for _, a := range allow {
		st.allow = append(st.allow, netip.MustParsePrefix(a))
	}
	st.rrl = newRRL(cfg.RateLimit)
	fwd, err := newForwarder(cfg.Forward, cfg.Listen)
	if err != nil {
		return nil, err
	}
	st.fwd = fwd
	return st, nil
}

// Server is a GeoDNS server.
type Server struct {
	log     *slog.Logger
	state   atomic.Pointer[state]
	metrics *metrics
	rtt     *rttTable
	// answered counts geo answers; its Weyl sequence spreads them over
	// the route's options in exact shares.
	answered atomic.Uint64
	// gen is bumped whenever what an answer depends on changes (a PoP's
	// health, the RTT tables, the configuration), after the change: the
	// UDP fast path's precomputed answers of an older generation are
	// never used again (memo.go).
	gen  atomic.Uint64
	memo *memo
	// now is the clock of the answers (mainRoll's second); a test seam.
	now func() time.Time

	udpConn net.PacketConn
	tcpLn   net.Listener
	adminLn net.Listener
	udp     *dns.Server
	tcp     *dns.Server
	batch   *batchUDP // nil: miekg/dns reads the UDP socket itself
	admin   *http.Server
	started chan struct{} // one value per DNS server once it serves

	mu         sync.Mutex // guards stopChecks
	stopChecks context.CancelFunc
	checks     sync.WaitGroup // owns the health checkers
	serving    sync.WaitGroup // owns the listeners' goroutines
}

// New validates cfg and builds a server.
func New(cfg Config) (*Server, error) {
	st, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{log: cfg.Logger, metrics: newMetrics(), rtt: newRTTTable(), memo: newMemo(maxMemoBytes), now: time.Now}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.state.Store(st)
	s.metrics.register(s)
	return s, nil
}

// Reload swaps in a new configuration without dropping queries: queries in
// flight finish on the old state, new ones use the new. Listen addresses,
// slow_udp and udp_hold are not changed by a reload.
func (s *Server) Reload(cfg Config) error {
	st, err := compile(cfg)
	if err != nil {
		return err
	}
	s.state.Store(st)
	s.invalidate()
	s.startChecks(st)
	s.log.Info("geodns reloaded", "zones", len(st.zones), "pops", len(st.pops))
	return nil
}

// Listen binds UDP and TCP on the same port, and the admin listener.
func (s *Server) Listen() error {
	cfg := s.state.Load().cfg
	var err error
	if s.tcpLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	lc := net.ListenConfig{Control: udpControl}
	if s.udpConn, err = lc.ListenPacket(context.Background(), "udp", s.tcpLn.Addr().String()); err != nil {
		s.tcpLn.Close()
		return fmt.Errorf("listen (udp): %w", err)
	}
	if cfg.Admin != "" {
		if s.adminLn, err = net.Listen("tcp", cfg.Admin); err != nil {
			s.tcpLn.Close()
			s.udpConn.Close()
			return fmt.Errorf("admin: %w", err)
		}
		s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	}
	// The servers exist from here on, so Shutdown never races Serve.
	h := dns.HandlerFunc(s.ServeDNS)
	s.started = make(chan struct{}, 2)
	notify := func() { s.started <- struct{}{} }
	s.udp = &dns.Server{PacketConn: s.udpConn, Handler: h, UDPSize: 65535, NotifyStartedFunc: notify, DecorateReader: strict}
	if b := newBatchUDP(s, s.udpConn, cfg.SlowUDP, cfg.UDPHold); b != nil {
		// The batch loops read the socket; miekg/dns serves what they
		// hand over (batch.go).
		s.batch = b
		s.udp.PacketConn = b.handoff
	}
	s.tcp = &dns.Server{Listener: s.tcpLn, Handler: h, NotifyStartedFunc: notify, DecorateReader: strict}
	return nil
}

// Addr is the DNS address (UDP and TCP).
func (s *Server) Addr() net.Addr { return s.tcpLn.Addr() }

// AdminAddr is the admin address, or nil.
func (s *Server) AdminAddr() net.Addr {
	if s.adminLn == nil {
		return nil
	}
	return s.adminLn.Addr()
}

// Serve answers queries until Shutdown. It starts the health checkers.
func (s *Server) Serve() error {
	if s.tcpLn == nil {
		return errors.New("serve: Listen was not called")
	}
	s.startChecks(s.state.Load())
	errc := make(chan error, 3+maxBatchLoops)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		s.serving.Go(func() { errc <- srv.ActivateAndServe() })
	}
	<-s.started
	<-s.started
	if s.batch != nil {
		s.batch.start(errc)
	}
	if s.admin != nil {
		s.serving.Go(func() {
			if err := s.admin.Serve(s.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		})
	}
	return <-errc
}

// Shutdown stops the listeners and the health checkers.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	if s.batch != nil {
		// First, so that nothing is handed to miekg/dns's UDP server
		// after it stops; it answers what it was handed, then the
		// socket closes.
		s.batch.stop()
	}
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		if srv != nil {
			errs = append(errs, srv.ShutdownContext(ctx))
		}
	}
	if s.admin != nil {
		errs = append(errs, s.admin.Shutdown(ctx))
	}
	s.mu.Lock()
	if s.stopChecks != nil {
		s.stopChecks()
	}
	s.mu.Unlock()
	s.checks.Wait()
	if s.batch != nil {
		s.batch.close()
	}
	return errors.Join(errs...)
}

// invalidate is called after a change of what answers depend on: the
// fast path's precomputed answers are rebuilt on their next use.
func (s *Server) invalidate() { s.gen.Add(1) }

// maxUDPSize is the most a UDP answer carries, whatever the client's EDNS
// buffer size says, and what our OPT advertises: DNS Flag Day 2020's 1232
// bytes, which crosses a 1280-byte IPv6 path unfragmented and bounds what
// one spoofed query can make the server send (about 30 times a 40-byte
// query).
const maxUDPSize = 1232

// ServeDNS answers one query.
func (s *Server) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	st := s.state.Load()
	m := s.answer(st, w, req)
	if m == nil {
		return
	}
	withOPT(m, req)
	s.metrics.query(req, m)
	if ua, isUDP := w.RemoteAddr().(*net.UDPAddr); isUDP {
		v := send
		if st.rrl != nil {
			v = st.rrl.check(ua.AddrPort().Addr())
			s.metrics.limit(v)
		}
		if v == drop {
			return
		}
		finishUDP(m, req, v)
	}
	w.WriteMsg(m)
}

// finishUDP makes m a UDP reply to req: for a slipped one (RRL), empty
// but for its OPT, with TC set; then truncated to the client's size.
func finishUDP(m, req *dns.Msg, v verdict) {
	if v == slipTC {
		opt := m.IsEdns0()
		m.Answer, m.Ns, m.Extra = nil, nil, nil
		if opt != nil {
			m.Extra = []dns.RR{opt}
		}
		m.Truncated = true
	}
	m.Truncate(udpSize(req)) // sets TC when it must drop records: the client retries over TCP
}

// udpSize is how big a UDP answer to req may be: the client's EDNS buffer
// size (512 if it says less, RFC 6891 6.2.5), at most maxUDPSize; 512
// without EDNS (RFC 1035 4.2.1).
func udpSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil {
		return min(max(int(opt.UDPSize()), dns.MinMsgSize), maxUDPSize)
	}
	return dns.MinMsgSize
}

// withOPT gives the reply to a query with EDNS an OPT record advertising
// maxUDPSize (RFC 6891 7: errors too, and a forwarded answer's OPT, which
// speaks for the upstream, is rewritten).
func withOPT(m, req *dns.Msg) {
	if req.IsEdns0() == nil {
		return
	}
	if opt := m.IsEdns0(); opt != nil {
		opt.SetUDPSize(maxUDPSize)
		return
	}
	m.SetEdns0(maxUDPSize, false)
}

// answer builds the reply to req.
func (s *Server) answer(st *state, w dns.ResponseWriter, req *dns.Msg) *dns.Msg {
	now := s.now()
	return s.reply(st, w, req, func(r *route, client netip.Addr) *option {
		o := r.pick(s.roll(), mainRoll(client, now))
		s.metrics.steered(*r, o)
		return o
	})
}

// choice picks the option of a geo route that answers one query from
// client (answer rolls for it; the fast path's memo takes each in turn).
type choice func(r *route, client netip.Addr) *option

// reply builds the reply to req, choose picking among a geo route's
// options.
func (s *Server) reply(st *state, w dns.ResponseWriter, req *dns.Msg, choose choice) *dns.Msg {
	m := new(dns.Msg)
	if req.Opcode != dns.OpcodeQuery {
		m.SetRcode(req, dns.RcodeNotImplemented)
		return m
	}
	if len(req.Question) != 1 {
		m.SetRcode(req, dns.RcodeFormatError)
		return m
	}
	if rcode := ednsRcode(req); rcode != dns.RcodeSuccess {
		m.SetRcode(req, rcode) // withOPT adds the OPT that carries BADVERS
		return m
	}
	m.SetReply(req)
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	client, ecs := clientAddr(w, req)
	z := findZone(st.zones, name)
	if z == nil {
		return s.forward(st, w, req, client)
	}
	m.Authoritative = true
	scope := 0 // the answer does not depend on the client unless geo-routed
	switch {
	case q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY:
		m.SetRcode(req, dns.RcodeRefused)
		return m
	case q.Qtype == dns.TypeANY:
		// RFC 8482: a minimal answer instead of everything.
		m.Answer = []dns.RR{&dns.HINFO{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeHINFO, Class: dns.ClassINET, Ttl: st.ttl}, Cpu: "RFC8482"}}
	case z.geo[name] != nil:
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeHTTPS {
			loc := st.locate(client)
			r := st.route(s.rtt, z.geo[name], client, loc, st.answers)
			if len(r.options) == 0 {
				// No PoP checked yet (a fresh start): SERVFAIL, which
				// resolvers retry, rather than a PoP that may not be up.
				m.SetRcode(req, dns.RcodeServerFailure)
				return m
			}
			o := choose(&r, client)
			pops := o.pops
			ttl := st.ttl
			if o.explore {
				ttl = min(ttl, uint32(st.latency.ExploreTTL/time.Second))
			}
			m.Answer = popRRs(q.Name, q.Qtype, ttl, pops)
			if loc.known {
				scope = loc.bits
			}
			if st.steering {
				scope = max(scope, rttPrefix(client).Bits())
			}
		}
		if len(m.Answer) == 0 {
			m.Ns = []dns.RR{negSOA(z)}
		}
	default:
		s.static(z, m, q, name)
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(maxUDPSize, false)
		if ecs != nil {
			scope = min(scope, int(ecs.SourceNetmask))
			out := *ecs
			out.SourceScope = uint8(scope)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &out)
		}
	}
	return m
}

// roll is the next point of a Weyl sequence in [0, 1), which decides
// whether an answer explores: over any run of answers, exploration gets
// its share to within one answer.
func (s *Server) roll() float64 {
	return float64(uint32(s.answered.Add(1)*0x9E3779B9)) / (1 << 32)
}

// mainRoll spreads clients over equally good PoPs by weight: a hash in
// [0, 1) of the client's prefix and the current second, so the A, AAAA
// and HTTPS queries of one page load name the same PoP while the shares
// hold over clients and time.
func mainRoll(client netip.Addr, now time.Time) float64 {
	return rollAt(rollSeed(client), now)
}

// rollSeed and rollAt are mainRoll in two steps, so that the fast path
// hashes a client's prefix once: FNV-1a over the prefix (in
// netip.Prefix.MarshalBinary's form), then over the second (Unix,
// little-endian).
func rollSeed(client netip.Addr) uint64 {
	b, _ := rttPrefix(client).MarshalBinary()
	return fnv1a(fnvOffset64, b)
}

func rollAt(seed uint64, now time.Time) float64 {
	var sec [8]byte
	binary.LittleEndian.PutUint64(sec[:], uint64(now.Unix()))
	return float64(uint32(fnv1a(seed, sec[:])>>32)) / (1 << 32)
}

// FNV-1a, 64 bits (hash/fnv's New64a without its allocation).
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

func fnv1a(h uint64, b []byte) uint64 {
	for _, c := range b {
		h ^= uint64(c)
		h *= fnvPrime64
	}
	return h
}

// static answers from the zone's records, following an in-zone CNAME.
func (s *Server) static(z *zone, m *dns.Msg, q dns.Question, name string) {
	for hops := 0; hops < 8; hops++ {
		byType := z.rrs[name]
		if rrs := byType[q.Qtype]; len(rrs) > 0 {
			m.Answer = append(m.Answer, rrs...)
			return
		}
		if cn := byType[dns.TypeCNAME]; len(cn) > 0 && q.Qtype != dns.TypeCNAME {
			m.Answer = append(m.Answer, cn...)
			target := strings.ToLower(cn[0].(*dns.CNAME).Target)
			if !dns.IsSubDomain(z.origin, target) {
				return
			}
			name = target
			continue
		}
		if len(m.Answer) == 0 {
			if !z.names[name] {
				m.Rcode = dns.RcodeNameError
			}
			m.Ns = []dns.RR{negSOA(z)}
		}
		return
	}
}

// negSOA is the SOA for a negative answer, with the negative TTL.
func negSOA(z *zone) dns.RR {
	soa := *z.soa
	soa.Hdr.Ttl = min(soa.Hdr.Ttl, soa.Minttl)
	return &soa
}

// clientAddr returns the address that locates the client: the ECS
// address when present (with the option; ednsRcode has checked it), else
// the source address.
func clientAddr(w dns.ResponseWriter, req *dns.Msg) (netip.Addr, *dns.EDNS0_SUBNET) {
	if opt := req.IsEdns0(); opt != nil {
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_SUBNET); ok {
				addr, _ := netip.AddrFromSlice(e.Address)
				return addr.Unmap(), e
			}
		}
	}
	ap, err := netip.ParseAddrPort(w.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}, nil
	}
	return ap.Addr().Unmap(), nil
}

// forward relays a query outside the zones to the upstream resolvers, for
// allowed clients only.
func (s *Server) forward(st *state, w dns.ResponseWriter, req *dns.Msg, client netip.Addr) *dns.Msg {
	src, err := netip.ParseAddrPort(w.RemoteAddr().String())
	allowed := false
	if err == nil {
		for _, p := range st.allow {
			if p.Contains(src.Addr().Unmap()) {
				allowed = true
				break
			}
		}
	}
	m := new(dns.Msg)
	if !allowed || len(st.fwd.upstreams) == 0 {
		m.SetRcode(req, dns.RcodeRefused)
		return m
	}
	if resp := st.fwd.exchange(req); resp != nil {
		return resp
	}
	m.SetRcode(req, dns.RcodeServerFailure)
	return m
}
