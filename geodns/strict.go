package geodns

import (
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/miekg/dns"
)

// miekg/dns reads some broken queries leniently: a question cut short
// after its name becomes type 0, class 0, and header counts that
// overstate the records become the records there are. A server must
// answer what it cannot parse with FORMERR (RFC 1035 4.1.1), so
// strictReader checks each message's structure as it is read and turns a
// broken one into one the library's own parser refuses, which it then
// answers with FORMERR as for any other unparsable query (or not at all
// when the header says it is a response).
type strictReader struct{ dns.Reader }

func strict(r dns.Reader) dns.Reader { return strictReader{r} }

func (r strictReader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	m, err := r.Reader.ReadTCP(conn, timeout)
	return refuseBroken(m), err
}

func (r strictReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	m, s, err := r.Reader.ReadUDP(conn, timeout)
	return refuseBroken(m), s, err
}

func (r strictReader) ReadPacketConn(conn net.PacketConn, timeout time.Duration) ([]byte, net.Addr, error) {
	m, a, err := r.Reader.(dns.PacketConnReader).ReadPacketConn(conn, timeout)
	return refuseBroken(m), a, err
}

// refuseBroken returns m, or when m's sections do not hold what its
// header counts, its header with one question whose name starts with a
// reserved label type (RFC 6891 5), which miekg/dns refuses to parse. A
// message shorter than a header is left alone: there is no ID to answer.
func refuseBroken(m []byte) []byte {
	if len(m) < 12 || wellFormed(m) {
		return m
	}
	binary.BigEndian.PutUint16(m[4:], 1)
	return append(m[:12], 0x40)
}

// wellFormed reports whether m's sections hold what its header counts
// (RFC 1035 4.1): each question a name and a type and class, each record
// a name, type, class, TTL, RDLENGTH and that much data. Names are only
// walked; their labels and compression pointers are the parser's to check.
// Bytes after the last section are tolerated.
func wellFormed(m []byte) bool {
	off := 12
	questions := int(binary.BigEndian.Uint16(m[4:]))
	records := int(binary.BigEndian.Uint16(m[6:])) + int(binary.BigEndian.Uint16(m[8:])) + int(binary.BigEndian.Uint16(m[10:]))
	for range questions {
		if off = skipName(m, off); off < 0 || off+4 > len(m) {
			return false
		}
		off += 4
	}
	for range records {
		if off = skipName(m, off); off < 0 || off+10 > len(m) {
			return false
		}
		off += 10 + int(binary.BigEndian.Uint16(m[off+8:]))
		if off > len(m) {
			return false
		}
	}
	return true
}

// skipName returns the offset after the name at off, or -1 if it runs
// past the end or uses a reserved label type.
func skipName(m []byte, off int) int {
	for off < len(m) {
		switch l := int(m[off]); {
		case l == 0:
			return off + 1
		case l&0xc0 == 0xc0: // a compression pointer ends the name
			if off+2 > len(m) {
				return -1
			}
			return off + 2
		case l&0xc0 != 0:
			return -1
		default:
			off += 1 + l
		}
	}
	return -1
}

// ednsRcode is the RCODE for a query whose EDNS the server refuses, or
// RcodeSuccess:
//
//   - more than one OPT record: FORMERR (RFC 6891 6.1.1);
//   - an EDNS version above 0: BADVERS (RFC 6891 6.1.3), in an OPT of
//     version 0, the one we speak;
//   - an ECS option whose family is not 1 or 2, whose address is not of
//     that family or has bits set past the source prefix, whose source
//     prefix is longer than the address, or whose scope prefix is not 0
//     (it is the server's to set): FORMERR (RFC 7871 6).
//
// Unlike wellFormed it works on the parsed message, for the reply must
// carry an OPT (RFC 6891 7, and BADVERS only exists there), which the
// library's own FORMERR leaves out.
func ednsRcode(req *dns.Msg) int {
	var opt *dns.OPT
	for _, rr := range req.Extra {
		if o, ok := rr.(*dns.OPT); ok {
			if opt != nil {
				return dns.RcodeFormatError
			}
			opt = o
		}
	}
	if opt == nil {
		return dns.RcodeSuccess
	}
	if opt.Version() != 0 {
		return dns.RcodeBadVers
	}
	for _, o := range opt.Option {
		if e, ok := o.(*dns.EDNS0_SUBNET); ok && !validECS(e) {
			return dns.RcodeFormatError
		}
	}
	return dns.RcodeSuccess
}

// validECS reports whether a query's ECS option is well formed (RFC 7871 6).
func validECS(e *dns.EDNS0_SUBNET) bool {
	addr, ok := netip.AddrFromSlice(e.Address)
	if !ok || e.SourceScope != 0 {
		return false
	}
	addr = addr.Unmap()
	switch {
	case e.Family == 1 && addr.Is4() && e.SourceNetmask <= 32:
	case e.Family == 2 && addr.Is6() && e.SourceNetmask <= 128:
	default:
		return false
	}
	pfx, err := addr.Prefix(int(e.SourceNetmask))
	return err == nil && pfx.Addr() == addr
}
