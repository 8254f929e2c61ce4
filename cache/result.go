package cache

import (
	"fmt"
	"strings"
)

// Result is what the cache did for one response, in one word: the PoP
// sends it in Server-Timing (cdn-cache;desc="hit") and logs it in its
// access log. Cache-Status (RFC 9211) says the same at length; ResultOf
// reads it.
type Result string

// The results. Every response is exactly one of them.
const (
	// ResultHit is a fresh stored response.
	ResultHit Result = "hit"
	// ResultStale is a stale stored response served as it is
	// (stale-while-revalidate, stale-if-error, max-stale).
	ResultStale Result = "stale"
	// ResultRevalidated is a stored response the origin confirmed (a 304
	// to a conditional request) before it was served.
	ResultRevalidated Result = "revalidated"
	// ResultMiss is a response fetched from the origin for the cache:
	// stored, being stored, shared with a concurrent miss, or an origin
	// error in its place.
	ResultMiss Result = "miss"
	// ResultPass is a response the cache did not keep and will not: the
	// origin made it uncacheable (no-store, private, no freshness, ...),
	// or the request went past the cache (a method other than GET and
	// HEAD, a request body, an upgrade, no cache at all), or the PoP
	// answered before the cache (421, 429, 503, ...).
	ResultPass Result = "pass"
)

// Results are the results, in the order above.
var Results = []Result{ResultHit, ResultStale, ResultRevalidated, ResultMiss, ResultPass}

// ParseResult checks a result's name.
func ParseResult(s string) (Result, error) {
	for _, r := range Results {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("%q, want hit, stale, revalidated, miss or pass", s)
}

// uncacheable are the details of a fetched response the cache did not
// store because it may not (storable's reasons): a pass, where a
// response that is too large or met a full fill budget is still a miss.
var uncacheable = []string{"method", "request-body", "request-no-store", "partial", "status", "must-understand",
	"no-store", "private", "authorization", "vary-star", "vary-value-too-long", "no-freshness", "set-cookie"}

// ResultOf reads the result from a Cache-Status field value as this cache
// writes it: its last entry is the cache's own (an upstream cache's come
// before). No value, as on a response the cache never saw, is a pass.
func ResultOf(cacheStatus string) Result {
	entry := cacheStatus
	if i := strings.LastIndexByte(entry, ','); i >= 0 {
		entry = entry[i+1:]
	}
	var hit, stored, staleTTL bool
	var fwd, fwdStatus, detail string
	// The first member is the cache's name; parameters follow.
	_, params, _ := strings.Cut(entry, ";")
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		p = strings.TrimSpace(p)
		k, v, _ := strings.Cut(p, "=")
		switch k {
		case "hit":
			hit = true
		case "stored":
			stored = true
		case "ttl":
			staleTTL = strings.HasPrefix(v, "-")
		case "fwd":
			fwd = v
		case "fwd-status":
			fwdStatus = v
		case "detail":
			detail = v
		}
	}
	switch {
	case hit && staleTTL:
		return ResultStale
	case hit:
		return ResultHit
	case fwd == "stale" && (fwdStatus == "304" || detail == "coalesced" || detail == "sliced"):
		return ResultRevalidated
	case fwd == "uri-miss" || fwd == "miss" || fwd == "partial" || fwd == "stale":
		if !stored {
			for _, u := range uncacheable {
				if detail == u {
					return ResultPass
				}
			}
		}
		return ResultMiss
	}
	return ResultPass // fwd=bypass, method or request, or no Cache-Status
}
