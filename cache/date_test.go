package cache

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestParseHTTPDate(t *testing.T) {
	sunday := time.Date(1994, time.November, 6, 8, 49, 37, 0, time.UTC)
	valid := []struct {
		in   string
		want time.Time
	}{
		{"Sun, 06 Nov 1994 08:49:37 GMT", sunday},
		{"Sunday, 06-Nov-94 08:49:37 GMT", sunday},
		{"Sun Nov  6 08:49:37 1994", sunday},
		{"Sun Nov 06 08:49:37 1994", sunday}, // date3 = month SP ( 2DIGIT / ( SP DIGIT ))
		{"Sun, 06 Nov 1994 08:49:37 GMT \t", sunday},
		{"\tSun, 06 Nov 1994 08:49:37 GMT", sunday},
		{"Thu, 01 Jan 1970 00:00:00 GMT", time.Unix(0, 0).UTC()},
		{"Thursday, 01-Jan-70 00:00:00 GMT", time.Unix(0, 0).UTC()},
		{"Monday, 31-Dec-68 23:59:59 GMT", time.Date(2068, 12, 31, 23, 59, 59, 0, time.UTC)}, // net/http's century
		{"Thu, 29 Feb 2024 12:00:00 GMT", time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC)},
		{"Sat, 31 Dec 2016 23:59:60 GMT", time.Date(2017, 1, 1, 0, 0, 0, 0, time.UTC)}, // a leap second
		{"Sat Dec 31 23:59:60 2016", time.Date(2017, 1, 1, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range valid {
		got, ok := parseHTTPDate(tt.in)
		if !ok || !got.Equal(tt.want) {
			t.Errorf("parseHTTPDate(%q) = %v, %v; want %v, true", tt.in, got, ok, tt.want)
		}
	}
	invalid := []string{
		"",
		"0",
		"-1",
		"Sun, 06 Nov 1994 8:49:37 GMT",          // a one-digit hour
		"Sun, 06 Nov 1994 08:49:7 GMT",          // a one-digit second
		"Sun, 6 Nov 1994 08:49:37 GMT",          // a one-digit day
		"Sun,  06 Nov 1994 08:49:37 GMT",        // a run of spaces
		"Sun, 06 Nov  1994 08:49:37 GMT",        // a run of spaces
		"Sun, 06 Nov 1994  08:49:37 GMT",        // a run of spaces
		"Sun, 06-Nov-1994 08:49:37 GMT",         // rfc850's separators in IMF-fixdate
		"Sun 06 Nov 1994 08:49:37 GMT",          // no comma
		"Sun, 06 Nov 1994 08.49.37 GMT",         // wrong separators
		"Sun, 06 Nov 1994 08:49:37 UTC",         // another zone
		"Sun, 06 Nov 1994 08:49:37 EST",         // another zone
		"Sun, 06 Nov 1994 08:49:37 +0000",       // a numeric zone
		"Sun, 06 Nov 1994 08:49:37 gmt",         // GMT is case-sensitive
		"Sun, 06 Nov 1994 08:49:37",             // no zone
		"Sun, 06 Nov 1994 08:49:37 GMTx",        // trailing junk
		"Sun, 06 Nov 1994 08:49:37 GMT x",       // trailing junk
		"Sun, 06 Nov 1994 08:49:37 GMT\x00",     // trailing junk
		"sun, 06 nov 1994 08:49:37 GMT",         // names are case-sensitive
		"SUN, 06 NOV 1994 08:49:37 GMT",         // names are case-sensitive
		"Mon, 06 Nov 1994 08:49:37 GMT",         // the wrong weekday
		"Sunday, 06 Nov 1994 08:49:37 GMT",      // a long name in IMF-fixdate
		"Sund, 06 Nov 1994 08:49:37 GMT",        // not a day name
		"Sun, 06 November 1994 08:49:37 GMT",    // a long month name
		"Sun, 31 Nov 1994 08:49:37 GMT",         // no such day
		"Sun, 00 Nov 1994 08:49:37 GMT",         // no such day
		"Sun, 06 Nov 1994 24:00:00 GMT",         // hour out of range
		"Sun, 06 Nov 1994 08:60:00 GMT",         // minute out of range
		"Sun, 06 Nov 1994 08:49:60 GMT",         // a leap second at another time
		"Sun, 06 Nov 94 08:49:37 GMT",           // a two-digit year in IMF-fixdate
		"Sun, 06 Nov 01994 08:49:37 GMT",        // a five-digit year
		"Sun, 06 Nov +994 08:49:37 GMT",         // a sign
		"Sun, ０６ Nov 1994 08:49:37 GMT",         // not ASCII digits
		"Sun, 06 Nov 1994 08:49:37 GMT, 07 Nov", // two dates
		"Sun, 06-Nov-94 08:49:37 GMT",           // a short name in rfc850-date
		"Sunday, 06-Nov-94 08:49:37 EST",        // another zone
		"Sunday, 06-Nov-1994 08:49:37 GMT",      // a four-digit year in rfc850-date
		"Sunday, 6-Nov-94 08:49:37 GMT",         // a one-digit day
		"Sunday, 06 Nov 94 08:49:37 GMT",        // wrong separators
		"Monday, 06-Nov-94 08:49:37 GMT",        // the wrong weekday
		"Sun Nov 6 08:49:37 1994",               // asctime's day needs two characters
		"Sun Nov  06 08:49:37 1994",             // a run of spaces
		"Sun Nov   6 08:49:37 1994",             // a run of spaces
		"Sun Nov  6 08:49:37 1994 GMT",          // trailing junk
		"Sun Nov  6 8:49:37 1994",               // a one-digit hour
		"Sun Nov  6 08:49:37 94",                // a two-digit year
		"Mon Nov  6 08:49:37 1994",              // the wrong weekday
		"Sunday Nov  6 08:49:37 1994",           // a long name in asctime-date
		"2024-01-01T00:00:00Z",                  // RFC 3339
		"Sun Nov  6 08:49:37 MST 1994",          // Unix date
	}
	for _, in := range invalid {
		if got, ok := parseHTTPDate(in); ok {
			t.Errorf("parseHTTPDate(%q) = %v, true; want invalid", in, got)
		}
	}
}

// TestInvalidExpiresIsStale: an Expires that is not an HTTP-date, however
// close, means the response is already stale (RFC 9111 5.3); a valid one
// in any of the three forms gives freshness until then.
func TestInvalidExpiresIsStale(t *testing.T) {
	tests := []struct {
		name    string
		expires string
		fresh   bool
	}{
		{"IMF-fixdate", "Thu, 01 Jan 2060 08:00:00 GMT", true},
		{"rfc850-date", "Thursday, 01-Jan-60 08:00:00 GMT", true},
		{"asctime-date", "Thu Jan  1 08:00:00 2060", true},
		{"one-digit hour", "Thu, 01 Jan 2060 8:00:00 GMT", false},
		{"another zone", "Thu, 01 Jan 2060 08:00:00 UTC", false},
		{"lowercase names", "thu, 01 jan 2060 08:00:00 GMT", false},
		{"wrong weekday", "Fri, 01 Jan 2060 08:00:00 GMT", false},
		{"run of spaces", "Thu, 01 Jan 2060  08:00:00 GMT", false},
		{"trailing junk", "Thu, 01 Jan 2060 08:00:00 GMT+1", false},
		{"asctime with one space", "Thu Jan 1 08:00:00 2060", false},
		{"rfc850 with another zone", "Thursday, 01-Jan-60 08:00:00 CET", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Expires", tt.expires)
				w.Write([]byte("x"))
			})
			rg.get("/e")
			rg.get("/e")
			if fresh := rg.hits.Load() == 1; fresh != tt.fresh {
				t.Errorf("Expires: %s: origin requests %d, fresh = %v, want %v", tt.expires, rg.hits.Load(), fresh, tt.fresh)
			}
		})
	}
}

// TestInvalidIfModifiedSinceIgnored: an If-Modified-Since that is not an
// HTTP-date is ignored (RFC 9110 13.1.3): the stored 200 is sent, where a
// lax parser would read the date and answer 304.
func TestInvalidIfModifiedSinceIgnored(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
		w.Write([]byte("body"))
	})
	rg.get("/ims")
	tests := []struct {
		ims  string
		code int
	}{
		{"Tue, 01 Jan 2030 00:00:00 GMT", 304},
		{"Tue, 01 Jan 2030 0:00:00 GMT", 200},
		{"tue, 01 jan 2030 00:00:00 GMT", 200},
		{"Mon, 01 Jan 2030 00:00:00 GMT", 200}, // wrong weekday
		{"Tuesday, 01-Jan-30 00:00:00 EST", 200},
		{"Tue Jan 1 00:00:00 2030", 200},
		{"Tue Jan  1 00:00:00 2030", 304},
	}
	for _, tt := range tests {
		if resp, _ := rg.get("/ims", "If-Modified-Since", tt.ims); resp.StatusCode != tt.code {
			t.Errorf("GET with If-Modified-Since: %s = %d, want %d", tt.ims, resp.StatusCode, tt.code)
		}
	}
	// If-Range with an invalid date is false: the whole body, not a part.
	if resp, body := rg.get("/ims", "Range", "bytes=0-1", "If-Range", "Mon, 01 Jan 2024 0:00:00 GMT"); resp.StatusCode != 200 || body != "body" {
		t.Errorf("GET with an invalid If-Range date = %d %q, want 200 and the whole body", resp.StatusCode, body)
	}
	if resp, body := rg.get("/ims", "Range", "bytes=0-1", "If-Range", "Mon, 01 Jan 2024 00:00:00 GMT"); resp.StatusCode != 206 || body != "bo" {
		t.Errorf("GET with a matching If-Range date = %d %q, want 206 bo", resp.StatusCode, body)
	}
}

// The reference parser for FuzzHTTPDate: each form of RFC 9110 5.6.7 as a
// regular expression, read by time.Parse, with the weekday checked.
var (
	refDay   = `(Mon|Tue|Wed|Thu|Fri|Sat|Sun)`
	refMonth = `(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)`
	refTime  = `([0-9]{2}:[0-9]{2}:[0-9]{2})`
	refForms = []struct {
		re     *regexp.Regexp
		layout string
	}{
		{regexp.MustCompile(`^` + refDay + `, [0-9]{2} ` + refMonth + ` [0-9]{4} ` + refTime + ` GMT$`), "Mon, 02 Jan 2006 15:04:05 GMT"},
		{regexp.MustCompile(`^(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), [0-9]{2}-` + refMonth + `-[0-9]{2} ` + refTime + ` GMT$`), "Monday, 02-Jan-06 15:04:05 GMT"},
		{regexp.MustCompile(`^` + refDay + ` ` + refMonth + ` ([0-9]{2}| [0-9]) ` + refTime + ` [0-9]{4}$`), "Mon Jan _2 15:04:05 2006"},
	}
)

// refParseHTTPDate returns the time s names and which of refForms it
// has, or ok=false.
func refParseHTTPDate(s string) (t time.Time, form int, ok bool) {
	// Without the OWS around a field value, no longer than the longest form.
	s = strings.Trim(s, " \t")
	if len(s) > len("Wednesday, 09-Nov-94 08:49:37 GMT") {
		return time.Time{}, 0, false
	}
	for i, f := range refForms {
		m := f.re.FindStringSubmatch(s)
		if m == nil {
			continue
		}
		leap := time.Duration(0)
		if strings.Contains(s, " 23:59:60") { // time.Parse has no leap seconds
			s, leap = strings.Replace(s, " 23:59:60", " 23:59:59", 1), time.Second
		}
		t, err := time.Parse(f.layout, s)
		if err != nil {
			return time.Time{}, 0, false
		}
		if wd := t.Weekday().String(); m[1] != wd && m[1] != wd[:3] {
			return time.Time{}, 0, false
		}
		return t.Add(leap), i, true
	}
	return time.Time{}, 0, false
}

// FuzzHTTPDate checks parseHTTPDate against the reference parser above,
// that a valid date's text comes back when formatted in its form, and
// that any time of a four-digit year (sec seconds from the first, wrapped)
// reads back from each form that can hold it.
func FuzzHTTPDate(f *testing.F) {
	for _, s := range []string{
		"Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
		"Wed Nov 16 08:49:37 1994", "Sun, 06 Nov 1994 8:49:37 GMT", "Sun,  06 Nov 1994 08:49:37 GMT",
		"Sun, 06 Nov 1994 08:49:37 UTC", "Mon, 06 Nov 1994 08:49:37 GMT", "Sun Nov 6 08:49:37 1994",
		"Sat, 31 Dec 2016 23:59:60 GMT", "Thu, 29 Feb 2024 12:00:00 GMT", "Fri, 29 Feb 2023 12:00:00 GMT",
		"Monday, 31-Dec-68 23:59:59 GMT", "Thursday, 01-Jan-70 00:00:00 GMT", "0", " Sun, 06 Nov 1994 08:49:37 GMT\t",
	} {
		f.Add(s, int64(len(s))*86_400*365)
	}
	const (
		first = -62_167_219_200 // 0000-01-01T00:00:00Z
		span  = 253_402_300_800 - first
	)
	f.Fuzz(func(t *testing.T, s string, sec int64) {
		got, ok := parseHTTPDate(s)
		want, form, wantOK := refParseHTTPDate(s)
		if ok != wantOK || !got.Equal(want) {
			t.Fatalf("parseHTTPDate(%q) = %v, %v; the reference says %v, %v", s, got, ok, want, wantOK)
		}
		if ok && got.Location() != time.UTC {
			t.Fatalf("parseHTTPDate(%q) = %v, want a time in UTC", s, got)
		}
		// The text comes back, but for a leap second (read as the next
		// second) and asctime's "06" (formatted " 6").
		if text := strings.Trim(s, " \t"); ok && !strings.Contains(text, ":60") && !(form == 2 && text[8] == '0') {
			if back := got.Format(refForms[form].layout); back != text {
				t.Fatalf("parseHTTPDate(%q) = %v, which formats back as %q", s, got, back)
			}
		}
		tm := time.Unix(first+(sec%span+span)%span, 0).UTC()
		for i, form := range refForms {
			if y := tm.Year(); i == 1 && (y < 1969 || y > 2068) {
				continue // rfc850-date's two-digit years
			}
			text := tm.Format(form.layout)
			if back, ok := parseHTTPDate(text); !ok || !back.Equal(tm) {
				t.Fatalf("parseHTTPDate(%q) = %v, %v; want %v", text, back, ok, tm)
			}
		}
	})
}
