package cache

import (
	"net/http"
	"reflect"
	"testing"
	"time"
)

func TestParseCacheControl(t *testing.T) {
	e := emptyDirectives()
	with := func(f func(*Directives)) Directives { d := emptyDirectives(); f(&d); return d }
	tests := []struct {
		name  string
		lines []string
		want  Directives
	}{
		{"empty", nil, e},
		{"max-age", []string{"max-age=60"}, with(func(d *Directives) { d.MaxAge = 60 })},
		{"case and spaces", []string{" Public ,  MAX-AGE = 60 "}, with(func(d *Directives) { d.Public = true; d.MaxAge = 60 })},
		{"quoted value accepted", []string{`max-age="60"`}, with(func(d *Directives) { d.MaxAge = 60 })},
		{"several lines", []string{"no-cache", "s-maxage=10"}, with(func(d *Directives) { d.NoCache = true; d.SMaxAge = 10 })},
		{"duplicate same value", []string{"max-age=5, max-age=5"}, with(func(d *Directives) { d.MaxAge = 5 })},
		{"duplicate conflicting", []string{"max-age=5, max-age=10"}, with(func(d *Directives) { d.MaxAge = 5; d.Invalid = true })},
		{"malformed max-age", []string{"max-age=abc"}, with(func(d *Directives) { d.Invalid = true })},
		{"negative max-age", []string{"max-age=-1"}, with(func(d *Directives) { d.Invalid = true })},
		{"overflow", []string{"max-age=99999999999999999999"}, with(func(d *Directives) { d.MaxAge = maxDelta })},
		{"qualified no-cache", []string{`no-cache="Set-Cookie, X-A"`}, with(func(d *Directives) { d.NoCache = true; d.NoCacheFields = []string{"set-cookie", "x-a"} })},
		{"qualified private", []string{`private="x-user"`}, with(func(d *Directives) { d.Private = true; d.PrivateFields = []string{"x-user"} })},
		{"unqualified private wins", []string{`private="x", private`}, with(func(d *Directives) { d.Private = true })},
		{"stale extensions", []string{"stale-while-revalidate=30, stale-if-error=600"}, with(func(d *Directives) { d.StaleWhileRevalidate = 30; d.StaleIfError = 600 })},
		{"max-stale any", []string{"max-stale"}, with(func(d *Directives) { d.MaxStaleAny = true })},
		{"request directives", []string{"min-fresh=5, only-if-cached, no-store"}, with(func(d *Directives) { d.MinFresh = 5; d.OnlyIfCached = true; d.NoStore = true })},
		{"unknown ignored", []string{`foo, bar="a,b", max-age=1`}, with(func(d *Directives) { d.MaxAge = 1 })},
		{"commas only", []string{",,, ,"}, e},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseCacheControl(tt.lines); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseCacheControl(%q) = %+v, want %+v", tt.lines, got, tt.want)
			}
		})
	}
}

func hdr(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestFreshnessLifetime(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	date := now.Format(http.TimeFormat)
	targeted := []string{"CDN-Cache-Control", "Surrogate-Control"}
	tests := []struct {
		name      string
		status    int
		h         http.Header
		want      time.Duration
		heuristic bool
	}{
		{"s-maxage over max-age", 200, hdr("Cache-Control", "max-age=10, s-maxage=20"), 20 * time.Second, false},
		{"max-age over Expires", 200, hdr("Cache-Control", "max-age=10", "Date", date, "Expires", now.Add(time.Hour).Format(http.TimeFormat)), 10 * time.Second, false},
		{"Expires minus Date", 200, hdr("Date", date, "Expires", now.Add(time.Hour).Format(http.TimeFormat)), time.Hour, false},
		{"Expires in the past", 200, hdr("Date", date, "Expires", now.Add(-time.Hour).Format(http.TimeFormat)), 0, false},
		{"invalid Expires is expired", 200, hdr("Date", date, "Expires", "0"), 0, false},
		{"two Expires is stale", 200, hdr("Date", date, "Expires", now.Add(time.Hour).Format(http.TimeFormat), "Expires", now.Add(time.Hour).Format(http.TimeFormat)), 0, false},
		{"Expires in RFC 850 form", 200, hdr("Date", date, "Expires", now.Add(time.Hour).Format("Monday, 02-Jan-06 15:04:05 GMT")), time.Hour, false},
		{"conflicting max-age is stale", 200, hdr("Cache-Control", "max-age=10, max-age=20"), 0, false},
		{"heuristic 10% of Last-Modified age", 200, hdr("Date", date, "Last-Modified", now.Add(-10*time.Hour).Format(http.TimeFormat)), time.Hour, true},
		{"heuristic capped", 200, hdr("Date", date, "Last-Modified", now.Add(-1000*24*time.Hour).Format(http.TimeFormat)), 24 * time.Hour, true},
		{"no heuristic for 302", 302, hdr("Date", date, "Last-Modified", now.Add(-10*time.Hour).Format(http.TimeFormat)), 0, false},
		{"heuristic for public 302", 302, hdr("Cache-Control", "public", "Date", date, "Last-Modified", now.Add(-10*time.Hour).Format(http.TimeFormat)), time.Hour, true},
		{"no freshness information", 200, hdr("Date", date), 0, false},
		{"CDN-Cache-Control wins", 200, hdr("Cache-Control", "max-age=10", "CDN-Cache-Control", "max-age=600"), 600 * time.Second, false},
		{"targeted ignores Expires", 200, hdr("CDN-Cache-Control", "public", "Date", date, "Expires", now.Add(time.Hour).Format(http.TimeFormat)), 0, false},
		{"Surrogate-Control second", 200, hdr("Cache-Control", "max-age=10", "Surrogate-Control", "max-age=30"), 30 * time.Second, false},
		{"valid targeted field without freshness governs", 200, hdr("Cache-Control", "max-age=10", "CDN-Cache-Control", "foo"), 0, false},
		{"invalid structured field ignored", 200, hdr("Cache-Control", "max-age=10", "CDN-Cache-Control", "max-age=100, &&&&&"), 10 * time.Second, false},
		{"space before equals is invalid", 200, hdr("Cache-Control", "max-age=10", "CDN-Cache-Control", "max-age =100"), 10 * time.Second, false},
		{"space after equals is invalid", 200, hdr("Cache-Control", "max-age=10", "CDN-Cache-Control", "max-age= 100"), 10 * time.Second, false},
		{"string max-age is the wrong type", 200, hdr("Cache-Control", "max-age=10", "CDN-Cache-Control", `max-age="100"`), 0, false},
		{"huge targeted max-age", 200, hdr("CDN-Cache-Control", "max-age=99999999999"), maxDelta * time.Second, false},
		{"targeted with extension and params", 200, hdr("CDN-Cache-Control", "foobar;x=1, max-age=3600"), time.Hour, false},
		{"empty targeted field ignored", 200, hdr("Cache-Control", "max-age=10", "CDN-Cache-Control", ""), 10 * time.Second, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cc, tg := effectiveDirectives(tt.h, targeted)
			p := newPolicy(cc, tg, now, now)
			got, heur := freshnessLifetime(tt.status, tt.h, p, 0.1, 24*time.Hour)
			if got != tt.want || heur != tt.heuristic {
				t.Errorf("freshnessLifetime = %v (heuristic %v), want %v (%v)", got, heur, tt.want, tt.heuristic)
			}
		})
	}
}

func TestCurrentAge(t *testing.T) {
	base := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name           string
		h              http.Header
		req, resp, now time.Duration // offsets from base
		want           time.Duration
	}{
		{"fresh from origin", hdr("Date", base.Format(http.TimeFormat)), 0, 0, 0, 0},
		{"resident time", hdr("Date", base.Format(http.TimeFormat)), 0, 0, 30 * time.Second, 30 * time.Second},
		{"upstream Age plus delay", hdr("Date", base.Format(http.TimeFormat), "Age", "100"), 0, 2 * time.Second, 2 * time.Second, 102 * time.Second},
		{"apparent age from an old Date", hdr("Date", base.Add(-50*time.Second).Format(http.TimeFormat)), 0, 0, 0, 50 * time.Second},
		{"larger of apparent and corrected", hdr("Date", base.Add(-50*time.Second).Format(http.TimeFormat), "Age", "10"), 0, 0, 0, 50 * time.Second},
		{"Date in the future", hdr("Date", base.Add(time.Hour).Format(http.TimeFormat)), 0, 0, 0, 0},
		{"invalid Age ignored", hdr("Date", base.Format(http.TimeFormat), "Age", "abc"), 0, 0, 0, 0},
		{"Age list uses first", hdr("Date", base.Format(http.TimeFormat), "Age", "7, 9"), 0, 0, 0, 7 * time.Second},
		{"no Date", hdr("Age", "5"), 0, 0, 0, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPolicy(Directives{}, false, base.Add(tt.req), base.Add(tt.resp))
			if got := currentAge(tt.h, p.timing, base.Add(tt.now)); got != tt.want {
				t.Errorf("currentAge = %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzParseCacheControl(f *testing.F) {
	for _, s := range []string{"max-age=60", `no-cache="a,b", private`, `max-age="1`, "=,=", "s-maxage=1, s-maxage=2", "max-stale"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := ParseCacheControl([]string{s})
		for _, v := range []int64{d.MaxAge, d.SMaxAge, d.MinFresh, d.MaxStale, d.StaleWhileRevalidate, d.StaleIfError} {
			if v < -1 || v > maxDelta {
				t.Fatalf("ParseCacheControl(%q): value %d outside [-1, 2^31]", s, v)
			}
		}
		// Parsing is insensitive to surrounding commas and whitespace.
		if d2 := ParseCacheControl([]string{", " + s + " ,"}); !reflect.DeepEqual(d, d2) {
			t.Fatalf("ParseCacheControl(%q) changed with surrounding commas: %+v vs %+v", s, d, d2)
		}
	})
}

func FuzzAgeAndDates(f *testing.F) {
	for _, s := range []string{"5", "abc", "99999999999999999999", "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		h := hdr("Age", s, "Date", s, "Expires", s, "Last-Modified", s)
		p := newPolicy(Directives{}, false, now, now)
		if a := currentAge(h, p.timing, now); a < 0 {
			t.Fatalf("currentAge with %q = %v, want >= 0", s, a)
		}
		if l, _ := freshnessLifetime(200, h, p, 0.1, 24*time.Hour); l < 0 {
			t.Fatalf("freshnessLifetime with %q = %v, want >= 0", s, l)
		}
	})
}

func FuzzTargeted(f *testing.F) {
	for _, s := range []string{"max-age=60", "private", `a="x", b=?1, c=(1 2);p=3`, "max-age=1.5", ":aGk=:", "&&", "x=-5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseTargeted([]string{s})
		if !ok {
			return
		}
		for _, v := range []int64{d.MaxAge, d.SMaxAge, d.StaleWhileRevalidate, d.StaleIfError} {
			if v < -1 || v > maxDelta {
				t.Fatalf("parseTargeted(%q): value %d outside [-1, 2^31]", s, v)
			}
		}
	})
}
