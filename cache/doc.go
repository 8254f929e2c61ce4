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
package cache
