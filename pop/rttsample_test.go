package pop

import (
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgecdn/cdn/pop/clientrtt"
)

// loopbackTCP returns the server side of a TCP connection on loopback.
func loopbackTCP(t *testing.T) *net.TCPConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv.(*net.TCPConn)
}

// TestTCPSamplesAtHandshakeAndLongClose: a TCP connection is sampled
// after its handshake, and again as its corkConn closes if it lived
// longer than rttCloseAfter, once however often it is closed; a
// connection whose handshake never completed is not sampled.
func TestTCPSamplesAtHandshakeAndLongClose(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("TCP_INFO is read on Linux only")
	}
	r, err := newRTTSampler(clientrtt.Config{}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	newConn := func() *corkConn {
		c := loopbackTCP(t)
		return &corkConn{Conn: c, rtt: r.newTCPRTT(c, c.RemoteAddr())}
	}
	samples := func() int64 {
		s := r.table.Snapshot()
		if len(s) == 0 {
			return 0
		}
		if len(s) != 1 || s[0].Prefix.String() != "127.0.0.0/24" || s[0].RTT <= 0 {
			t.Fatalf("table = %+v, want one entry, 127.0.0.0/24 with an RTT", s)
		}
		return s[0].Samples
	}

	newConn().Close() // no handshake
	if n := samples(); n != 0 {
		t.Fatalf("%d samples after a connection closed before its handshake, want 0", n)
	}

	short := newConn()
	short.rtt.handshakeDone()
	short.Close()
	if n := samples(); n != 1 {
		t.Fatalf("%d samples after a short connection, want 1 (the handshake's)", n)
	}

	long := newConn()
	long.rtt.handshakeDone()
	long.rtt.since.Add(-int64(rttCloseAfter + time.Second)) // as if the handshake were that long ago
	long.Close()
	long.Close()
	if n := samples(); n != 3 {
		t.Fatalf("%d samples after a long connection closed twice, want 3", n)
	}
}
