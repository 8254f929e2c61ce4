package geodns

import (
	"math"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/miekg/dns"
)

// zone is a compiled authoritative zone.
type zone struct {
	origin string // lowercase FQDN
	soa    *dns.SOA
	rrs    map[string]map[uint16][]dns.RR // owner -> type -> records
	names  map[string]bool                // every owner and empty non-terminal
	geo    map[string][]*popState         // geo owner -> candidate PoPs
}

func compileZone(z Zone, pops map[string]*popState, all []*popState) (*zone, error) {
	origin := strings.ToLower(dns.Fqdn(z.Origin))
	c := &zone{origin: origin, rrs: map[string]map[uint16][]dns.RR{}, names: map[string]bool{}, geo: map[string][]*popState{}}
	c.soa = &dns.SOA{
		Hdr:     dns.RR_Header{Name: origin, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 3600},
		Ns:      dns.Fqdn(z.NS[0]),
		Mbox:    orDefault(z.Mbox, "hostmaster."+origin),
		Serial:  orDefaultU(z.Serial, 1),
		Refresh: orDefaultU(z.Refresh, 3600),
		Retry:   orDefaultU(z.Retry, 600),
		Expire:  orDefaultU(z.Expire, 86400),
		Minttl:  orDefaultU(z.MinTTL, 30),
	}
	c.add(c.soa)
	for _, ns := range z.NS {
		c.add(&dns.NS{Hdr: dns.RR_Header{Name: origin, Rrtype: dns.TypeNS, Class: dns.ClassINET, Ttl: 3600}, Ns: dns.Fqdn(ns)})
	}
	recs, err := z.records()
	if err != nil {
		return nil, err
	}
	for _, rr := range recs {
		c.add(rr)
	}
	for _, g := range z.Geo {
		name := strings.ToLower(g.Name)
		if !dns.IsFqdn(name) {
			name = name + "." + origin
		}
		cands := all
		if len(g.PoPs) > 0 {
			cands = nil
			for _, p := range g.PoPs {
				cands = append(cands, pops[p])
			}
		}
		c.geo[name] = cands
		c.addName(name)
	}
	return c, nil
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return dns.Fqdn(s)
}

func orDefaultU(v, d uint32) uint32 {
	if v == 0 {
		return d
	}
	return v
}

func (z *zone) add(rr dns.RR) {
	name := strings.ToLower(rr.Header().Name)
	rr.Header().Name = name
	m := z.rrs[name]
	if m == nil {
		m = map[uint16][]dns.RR{}
		z.rrs[name] = m
	}
	m[rr.Header().Rrtype] = append(m[rr.Header().Rrtype], rr)
	z.addName(name)
}

// addName records name and its ancestors up to the origin, so that empty
// non-terminals answer NODATA rather than NXDOMAIN.
func (z *zone) addName(name string) {
	for n := name; dns.IsSubDomain(z.origin, n); {
		z.names[n] = true
		if n == z.origin {
			return
		}
		i := strings.IndexByte(n, '.')
		n = n[i+1:]
	}
}

// findZone returns the zone with the longest origin containing name.
func findZone(zones []*zone, name string) *zone {
	for _, z := range zones { // sorted longest origin first
		if dns.IsSubDomain(z.origin, name) {
			return z
		}
	}
	return nil
}

// location is where a client is and how specific that knowledge is.
type location struct {
	region   string
	lat, lon float64
	hasCoord bool
	bits     int // prefix length of the matched network: the ECS scope
	known    bool
}

type netEntry struct {
	prefix netip.Prefix
	loc    location
}

// locate finds the client's location: the longest matching static
// network, else the city database.
func (st *state) locate(ip netip.Addr) location {
	ip = ip.Unmap()
	for _, n := range st.networks { // sorted longest prefix first
		if n.prefix.Contains(ip) {
			return n.loc
		}
	}
	if st.mmdb != nil {
		if loc, ok := st.mmdb.lookup(ip); ok {
			return loc
		}
	}
	return location{}
}

// rank orders candidates for a client: healthy ones only (if none is
// healthy, all whose health has been seen: fail open; never one not yet
// checked), by the region's explicit preference, else by great-circle
// distance; then, among the PoPs of the first one's region only,
// non-degraded before degraded (preferDegradedLast). ties is how many
// lead equally (same rank, same degraded state): they share the answers
// by weight.
func (st *state) rank(cands []*popState, loc location) (ranked []*popState, ties int) {
	var healthy, seen []*popState
	for _, p := range cands {
		if p.healthy.Load() {
			healthy = append(healthy, p)
		}
		if p.seen.Load() {
			seen = append(seen, p)
		}
	}
	if len(healthy) == 0 {
		healthy = seen
	}
	if len(healthy) == 0 {
		return nil, 0
	}
	region, hasRegion := st.regions[loc.region]
	lat, lon, hasCoord := loc.lat, loc.lon, loc.hasCoord
	if !hasCoord && hasRegion && (region.Lat != 0 || region.Lon != 0) {
		lat, lon, hasCoord = region.Lat, region.Lon, true
	}
	rankOf := func(p *popState) float64 {
		if hasRegion && len(region.PoPs) > 0 {
			for i, name := range region.PoPs {
				if name == p.cfg.Name {
					return float64(i)
				}
			}
			return 1e6 + distance(lat, lon, p.lat, p.lon)
		}
		if hasCoord {
			return distance(lat, lon, p.lat, p.lon)
		}
		if loc.region != "" && p.cfg.Region == loc.region {
			return 0
		}
		return 1
	}
	ranks := make(map[*popState]float64, len(healthy))
	for _, p := range healthy {
		ranks[p] = rankOf(p)
	}
	sort.SliceStable(healthy, func(i, j int) bool { return ranks[healthy[i]] < ranks[healthy[j]] })
	preferDegradedLast(healthy)
	ties = 1
	for ties < len(healthy) && ranks[healthy[ties]] == ranks[healthy[0]] && healthy[ties].degraded.Load() == healthy[0].degraded.Load() {
		ties++
	}
	return healthy, ties
}

// preferDegradedLast reorders ranked PoPs so that, among those in the
// region of the first (the best), the ones not degraded come first; the
// region's PoPs only trade places with each other, every other PoP keeps
// its position. A degraded PoP is never swapped for one in another region:
// that one reaches the same dead origin, only from farther away. A best
// PoP with no region is left first.
func preferDegradedLast(ranked []*popState) {
	if len(ranked) < 2 || ranked[0].cfg.Region == "" || !ranked[0].degraded.Load() {
		return
	}
	region := ranked[0].cfg.Region
	var slots []int
	var ok, degraded []*popState
	for i, p := range ranked {
		if p.cfg.Region != region {
			continue
		}
		slots = append(slots, i)
		if p.degraded.Load() {
			degraded = append(degraded, p)
		} else {
			ok = append(ok, p)
		}
	}
	for i, p := range append(ok, degraded...) {
		ranked[slots[i]] = p
	}
}

// distance is the great-circle distance in kilometres (haversine).
func distance(lat1, lon1, lat2, lon2 float64) float64 {
	const r = 6371.0
	rad := math.Pi / 180
	dlat, dlon := (lat2-lat1)*rad, (lon2-lon1)*rad
	a := math.Sin(dlat/2)*math.Sin(dlat/2) + math.Cos(lat1*rad)*math.Cos(lat2*rad)*math.Sin(dlon/2)*math.Sin(dlon/2)
	return 2 * r * math.Asin(math.Min(1, math.Sqrt(a)))
}

// popRRs builds the A, AAAA or HTTPS records of the chosen PoPs.
func popRRs(name string, qtype uint16, ttl uint32, pops []*popState) []dns.RR {
	if qtype == dns.TypeHTTPS {
		return httpsRRs(name, ttl, pops)
	}
	var out []dns.RR
	for _, p := range pops {
		hdr := dns.RR_Header{Name: name, Rrtype: qtype, Class: dns.ClassINET, Ttl: ttl}
		if qtype == dns.TypeA {
			for _, a := range p.a {
				out = append(out, &dns.A{Hdr: hdr, A: net.IP(a.AsSlice())})
			}
		} else {
			for _, a := range p.aaaa {
				out = append(out, &dns.AAAA{Hdr: hdr, AAAA: net.IP(a.AsSlice())})
			}
		}
	}
	return out
}

// alpnH3H2 is what every PoP speaks: HTTP/3, and HTTP/2 over TCP.
var alpnH3H2 = []string{"h3", "h2"}

// httpsRRs builds one HTTPS record (RFC 9460 ServiceMode) per chosen PoP,
// in the order of the A and AAAA answers, priority 1 for the first: the
// target is the owner name itself ("."), with alpn="h3,h2", the PoP's port
// unless it is 443, and the PoP's A and AAAA addresses as ipv4hint and
// ipv6hint (the keys in ascending order, as RFC 9460 2.2 wants).
func httpsRRs(name string, ttl uint32, pops []*popState) []dns.RR {
	var out []dns.RR
	for i, p := range pops {
		rr := &dns.HTTPS{SVCB: dns.SVCB{
			Hdr:      dns.RR_Header{Name: name, Rrtype: dns.TypeHTTPS, Class: dns.ClassINET, Ttl: ttl},
			Priority: uint16(i + 1),
			Target:   ".",
		}}
		rr.Value = append(rr.Value, &dns.SVCBAlpn{Alpn: alpnH3H2})
		if port := p.cfg.HTTPSPort; port != 0 && port != 443 {
			rr.Value = append(rr.Value, &dns.SVCBPort{Port: uint16(port)})
		}
		if len(p.a) > 0 {
			hint := &dns.SVCBIPv4Hint{}
			for _, a := range p.a {
				hint.Hint = append(hint.Hint, net.IP(a.AsSlice()))
			}
			rr.Value = append(rr.Value, hint)
		}
		if len(p.aaaa) > 0 {
			hint := &dns.SVCBIPv6Hint{}
			for _, a := range p.aaaa {
				hint.Hint = append(hint.Hint, net.IP(a.AsSlice()))
			}
			rr.Value = append(rr.Value, hint)
		}
		out = append(out, rr)
	}
	return out
}
