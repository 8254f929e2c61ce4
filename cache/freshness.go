package cache

import (
	"net/http"
	"strings"
	"time"
)

// cacheableByDefault are the status codes a cache may store with heuristic
// freshness (RFC 9110 15.1).
func cacheableByDefault(code int) bool {
	switch code {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// understoodStatus are the codes whose semantics this cache understands,
// for must-understand (RFC 9111 5.2.2.3).
func understoodStatus(code int) bool {
	switch code {
	case 200, 203, 204, 206, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// parseHTTPDate parses an HTTP-date in any of the three forms RFC 9110
// 5.6.7 requires recipients to accept. Invalid dates return ok=false.
func parseHTTPDate(s string) (time.Time, bool) {
	t, err := http.ParseTime(strings.TrimSpace(s))
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

// policy is the caching view of one stored response: which directives
// apply to us and when it was fetched.
type policy struct {
	cc           Directives // the effective directives for this cache
	targeted     bool       // cc came from a targeted field (CDN-Cache-Control, Surrogate-Control)
	requestTime  time.Time  // when the request that produced it was sent
	responseTime time.Time  // when its headers arrived
}

// effectiveDirectives picks the directives that govern this cache: the
// first targeted field present with at least one directive (RFC 9213:
// then Cache-Control and Expires are ignored), otherwise Cache-Control.
func effectiveDirectives(h http.Header, targeted []string) (Directives, bool) {
	for _, name := range targeted {
		lines := h.Values(name)
		if len(lines) == 0 {
			continue
		}
		if strings.EqualFold(name, "Surrogate-Control") {
			// The older field: Cache-Control syntax, not a Structured Field.
			if d := ParseCacheControl(lines); d.anySet() {
				return d, true
			}
			continue
		}
		// RFC 9213: the first targeted field with a valid, non-empty
		// Structured Field value governs, and Cache-Control and Expires
		// are ignored.
		if d, ok := parseTargeted(lines); ok {
			return d, true
		}
	}
	return ParseCacheControl(h.Values("Cache-Control")), false
}

func (d Directives) anySet() bool {
	e := emptyDirectives()
	return d.NoStore || d.NoCache || d.Private || d.Public || d.MustRevalidate || d.ProxyRevalidate ||
		d.Immutable || d.Invalid || d.MaxAge != e.MaxAge || d.SMaxAge != e.SMaxAge ||
		d.StaleWhileRevalidate != e.StaleWhileRevalidate || d.StaleIfError != e.StaleIfError
}

// freshnessLifetime implements RFC 9111 4.2.1 for a shared cache:
// s-maxage, then max-age, then Expires minus Date, then (only where
// allowed) a heuristic fraction of the time since Last-Modified, capped.
// Invalid or conflicting freshness information makes the response stale.
func freshnessLifetime(status int, h http.Header, p policy, fraction float64, heuristicMax time.Duration) (lifetime time.Duration, heuristic bool) {
	cc := p.cc
	if cc.Invalid {
		return 0, false
	}
	if cc.SMaxAge >= 0 {
		return seconds(cc.SMaxAge), false
	}
	if cc.MaxAge >= 0 {
		return seconds(cc.MaxAge), false
	}
	if !p.targeted {
		if exp := h.Values("Expires"); len(exp) > 0 {
			if len(exp) > 1 {
				return 0, false // several Expires: stale (RFC 9111 4.2.1)
			}
			e, ok := parseHTTPDate(exp[0])
			if !ok {
				return 0, false // an invalid Expires, "0" included, means already expired
			}
			date := dateOf(h, p.responseTime)
			if e.Before(date) {
				return 0, false
			}
			return e.Sub(date), false
		}
	}
	if !cacheableByDefault(status) && !cc.Public {
		return 0, false
	}
	if lm, ok := parseHTTPDate(h.Get("Last-Modified")); ok && fraction > 0 {
		date := dateOf(h, p.responseTime)
		if age := date.Sub(lm); age > 0 {
			life := time.Duration(float64(age) * fraction)
			if life > heuristicMax {
				life = heuristicMax
			}
			return life, true
		}
	}
	return 0, false
}

func seconds(s int64) time.Duration {
	if s > maxDelta {
		s = maxDelta
	}
	return time.Duration(s) * time.Second
}

// dateOf returns the Date header, or the time the response arrived when
// Date is missing or invalid.
func dateOf(h http.Header, responseTime time.Time) time.Time {
	if d, ok := parseHTTPDate(h.Get("Date")); ok {
		return d
	}
	return responseTime
}

// ageValue parses the Age header: delta-seconds, first value of a list;
// absent or invalid is 0.
func ageValue(h http.Header) time.Duration {
	v := h.Get("Age")
	if v == "" {
		return 0
	}
	if i := strings.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	n, ok := parseDelta(strings.TrimSpace(v))
	if !ok {
		return 0
	}
	return seconds(n)
}

// currentAge implements RFC 9111 4.2.3: the age an upstream reported plus
// the response delay, or the apparent age from Date, whichever is larger,
// plus the time resident here.
func currentAge(h http.Header, p policy, now time.Time) time.Duration {
	apparent := p.responseTime.Sub(dateOf(h, p.responseTime))
	if apparent < 0 {
		apparent = 0
	}
	delay := p.responseTime.Sub(p.requestTime)
	if delay < 0 {
		delay = 0
	}
	correctedAge := ageValue(h) + delay
	initial := max(apparent, correctedAge)
	resident := now.Sub(p.responseTime)
	if resident < 0 {
		resident = 0
	}
	return initial + resident
}

// formatAge renders an age for the Age header (see AppendAge).
func formatAge(d time.Duration) string { return string(AppendAge(nil, d)) }
