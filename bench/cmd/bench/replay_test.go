package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/edgecdn/cdn/bench"
	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest"
)

func TestReplayOffline(t *testing.T) {
	file := filepath.Join(t.TempDir(), "trace.csv")
	args := []string{"replay", "-offline", "-objects", "1000", "-requests", "5000", "-warmup", "1000", "-budget", "1MiB", "-write-trace", file}
	var out, errb bytes.Buffer
	if err := run(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("run(%q) = %v (%s)", args, err, errb.String())
	}
	for _, want := range []string{"5000 requests (1000 warm-up)", "budget: 1.0 MiB", "lru (offline)", "oracle (offline)", "pop store (offline)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("run(%q) printed\n%s\nwant it to contain %q", args, out.String(), want)
		}
	}
	// The written trace, read back, gives the same references.
	var fromFile, generated bench.ReplayReport
	for _, a := range []struct {
		args []string
		dst  *bench.ReplayReport
	}{
		{[]string{"replay", "-offline", "-trace", file, "-warmup", "1000", "-budget", "1m", "-o", "json"}, &fromFile},
		{[]string{"replay", "-offline", "-objects", "1000", "-requests", "5000", "-warmup", "1000", "-budget", "1m", "-o", "json"}, &generated},
	} {
		out.Reset()
		if err := run(context.Background(), a.args, &out, &errb); err != nil {
			t.Fatalf("run(%q) = %v", a.args, err)
		}
		if err := json.Unmarshal(out.Bytes(), a.dst); err != nil {
			t.Fatalf("run(%q): %v in %s", a.args, err, out.String())
		}
	}
	// The store's simulation (the third) varies a little from run to run.
	if len(fromFile.Offline) != 3 || fromFile.Offline[0] != generated.Offline[0] || fromFile.Offline[1] != generated.Offline[1] ||
		fromFile.Offline[2].Policy != bench.PolicyStore || fromFile.Source != file {
		t.Errorf("references from the written trace %+v, from the generator %+v; want the same", fromFile, generated)
	}
}

// TestReplayCommand runs the whole command against a real PoP in front of
// an origin whose own stats are read (-origin).
func TestReplayCommand(t *testing.T) {
	ca := certstest.LabCA(t)
	originURL := poptest.StartGenOrigin(t)
	cfg := poptest.Config(ca, originURL)
	cfg.Cache.MaxBytes = 512 << 10
	p := poptest.StartPoP(t, cfg)
	args := []string{"replay", "-objects", "300", "-requests", "3000", "-warmup", "500", "-size-median", "2k", "-budget", "512k",
		"-target", "https://" + p.Addr().String(), "-cacert", ca.RootPath(), "-origin", originURL, "-pid", strconv.Itoa(os.Getpid()), "-c", "4"}
	var out, errb bytes.Buffer
	if err := run(context.Background(), args, &out, &errb); err != nil {
		t.Fatalf("run(%q) = %v (%s)", args, err, errb.String())
	}
	t.Logf("bench %s:\n%s", strings.Join(args, " "), out.String())
	for _, want := range []string{"cache, origin's account", "cache, its headers", "difference 0 requests, 0 bytes", "cache RSS: peak", "status 200: 2500"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("run(%q) printed\n%s\nwant it to contain %q", args, out.String(), want)
		}
	}
}

func TestReplayRejectsBadInput(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"replay"}, []string{"-target: want the cache's URL"}},
		{[]string{"replay", "-offline", "-budget", "lots", "-size-median", "x", "-o", "xml"}, []string{`-budget: "lots"`, `-size-median: "x"`, `-o "xml"`}},
		{[]string{"replay", "-offline", "-objects", "0", "-zipf", "-1"}, []string{"objects 0", "zipf -1"}},
		{[]string{"replay", "-offline", "-trace", "/nonexistent.csv"}, []string{"-trace: "}},
		{[]string{"replay", "-target", "https://x", "-origin", "http://o", "-origin-listen", "127.0.0.1:0"}, []string{"want one origin"}},
		{[]string{"replay", "-offline", "x"}, []string{`unexpected argument "x"`}},
		{[]string{"replay", "-offline", "-anchors", "nginx,squid"}, []string{"-anchors nginx: not an anchor", `-anchors "squid": want varnish`}},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), tt.args, &out, &errb)
		for _, w := range tt.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, w)
			}
		}
	}
}

func TestParseBytes(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want int64
	}{{"1234", 1234}, {"16k", 16 << 10}, {"64m", 64 << 20}, {"64MiB", 64 << 20}, {"2GB", 2 << 30}, {"100b", 100}} {
		if got, err := parseBytes(tt.in); err != nil || got != tt.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
	for _, in := range []string{"", "x", "-1", "1.5m", "m", "64ib", "1tb"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q): nil error, want one", in)
		}
	}
}
