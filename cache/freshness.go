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

// parseHTTPDate parses an HTTP-date (RFC 9110 5.6.7), with the OWS around
// a field value: IMF-fixdate, or one of the two obsolete forms recipients
// must accept, rfc850-date and asctime-date, exactly as the grammar
// spells them: case-sensitive names, every number at its full width,
// single spaces, GMT and no other zone, nothing after it. The weekday must
// be the date's and the date and time must exist; 23:59:60, a leap
// second, reads as the second after 23:59:59. An rfc850-date's two-digit
// year is 1969 to 2068, as net/http reads it. Anything else is invalid
// (ok=false): a cache must treat an invalid Expires as a time in the past
// (RFC 9111 5.3) and ignore an invalid If-Modified-Since (RFC 9110 13.1.3).
func parseHTTPDate(s string) (t time.Time, ok bool) {
	s = strings.Trim(s, " \t")
	switch {
	case len(s) == len("Sun, 06 Nov 1994 08:49:37 GMT") && s[3] == ',':
		return parseIMFFixdate(s)
	case len(s) == len("Sun Nov  6 08:49:37 1994") && s[3] == ' ':
		return parseAsctime(s)
	}
	return parseRFC850(s)
}

// parseIMFFixdate parses "Sun, 06 Nov 1994 08:49:37 GMT".
func parseIMFFixdate(s string) (time.Time, bool) {
	wd := nameIndex(shortDays[:], s[:3])
	day, ok1 := twoDigits(s[5:7])
	month := nameIndex(shortMonths[:], s[8:11])
	year, ok2 := twoDigits(s[12:14])
	y2, ok3 := twoDigits(s[14:16])
	if s[3:5] != ", " || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' || s[25:] != " GMT" || !ok1 || !ok2 || !ok3 {
		return time.Time{}, false
	}
	return httpTime(wd, year*100+y2, month, day, s[17:25])
}

// parseAsctime parses "Sun Nov  6 08:49:37 1994" (the day may also be
// "06").
func parseAsctime(s string) (time.Time, bool) {
	wd := nameIndex(shortDays[:], s[:3])
	month := nameIndex(shortMonths[:], s[4:7])
	dd := s[8:10]
	if dd[0] == ' ' {
		dd = "0" + dd[1:]
	}
	day, ok1 := twoDigits(dd)
	year, ok2 := twoDigits(s[20:22])
	y2, ok3 := twoDigits(s[22:24])
	if s[3] != ' ' || s[7] != ' ' || s[10] != ' ' || s[19] != ' ' || !ok1 || !ok2 || !ok3 {
		return time.Time{}, false
	}
	return httpTime(wd, year*100+y2, month, day, s[11:19])
}

// parseRFC850 parses "Sunday, 06-Nov-94 08:49:37 GMT".
func parseRFC850(s string) (time.Time, bool) {
	name, rest, ok := strings.Cut(s, ",")
	if !ok || len(rest) != len(" 06-Nov-94 08:49:37 GMT") {
		return time.Time{}, false
	}
	wd := nameIndex(longDays[:], name)
	day, ok1 := twoDigits(rest[1:3])
	month := nameIndex(shortMonths[:], rest[4:7])
	yy, ok2 := twoDigits(rest[8:10])
	if rest[0] != ' ' || rest[3] != '-' || rest[7] != '-' || rest[10] != ' ' || rest[19:] != " GMT" || !ok1 || !ok2 {
		return time.Time{}, false
	}
	year := 2000 + yy
	if yy >= 69 {
		year = 1900 + yy
	}
	return httpTime(wd, year, month, day, rest[11:19])
}

var (
	shortDays   = [...]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}
	longDays    = [...]string{"Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"}
	shortMonths = [...]string{"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"}
)

// nameIndex is the index of name in names (case-sensitive), or -1.
func nameIndex(names []string, name string) int {
	for i, n := range names {
		if n == name {
			return i
		}
	}
	return -1
}

// twoDigits parses exactly two ASCII digits.
func twoDigits(s string) (int, bool) {
	if len(s) != 2 || s[0] < '0' || s[0] > '9' || s[1] < '0' || s[1] > '9' {
		return 0, false
	}
	return int(s[0]-'0')*10 + int(s[1]-'0'), true
}

// httpTime checks and builds the time of an HTTP-date's parts: weekday
// (index in shortDays, or -1), year, month (index in shortMonths, or -1),
// day and time-of-day ("08:49:37").
func httpTime(wd, year, month, day int, clock string) (time.Time, bool) {
	hour, ok1 := twoDigits(clock[0:2])
	minute, ok2 := twoDigits(clock[3:5])
	sec, ok3 := twoDigits(clock[6:8])
	if wd < 0 || month < 0 || clock[2] != ':' || clock[5] != ':' || !ok1 || !ok2 || !ok3 ||
		hour > 23 || minute > 59 || sec > 59 && !(sec == 60 && hour == 23 && minute == 59) {
		return time.Time{}, false
	}
	date := time.Date(year, time.Month(month+1), day, 0, 0, 0, 0, time.UTC)
	if date.Day() != day || int(date.Weekday()) != wd { // no such day (it rolled over), or not that weekday
		return time.Time{}, false
	}
	return date.Add(time.Duration(hour)*time.Hour + time.Duration(minute)*time.Minute + time.Duration(sec)*time.Second), true
}

// policy is the caching view of one stored response: which directives
// apply to us and when it was fetched.
type policy struct {
	cc       Directives // the effective directives for this cache
	targeted bool       // cc came from a targeted field (CDN-Cache-Control, Surrogate-Control)
	timing
}

// timing is when a response was fetched, for its age (currentAge).
type timing struct {
	delay        time.Duration // from sending the request that produced it to responseTime
	responseTime time.Time     // when its headers arrived
}

// newPolicy is the policy of a response to a request sent at reqTime
// whose headers arrived at respTime.
func newPolicy(cc Directives, targeted bool, reqTime, respTime time.Time) policy {
	return policy{cc: cc, targeted: targeted, timing: timing{delay: respTime.Sub(reqTime), responseTime: respTime}}
}

// storedPolicy is what a stored response keeps of its policy: its timing
// and the directives that still matter once its lifetime is known (every
// stored response holds one: 56 bytes, where a policy takes 152).
type storedPolicy struct {
	timing
	staleWhileRevalidate, staleIfError int64 // seconds, or -1

	noCache         bool // unqualified no-cache: validate every time
	noCacheFields   bool // qualified no-cache="...": the fields were withheld
	mustRevalidate  bool
	proxyRevalidate bool
	sMaxAge         bool // s-maxage was given
	noTransform     bool
}

// stored is what a stored response keeps of p.
func (p policy) stored() storedPolicy {
	cc := p.cc
	return storedPolicy{
		timing:               p.timing,
		staleWhileRevalidate: cc.StaleWhileRevalidate,
		staleIfError:         cc.StaleIfError,
		noCache:              cc.NoCache,
		noCacheFields:        cc.NoCacheFields != nil,
		mustRevalidate:       cc.MustRevalidate,
		proxyRevalidate:      cc.ProxyRevalidate,
		sMaxAge:              cc.SMaxAge >= 0,
		noTransform:          cc.NoTransform,
	}
}

// alwaysValidate reports an unqualified no-cache.
func (p storedPolicy) alwaysValidate() bool { return p.noCache && !p.noCacheFields }

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
func dateOf(h fieldReader, responseTime time.Time) time.Time {
	if d, ok := parseHTTPDate(h.Get("Date")); ok {
		return d
	}
	return responseTime
}

// ageValue parses the Age header: delta-seconds, first value of a list;
// absent or invalid is 0.
func ageValue(h fieldReader) time.Duration {
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
func currentAge(h fieldReader, p timing, now time.Time) time.Duration {
	apparent := p.responseTime.Sub(dateOf(h, p.responseTime))
	if apparent < 0 {
		apparent = 0
	}
	delay := p.delay
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

// datePreconditions returns r with the dates of its preconditions read as
// this cache reads dates, for http.ServeContent, which reads them laxly:
// an If-Modified-Since or If-Unmodified-Since that is not one valid
// HTTP-date is left out, as a recipient must ignore it (RFC 9110 13.1.3,
// 13.1.4), and a valid one is passed on as an IMF-fixdate; an If-Range
// that is neither an entity-tag nor a valid date is false, so it goes with
// its Range and the whole representation is sent (13.1.5). r is not
// changed: a request that needs a change is returned as a copy.
func datePreconditions(r *http.Request) *http.Request {
	var h http.Header
	for _, f := range [...]string{"If-Modified-Since", "If-Unmodified-Since", "If-Range"} {
		vs, ok := r.Header[f]
		if !ok {
			continue
		}
		if f == "If-Range" && len(vs) == 1 && (strings.HasPrefix(vs[0], `"`) || strings.HasPrefix(vs[0], `W/"`)) {
			continue // an entity-tag: ServeContent compares it
		}
		var valid string
		if t, ok := parseHTTPDate(vs[0]); ok && len(vs) == 1 {
			valid = t.Format(http.TimeFormat)
			if valid == vs[0] {
				continue
			}
		}
		if h == nil {
			h = r.Header.Clone()
		}
		switch {
		case valid != "":
			h[f] = []string{valid}
		case f == "If-Range":
			delete(h, "If-Range")
			delete(h, "Range")
		default:
			delete(h, f)
		}
	}
	if h == nil {
		return r
	}
	r2 := r.WithContext(r.Context()) // a shallow copy: r belongs to the caller
	r2.Header = h
	return r2
}

// notModifiedByDate reports whether r's If-Modified-Since (as
// datePreconditions passes it on) finds a stored response without a valid
// Last-Modified not modified: such a response was last modified no later
// than its Date, or than when it was received if it has none (RFC 9111
// 4.3.2), so not since a date at or after that. If-None-Match, or an
// If-Match evaluated before it, leaves the evaluation to ServeContent.
func notModifiedByDate(r *http.Request, stored fieldReader, received time.Time) bool {
	ims, ok := r.Header["If-Modified-Since"]
	if !ok || len(ims) != 1 || r.Header["If-None-Match"] != nil || r.Header["If-Match"] != nil {
		return false
	}
	if _, ok := parseHTTPDate(stored.Get("Last-Modified")); ok {
		return false // ServeContent compares it
	}
	since, ok := parseHTTPDate(ims[0])
	return ok && !dateOf(stored, received).Truncate(time.Second).After(since)
}
