package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Errors of RoundTrip and Start, wrapped with the group or server and the
// phase; test with errors.Is.
var (
	// ErrOverloaded: the group already has MaxConcurrent requests in flight.
	ErrOverloaded = errors.New("upstream overloaded")
	// ErrUnavailable: no server is healthy with a breaker that admits the request.
	ErrUnavailable = errors.New("no upstream server available")
	// ErrTimeout: a connect, TLS handshake, response header or total timeout expired.
	ErrTimeout = errors.New("upstream timeout")
	// ErrClosed: the group was closed.
	ErrClosed = errors.New("upstream group closed")
)

// phase is how far one attempt got, as its httptrace hooks saw it.
type phase int32

const (
	phaseQueued  phase = iota // waiting for a connection
	phaseConnect              // resolving and dialling
	phaseTLS                  // TLS handshake
	phaseSent                 // has a connection: writing the request, waiting for headers
	phaseBody                 // headers received
)

func (p phase) String() string {
	switch p {
	case phaseConnect:
		return "connecting"
	case phaseTLS:
		return "in the TLS handshake"
	case phaseSent:
		return "awaiting response headers"
	case phaseBody:
		return "reading the body"
	}
	return "waiting for a connection"
}

// isTimeout reports whether err is a deadline or a timeout of any layer.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// isDial reports whether err came from dialling (so nothing was sent).
func isDial(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// timeoutError names the timeout that expired. total is set when the
// group's TotalTimeout did (rather than one of the transport's timeouts).
func (g *Group) timeoutError(s *server, p phase, total bool) error {
	var what string
	switch {
	case total:
		what = fmt.Sprintf("total timeout (%v) %s", g.cfg.TotalTimeout, p)
	case p == phaseConnect:
		what = fmt.Sprintf("connect timeout (%v)", g.cfg.ConnectTimeout)
	case p == phaseTLS:
		what = fmt.Sprintf("tls handshake timeout (%v)", g.cfg.TLSTimeout)
	default:
		what = fmt.Sprintf("response header timeout (%v)", g.cfg.ResponseHeaderTimeout)
	}
	return fmt.Errorf("origin %s: %s: %w", s.url, what, ErrTimeout)
}

// unavailable explains why no server could take a request.
func (g *Group) unavailable(now time.Time) error {
	var sick, ejected int
	for _, s := range g.servers {
		switch {
		case !s.healthy.Load():
			sick++
		case !s.breaker.usable(now):
			ejected++
		}
	}
	return fmt.Errorf("upstream %s: %d servers, %d unhealthy, %d ejected by their breaker: %w",
		g.cfg.Name, len(g.servers), sick, ejected, ErrUnavailable)
}
