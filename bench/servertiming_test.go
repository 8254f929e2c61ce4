package bench_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/bench"
)

// The form the PoPs send (one field, every response).
const popTiming = `cdn-pop;desc="pop-eu", cdn-cache;desc="hit", edge;dur=0.081, origin;dur=35.214, rtt;dur=10.400`

func TestParseServerTiming(t *testing.T) {
	type m = bench.ServerTimingMetric
	for _, tt := range []struct {
		name   string
		values []string
		want   []m
	}{
		{"the PoP's", []string{popTiming}, []m{{Name: "cdn-pop", Desc: "pop-eu"}, {Name: "cdn-cache", Desc: "hit"},
			{Name: "edge", Dur: 0.081, HasDur: true}, {Name: "origin", Dur: 35.214, HasDur: true}, {Name: "rtt", Dur: 10.4, HasDur: true}}},
		{"two fields", []string{"a;dur=1", "b;desc=x"}, []m{{Name: "a", Dur: 1, HasDur: true}, {Name: "b", Desc: "x"}}},
		{"spaces, case, unknown and repeated parameters", []string{` a ; DUR = 2 ; dur=3;foo="bar" ; Desc="q\"uo\\te" ,, b`},
			[]m{{Name: "a", Dur: 2, HasDur: true, Desc: `q"uo\te`}, {Name: "b"}}},
		{"a parameter without a value", []string{"miss;cached"}, []m{{Name: "miss"}}},
		{"empty", []string{""}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := bench.ParseServerTiming(tt.values...)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseServerTiming(%q) = %+v, %v, want %+v", tt.values, got, err, tt.want)
			}
		})
	}
	for _, bad := range []string{`a;desc="open`, "a;dur=fast", "a;dur=-1", ";dur=1", "a b", `a;desc="x` + "\x01" + `"`, "a;=1", "a;dur=NaN"} {
		got, err := bench.ParseServerTiming(bad)
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", bad)) {
			t.Errorf("ParseServerTiming(%q) = %+v, %v, want an error naming the value", bad, got, err)
		}
	}
}

// FuzzParseServerTiming: any input parses or fails without panicking, and
// what parses survives FormatServerTiming and a second parse unchanged.
func FuzzParseServerTiming(f *testing.F) {
	for _, s := range []string{popTiming, "a;dur=1, b", `x;desc="a\"b";dur=0`, "", ",,", "a;dur=1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ms, err := bench.ParseServerTiming(s)
		if err != nil {
			return
		}
		again, err := bench.ParseServerTiming(bench.FormatServerTiming(ms))
		if err != nil {
			t.Fatalf("Format(Parse(%q)) = %q does not parse: %v", s, bench.FormatServerTiming(ms), err)
		}
		if len(ms) == 0 && len(again) == 0 {
			return
		}
		if !reflect.DeepEqual(ms, again) {
			t.Fatalf("Parse(%q) = %+v, after Format and Parse %+v", s, ms, again)
		}
	})
}

// edgeServer is a real TLS server (HTTP/2) playing a PoP in front of a
// real origin: a first request for a path goes to the origin and is
// stored, later ones are hits; each answer carries the PoP's
// Server-Timing with the time it really spent in itself and waiting for
// the origin. timing, when not nil, replaces the header's value.
func edgeServer(t *testing.T, timing func() string) (string, *x509.CertPool) {
	t.Helper()
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("o"), 1024))
	}))
	t.Cleanup(origin.Close)
	var mu sync.Mutex // guards stored
	stored := map[string][]byte{}
	edge := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		mu.Lock()
		body, hit := stored[r.URL.Path]
		mu.Unlock()
		cache, upstream := "hit", ""
		if !hit {
			cache = "miss"
			fetch := time.Now()
			resp, err := http.Get(origin.URL + r.URL.Path)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			took := time.Since(fetch)
			upstream = fmt.Sprintf(", origin;dur=%.3f", float64(took)/1e6)
			start = start.Add(took) // edge is the time in the PoP alone
			mu.Lock()
			stored[r.URL.Path] = body
			mu.Unlock()
		}
		v := fmt.Sprintf(`cdn-pop;desc="pop-test", cdn-cache;desc=%q, edge;dur=%.3f%s, rtt;dur=0.100`, cache, float64(time.Since(start))/1e6, upstream)
		if timing != nil {
			v = timing()
		}
		if v != "" {
			w.Header().Set("Server-Timing", v)
			w.Header().Set("Timing-Allow-Origin", "*")
		}
		w.Header().Set("X-Served-By", "pop-test")
		w.Write(body)
	}))
	edge.EnableHTTP2 = true
	edge.StartTLS()
	t.Cleanup(edge.Close)
	pool := x509.NewCertPool()
	pool.AddCert(edge.Certificate())
	return edge.URL, pool
}

// TestServerTimingSplit probes a real TLS server that sends a PoP's
// Server-Timing: a miss's TTFB splits into client<->PoP, PoP and
// PoP<->origin with the header's numbers, adding up to the TTFB; a hit has
// no PoP<->origin part; bench ttfb's table prints the split.
func TestServerTimingSplit(t *testing.T) {
	base, pool := edgeServer(t, nil)
	probe := func(path string) bench.Result {
		rs, err := bench.Probe(context.Background(), bench.ProbeConfig{Proto: bench.H2, Mode: bench.Cold, N: 1, RootCAs: pool}, base+path)
		if err != nil || len(rs) != 1 || rs[0].Error != "" {
			t.Fatalf("Probe(%s) = %+v, %v", path, rs, err)
		}
		return rs[0]
	}
	miss, hit := probe("/obj"), probe("/obj")
	for _, tc := range []struct {
		name       string
		r          bench.Result
		cache      string
		withOrigin bool
	}{{"miss", miss, "miss", true}, {"hit", hit, "hit", false}} {
		r := tc.r
		if r.Timing == nil || r.Split == nil {
			t.Fatalf("%s: Timing %+v, Split %+v, want both from the Server-Timing header (error %q)", tc.name, r.Timing, r.Split, r.ServerTimingError)
		}
		if r.Timing.PoP != "pop-test" || r.Timing.Cache != tc.cache || r.Timing.HasOrigin != tc.withOrigin || r.Timing.RTTms != 0.1 {
			t.Errorf("%s: Timing = %+v, want pop-test, %s, origin timed %v, rtt 0.1", tc.name, *r.Timing, tc.cache, tc.withOrigin)
		}
		s := *r.Split
		if sum := s.ClientPoPms + s.PoPms + s.PoPOriginms; math.Abs(sum-r.TTFBms) > 1e-9 {
			t.Errorf("%s: split %+v adds up to %v ms, want the TTFB %v", tc.name, s, sum, r.TTFBms)
		}
		if s.PoPms != r.Timing.Edgems || s.PoPOriginms != r.Timing.Originms {
			t.Errorf("%s: split %+v, want PoP %v and PoP<->origin %v from the header", tc.name, s, r.Timing.Edgems, r.Timing.Originms)
		}
		// The server's time lies inside the client's.
		if s.ClientPoPms < 0 {
			t.Errorf("%s: client<->PoP %v ms < 0 (TTFB %v, split %+v)", tc.name, s.ClientPoPms, r.TTFBms, s)
		}
		t.Logf("%s: TTFB %.3f ms = client<->PoP %.3f + PoP %.3f + PoP<->origin %.3f", tc.name, r.TTFBms, s.ClientPoPms, s.PoPms, s.PoPOriginms)
	}
	if miss.Split.PoPOriginms <= 0 || hit.Split.PoPOriginms != 0 {
		t.Errorf("PoP<->origin: miss %v, hit %v ms; want the miss's > 0 and the hit's 0", miss.Split.PoPOriginms, hit.Split.PoPOriginms)
	}
	var table bytes.Buffer
	if err := bench.WriteTable(&table, []bench.Result{miss}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"client<->pop", "pop<->origin", `server-timing: pop="pop-test" cache="miss"`} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("WriteTable lacks %q:\n%s", want, table.String())
		}
	}
}

// TestServerTimingAbsentOrBad: without Server-Timing (a PoP before it
// sent one) there is no split and no error; a malformed one is noted,
// naming the value, and the request still counts.
func TestServerTimingAbsentOrBad(t *testing.T) {
	for _, tc := range []struct{ name, header, wantErr string }{
		{"absent", "", ""},
		{"malformed", `edge;dur=soon`, `"edge;dur=soon"`},
		{"no edge metric", `cdn-pop;desc="pop-x"`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, pool := edgeServer(t, func() string { return tc.header })
			rs, err := bench.Probe(context.Background(), bench.ProbeConfig{Proto: bench.H1, Mode: bench.Cold, N: 1, RootCAs: pool}, base+"/x")
			if err != nil || rs[0].Error != "" || rs[0].Status != 200 {
				t.Fatalf("Probe = %+v, %v", rs, err)
			}
			r := rs[0]
			if r.Timing != nil || r.Split != nil || !strings.Contains(r.ServerTimingError, tc.wantErr) || (tc.wantErr == "") != (r.ServerTimingError == "") {
				t.Errorf("Timing %+v, Split %+v, error %q; want none, and an error naming %s", r.Timing, r.Split, r.ServerTimingError, tc.wantErr)
			}
			var table bytes.Buffer
			bench.WriteTable(&table, rs)
			if strings.Contains(table.String(), "client<->pop") {
				t.Errorf("WriteTable prints a split without Server-Timing:\n%s", table.String())
			}
		})
	}
}
