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
// (RFC 9111 4.3.4); if the origin fails, stale-if-error applies, at once
// (refreshed in the background) when the Route says the origin is known
// down. A miss is
// fetched once for all concurrent requests of the key (the first leads, on
// a context of its own) and streamed to all of them while it is stored, if
// RFC 9111 3 allows storing it. Freshness and age follow 4.2.1 and 4.2.3;
// CDN-Cache-Control (RFC 9213, parsed as a Structured Field) and
// Surrogate-Control take precedence for this cache. Unsafe methods
// invalidate (4.4). The store is ristretto, with the full key kept in each
// entry and costs in bytes: everything an entry holds on the heap (its
// body's allocations, fields, the fast paths' header block, the store's own
// records), within Config.MaxBytes with the frequency sketch. Entries are
// kept small for it: a body in two allocations that Go rounds up as little
// as possible (body.go), fields in a compact form (fields.go). Which
// objects stay is the store's admission (admission.go): the most
// requested, by a sketch that every request counts once; a newcomer that
// does not fit evicts only objects requested no more than it, so a
// one-hit wonder never evicts a popular object, and a response the store
// would refuse is sent on without being buffered.
//
// Large objects and ranges are kept in slices (slice.go) when
// Config.SliceBytes is set (it is off by default: see its doc). A GET whose
// response is a storable 200 above Config.MaxObjectBytes, and a GET with a
// Range that misses, make the cache keep the object as aligned ranges of
// Config.SliceBytes (1 MiB, say), each an entry of its own; the object's
// fields, size, ETag and freshness are a small value under its primary
// key. A Range miss asks the origin for the slice its range starts in
// ("bytes=1048576-2097151"), whose 206 tells the size and ETag (as nginx's
// slice module does), so the origin's partial answers are stored and
// answer later ranges within them; a large 200 is read on, slice by
// slice, for the request that fetched it while it reads in order. Every
// request is then answered from the slices it needs through
// http.ServeContent: a range (or several) with 206 or 416, the whole
// object streamed in order, HEAD, preconditions against the object's
// ETag. A missing slice (not yet fetched, or evicted: slices count in
// MaxBytes like any entry) is fetched once for all the requests that want
// it, a flight per slice, and each response holds at most the slice it
// sends and the one it waits for. Every slice request carries If-Match
// with the object's ETag, and every answer must carry that ETag and size:
// a 412 or another ETag drops all the object's slices, and the request
// that saw it starts again on the new version if it has sent nothing, else
// its response is cut. Slice keys hold the ETag and size, so no body mixes
// two versions. A stale object is revalidated in the foreground (no
// stale-while-revalidate or max-stale) by one conditional slice request; a
// 304 keeps the slices. Objects that vary, have no strong ETag or are
// empty are not sliced: large ones stream through as before, and a Range
// miss is answered from the slice fetched if it covers the range, else
// passed on as it came. An object that fits in its first slice is stored
// whole. Sliced objects are not compressed at the edge.
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
