// Package cache is the PoP's RFC 9111 shared HTTP cache.
//
// This file set holds the parts every caching decision rests on: parsing
// Cache-Control and its targeted variants (CDN-Cache-Control, RFC 9213;
// Surrogate-Control), the freshness lifetime of a stored response (RFC 9111
// 4.2.1, heuristics included), and its current age (4.2.3). The store,
// request coalescing, validation and the http.Handler come on top of them.
package cache
