package bench_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/edgecdn/cdn/bench"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// startReplayOrigin runs a counting origin until the test ends.
func startReplayOrigin(t *testing.T) *bench.ReplayOrigin {
	t.Helper()
	o, err := bench.ListenReplayOrigin("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- o.Serve() }()
	t.Cleanup(func() {
		o.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("replay origin Serve = %v", err)
		}
	})
	return o
}

// TestReplayAgainstPoP replays a small trace against a real PoP with a
// cache smaller than the trace's objects, in front of a counting origin:
// the PoP's headers and the origin must tell the same story.
func TestReplayAgainstPoP(t *testing.T) {
	reqs, err := bench.GenerateTrace(bench.TraceConfig{Seed: 1, Objects: 2000, Requests: 20_000, Warmup: 4000, Zipf: 0.8,
		SizeMedian: 4 << 10, SizeSigma: 1})
	if err != nil {
		t.Fatal(err)
	}
	const budget = 4 << 20
	for _, proto := range []string{bench.H1, bench.H2} {
		t.Run(proto, func(t *testing.T) {
			reqs, warmup := reqs, 4000
			if proto == bench.H2 {
				reqs, warmup = reqs[:5000], 1000
			}
			poll.CheckGoroutines(t)
			ca := certstest.LabCA(t)
			o := startReplayOrigin(t)
			cfg := poptest.Config(ca, o.URL())
			cfg.Cache.MaxBytes = budget
			p := poptest.StartPoP(t, cfg)
			var progress bytes.Buffer
			res, err := bench.Replay(context.Background(), bench.ReplayConfig{Target: "https://" + p.Addr().String(), Proto: proto, Workers: 4,
				Warmup: warmup, RootCAs: ca.RootPool(), Origin: o, WatchPID: os.Getpid(), Progress: &progress}, reqs)
			if err != nil {
				t.Fatal(err)
			}
			n := int64(len(reqs) - warmup)
			if res.Requests != n || res.Status["200"] != n || len(res.Errors) != 0 {
				t.Fatalf("%d requests, status %v, errors %v; want %d answered 200", res.Requests, res.Status, res.Errors, n)
			}
			h := res.Header
			if h.Hits+h.Misses != n || h.Unknown != 0 {
				t.Errorf("headers: %d hits + %d misses, %d unknown; want %d with a verdict", h.Hits, h.Misses, h.Unknown, n)
			}
			if h.ObjectHitRatio <= 0 || h.ObjectHitRatio >= 1 || h.ByteHitRatio <= 0 || h.ByteHitRatio >= 1 {
				t.Errorf("headers: object hit ratio %.3f, byte hit ratio %.3f; want both in (0, 1)", h.ObjectHitRatio, h.ByteHitRatio)
			}
			og := res.Origin
			if og == nil || og.Difference != 0 || og.ByteDifference != 0 || !og.BytesExact {
				t.Fatalf("origin %+v; want exact counts that agree with the headers (%d misses, %d coalesced)", og, h.Misses, h.Coalesced)
			}
			// Computed differently (1 - origin's share, hits' share): equal
			// counts may differ in the last bits.
			const eps = 1e-9
			if og.ObjectHitRatio < h.ObjectHitRatio-eps || og.ByteHitRatio < h.ByteHitRatio-eps {
				t.Errorf("origin's hit ratios %.3f, %.3f below the headers' %.3f, %.3f", og.ObjectHitRatio, og.ByteHitRatio, h.ObjectHitRatio, h.ByteHitRatio)
			}
			if res.PeakRSSMiB <= 0 || res.RPS <= 0 {
				t.Errorf("peak RSS %.1f MiB, %.0f req/s; want both above zero", res.PeakRSSMiB, res.RPS)
			}
			if !strings.Contains(progress.String(), "replay window: ") {
				t.Errorf("progress %q, want a line for the window", progress.String())
			}
		})
	}
}

// TestReplayOriginStats counts on the origin's side through
// /_origin/stats, for an origin in another process.
func TestReplayOriginStats(t *testing.T) {
	reqs, err := bench.GenerateTrace(bench.TraceConfig{Seed: 2, Objects: 300, Requests: 3000, Warmup: 500, Zipf: 0.8, SizeMedian: 2 << 10, SizeSigma: 1})
	if err != nil {
		t.Fatal(err)
	}
	ca := certstest.LabCA(t)
	originURL := poptest.StartGenOrigin(t)
	cfg := poptest.Config(ca, originURL)
	cfg.Cache.MaxBytes = 256 << 10
	p := poptest.StartPoP(t, cfg)
	res, err := bench.Replay(context.Background(), bench.ReplayConfig{Target: "https://localhost:" + portOf(p.Addr().String()), Warmup: 500,
		RootCAs: ca.RootPool(), Origin: bench.OriginStats{URL: originURL}}, reqs)
	if err != nil {
		t.Fatal(err)
	}
	og := res.Origin
	if og == nil || og.Difference != 0 || og.ByteDifference != 0 || !og.BytesExact || og.Requests == 0 {
		t.Fatalf("origin %+v, headers %+v; want exact, nonzero counts that agree", og, res.Header)
	}
	if og.ByteHitRatio < res.Header.ByteHitRatio || og.ByteHitRatio >= 1 {
		t.Errorf("origin's byte hit ratio %.3f, headers' %.3f; want the origin's at least the headers' and below 1", og.ByteHitRatio, res.Header.ByteHitRatio)
	}
	if _, err := (bench.OriginStats{URL: "https://localhost:" + portOf(p.Addr().String())}).Served(context.Background()); err == nil {
		t.Errorf("OriginStats on a PoP: nil error, want one saying it is not the project's origin")
	}
}

func portOf(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

func TestReplayRejectsBadConfig(t *testing.T) {
	reqs := trace(1, 1, 2, 2)
	_, err := bench.Replay(context.Background(), bench.ReplayConfig{Target: "ftp://x", Proto: "h3", Workers: -1, Warmup: 2, WatchPID: 1 << 30}, reqs)
	for _, want := range []string{`target "ftp://x"`, `proto "h3"`, "workers -1", "warmup 2", "watch pid"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Replay = %v, want an error containing %q", err, want)
		}
	}
	_, err = bench.Replay(context.Background(), bench.ReplayConfig{Target: "http://127.0.0.1:1", Proto: bench.H2}, reqs)
	if err == nil || !strings.Contains(err.Error(), "h2 needs an https:// target") {
		t.Errorf("Replay h2 over http:// = %v, want an error saying h2 needs https", err)
	}
}
