package drill

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
)

// DNS outcomes of a malformed query.
const (
	DNSNoAnswer = "no answer"
	DNSFormErr  = "FORMERR"
	DNSNotImp   = "NOTIMP"
	DNSRefused  = "REFUSED"
	DNSNoError  = "NOERROR"
)

// MalformedDNS is a malformed DNS query and the outcomes that are right
// for it: an error code, or silence (a server must not answer what it
// cannot parse as a query, or it can be used to reflect).
type MalformedDNS struct {
	Name   string
	Packet []byte
	Want   []string
}

// dnsHeader builds a 12-byte header: id, flags, and the four counts.
func dnsHeader(id, flags, qd, an, ns, ar uint16) []byte {
	b := make([]byte, 12)
	for i, v := range []uint16{id, flags, qd, an, ns, ar} {
		binary.BigEndian.PutUint16(b[2*i:], v)
	}
	return b
}

// MalformedDNSQueries is a corpus of broken DNS queries for name (a
// name the server is authoritative for, as "www.cdn.lab."): truncated
// header, bad label lengths, a compression pointer loop, wrong counts, a
// response instead of a query, an unknown opcode, a name over 255 bytes,
// an EDNS Client Subnet with an impossible prefix, and garbage.
func MalformedDNSQueries(name string) []MalformedDNS {
	var qname []byte
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		qname = append(append(qname, byte(len(l))), l...)
	}
	qname = append(qname, 0)
	aIN := []byte{0, 1, 0, 1}
	q := append(append([]byte(nil), qname...), aIN...)
	long := []byte{}
	for range 5 {
		long = append(append(long, 63), strings.Repeat("a", 63)...)
	}
	long = append(append(long, 0), aIN...)
	// OPT with an ECS option: family 1 (IPv4) with a /33 source prefix.
	ecs := []byte{0, 8, 0, 8, 0, 1, 33, 0, 10, 77, 1, 0}
	opt := append([]byte{0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, byte(len(ecs))}, ecs...)
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	rng := rand.New(rand.NewPCG(8, 53))
	garbage := make([]byte, 200)
	for i := range garbage {
		garbage[i] = byte(rng.Uint32())
	}
	garbage[2] &^= 0x80 // a query, so that the server has to look further
	formErr, either := []string{DNSFormErr}, []string{DNSFormErr, DNSNotImp, DNSNoAnswer}
	return []MalformedDNS{
		{"truncated header", []byte{0x12, 0x34, 0x01, 0x00, 0x00}, []string{DNSNoAnswer}},
		{"header only, qdcount 1", dnsHeader(1, 0x0100, 1, 0, 0, 0), formErr},
		{"qdcount 0", cat(dnsHeader(2, 0x0100, 0, 0, 0, 0), q), formErr},
		{"qdcount 2, one question", cat(dnsHeader(3, 0x0100, 2, 0, 0, 0), q), formErr},
		{"label length past the end", cat(dnsHeader(4, 0x0100, 1, 0, 0, 0), []byte{40, 'w', 'w', 'w'}), formErr},
		{"reserved label type 0x40", cat(dnsHeader(5, 0x0100, 1, 0, 0, 0), []byte{0x41, 'x', 0}, aIN), formErr},
		{"compression pointer loop", cat(dnsHeader(6, 0x0100, 1, 0, 0, 0), []byte{0xc0, 12}, aIN), formErr},
		{"pointer past the end", cat(dnsHeader(7, 0x0100, 1, 0, 0, 0), []byte{0xc0, 0xff}, aIN), formErr},
		{"name over 255 bytes", cat(dnsHeader(8, 0x0100, 1, 0, 0, 0), long), formErr},
		// miekg/dns alone reads these two leniently (type 0 and class 0;
		// the records there are): GeoDNS checks the counts itself.
		{"question without type", cat(dnsHeader(9, 0x0100, 1, 0, 0, 0), qname), formErr},
		{"arcount 1, no record", cat(dnsHeader(10, 0x0100, 1, 0, 0, 1), q), formErr},
		{"record cut inside its data", cat(dnsHeader(14, 0x0100, 1, 0, 0, 1), q, []byte{0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 4, 0, 8}), formErr},
		{"a response, not a query", cat(dnsHeader(11, 0x8180, 1, 0, 0, 0), q), []string{DNSNoAnswer}},
		{"opcode UPDATE", cat(dnsHeader(12, 0x2800, 1, 0, 0, 0), q), []string{DNSNotImp}},
		{"ECS IPv4 with a /33 prefix", cat(dnsHeader(13, 0x0100, 1, 0, 0, 1), q, opt), formErr},
		{"garbage", garbage, either},
	}
}

// RandomDNSPackets returns n seeded random packets of 0 to 600 bytes,
// half with a plausible query header, for fuzzing a live server.
func RandomDNSPackets(seed uint64, n int) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 53))
	out := make([][]byte, n)
	for i := range out {
		p := make([]byte, rng.IntN(600))
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		if i%2 == 0 && len(p) >= 12 {
			copy(p, dnsHeader(uint16(i), 0x0100, 1, 0, 0, uint16(rng.IntN(3))))
		}
		out[i] = p
	}
	return out
}
