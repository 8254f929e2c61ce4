package cache

import (
	"context"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
)

// withInterim returns ctx with a trace that relays the origin's interim
// responses to w, the response to r, as they arrive, before the final
// response (never to an HTTP/1.0 client, RFC 9110 15.2): 102
// Processing, 103 Early Hints with its Link fields (RFC 8297), any other
// 1xx but 100 Continue (the PoP's own server answers Expect) and 101 (an
// upgrade is not interim). They are never stored (only the final response
// is) and never mixed into it: their fields go out with them and w's
// header is put back as it was (RFC 9110 15.2). The transport calls the
// trace before RoundTrip returns the final response, while the request's
// handler is still waiting for it, so w is not written concurrently.
func withInterim(ctx context.Context, w http.ResponseWriter, r *http.Request) context.Context {
	if !r.ProtoAtLeast(1, 1) {
		return ctx
	}
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		Got1xxResponse: func(code int, fields textproto.MIMEHeader) error {
			if code == http.StatusContinue || code == http.StatusSwitchingProtocols {
				return nil
			}
			h := w.Header()
			saved := h.Clone()
			interim := http.Header(fields)
			removeHopByHop(interim)
			for k, v := range interim {
				h[k] = v
			}
			w.WriteHeader(code)
			clear(h)
			for k, v := range saved {
				h[k] = v
			}
			return nil
		},
	})
}
