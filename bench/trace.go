package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/edgecdn/cdn/origin"
)

// A trace is what bench replay sends and what its offline references
// (SimulateLRU, StaticOracle) are computed over: a sequence of requests,
// each for one object of a fixed size. An object is its ID and size
// together, as its URL (/gen/<size>?o=<id>) is: a trace that gives one ID
// two sizes names two objects.

// TraceRequest is one request of a trace.
type TraceRequest struct {
	// Time is the request's time as the trace gives it; generated traces
	// number their requests from 0. Replay keeps the order and ignores the
	// time: it sends as fast as the cache answers.
	Time int64
	ID   uint64
	Size int64
}

// traceKey is an object of a trace: what makes its URL distinct.
type traceKey struct {
	id   uint64
	size int64
}

func (r TraceRequest) key() traceKey { return traceKey{r.ID, r.Size} }

// TraceConfig describes a generated trace. GenerateTrace makes the same
// trace from the same TraceConfig on every run and machine.
type TraceConfig struct {
	// Seed seeds the generator (a PCG).
	Seed uint64
	// Objects is the catalogue: objects requested by popularity rank.
	// Required.
	Objects int
	// Requests is the length of the trace, warm-up included. Required.
	Requests int
	// Warmup is how many of the first requests warm the cache and are
	// not measured. It must be less than Requests.
	Warmup int
	// Zipf is the popularity skew s: the object at rank r is requested in
	// proportion to 1/r^s. Zero is uniform; 0.6 to 1.0 is typical of CDN
	// traffic.
	Zipf float64
	// SizeMedian and SizeSigma give each object a lognormal size: the
	// exponential of a normal variable of mean ln(SizeMedian) and standard
	// deviation SizeSigma. If SizeMedian is zero, 16 KiB; if SizeSigma is
	// zero, every object is SizeMedian bytes.
	SizeMedian int64
	SizeSigma  float64
	// MinSize and MaxSize clamp the sizes. If zero, 1 byte and 4 MiB.
	MinSize, MaxSize int64
	// OneHitWonders is the share of requests (0 to 1) that go to objects
	// requested only this once, new objects outside the catalogue.
	OneHitWonders float64
	// ChurnEvery and ChurnShare change popularity over time: every
	// ChurnEvery requests, ChurnShare of the catalogue (0 to 1), at random
	// ranks, is replaced by new objects that take over those ranks. If
	// ChurnEvery is zero, popularity is fixed.
	ChurnEvery int
	ChurnShare float64
}

// Defaults for TraceConfig's zero sizes.
const (
	defaultSizeMedian = 16 << 10
	defaultMaxSize    = 4 << 20
)

// Validate reports every problem of c at once, each naming its field.
func (c TraceConfig) Validate() error {
	var errs []error
	if c.Objects <= 0 {
		errs = append(errs, fmt.Errorf("objects %d: want a catalogue of at least one object", c.Objects))
	}
	if c.Requests <= 0 {
		errs = append(errs, fmt.Errorf("requests %d: want at least one request", c.Requests))
	}
	if c.Warmup < 0 || (c.Requests > 0 && c.Warmup >= c.Requests) {
		errs = append(errs, fmt.Errorf("warmup %d: want 0 to requests-1 (%d)", c.Warmup, c.Requests-1))
	}
	if c.Zipf < 0 || math.IsNaN(c.Zipf) || c.Zipf > 10 {
		errs = append(errs, fmt.Errorf("zipf %v: want a skew from 0 (uniform) to 10, such as 0.8", c.Zipf))
	}
	if c.SizeMedian < 0 || c.SizeSigma < 0 || math.IsNaN(c.SizeSigma) || c.SizeSigma > 10 {
		errs = append(errs, fmt.Errorf("size median %d, sigma %v: want a positive median and a sigma from 0 to 10", c.SizeMedian, c.SizeSigma))
	}
	minSize, maxSize := c.sizeBounds()
	if c.MinSize < 0 || c.MaxSize < 0 || minSize > maxSize || maxSize > origin.MaxGenSize {
		errs = append(errs, fmt.Errorf("size bounds %d to %d: want 1 <= min <= max <= %d (the origin's largest object)", minSize, maxSize, origin.MaxGenSize))
	}
	if !(c.OneHitWonders >= 0 && c.OneHitWonders < 1) {
		errs = append(errs, fmt.Errorf("one-hit wonders %v: want a share from 0 to below 1", c.OneHitWonders))
	}
	if c.ChurnEvery < 0 || !(c.ChurnShare >= 0 && c.ChurnShare <= 1) {
		errs = append(errs, fmt.Errorf("churn every %d requests, share %v: want a positive period and a share from 0 to 1", c.ChurnEvery, c.ChurnShare))
	}
	return errors.Join(errs...)
}

func (c TraceConfig) sizeBounds() (minSize, maxSize int64) {
	minSize, maxSize = c.MinSize, c.MaxSize
	if minSize == 0 {
		minSize = 1
	}
	if maxSize == 0 {
		maxSize = defaultMaxSize
	}
	return minSize, maxSize
}

// GenerateTrace returns the trace c describes. The catalogue's IDs are
// 0 to Objects-1, shuffled so that an ID says nothing of its popularity;
// new objects (churn, one-hit wonders) take the following IDs in order of
// their first request.
func GenerateTrace(c TraceConfig) ([]TraceRequest, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("trace: %w", err)
	}
	g := newTraceGen(c)
	out := make([]TraceRequest, c.Requests)
	for i := range out {
		if c.ChurnEvery > 0 && i > 0 && i%c.ChurnEvery == 0 {
			g.churn()
		}
		var id uint64
		var size int64
		if c.OneHitWonders > 0 && g.rng.Float64() < c.OneHitWonders {
			id, size = g.newObject()
		} else {
			rank := g.zipf.rank(g.rng.Float64())
			id, size = g.slots[rank], g.sizes[rank]
		}
		out[i] = TraceRequest{Time: int64(i), ID: id, Size: size}
	}
	return out, nil
}

// traceGen holds a generation's state: the object at each popularity
// rank and its size.
type traceGen struct {
	c      TraceConfig
	rng    *rand.Rand
	zipf   zipfSampler
	slots  []uint64 // object ID at each rank
	sizes  []int64  // its size
	nextID uint64
}

func newTraceGen(c TraceConfig) *traceGen {
	g := &traceGen{
		c:      c,
		rng:    rand.New(rand.NewPCG(c.Seed, 0x9e3779b97f4a7c15)),
		zipf:   newZipfSampler(c.Objects, c.Zipf),
		slots:  make([]uint64, c.Objects),
		sizes:  make([]int64, c.Objects),
		nextID: uint64(c.Objects),
	}
	for i := range g.slots {
		g.slots[i] = uint64(i)
	}
	g.rng.Shuffle(len(g.slots), func(i, j int) { g.slots[i], g.slots[j] = g.slots[j], g.slots[i] })
	for i := range g.sizes {
		g.sizes[i] = g.size()
	}
	return g
}

// size draws a lognormal size, clamped.
func (g *traceGen) size() int64 {
	median := g.c.SizeMedian
	if median == 0 {
		median = defaultSizeMedian
	}
	minSize, maxSize := g.c.sizeBounds()
	v := float64(median) * math.Exp(g.c.SizeSigma*g.rng.NormFloat64())
	return max(minSize, min(maxSize, int64(math.Round(min(v, float64(maxSize))))))
}

func (g *traceGen) newObject() (uint64, int64) {
	id := g.nextID
	g.nextID++
	return id, g.size()
}

// churn replaces ChurnShare of the catalogue, at random ranks, with new
// objects.
func (g *traceGen) churn() {
	n := int(math.Round(g.c.ChurnShare * float64(len(g.slots))))
	for _, rank := range g.rng.Perm(len(g.slots))[:n] {
		g.slots[rank], g.sizes[rank] = g.newObject()
	}
}

// zipfSampler draws ranks 0..n-1 with weight 1/(rank+1)^s for any s >= 0
// (math/rand's Zipf wants s > 1): the inverse of the cumulative weights,
// by binary search.
type zipfSampler struct {
	cum []float64 // cum[i] is the weight of ranks 0..i
}

func newZipfSampler(n int, s float64) zipfSampler {
	cum := make([]float64, n)
	total := 0.0
	for i := range cum {
		total += math.Pow(float64(i+1), -s)
		cum[i] = total
	}
	return zipfSampler{cum: cum}
}

// rank maps u, uniform in [0, 1), to a rank: the first whose cumulative
// weight passes u times the total.
func (z zipfSampler) rank(u float64) int {
	t := u * z.cum[len(z.cum)-1]
	i := sort.Search(len(z.cum), func(i int) bool { return z.cum[i] > t })
	return min(i, len(z.cum)-1) // rounding must not run off the end
}

// TraceCSVHeader is the first line WriteTraceCSV writes. ReadTraceCSV
// skips a first line that does not start with a number.
const TraceCSVHeader = "time,id,size"

// WriteTraceCSV writes reqs as CSV: a header line, then time, object ID
// and size in bytes, one request a line.
func WriteTraceCSV(w io.Writer, reqs []TraceRequest) error {
	bw := bufio.NewWriter(w)
	bw.WriteString(TraceCSVHeader + "\n")
	var buf []byte
	for _, r := range reqs {
		buf = strconv.AppendInt(buf[:0], r.Time, 10)
		buf = append(buf, ',')
		buf = strconv.AppendUint(buf, r.ID, 10)
		buf = append(buf, ',')
		buf = strconv.AppendInt(buf, r.Size, 10)
		buf = append(buf, '\n')
		bw.Write(buf)
	}
	return bw.Flush()
}

// ReadTraceCSV reads a trace in the shape of public CDN traces: one
// request a line, as time, object ID, size in bytes, separated by commas
// (spaces around fields are ignored). Time is any integer (kept, not used
// for pacing), the ID a non-negative integer, the size 0 to 1 GiB (the
// origin's largest object). Blank lines and lines starting with # are
// skipped, and so is a first line that does not start with a digit, a
// header such as TraceCSVHeader. Errors name the line.
func ReadTraceCSV(r io.Reader) ([]TraceRequest, error) {
	var out []TraceRequest
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		if line == 1 && !(text[0] >= '0' && text[0] <= '9' || text[0] == '-') {
			continue // a header
		}
		req, err := parseTraceLine(text)
		if err != nil {
			return nil, fmt.Errorf("trace line %d: %w", line, err)
		}
		out = append(out, req)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read trace: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("trace: no requests; want lines of time,id,size")
	}
	return out, nil
}

func parseTraceLine(text string) (TraceRequest, error) {
	f := strings.Split(text, ",")
	if len(f) != 3 {
		return TraceRequest{}, fmt.Errorf("%d fields in %q, want 3: time,id,size", len(f), text)
	}
	for i := range f {
		f[i] = strings.TrimSpace(f[i])
	}
	t, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return TraceRequest{}, fmt.Errorf("time %q: want an integer", f[0])
	}
	id, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return TraceRequest{}, fmt.Errorf("id %q: want a non-negative integer", f[1])
	}
	size, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || size < 0 || size > origin.MaxGenSize {
		return TraceRequest{}, fmt.Errorf("size %q: want bytes from 0 to %d", f[2], origin.MaxGenSize)
	}
	return TraceRequest{Time: t, ID: id, Size: size}, nil
}

// TraceSummary describes a trace and its measured window.
type TraceSummary struct {
	Requests int `json:"requests"`
	Warmup   int `json:"warmup"`
	// Objects and FootprintBytes are the distinct objects of the whole
	// trace and their bytes; the Window fields the same for the requests
	// after the warm-up.
	Objects              int   `json:"objects"`
	FootprintBytes       int64 `json:"footprint_bytes"`
	WindowObjects        int   `json:"window_objects"`
	WindowFootprintBytes int64 `json:"window_footprint_bytes"`
	// WindowBytes is the bytes the window's requests ask for.
	WindowBytes int64 `json:"window_bytes"`
	// OneHitShare is the share of the window's requests for objects
	// requested only once in the whole trace.
	OneHitShare float64 `json:"one_hit_share"`
	// MedianSize is the median size of the trace's distinct objects.
	MedianSize int64 `json:"median_size"`
}

// SummarizeTrace describes reqs, of which the first warmup are warm-up.
func SummarizeTrace(reqs []TraceRequest, warmup int) TraceSummary {
	warmup = min(max(warmup, 0), len(reqs))
	s := TraceSummary{Requests: len(reqs), Warmup: warmup}
	counts := make(map[traceKey]int32, len(reqs)/4)
	for _, r := range reqs {
		if counts[r.key()]++; counts[r.key()] == 1 {
			s.FootprintBytes += r.Size
		}
	}
	s.Objects = len(counts)
	sizes := make([]int64, 0, len(counts))
	for k := range counts {
		sizes = append(sizes, k.size)
	}
	if len(sizes) > 0 {
		slices.Sort(sizes)
		s.MedianSize = sizes[len(sizes)/2]
	}
	seen := make(map[traceKey]struct{}, len(counts))
	ones := 0
	for _, r := range reqs[warmup:] {
		s.WindowBytes += r.Size
		if counts[r.key()] == 1 {
			ones++
		}
		if _, ok := seen[r.key()]; !ok {
			seen[r.key()] = struct{}{}
			s.WindowFootprintBytes += r.Size
		}
	}
	s.WindowObjects = len(seen)
	if n := len(reqs) - warmup; n > 0 {
		s.OneHitShare = float64(ones) / float64(n)
	}
	return s
}
