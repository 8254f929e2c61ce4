//go:build linux

package geodns

import (
	"net/netip"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BenchmarkRawBatch is the Linux loop's work on batches of the harness's
// queries from 5,120 ECS prefixes, beside the system calls: between two
// batches the kernel's networking runs and evicts much of the CPU's
// caches, which touching 3 MiB stands in for ("evict-only" is that
// alone: a query's cost is the difference over batchSize). "each" answers the queries one after
// the other (serveFast), "serve" as the loop does (rawBatch.serve: all
// lookups first).
func BenchmarkRawBatch(b *testing.B) {
	s, pkts := manyClients(b)
	src := netip.MustParseAddrPort("127.0.0.1:40000")
	now := time.Now()
	rb := newRawBatch()
	key := make([]byte, maxKeyLen)
	for _, pkt := range pkts {
		s.serveFast(pkt, src, now, key, rb.outBuf)
	}
	evict := make([]byte, 3<<20)
	touch := func() {
		for i := 0; i < len(evict); i += 64 {
			evict[i]++
		}
	}
	decline := func([]byte, int, netip.AddrPort) { b.Fatal("declined") }
	next := 0
	fill := func() {
		for i := range batchSize {
			pkt := pkts[next]
			next = (next + 1) % len(pkts)
			copy(rb.inBuf[i*rawSlot:], pkt)
			rb.in[i].Len = uint32(len(pkt))
			sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rb.names[i]))
			sa.Family, sa.Addr, sa.Port = unix.AF_INET, src.Addr().As4(), 0x409c // 40000, network order
			rb.in[i].Hdr.Namelen = unix.SizeofSockaddrInet4
		}
	}
	run := func(b *testing.B, serve func()) {
		b.ReportAllocs()
		for b.Loop() {
			fill()
			touch()
			serve()
		}
	}
	b.Run("evict-only", func(b *testing.B) { run(b, func() {}) })
	b.Run("each", func(b *testing.B) {
		run(b, func() {
			for i := range batchSize {
				pkt := rb.inBuf[i*rawSlot : i*rawSlot+int(rb.in[i].Len)]
				if _, act := s.serveFast(pkt, src, now, key, rb.outBuf); act != answered {
					b.Fatal("not answered")
				}
			}
		})
	})
	b.Run("serve", func(b *testing.B) {
		run(b, func() {
			if k := rb.serve(s, batchSize, now, decline); k != batchSize {
				b.Fatalf("serve answered %d of %d", k, batchSize)
			}
		})
	})
}
