package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// Errors of RoundTrip and Start; test with errors.Is. RoundTrip returns
// them bare or inside an *Error.
var (
	// ErrOverloaded: the group already has MaxConcurrent requests in flight.
	ErrOverloaded = errors.New("upstream overloaded")
	// ErrTimeout: a connect, TLS handshake, response header or total timeout expired.
	ErrTimeout = errors.New("upstream timeout")
	// ErrClosed: the group was closed.
	ErrClosed = errors.New("upstream group closed")
)

// Error is a failed exchange with one origin server, as RoundTrip and a
// response body's Read return it. Its message says how far the exchange
// got and what went wrong, and names neither the server nor the group, so
// that a PoP may show it to a client without revealing its origins. Server
// and Err hold the detail for logs; errors.Is and errors.As see through to
// Err (ErrTimeout, context.Canceled, *net.OpError, ...).
type Error struct {
	// Server is the origin server's URL, such as https://10.0.0.7:443.
	Server string
	// Err is the cause. Its message may name the server's address.
	Err error
	msg string
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.Err }

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
	err := fmt.Errorf("%s: %w", what, ErrTimeout)
	return &Error{Server: s.url.String(), Err: err, msg: "origin server: " + err.Error()}
}

// exchangeError reports err, which ended an exchange with s in phase p, in
// words that name no address: net and TLS errors spell out the addresses
// of both ends.
func exchangeError(s *server, p phase, err error) error {
	msg := "origin server failed " + p.String()
	if c := cause(err); c != "" {
		msg += ": " + c
	}
	return &Error{Server: s.url.String(), Err: err, msg: msg}
}

// cause names what went wrong in err, or "" if it is nothing known.
func cause(err error) string {
	var (
		dns     *net.DNSError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
		record  tls.RecordHeaderError
		alert   tls.AlertError
	)
	switch {
	case errors.Is(err, context.Canceled):
		return "request cancelled"
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline exceeded"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to the server"
	case errors.As(err, &dns):
		return "name not resolved"
	case errors.As(err, &unknown), errors.As(err, &host), errors.As(err, &invalid):
		return "certificate not accepted"
	case errors.As(err, &record):
		return "not a TLS server"
	case errors.As(err, &alert):
		return "TLS alert"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.EPIPE), errors.Is(err, net.ErrClosed),
		errors.Is(err, errOriginClosed):
		return "connection closed"
	}
	return ""
}
