package pop_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// rttReport is the JSON of GET /rtt as geodns reads it, written out here
// rather than taken from package clientrtt so that a change of the wire
// format fails this test.
type rttReport struct {
	PoP      string `json:"pop"`
	Prefixes []struct {
		Prefix  string  `json:"prefix"`
		RTT     float64 `json:"rtt_ms"`
		Min     float64 `json:"min_ms"`
		Samples int64   `json:"samples"`
		Age     int64   `json:"age_ms"`
	} `json:"prefixes"`
}

func getRTT(t *testing.T, admin string) rttReport {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/rtt")
	if err != nil {
		t.Fatalf("GET /rtt: %v", err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/json" {
		t.Fatalf("GET /rtt = %d, Content-Type %q; want 200, application/json", resp.StatusCode, ct)
	}
	var r rttReport
	dec := json.NewDecoder(resp.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("GET /rtt: decode: %v", err)
	}
	return r
}

// samplesOf returns pop_client_rtt_samples_total for proto.
func samplesOf(t *testing.T, admin, proto string) int {
	t.Helper()
	n, _ := strconv.Atoi(metricValue(t, admin, `pop_client_rtt_samples_total{proto="`+proto+`"}`))
	return n
}

// TestClientRTT: a PoP samples the round trip of each connection it
// terminates, over HTTP/1.1, HTTP/2 (TCP) and HTTP/3 (QUIC), on the fast
// paths and through net/http alike, under the client's prefix, and serves
// the table on the admin listener's /rtt; the sample counters move for
// each transport.
func TestClientRTT(t *testing.T) {
	ca := certstest.LabCA(t)
	originURL := poptest.StartGenOrigin(t)
	for _, fast := range []bool{true, false} {
		t.Run("fast="+strconv.FormatBool(fast), func(t *testing.T) {
			cfg := poptest.Config(ca, originURL)
			cfg.DisableFastPath = !fast
			p := poptest.StartPoP(t, cfg)
			admin := p.AdminAddr().String()
			if r := getRTT(t, admin); r.PoP != poptest.Name || len(r.Prefixes) != 0 {
				t.Errorf("/rtt before any client = %+v, want pop %q and no prefixes", r, poptest.Name)
			}

			cs := clients(t, ca)
			for _, proto := range []string{"h1", "h2", "h3"} {
				// Twice: a hit the second time, for the fast paths.
				for range 2 {
					resp, _ := get(t, cs[proto], "https://localhost:"+port(p.Addr())+"/gen/1k")
					if resp.StatusCode != 200 || resp.ProtoMajor != int(proto[1]-'0') {
						t.Fatalf("%s GET = %d over HTTP/%d", proto, resp.StatusCode, resp.ProtoMajor)
					}
				}
			}
			// Each connection's first sample is taken after its handshake;
			// QUIC's in a goroutine that may run after the response.
			poll.Until(t, "pop_client_rtt_samples_total{proto=\"tcp\"} >= 2 (h1 and h2 connections)", func() bool {
				return samplesOf(t, admin, "tcp") >= 2
			})
			poll.Until(t, "pop_client_rtt_samples_total{proto=\"quic\"} >= 1 (the h3 connection)", func() bool {
				return samplesOf(t, admin, "quic") >= 1
			})
			r := getRTT(t, admin)
			if len(r.Prefixes) != 1 {
				t.Fatalf("/rtt prefixes = %+v, want one: 127.0.0.0/24", r.Prefixes)
			}
			e := r.Prefixes[0]
			if e.Prefix != "127.0.0.0/24" || e.Samples < 3 || e.RTT <= 0 || e.Min <= 0 || e.Min > e.RTT || e.Age < 0 {
				t.Errorf("/rtt entry = %+v; want 127.0.0.0/24 with at least 3 samples, 0 < min_ms <= rtt_ms, age_ms >= 0", e)
			}
			if got := metricValue(t, admin, "pop_client_rtt_prefixes"); got != "1" {
				t.Errorf("pop_client_rtt_prefixes = %s, want 1", got)
			}
		})
	}
}
