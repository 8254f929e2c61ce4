package h2

// Flow control (RFC 9113 5.2, 6.9), one type per direction, as
// golang.org/x/net/http2 keeps it.

// outflow is a send window: what we may still send. It can go negative
// when the peer lowers SETTINGS_INITIAL_WINDOW_SIZE.
type outflow int64

// add grows the window by a WINDOW_UPDATE's increment (or a settings
// change); it reports false when the window would pass 2^31-1, a flow
// control error.
func (w *outflow) add(n int64) bool {
	if int64(*w)+n > maxWindow {
		return false
	}
	*w += outflow(n)
	return true
}

// take spends n bytes of window, which the caller has checked is there.
func (w *outflow) take(n int64) { *w -= outflow(n) }

// inflow is a receive window: avail is what the peer may still send;
// unsent is what we have consumed (read by a handler, or dropped) and not
// yet given back with WINDOW_UPDATE.
type inflow struct {
	avail, unsent int64
}

// inflowMinRefresh is the smallest window update sent while the peer still
// has more window than we owe it: reads of a few bytes are batched.
const inflowMinRefresh = 4 << 10

// take accounts for n bytes the peer sent; it reports false when they
// exceed the window, a flow control error.
func (f *inflow) take(n int64) bool {
	if n > f.avail {
		return false
	}
	f.avail -= n
	return true
}

// give returns n consumed bytes to the window and reports the increment
// to send now: 0 while the update is batched, which it is while it is
// under inflowMinRefresh and under what the peer still has.
func (f *inflow) give(n int64) uint32 {
	f.unsent += n
	if f.unsent < inflowMinRefresh && f.unsent < f.avail {
		return 0
	}
	inc := f.unsent
	f.avail += inc
	f.unsent = 0
	return uint32(inc)
}
