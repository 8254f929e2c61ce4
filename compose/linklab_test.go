package compose_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/edgecdn/cdn/compose"
	"github.com/edgecdn/cdn/compose/labtest"
)

// TestLabLinkDelay is lab link on a running native lab, through the
// socket lab up answers on: the misplaced client-moved is 10 ms from
// pop-na and 90 ms from pop-eu, whatever GeoDNS makes of it; +100 ms on
// pop-eu raises client-eu's round trip to it by about 100 ms, measured
// with UDP echoes (as calibration measures) and with TCP connects to
// pop-eu's HTTPS port, and 0 brings it back. The bounds are loose: the
// lab's services share the machine's CPUs with its delay line.
func TestLabLinkDelay(t *testing.T) {
	ctx := labtest.Context(t)
	lab := labtest.Start(ctx, t, "elk")
	r := lab.Runner
	socket := compose.NativeLinkSocket(lab.State)
	ls, err := compose.StartLinkServer(socket, r)
	if err != nil {
		t.Fatalf("StartLinkServer: %v", err)
	}
	defer ls.Close()

	t.Logf("client-moved: www.cdn.lab = %s", resolve(ctx, t, r, "client-moved", "www.cdn.lab"))
	for _, tt := range []struct {
		pop  string
		want time.Duration
	}{
		{"pop-na", 10 * time.Millisecond},
		{"pop-eu", 90 * time.Millisecond},
		{"pop-ap", 90 * time.Millisecond},
	} {
		udp, tcp := measure(ctx, t, r, "client-moved", tt.pop)
		t.Logf("client-moved -> %s: UDP %v, TCP connect %v; matrix %v", tt.pop, udp, tcp, tt.want)
		for _, got := range []time.Duration{udp, tcp} {
			if got < tt.want-time.Millisecond || got > tt.want+10*time.Millisecond {
				t.Errorf("client-moved -> %s = %v, want about %v", tt.pop, got, tt.want)
			}
		}
	}

	udp0, tcp0 := measure(ctx, t, r, "client-eu", "pop-eu")
	t.Logf("client-eu -> pop-eu: UDP %v, TCP connect %v", udp0, tcp0)
	for _, tt := range []struct {
		extra    time.Duration
		min, max time.Duration // of the change from the first measurement
	}{
		{100 * time.Millisecond, 80 * time.Millisecond, 130 * time.Millisecond},
		{0, -10 * time.Millisecond, 10 * time.Millisecond},
	} {
		msg, err := compose.SetLinkDelayAt(ctx, socket, "pop-eu", tt.extra)
		if err != nil {
			t.Fatalf("lab link pop-eu %v: %v", tt.extra, err)
		}
		udp, tcp := measure(ctx, t, r, "client-eu", "pop-eu")
		t.Logf("lab link pop-eu %v (%s): client-eu -> pop-eu UDP %v (%+v), TCP connect %v (%+v)", tt.extra, msg, udp, udp-udp0, tcp, tcp-tcp0)
		if d := udp - udp0; d < tt.min || d > tt.max {
			t.Errorf("with pop-eu +%v the UDP round trip from client-eu changed by %v, want %v..%v", tt.extra, d, tt.min, tt.max)
		}
		if d := tcp - tcp0; d < tt.min || d > tt.max {
			t.Errorf("with pop-eu +%v the TCP connect from client-eu changed by %v, want %v..%v", tt.extra, d, tt.min, tt.max)
		}
	}
}

// measure is the round trip from host to pop twice over: the least of
// five UDP echoes through the lab (Net.MeasureRTT, as calibration does)
// and the least of three TCP connects to the PoP's port 443 (one round
// trip: SYN, SYN-ACK).
func measure(ctx context.Context, t *testing.T, r *compose.Runner, host, pop string) (udp, tcp time.Duration) {
	t.Helper()
	udp, err := r.Net.MeasureRTT(ctx, host, pop, 5)
	if err != nil {
		t.Fatalf("%s -> %s: %v", host, pop, err)
	}
	addr := net.JoinHostPort(mustHost(t, r.Topo, pop).Addr.String(), "443")
	dial := r.Net.Dialer(host)
	tcp = -1
	for range 3 {
		start := time.Now()
		c, err := dial(ctx, "tcp", addr)
		took := time.Since(start)
		if err != nil {
			t.Fatalf("%s: connect to %s: %v", host, addr, err)
		}
		c.Close()
		if tcp < 0 || took < tcp {
			tcp = took
		}
	}
	return udp.Round(10 * time.Microsecond), tcp.Round(10 * time.Microsecond)
}
