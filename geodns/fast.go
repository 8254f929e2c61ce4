package geodns

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// The UDP fast path. A query over UDP is read by a batch loop (batch.go)
// and, if plain, answered here without miekg/dns:
//
//  1. parsePlain reads the packet in place: one question whose name is
//     made of letters, digits, '-' and '_', no answer or authority
//     records, at most an OPT record (version 0) whose only option is a
//     well-formed ECS. Anything else, or anything it is not sure of, is
//     declined and goes to miekg/dns and ServeDNS as before, strict
//     parsing included.
//  2. The memo key is what the slow path's answer depends on: the name
//     lowercased, type and class, the RD and CD bits, EDNS and the UDP
//     size it allows, and the client: the ECS family, source prefix and
//     address, or without ECS the source address.
//  3. The memo (memo.go) holds, per key, the answer in wire form for each
//     option of the name's route, built by running the slow path itself
//     (Server.reply, withOPT, finishUDP, Msg.Pack) once per option, with
//     the route's shares; it is rebuilt when the server's generation moves
//     (health, RTT tables, reload) or a measurement it counted goes stale.
//     Keys whose answers are the same bytes but for the ECS address that
//     ends them share one set (one per route and scope, not per prefix).
//  4. As ServeDNS would, the fast path rolls (Server.roll, and mainRoll's
//     second over the client's prefix), picks the option with
//     route.pickIndex, counts the metrics, applies rate limiting (a
//     slipped reply is precomputed too), then copies the wire answer and
//     patches in the query's ID, its name as spelt (DNS 0x20) and its ECS
//     address.
//
// FuzzFastPath proves the answers byte for byte equal to the slow path's.

// action is what the fast path did with one query.
type action int

const (
	declined action = iota // not plain, or not for the memo: the slow path's
	answered               // the reply is written to out
	withheld               // rate limiting dropped the reply
)

// serveFast answers the UDP query pkt from src at now into out (at least
// maxUDPSize bytes), using key (at least maxKeyLen bytes) as scratch.
func (s *Server) serveFast(pkt []byte, src netip.AddrPort, now time.Time, key, out []byte) (int, action) {
	p, ok := parsePlain(pkt, src.Addr(), key)
	if !ok {
		return 0, declined
	}
	return s.answerFast(pkt, src, now, p, s.memo.get(p.key, s.gen.Load(), now), out)
}

// answerFast answers the plain query pkt, read as p, with e, its memo
// entry, or if e is nil with one it builds. serveFast looks e up first;
// the Linux loop (rawudp_linux.go) looks up a whole batch's entries
// before it answers any, so that the CPU waits for their memory at once
// rather than once per query.
func (s *Server) answerFast(pkt []byte, src netip.AddrPort, now time.Time, p plain, e *entry, out []byte) (int, action) {
	st := s.state.Load()
	if e == nil {
		e = s.buildEntry(st, s.gen.Load(), pkt, p, src, now)
		s.memo.put(e)
	}
	a := e.ans
	if a == nil {
		return 0, declined
	}
	i := 0
	if a.geo {
		i = a.pick.pickIndex(s.roll(), rollAt(e.seed, now))
		for _, c := range a.steered[i] {
			c.Inc()
		}
	}
	a.queries.Inc()
	w := a.option(i)
	if st.rrl != nil {
		v := st.rrl.check(src.Addr())
		s.metrics.limit(v)
		switch v {
		case drop:
			return 0, withheld
		case slipTC:
			w = &a.slip
		}
	}
	n := copy(out, w.b)
	out[0], out[1] = pkt[0], pkt[1]
	name := pkt[12 : 12+a.nameLen]
	for _, at := range w.names[:w.n] {
		copy(out[at:], name)
	}
	copy(out[n-int(w.tail):n], pkt[len(pkt)-int(w.tail):])
	return n, answered
}

// plain is what parsePlain read of a query.
type plain struct {
	nameEnd int    // offset of the question's type: 12 + the name's length
	key     []byte // the memo key
}

// The memo key: flags, UDP size, type, class, client family, source
// prefix, address (16 bytes), then the question's name in wire form,
// lowercased.
const (
	keyRD   = 1 << iota // RD set: the reply copies it
	keyCD               // CD set: the reply copies it
	keyEDNS             // an OPT record
	keyECS              // an ECS option: the client is its address
)

const (
	keyHeader = 1 + 2 + 2 + 2 + 1 + 1 + 16
	maxKeyLen = keyHeader + 255
)

// nameByte maps the bytes a plain name may hold to their lowercase, and
// every other byte to 0: with only these, miekg/dns's presentation form of
// the name is the labels joined by dots, and its lowercase is the key's.
var nameByte = func() (t [256]byte) {
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c)
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = byte(c)
		t[c-'a'+'A'] = byte(c)
	}
	t['-'], t['_'] = '-', '_'
	return t
}()

// parsePlain reads pkt, from src, if it is a plain query (see above),
// building its memo key in buf (at least maxKeyLen bytes).
func parsePlain(pkt []byte, src netip.Addr, buf []byte) (p plain, ok bool) {
	// Header: a query (QR 0) of opcode QUERY, neither AA nor TC, no Z
	// bit or RCODE; one question and at most one additional record.
	if len(pkt) < 17 || pkt[2]&0xfe != 0 || pkt[3]&0x4f != 0 ||
		binary.BigEndian.Uint16(pkt[4:]) != 1 || binary.BigEndian.Uint16(pkt[6:]) != 0 ||
		binary.BigEndian.Uint16(pkt[8:]) != 0 || binary.BigEndian.Uint16(pkt[10:]) > 1 {
		return p, false
	}
	key := buf[:keyHeader]
	off := 12
	for {
		if off >= len(pkt) {
			return p, false
		}
		l := int(pkt[off])
		if l == 0 {
			key = append(key, 0)
			off++
			break
		}
		if l > 63 || off+1+l > len(pkt) || off+1+l-12 > 254 {
			return p, false // a pointer, a reserved label type, past the end, or too long
		}
		key = append(key, byte(l))
		for _, c := range pkt[off+1 : off+1+l] {
			lc := nameByte[c]
			if lc == 0 {
				return p, false
			}
			key = append(key, lc)
		}
		off += 1 + l
	}
	if off+4 > len(pkt) {
		return p, false
	}
	p.nameEnd = off
	qtype, qclass := pkt[off:off+2], pkt[off+2:off+4]
	off += 4
	flags := byte(0)
	if pkt[2]&0x01 != 0 {
		flags |= keyRD
	}
	if pkt[3]&0x10 != 0 {
		flags |= keyCD
	}
	size := 512
	client := src.Unmap()
	family, bits := byte(4), byte(0)
	if client.Is6() {
		family = 6
	}
	addr := client.As16()
	if pkt[11] == 0 {
		if off != len(pkt) {
			return p, false // bytes after the question
		}
	} else {
		// OPT: root owner, type 41, class the UDP size, TTL the extended
		// RCODE (0 here), version (0) and flags, then RDLENGTH and the
		// options, ending the packet.
		if off+11 > len(pkt) || pkt[off] != 0 || binary.BigEndian.Uint16(pkt[off+1:]) != 41 ||
			pkt[off+5] != 0 || pkt[off+6] != 0 {
			return p, false
		}
		size = min(max(int(binary.BigEndian.Uint16(pkt[off+3:])), 512), maxUDPSize)
		rdlen := int(binary.BigEndian.Uint16(pkt[off+9:]))
		off += 11
		if off+rdlen != len(pkt) {
			return p, false
		}
		flags |= keyEDNS
		if rdlen > 0 {
			// One option, ECS (RFC 7871 6): family 1 or 2, a source
			// prefix the family can hold, scope 0, and just the address
			// bytes the prefix needs, none of its bits set past it.
			opt := pkt[off:]
			if rdlen < 8 || binary.BigEndian.Uint16(opt) != 8 || int(binary.BigEndian.Uint16(opt[2:]))+4 != rdlen {
				return p, false
			}
			fam, source, scope := binary.BigEndian.Uint16(opt[4:]), int(opt[6]), opt[7]
			a := opt[8:]
			if scope != 0 || (fam != 1 || source > 32) && (fam != 2 || source > 128) || len(a) != (source+7)/8 {
				return p, false
			}
			if source%8 != 0 && a[len(a)-1]&(0xff>>(source%8)) != 0 {
				return p, false
			}
			flags |= keyECS
			family, bits = byte(fam), byte(source)
			addr = [16]byte{}
			copy(addr[:], a)
		}
	}
	key[0] = flags
	binary.BigEndian.PutUint16(key[1:], uint16(size))
	copy(key[3:5], qtype)
	copy(key[5:7], qclass)
	key[7], key[8] = family, bits
	copy(key[9:25], addr[:])
	p.key = key
	return p, true
}
