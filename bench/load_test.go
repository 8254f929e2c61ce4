package bench_test

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecdn/cdn/bench"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest"
)

func TestClosedLoopCountsEverything(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	_, port, _ := net.SplitHostPort(p.Addr().String())
	// Stored before the runs: the cache stores asynchronously, and on a
	// busy machine the first requests of a cold object can all miss.
	if _, err := bench.Load(context.Background(), bench.LoadConfig{Proto: bench.H1, Conns: 1, N: 1, RootCAs: ca.RootPool()}, "https://localhost:"+port+"/gen/1k"); err != nil {
		t.Fatal(err)
	}
	p.WaitCache()
	for _, proto := range []string{bench.H1, bench.H2, bench.H3} {
		t.Run(proto, func(t *testing.T) {
			res, err := bench.Load(context.Background(), bench.LoadConfig{Proto: proto, Conns: 2, Streams: 4, N: 200, RootCAs: ca.RootPool()},
				"https://localhost:"+port+"/gen/1k")
			if err != nil {
				t.Fatal(err)
			}
			if res.Requests != 200 || res.Status["200"] != 200 || res.Bytes != 200*1024 || len(res.Errors) != 0 {
				t.Errorf("result %+v, want 200 requests of 1 KiB, all 200", res)
			}
			if res.PoP != poptest.Name || res.CacheStatus != "hit" || res.TTFBms <= 0 || res.TTFBms > res.Totalms {
				t.Errorf("pop %q cache %q ttfb %.3f total %.3f", res.PoP, res.CacheStatus, res.TTFBms, res.Totalms)
			}
			if res.HitRatio < 0.9 || res.P50ms <= 0 || res.P50ms > res.P99ms || res.P99ms > res.Maxms {
				t.Errorf("hit ratio %.2f, p50 %.3f p99 %.3f max %.3f", res.HitRatio, res.P50ms, res.P99ms, res.Maxms)
			}
		})
	}
}

func TestOpenLoopShowsAServerStall(t *testing.T) {
	var gate sync.RWMutex
	var n atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 60 {
			gate.Lock() // the whole server pauses for 200 ms
			time.Sleep(200 * time.Millisecond)
			gate.Unlock()
		}
		gate.RLock()
		gate.RUnlock()
		w.Write([]byte("ok"))
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	res, err := bench.Load(context.Background(), bench.LoadConfig{Proto: bench.H2, Rate: 200, N: 200, RootCAs: pool}, srv.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	if res.Mode != "open" || res.Requests != 200 {
		t.Fatalf("result %+v", res)
	}
	// About 40 requests were due during the pause; measured from their
	// intended send time, the tail must carry it.
	if res.P99ms < 150 {
		t.Errorf("p99 = %.1f ms after a 200 ms server pause, want the pause to show (>= 150 ms)", res.P99ms)
	}
}

// TestLoadSweepsAWorkingSet checks -keys and -watch-pid: 100 sequential
// requests over 50 distinct URLs are 50 misses and then 50 hits, and the
// resident size of this process (which hosts the PoP) is reported.
func TestLoadSweepsAWorkingSet(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	_, port, _ := net.SplitHostPort(p.Addr().String())
	res, err := bench.Load(context.Background(), bench.LoadConfig{Proto: bench.H1, N: 100, Keys: 50, WatchPID: os.Getpid(),
		RootCAs: ca.RootPool()}, "https://localhost:"+port+"/gen/1k")
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 100 || res.Status["200"] != 100 || res.HitRatio != 0.5 {
		t.Errorf("%d requests, status %v, hit ratio %.2f; want 100 answers 200, half of them hits", res.Requests, res.Status, res.HitRatio)
	}
	// The kernel folds each thread's RSS counts into VmRSS and VmHWM lazily
	// (split RSS counting), so a sample of VmRSS can pass VmHWM by a few
	// hundred KiB: the high-water mark is held to the peak within 1 MiB.
	if res.PeakRSSMiB <= 0 || res.EndRSSMiB <= 0 || res.EndRSSMiB > res.PeakRSSMiB || res.HWMMiB < res.PeakRSSMiB-1 {
		t.Errorf("peak RSS %.1f MiB, end %.1f MiB, high-water mark %.1f MiB: want end <= peak <= high-water mark (+1 MiB), all above zero",
			res.PeakRSSMiB, res.EndRSSMiB, res.HWMMiB)
	}
	_, err = bench.Load(context.Background(), bench.LoadConfig{Proto: bench.H1, N: 1, WatchPID: 1 << 30}, "https://localhost:"+port+"/")
	if err == nil || !strings.Contains(err.Error(), "watch pid") {
		t.Errorf("watching a process that does not exist: err %v, want one naming the pid", err)
	}
}

// ConnectTo sends every connection to the given address while the URL's
// host (www.cdn.lab, which no resolver here knows) stays the TLS name
// and Host: how bench reaches a PoP published on the Docker host.
func TestConnectTo(t *testing.T) {
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, poptest.StartGenOrigin(t)))
	_, port, _ := net.SplitHostPort(p.Addr().String())
	url := "https://www.cdn.lab:" + port + "/gen/1k"
	for _, proto := range []string{bench.H1, bench.H2, bench.H3} {
		t.Run(proto, func(t *testing.T) {
			res, err := bench.Load(context.Background(), bench.LoadConfig{Proto: proto, N: 5, RootCAs: ca.RootPool(), ConnectTo: p.Addr().String()}, url)
			if err != nil || res.Status["200"] != 5 {
				t.Errorf("Load with ConnectTo: %+v, %v; want five 200s", res, err)
			}
			rs, err := bench.Probe(context.Background(), bench.ProbeConfig{Proto: proto, Mode: bench.Cold, N: 2, RootCAs: ca.RootPool(), ConnectTo: p.Addr().String()}, url)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rs {
				if r.Error != "" || r.Status != 200 {
					t.Errorf("Probe with ConnectTo: %+v, want a 200", r)
				}
			}
		})
	}
}
