// Package h2 is the PoP's hand-written HTTP/2 server (RFC 9113), for
// connections whose TLS handshake the PoP completed itself.
//
// It exists for one reason: a plain request for a cached response (see
// cache.PlainRefuses) is answered from the connection's reader goroutine,
// with no goroutine, no http.Request and no ResponseWriter, through the
// narrow Hits hook; and the answers to one batch of requests leave in one
// TLS write. Every other stream gets an *http.Request built as net/http's
// HTTP/2 server builds it and runs Server.Handler in a goroutine of its
// own, with a ResponseWriter that behaves as net/http's does (buffered
// start of body, Content-Length for short bodies, sniffed Content-Type,
// trailers, Flush, 1xx).
//
// Header blocks are encoded without the dynamic table (package fieldenc:
// literal fields without indexing, after one table size update to zero), so
// a stored response's block is valid on every connection. Frames are
// parsed, and header blocks decoded and checked, by
// golang.org/x/net/http2's Framer. Flow control keeps a window type per
// direction (flow.go); receive-window updates are batched.
//
// Limits: concurrent streams per connection (refusals piling up without a
// handler finishing close the connection with ENHANCE_YOUR_CALM: the
// rapid-reset pattern), header list size, a read-header timeout for the
// preface, an idle timeout that also bounds how long a stream waits for
// send window, 1 MiB of request body buffered per stream and 4 MiB per
// connection.
package h2

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Server configures the connections it serves. Its fields must not change
// once a connection is served.
type Server struct {
	// Handler serves every request Hits does not answer. Required.
	Handler http.Handler
	// MaxConcurrentStreams per connection. If zero, 250.
	MaxConcurrentStreams int
	// MaxHeaderBytes caps a request's header list (SETTINGS_MAX_HEADER_LIST_SIZE);
	// a larger one is answered 431. Required (> 0).
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds the wait for the client's preface and
	// first SETTINGS. Required.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a connection without streams after this long, and
	// cancels a stream whose send window stays closed this long. Required.
	IdleTimeout time.Duration
	// Draining, when it reports true, makes connections send GOAWAY and
	// end with their last stream. If nil, never.
	Draining func() bool
	// Logger receives malformed requests (debug) and handler panics. If
	// nil, slog.Default().
	Logger *slog.Logger
	// ConnContext, if not nil, derives the context of a connection's
	// requests from ctx, as net/http's Server.ConnContext does.
	ConnContext func(ctx context.Context, tc *tls.Conn) context.Context
}

// Hits answers plain requests from a connection's reader goroutine: a GET
// or HEAD that ends its stream, with :scheme https, a :path that
// cache.PlainTarget accepts, an :authority (or one Host equal to it) that
// cache.PlainHost accepts, and no field that cache.PlainRefuses names.
type Hits interface {
	// Hit appends to block the whole response header block for such a
	// request (:status included, encoded as package fieldenc does) and
	// returns it with the body, in two pieces (body then tail, as
	// cache.FastHit keeps it; either may be empty). acceptEncoding is the request's one
	// accept-encoding field, or "" (a request with two is not plain). ok
	// false sends the request to the Handler. A request Hit answers is
	// the hook's until Done.
	Hit(block []byte, head bool, authority, path, acceptEncoding string) (out, body, tail []byte, ok bool)
	// Done reports what became of the last answer Hit gave: served (its
	// frames are queued; called before they are written, so a count made
	// here is visible to a client that has the answer) or not (the
	// connection refused the stream).
	Done(served bool)
}

// Corker is implemented by a connection under the TLS layer that can
// gather writes (the PoP's corkConn): a large batch of frames is written
// corked, so that its TLS records leave in few syscalls.
type Corker interface {
	Cork()
	Uncork() error
}

// halfCloser is a connection under the TLS layer that can end its sending
// side alone, which teardown does before draining a closing connection.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

func (s *Server) draining() bool { return s.Draining != nil && s.Draining() }
