// Package pop is the CDN's edge server (point of presence).
//
// A [Server] terminates TLS 1.3 on TCP for HTTP/1.1 and HTTP/2 and QUIC on
// the same UDP port for HTTP/3, advertises HTTP/3 with Alt-Svc, routes each
// request by Host (and SNI) to a configured [Site], answers what it can
// from the shared cache (package cache) and fetches the rest over a warm,
// pooled upstream group (package upstream). A request for a host no site
// serves is refused with 421 and never fetched: the PoP is not an open
// proxy. So is a request whose TLS server name belongs to another site than
// its Host (domain fronting): the certificate the client checked was not
// the Host's.
//
// HTTP/3 requests that arrive in 0-RTT early data are served only for safe
// methods; anything else gets 425 Too Early, and early requests go upstream
// with Early-Data: 1 (RFC 8470).
//
// Lifecycle follows net/http: New validates, Listen binds every socket (so
// tests can use 127.0.0.1:0 and read the addresses back), Serve runs until
// Shutdown (graceful: not ready first, then GOAWAY on h2 and h3, in-flight
// requests finish) or Close.
//
// # Listeners
//
// The TCP listener of the TLS port is the PoP's own. It admits each
// connection under the connection caps ([Limits] MaxConns and
// MaxConnsPerAddr), completes the TLS handshake within ReadHeaderTimeout and
// dispatches by ALPN: HTTP/1.1 to the fast loop and h2 to the hand-written
// HTTP/2 server (both below), or both to net/http's server when the fast
// paths are off. The UDP socket of the same port is quic-go's http3.Server,
// with 0-RTT allowed and the QUIC token and stateless-reset keys derived,
// like the session-ticket keys, from the secret the PoPs of a name share
// (package certs). The plain-HTTP listener (with ACME, for HTTP-01
// challenges) and the admin listener are ordinary net/http servers.
//
// Each client connection on the TLS port gives a round-trip sample after
// its handshake (TCP_INFO's smoothed RTT on TCP, quic-go's on QUIC) and
// another as it closes if it lived over a second, never one per request;
// the admin listener serves them per client /24 or /48 on /rtt, as JSON
// for geodns (package clientrtt).
//
// # A request's path
//
// Every request that no fast path answers goes through [Server.ServeHTTP]:
//
//  1. X-Served-By is set, and Alt-Svc on TCP; admission applies the
//     per-IP rate limit (429), then the in-flight cap (503 with
//     Retry-After): the one gate every request passes, fast or not
//     (hit.go).
//  2. CONNECT is refused (405); the site is found by Host (421 if none),
//     once: the request carries the site's cache.Route (its transport,
//     query mode and Set-Cookie policy) to the cache, which never asks
//     the PoP again; a
//     body larger than MaxBodyBytes gets 413; a request with
//     Transfer-Encoding, or any HTTP/1.0 request, closes its connection
//     after the response (RFC 9112 6.1).
//     ReadyPath is answered here, before routing, and a request whose
//     CDN-Loop shows it passed this PoP, or this CDN twice, gets 508.
//  3. The site's override fields are removed ([Site] StripRequestHeaders)
//     and its denied paths answered 404 at the edge (DenyPaths).
//  4. In early data, unsafe methods get 425.
//  5. The cache answers (package cache: freshness, validation, Vary,
//     stale-*, coalescing, Cache-Status); what it fetches goes to the
//     site's parent tier if it has one (Site.Parent, tier.go: not for a
//     request that already passed this CDN by its CDN-Loop, nor while no
//     parent server is in rotation; on to the origin when the parent
//     cannot be reached), else to its upstream group, with Via, CDN-Loop,
//     X-Forwarded-* and Early-Data added, at most MaxUpstreamPerAddr
//     origin requests in flight per client address. Without a cache, or for an upgrade, the site's
//     httputil.ReverseProxy sends the request over the same transport. An
//     upstream failure becomes 502, 503 (with Retry-After) or 504 through
//     one mapping whose text names no server.
//
// # Fast paths for cache hits
//
// On a hit, the ordinary path's per-request work (a goroutine, the request
// and header maps, the response writer, the same fields encoded again for
// every response) costs more than finding the hit. So each protocol has a
// path that answers a plain hit without it and leaves everything else to
// the ordinary path. The three share:
//
//   - What a plain hit is, defined once in package cache (plain.go): a GET
//     or HEAD with a target cache.PlainTarget accepts (net/url keeps it as
//     sent), a host cache.PlainHost accepts of a configured site (and, on
//     TCP, of the site the connection's SNI named), and no field that
//     cache.PlainRefuses names (If-*, Range, Authorization, Cache-Control,
//     Pragma, Content-Length, Transfer-Encoding, Expect, Trailer, and the
//     connection's own fields; HTTP/1.1 allows Connection: keep-alive or
//     close), for which the cache holds a fresh 200 that does not vary
//     (but for a response compressed at the edge, whose representation
//     the request's one Accept-Encoding field picks: a request with two is
//     not plain), is not purged and needs no validation.
//   - The lookup: the key is built by cache.AppendKey into a reused buffer
//     and found by cache.LookupFast without allocating.
//   - The fields, built once in hit.go: those the ordinary path sends for
//     the same hit (the stored fields over X-Served-By and, on TCP,
//     Alt-Svc; Accept-Ranges and Content-Length; Last-Modified in the
//     cache's canonical form), encoded once per stored response and
//     protocol and kept with the stored entry (cache.Encodings); only Age,
//     Cache-Status, Server-Timing and, when the origin sent none, Date are
//     added per request. The protocol paths only encode.
//   - Timing and the log (timing.go, logs.go): edge in Server-Timing runs
//     from reading the request (HTTP/1.1: the loop's clock reading; HTTP/2
//     and HTTP/3: a monotonic one) to the lookup's own clock reading
//     (cache.FastHit.Now), so a hit reads the clock no more than before;
//     an access log line is a Record copied into the log's queue (package
//     accesslog), built only when a file or a GET /logs follower wants it.
//   - Admission: the same admit as the ordinary path (the per-IP bucket,
//     then the in-flight cap), through admitHit, which passes a request
//     the cap would refuse before it takes a token; a refused request is
//     left to the ordinary path, which answers 429 or 503 without charging
//     a token twice.
//
// HTTP/1.1. The TLS listener's own loop reads a connection's request heads
// into a 4 KiB buffer and parses each in place. A plain hit's precomputed
// status line and header block, the per-request fields and the body leave
// in one TLS write (a body too large for one buffer is corked under the
// TLS connection so that its records leave together). The first request on
// a connection that is not a plain hit (a miss, a conditional or range
// request, a body, an unusual field, or unusual syntax such as bare LF line
// ends or a head longer than the buffer) moves the connection, with the
// bytes already read, to net/http for good: parsing rules and every other
// feature stay net/http's, and the fast loop never decides a case net/http
// would decide differently. The first request must arrive within
// ReadHeaderTimeout, later ones within IdleTimeout. On Shutdown, idle
// connections close at once and busy ones after their response, with
// Connection: close.
//
// HTTP/2. Connections that negotiate h2 are served by the hand-written
// HTTP/2 server of package pop/internal/h2 (RFC 9113), not net/http's; the
// PoP gives it ServeHTTP for every stream and one narrow hook for plain
// hits (h2hits.go). Frames are parsed, and header
// blocks decoded and checked, by golang.org/x/net/http2's Framer. One
// goroutine per connection reads frames and answers plain hits itself, with
// no goroutine per stream: a stored response's header block is
// HPACK-encoded once, as literals without indexing after one dynamic table
// size update to zero, so one block is valid on every connection; and the
// responses to everything one read brought in leave in one TLS write (a
// large body in 64 KiB batches). A hit larger than the send window waits
// for window in a goroutine of its own. Every other stream runs
// ServeHTTP in its own goroutine, as net/http's server would, with flow
// control both ways (request bodies buffered up to 1 MiB per stream and
// 4 MiB per connection), trailers, the MaxConcurrentStreams limit, GOAWAY
// on drain, and rapid-reset protection (refused streams piling up while no
// handler finishes end the connection with ENHANCE_YOUR_CALM). h2spec
// passes 145/145 against it (TestH2Spec in its package runs it where it is
// installed; .ci/run installs it), or by hand against a PoP on port 8443:
//
//	go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
//	h2spec -t -k -p 8443 -P /gen/1k
//
// HTTP/3. quic-go reads the request and calls ServeHTTP, which answers a
// plain hit before anything else: it takes the request stream over from
// quic-go's response writer and sends, in one stream write, a HEADERS frame
// made of the stored response's QPACK field section (static table only,
// plain strings rather than Huffman codes, encoded once per stored
// response) plus age, cache-status, server-timing and, when needed, date, then the DATA
// frame. Everything else, a miss included, goes through quic-go's writer.
//
// [Config] DisableFastPath (pop -no-fast-path) turns all three off: net/http
// serves HTTP/1.1 and HTTP/2 and quic-go's writer every HTTP/3 response.
// Running without a cache ([CacheConfig] Disabled) does the same. The tests
// hold each fast path to the ordinary path's status, fields and bytes for
// the same hit, and [Server.FastHits] counts what each answered. What the
// fast paths are worth, measured against nginx, HAProxy, Varnish and Caddy,
// is in bench/RESULTS.md.
package pop
