package pop

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/edgecdn/cdn/pop/clientrtt"
)

// rttCloseAfter is how long a connection must have lived for its close to
// bring a second sample: a shorter one's estimate has hardly moved since
// its handshake.
const rttCloseAfter = time.Second

// rttSampler feeds the client RTT table (package clientrtt, served on the
// admin listener's /rtt) from the connections the PoP terminates: the
// transport's smoothed RTT once the handshake has completed (it has
// measured a few round trips by then) and again as the connection closes,
// if it lived longer than rttCloseAfter. Never per request: no hit path
// knows of it. TCP connections (HTTP/1.1 and HTTP/2, on the fast paths or
// net/http) are sampled by their tcpRTT, QUIC ones by watchQUIC.
type rttSampler struct {
	table     *clientrtt.Table
	tcp, quic prometheus.Counter // pop_client_rtt_samples_total{proto}
	epoch     time.Time          // origin of tcpRTT.since

	mu     sync.Mutex // guards closed
	closed bool
	wg     sync.WaitGroup // watchQUIC's goroutines and AfterFuncs
}

func newRTTSampler(cfg clientrtt.Config, reg *prometheus.Registry) (*rttSampler, error) {
	t, err := clientrtt.New(cfg)
	if err != nil {
		return nil, err
	}
	samples := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pop_client_rtt_samples_total",
		Help: "Round-trip samples taken from client connections (at the handshake and at a long connection's close), by transport (tcp, quic).",
	}, []string{"proto"})
	reg.MustRegister(samples, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pop_client_rtt_prefixes",
		Help: "Client prefixes (/24, /48) in the round-trip table served on /rtt.",
	}, func() float64 { return float64(t.Len()) }))
	return &rttSampler{table: t, tcp: samples.WithLabelValues("tcp"), quic: samples.WithLabelValues("quic"), epoch: time.Now()}, nil
}

// add records a sample and counts it if the table took it.
func (r *rttSampler) add(c prometheus.Counter, addr netip.Addr, rtt time.Duration) {
	if r.table.Add(addr, rtt) {
		c.Inc()
	}
}

// tcpRTT samples one TLS connection over TCP. It lives in the
// connection's corkConn, whose Close calls closing: every path that ends
// the connection (the fast loops, the HTTP/2 server, net/http) closes it
// through the TLS connection and so through the corkConn.
type tcpRTT struct {
	r    *rttSampler  // nil: no sampling
	sc   syscall.Conn // the *net.TCPConn, for TCP_INFO
	addr netip.Addr
	// since is when the handshake completed, in nanoseconds after r.epoch
	// plus one; 0 before, and once closing has taken it.
	since atomic.Int64
	// last is the latest smoothed RTT read from the socket, for the
	// Server-Timing of each response (current), and lastAt when it was
	// read, in nanoseconds after r.epoch.
	last, lastAt atomic.Int64
}

// newTCPRTT returns the sampling state of a TCP connection, sampled
// through sc; it samples nothing when sc is nil (not a socket).
func (r *rttSampler) newTCPRTT(sc syscall.Conn, remote net.Addr) tcpRTT {
	if sc == nil {
		return tcpRTT{}
	}
	return tcpRTT{r: r, sc: sc, addr: addrIP(remote)}
}

// handshakeDone takes the first sample.
func (t *tcpRTT) handshakeDone() {
	if t.r == nil {
		return
	}
	rtt := socketRTT(t.sc)
	t.r.add(t.r.tcp, t.addr, rtt)
	now := int64(time.Since(t.r.epoch))
	t.last.Store(int64(rtt))
	t.lastAt.Store(now)
	t.since.Store(now + 1)
}

// rttRefresh is how old the RTT a response reports may be before the
// socket is asked again: once a second at most per connection, never per
// request.
const rttRefresh = time.Second

// current is the connection's smoothed RTT as of at most rttRefresh
// before start+since (a clock read a request made, and the time since),
// for a response's Server-Timing (not a sample for the table); 0 when
// unknown.
func (t *tcpRTT) current(start time.Time, since time.Duration) time.Duration {
	if t == nil || t.r == nil {
		return 0
	}
	at := int64(start.Sub(t.r.epoch) + since)
	if at-t.lastAt.Load() > int64(rttRefresh) {
		t.lastAt.Store(at)
		if rtt := socketRTT(t.sc); rtt > 0 {
			t.last.Store(int64(rtt))
		}
	}
	return time.Duration(t.last.Load())
}

// closing takes the last sample, before the socket closes, once.
func (t *tcpRTT) closing() {
	if t.r == nil {
		return
	}
	if since := t.since.Swap(0); since != 0 && time.Since(t.r.epoch)-time.Duration(since-1) > rttCloseAfter {
		t.r.add(t.r.tcp, t.addr, socketRTT(t.sc))
	}
}

// watchQUIC samples a QUIC connection once its handshake completes and
// again when it ends, if it lived longer than rttCloseAfter: a goroutine
// waits for the handshake, then leaves the second sample to a
// context.AfterFunc, so that nothing waits through the connection's
// life. Both are r's: close waits for them, after the QUIC transport has
// closed every connection. (quic-go keeps its RTT estimate readable after
// the connection has closed.)
func (r *rttSampler) watchQUIC(c *quic.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	r.wg.Go(func() {
		select {
		case <-c.HandshakeComplete():
		case <-c.Context().Done():
			return
		}
		addr, start := addrIP(c.RemoteAddr()), time.Now()
		r.add(r.quic, addr, c.ConnectionStats().SmoothedRTT)
		r.wg.Add(1) // while this goroutine is counted: never from zero
		context.AfterFunc(c.Context(), func() {
			defer r.wg.Done()
			if time.Since(start) > rttCloseAfter {
				r.add(r.quic, addr, c.ConnectionStats().SmoothedRTT)
			}
		})
	})
}

// close stops watching new QUIC connections and waits for the watchers,
// which end with their connections.
func (r *rttSampler) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.wg.Wait()
}

// addrIP is the IP address of a TCP or UDP address, or the zero Addr.
func addrIP(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort().Addr()
	case *net.UDPAddr:
		return a.AddrPort().Addr()
	}
	return netip.Addr{}
}
