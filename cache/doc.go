// Package cache is the PoP's RFC 9111 shared HTTP cache: an http.Handler
// in front of an http.RoundTripper, so it is testable without TLS.
//
// A GET walks ServeHTTP: the primary key (scheme, host, path, query as the
// site configures) and, when the stored response varied, the secondary key
// of the normalised request fields Vary names; a fresh entry is served with
// its Age and Cache-Status, answering If-None-Match, If-Modified-Since and
// ranges from the stored body; a stale one may be served within
// stale-while-revalidate (one background refresh per key) or max-stale,
// else it is revalidated with its ETag/Last-Modified and a 304 freshens it
// (RFC 9111 4.3.4); if the origin fails, stale-if-error applies. A miss is
// fetched once for all concurrent requests of the key (the first leads, on
// a context of its own) and streamed to all of them while it is stored, if
// RFC 9111 3 allows storing it. Freshness and age follow 4.2.1 and 4.2.3;
// CDN-Cache-Control (RFC 9213, parsed as a Structured Field) and
// Surrogate-Control take precedence for this cache. Unsafe methods
// invalidate (4.4). The store is ristretto, with the full key kept in each
// entry and costs in bytes.
//
// Where this cache is stricter than RFC 9111, so that one client cannot
// choose what others get or make the cache outgrow its budget:
//
//   - The host in the key is lowercased, without a port and without
//     trailing dots: "LOCALHOST.:8080" and "localhost" share entries, and
//     PurgeURL canonicalises the same way. The PoP routes by host name and
//     fetches from the site's configured origin, so the port of the Host
//     field never changes the content.
//   - A GET or HEAD that carries a body (Content-Length above zero, or
//     Transfer-Encoding) is passed to the origin, body and all, and its
//     answer is neither served from the store nor stored: the key has no
//     body in it. (An HTTP/2 or HTTP/3 body sent without Content-Length
//     cannot be told from no body before it is read, and is not caught.)
//   - Set-Cookie is not stored by default (Config.SetCookie): the client
//     whose request fetched the response gets it; others get the stored
//     copy without it.
//   - A URL keeps at most Config.MaxVariants variants (Vary); a request
//     whose varied field is longer than Config.MaxVaryValueBytes is passed
//     through. The Vary index is in the budget at its real size.
//   - A Range field with more than 16 ranges, or with ranges that overlap
//     or are not in ascending order, is ignored (RFC 9110 14.2): the answer
//     is the whole representation with a 200, and a miss fetches it whole.
//     On a miss the size is not yet known, so suffix ranges ("-500") are
//     judged only when answering from the store.
package cache
