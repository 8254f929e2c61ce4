package bench_test

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/edgecdn/cdn/bench"
)

func TestGenerateTraceIsDeterministic(t *testing.T) {
	cfg := bench.TraceConfig{Seed: 7, Objects: 500, Requests: 5000, Warmup: 1000, Zipf: 0.8, SizeSigma: 1,
		OneHitWonders: 0.1, ChurnEvery: 1000, ChurnShare: 0.05}
	a, err := bench.GenerateTrace(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := bench.GenerateTrace(cfg)
	if !slices.Equal(a, b) {
		t.Errorf("GenerateTrace(%+v) twice: traces differ", cfg)
	}
	cfg.Seed = 8
	c, _ := bench.GenerateTrace(cfg)
	if slices.Equal(a, c) {
		t.Errorf("GenerateTrace with seeds 7 and 8: the same trace, want different ones")
	}
}

// TestGenerateTraceShape measures what the generator was asked for: the
// popularity skew (the slope of log count against log rank over the most
// popular objects) and the median size.
func TestGenerateTraceShape(t *testing.T) {
	for _, skew := range []float64{0.6, 0.8, 1.2} {
		cfg := bench.TraceConfig{Seed: 1, Objects: 10_000, Requests: 300_000, Zipf: skew, SizeMedian: 16 << 10, SizeSigma: 1}
		reqs, err := bench.GenerateTrace(cfg)
		if err != nil {
			t.Fatal(err)
		}
		counts := map[uint64]int{}
		sizes := map[uint64]int64{}
		for _, r := range reqs {
			counts[r.ID]++
			sizes[r.ID] = r.Size
		}
		byCount := make([]int, 0, len(counts))
		for _, n := range counts {
			byCount = append(byCount, n)
		}
		slices.Sort(byCount)
		slices.Reverse(byCount)
		// Least squares over ranks 1..100 (each has hundreds of requests).
		var sx, sy, sxx, sxy float64
		const n = 100
		for i := range n {
			x, y := math.Log(float64(i+1)), math.Log(float64(byCount[i]))
			sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
		}
		got := -(n*sxy - sx*sy) / (n*sxx - sx*sx)
		if math.Abs(got-skew) > 0.1 {
			t.Errorf("zipf %.1f: measured skew %.3f, want within 0.1", skew, got)
		}
		all := make([]int64, 0, len(sizes))
		for _, s := range sizes {
			all = append(all, s)
		}
		slices.Sort(all)
		if med := all[len(all)/2]; math.Abs(float64(med)/float64(16<<10)-1) > 0.1 {
			t.Errorf("zipf %.1f: median size %d, want 16384 within 10%%", skew, med)
		}
	}
}

func TestGenerateTraceSizes(t *testing.T) {
	reqs, err := bench.GenerateTrace(bench.TraceConfig{Objects: 100, Requests: 1000, SizeMedian: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		if r.Size != 1000 {
			t.Fatalf("sigma 0: request %+v, want every size 1000", r)
		}
	}
	reqs, _ = bench.GenerateTrace(bench.TraceConfig{Objects: 1000, Requests: 10000, SizeMedian: 1000, SizeSigma: 3, MinSize: 500, MaxSize: 2000})
	for _, r := range reqs {
		if r.Size < 500 || r.Size > 2000 {
			t.Fatalf("clamped to 500..2000: request %+v", r)
		}
	}
}

// One-hit wonders are new objects requested once; churn hands popular
// ranks to new objects. A churn of the whole catalogue halfway makes two
// halves with no object in common.
func TestGenerateTraceOneHitWondersAndChurn(t *testing.T) {
	reqs, err := bench.GenerateTrace(bench.TraceConfig{Seed: 3, Objects: 1000, Requests: 100_000, Zipf: 0.8, OneHitWonders: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	if s := bench.SummarizeTrace(reqs, 0); s.OneHitShare < 0.19 || s.OneHitShare > 0.22 {
		t.Errorf("one-hit wonders 0.2 over a catalogue of 1000 objects: %.3f of requests to objects requested once, want 0.19 to 0.22", s.OneHitShare)
	}
	reqs, err = bench.GenerateTrace(bench.TraceConfig{Seed: 3, Objects: 1000, Requests: 20_000, Zipf: 0.8, ChurnEvery: 10_000, ChurnShare: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range reqs {
		if old := r.ID < 1000; old != (i < 10_000) {
			t.Fatalf("request %d for object %d: want objects 0..999 before the churn at 10000 and new ones after", i, r.ID)
		}
	}
}

func TestTraceConfigValidate(t *testing.T) {
	err := bench.TraceConfig{Objects: 0, Requests: 10, Warmup: 10, Zipf: -1, SizeSigma: -1, MinSize: 10, MaxSize: 5,
		OneHitWonders: 1, ChurnEvery: -1}.Validate()
	for _, want := range []string{"objects 0", "warmup 10", "zipf -1", "sigma -1", "size bounds 10 to 5", "one-hit wonders 1", "churn every -1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want an error containing %q", err, want)
		}
	}
	if _, err := bench.GenerateTrace(bench.TraceConfig{}); err == nil {
		t.Errorf("GenerateTrace(zero config) = nil error, want one")
	}
}

func TestTraceCSVRoundTrip(t *testing.T) {
	reqs, err := bench.GenerateTrace(bench.TraceConfig{Seed: 1, Objects: 100, Requests: 1000, Zipf: 0.8, SizeSigma: 1, OneHitWonders: 0.1})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bench.WriteTraceCSV(&buf, reqs); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(buf.String(), bench.TraceCSVHeader+"\n") {
		t.Errorf("WriteTraceCSV: %.40q..., want the header first", buf.String())
	}
	got, err := bench.ReadTraceCSV(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, reqs) {
		t.Errorf("ReadTraceCSV(WriteTraceCSV(trace)): %d requests, not the %d written", len(got), len(reqs))
	}
}

func TestReadTraceCSV(t *testing.T) {
	got, err := bench.ReadTraceCSV(strings.NewReader("timestamp,obj,bytes\n\n# a comment\n1700000000, 42, 100\n-5,7,0\n"))
	want := []bench.TraceRequest{{Time: 1700000000, ID: 42, Size: 100}, {Time: -5, ID: 7, Size: 0}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ReadTraceCSV = %v, %v; want %v", got, err, want)
	}
	for _, tt := range []struct{ in, want string }{
		{"", "no requests"},
		{"time,id,size\n", "no requests"},
		{"1,2,3\n1,2\n", "line 2: 2 fields"},
		{"1,2,3\n1,2,3,4\n", "line 2: 4 fields"},
		{"1,2,3\nx,2,3\n", `line 2: time "x"`},
		{"1,2,3\n\n1,-2,3\n", `line 3: id "-2"`},
		{"1,2,3\n1,2,big\n", `line 2: size "big"`},
		{"1,2,-3\n", `line 1: size "-3"`},
		{"1,2,1073741825\n", `line 1: size "1073741825": want bytes from 0 to 1073741824`},
	} {
		if _, err := bench.ReadTraceCSV(strings.NewReader(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ReadTraceCSV(%q) = %v, want an error containing %q", tt.in, err, tt.want)
		}
	}
}

// FuzzReadTraceCSV: whatever ReadTraceCSV accepts, WriteTraceCSV writes
// back to the same requests.
func FuzzReadTraceCSV(f *testing.F) {
	f.Add("time,id,size\n1,2,3\n")
	f.Add("1, 2, 3\n# x\n\n-4,5,0\n")
	f.Add("a,b,c\n1,18446744073709551615,1073741824\n")
	f.Fuzz(func(t *testing.T, in string) {
		reqs, err := bench.ReadTraceCSV(strings.NewReader(in))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := bench.WriteTraceCSV(&buf, reqs); err != nil {
			t.Fatal(err)
		}
		again, err := bench.ReadTraceCSV(&buf)
		if err != nil || !slices.Equal(again, reqs) {
			t.Errorf("ReadTraceCSV(%q) = %v; written and read again: %v, %v", in, reqs, again, err)
		}
	})
}

func TestSummarizeTrace(t *testing.T) {
	reqs := []bench.TraceRequest{{ID: 1, Size: 10}, {ID: 2, Size: 20}, {ID: 1, Size: 10}, {ID: 3, Size: 30}, {ID: 1, Size: 5}}
	got := bench.SummarizeTrace(reqs, 2)
	want := bench.TraceSummary{Requests: 5, Warmup: 2, Objects: 4, FootprintBytes: 65, WindowObjects: 3, WindowFootprintBytes: 45,
		WindowBytes: 45, OneHitShare: 2.0 / 3, MedianSize: 20}
	if got != want {
		t.Errorf("SummarizeTrace = %+v, want %+v", got, want)
	}
}
