package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The tests of objects kept in slices run against objectOrigin, a real
// origin on loopback that makes its object's bytes as it sends them (a
// 200 MiB object is never held in memory) and counts what it sends.

// objectBytes fills p with bytes [off, off+len(p)) of the object made from
// seed: byte i is byte i%8 of a hash of (seed, i/8).
func objectBytes(seed uint64, off int64, p []byte) {
	for i := 0; i < len(p); {
		pos := off + int64(i)
		w := mix64(seed ^ uint64(pos>>3)*0x9e3779b97f4a7c15)
		if b := int(pos & 7); b == 0 && len(p)-i >= 8 {
			binary.LittleEndian.PutUint64(p[i:], w)
			i += 8
		} else {
			for ; b < 8 && i < len(p); b, i = b+1, i+1 {
				p[i] = byte(w >> (8 * b))
			}
		}
	}
}

func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	return x ^ x>>33
}

// objectOrigin serves one object: 200, or 206 for one range "bytes=a-b"
// or "bytes=a-", with the strong ETag "v<seed>", and 412 to an If-Match
// of another ETag (unless ignoreIfMatch). From its switchAt-th range
// request on, it serves the object of seed+1 instead.
type objectOrigin struct {
	size          int64
	ignoreIfMatch bool
	weak          bool // a weak ETag: the object cannot be sliced
	weak304       bool // a 304 carries the ETag made weak (it matched weakly)
	switchAt      int
	srv           *httptest.Server

	mu     sync.Mutex // guards seed, starts, whole, ranged
	seed   uint64
	starts map[int64]int // first byte of each range request -> requests
	whole  int           // requests without Range
	ranged int

	sent atomic.Int64 // body bytes written
}

func newObjectOrigin(t *testing.T, size int64, seed uint64) *objectOrigin {
	t.Helper()
	o := &objectOrigin{size: size, seed: seed, starts: map[int64]int{}}
	o.srv = httptest.NewServer(o)
	t.Cleanup(o.srv.Close)
	return o
}

func (o *objectOrigin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rng := r.Header.Get("Range")
	first, last := int64(0), o.size-1
	o.mu.Lock()
	if rng == "" {
		o.whole++
	} else {
		o.ranged++
		if o.ranged == o.switchAt {
			o.seed++
		}
		spec := strings.TrimPrefix(rng, "bytes=")
		a, b, _ := strings.Cut(spec, "-")
		first, _ = strconv.ParseInt(a, 10, 64)
		switch l, _ := strconv.ParseInt(b, 10, 64); {
		case a == "": // the last l bytes
			first = max(o.size-l, 0)
		case b != "":
			last = min(l, o.size-1)
		}
		o.starts[first]++
	}
	seed := o.seed
	o.mu.Unlock()
	etag := fmt.Sprintf(`"v%d"`, seed)
	if o.weak {
		etag = "W/" + etag
	}
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "max-age=3600")
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	if im := r.Header.Get("If-Match"); im != "" && im != etag && !o.ignoreIfMatch {
		w.WriteHeader(http.StatusPreconditionFailed)
		return
	}
	if inm := r.Header.Get("If-None-Match"); inm == etag {
		if o.weak304 {
			h.Set("ETag", "W/"+etag)
		}
		w.WriteHeader(http.StatusNotModified)
		return
	}
	code := http.StatusOK
	if rng != "" {
		if first >= o.size {
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", o.size))
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		code = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, o.size))
	}
	h.Set("Content-Length", strconv.FormatInt(last-first+1, 10))
	w.WriteHeader(code)
	if r.Method == http.MethodHead {
		return
	}
	buf := make([]byte, 64<<10)
	for off := first; off <= last; {
		p := buf[:min(int64(len(buf)), last-off+1)]
		objectBytes(seed, off, p)
		n, err := w.Write(p)
		o.sent.Add(int64(n))
		if err != nil {
			return
		}
		off += int64(n)
	}
}

// counts returns the range requests by first byte, and the whole ones.
func (o *objectOrigin) counts() (map[int64]int, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	m := make(map[int64]int, len(o.starts))
	for k, v := range o.starts {
		m[k] = v
	}
	return m, o.whole
}

// sliceRig is a cache with cfg (its Transport the origin's) behind a
// real server.
func sliceRig(t *testing.T, cfg Config, o *objectOrigin) (*Cache, *httptest.Server, *http.Client) {
	t.Helper()
	cfg.Transport = originTransport{o.srv.URL}
	if cfg.SliceBytes == 0 {
		cfg.SliceBytes = 1 << 20
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(c)
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(func() { tr.CloseIdleConnections(); front.Close(); c.Close() })
	return c, front, &http.Client{Transport: tr}
}

// answer is what a client got.
type answer struct {
	code         int
	contentRange string
	first        int64  // the object's byte the body starts at
	n            int64  // body bytes read
	matched      []bool // whether the body is the object of seeds[i] all along
	err          error  // reading the body
	header       http.Header
}

// fetch sends a GET (or method) with hdr and checks the body against the
// objects of seeds as it reads it, without keeping it.
func fetch(t *testing.T, cl *http.Client, method, url string, seeds []uint64, hdr ...string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Errorf("%s %s %v: %v", method, url, hdr, err)
		return answer{err: err}
	}
	defer resp.Body.Close()
	a := answer{code: resp.StatusCode, contentRange: resp.Header.Get("Content-Range"), header: resp.Header, matched: make([]bool, len(seeds))}
	if a.contentRange != "" {
		a.first, _, _, _ = parseContentRange(a.contentRange)
	}
	for i := range a.matched {
		a.matched[i] = true
	}
	got, want := make([]byte, 256<<10), make([]byte, 256<<10)
	for {
		n, err := io.ReadFull(resp.Body, got)
		for i, seed := range seeds {
			if a.matched[i] && n > 0 {
				objectBytes(seed, a.first+a.n, want[:n])
				a.matched[i] = string(got[:n]) == string(want[:n])
			}
		}
		a.n += int64(n)
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) && resp.ContentLength == a.n {
			return a
		}
		if err != nil {
			a.err = err
			return a
		}
	}
}

// TestSliceManyClients: a 200 MiB object, 50 concurrent clients asking for
// different ranges and a few reading it whole: every answer has the right
// bytes, and the origin sent each slice once (and nothing else).
func TestSliceManyClients(t *testing.T) {
	const slice = 1 << 20
	size := int64(200 << 20)
	if testing.Short() || raceEnabled {
		size = 16 << 20
	}
	org := newObjectOrigin(t, size, 7)
	c, front, cl := sliceRig(t, Config{MaxBytes: size + 64<<20}, org)
	url := front.URL + "/big.bin"
	seeds := []uint64{7}

	rnd := rand.New(rand.NewPCG(1, 2))
	type ask struct {
		rng         string
		first, last int64
	}
	var asks []ask
	for i := range 50 {
		var a ask
		switch {
		case i%10 == 9: // open-ended, near the end
			a.first = size - 1 - rnd.Int64N(4<<20)
			a.last = size - 1
			a.rng = fmt.Sprintf("bytes=%d-", a.first)
		case i%10 == 8: // suffix
			n := 1 + rnd.Int64N(3<<20)
			a.first, a.last = size-n, size-1
			a.rng = fmt.Sprintf("bytes=-%d", n)
		default: // anywhere, from a few bytes to a few slices
			a.first = rnd.Int64N(size)
			a.last = min(a.first+rnd.Int64N(3<<20), size-1)
			a.rng = fmt.Sprintf("bytes=%d-%d", a.first, a.last)
		}
		asks = append(asks, a)
	}
	var wg sync.WaitGroup
	known := make(chan struct{}) // the first answer came: whole readers start
	var once sync.Once
	for _, a := range asks {
		wg.Go(func() {
			got := fetch(t, cl, "GET", url, seeds, "Range", a.rng)
			once.Do(func() { close(known) })
			want := fmt.Sprintf("bytes %d-%d/%d", a.first, a.last, size)
			if got.code != http.StatusPartialContent || got.contentRange != want || got.n != a.last-a.first+1 || !got.matched[0] || got.err != nil {
				t.Errorf("GET Range %s = %d %q, %d bytes, right bytes %v, %v; want 206 %q and the object's %d bytes",
					a.rng, got.code, got.contentRange, got.n, got.matched[0], got.err, want, a.last-a.first+1)
			}
		})
	}
	for range 3 {
		wg.Go(func() {
			<-known
			got := fetch(t, cl, "GET", url, seeds)
			if got.code != http.StatusOK || got.n != size || !got.matched[0] || got.err != nil {
				t.Errorf("GET whole = %d, %d bytes, right bytes %v, %v; want 200 and the object's %d bytes", got.code, got.n, got.matched[0], got.err, size)
			}
		})
	}
	wg.Wait()
	c.Wait()

	starts, whole := org.counts()
	if whole != 0 {
		t.Errorf("the origin got %d requests for the whole object, want none: the range requests taught the cache its size", whole)
	}
	for first, n := range starts {
		if first%slice != 0 || n != 1 {
			t.Errorf("the origin got %d range requests from byte %d, want one per slice, at a slice's start", n, first)
		}
	}
	if want := int((size + slice - 1) / slice); len(starts) != want {
		t.Errorf("the origin was asked for %d slices, want %d", len(starts), want)
	}
	if sent := org.sent.Load(); sent != size {
		t.Errorf("the origin sent %d bytes for a %d-byte object, want each byte once", sent, size)
	}
	t.Logf("object %d MiB: origin sent %d bytes (%.3fx), %d slice fetches, %d coalesced waits",
		size>>20, org.sent.Load(), float64(org.sent.Load())/float64(size), c.Stats().SliceFetches, c.Stats().Coalesced)
}

// TestSliceMemoryBound: readers of an object several times the cache's
// budget are served from slices without the process holding the object:
// the store stays within its budget and the heap's peak well below the
// object's size, while the origin is asked for slices.
func TestSliceMemoryBound(t *testing.T) {
	const budget = 16 << 20
	size := int64(160 << 20)
	if testing.Short() || raceEnabled {
		size = 32 << 20
	}
	org := newObjectOrigin(t, size, 3)
	c, front, cl := sliceRig(t, Config{MaxBytes: budget}, org)
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
			}
		}
	})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			hdr := []string{}
			if i == 3 {
				hdr = []string{"Range", fmt.Sprintf("bytes=%d-", size/3)}
			}
			got := fetch(t, cl, "GET", front.URL+"/huge.bin", []uint64{3}, hdr...)
			if !got.matched[0] || got.err != nil || got.n != size-got.first {
				t.Errorf("reader %d: %d bytes from %d, right bytes %v, %v", i, got.n, got.first, got.matched[0], got.err)
			}
		})
	}
	wg.Wait()
	close(stop)
	sampler.Wait()
	c.Wait()
	grew := int64(peak.Load()) - int64(before.HeapInuse)
	st := c.Stats()
	t.Logf("object %d MiB, budget %d MiB: heap in use grew by at most %d MiB, store holds %d MiB, origin sent %.2fx the object",
		size>>20, budget>>20, grew>>20, st.Bytes>>20, float64(org.sent.Load())/float64(size))
	if st.Bytes > budget {
		t.Errorf("the store holds %d bytes, over its budget of %d", st.Bytes, budget)
	}
	if limit := size / 2; grew > limit && !raceEnabled { // the race detector allocates on its own
		t.Errorf("heap in use grew by %d MiB while serving a %d MiB object through a %d MiB cache, want under %d MiB",
			grew>>20, size>>20, budget>>20, limit>>20)
	}
	starts, whole := org.counts()
	if whole > 1 || len(starts) == 0 {
		t.Errorf("the origin got %d whole requests and %d range requests; want at most one whole (the first reader's, whose body fills slices) and the rest slices", whole, len(starts))
	}
}

// TestSliceETagChange: the origin's object changes (ETag and bytes) while
// clients read it in slices. No client gets a body mixing the two
// versions (each body is checked against both), the old version's slices
// are dropped, and the new version is kept in slices in its turn. With
// ignoreIfMatch the origin answers slice requests with the new version
// despite If-Match: the cache must see the other ETag itself.
func TestSliceETagChange(t *testing.T) {
	for _, ignoreIfMatch := range []bool{false, true} {
		t.Run(fmt.Sprintf("ignoreIfMatch=%v", ignoreIfMatch), func(t *testing.T) {
			const slice = 1 << 20
			size := int64(24 << 20)
			org := newObjectOrigin(t, size, 10)
			org.ignoreIfMatch = ignoreIfMatch
			org.switchAt = 6 // the 6th range request and the later ones see version 11
			c, front, cl := sliceRig(t, Config{}, org)
			url := front.URL + "/changing.bin"
			seeds := []uint64{10, 11}
			if got := fetch(t, cl, "GET", url, seeds, "Range", "bytes=0-99"); got.code != 206 || !got.matched[0] {
				t.Fatalf("first range: %d, version 10 %v", got.code, got.matched[0])
			}
			old := c.st.getSliced(c.urlKey(mustURL(t, url)))
			if old == nil {
				t.Fatal("after a range request, the object is not kept in slices")
			}
			var wg sync.WaitGroup
			var cut, failed, whole atomic.Int64
			for i := range 12 {
				wg.Go(func() {
					hdr := []string{}
					if i%3 != 0 {
						first := int64(i) * (size / 12)
						hdr = []string{"Range", fmt.Sprintf("bytes=%d-%d", first, first+3*slice)}
					}
					got := fetch(t, cl, "GET", url, seeds, hdr...)
					switch {
					case got.code == http.StatusBadGateway:
						failed.Add(1)
						return
					case got.err != nil:
						cut.Add(1)
					default:
						whole.Add(1)
					}
					if got.n > 0 && !got.matched[0] && !got.matched[1] {
						t.Errorf("client %d got %d bytes (%v) from byte %d that are neither version 10 nor version 11 of the object", i, got.n, hdr, got.first)
					}
				})
			}
			wg.Wait()
			c.Wait()
			t.Logf("12 clients: %d complete, %d cut, %d answered 502", whole.Load(), cut.Load(), failed.Load())
			if cut.Load()+failed.Load() == 0 {
				t.Error("no client saw the change; the test did not test it")
			}
			for k := range old.count() {
				if c.st.getEntry(old.sliceKey(k)) != nil {
					t.Errorf("slice %d of the old version is still stored", k)
				}
			}
			got := fetch(t, cl, "GET", url, seeds)
			if got.code != 200 || got.n != size || !got.matched[1] {
				t.Fatalf("GET after the change = %d, %d bytes, version 11 %v; want 200 and all of version 11", got.code, got.n, got.matched[1])
			}
			c.Wait()
			before := org.requestCount()
			got = fetch(t, cl, "GET", url, seeds, "Range", "bytes=5000000-5000099")
			after := org.requestCount()
			if got.code != 206 || !got.matched[1] || after != before {
				t.Errorf("a range of the new version after reading it whole = %d, version 11 %v, %d origin requests; want 206 from the store", got.code, got.matched[1], after-before)
			}
		})
	}
}

func mustURL(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestSlicePartialReuse: the origin's answer to a range request is stored
// and answers later requests for ranges within it, HEAD and preconditions
// without asking the origin; a range across slices asks only for the
// slice missing; a range past the end is 416.
func TestSlicePartialReuse(t *testing.T) {
	const slice = 1 << 20
	size := int64(3<<20 + 12345)
	org := newObjectOrigin(t, size, 5)
	c, front, cl := sliceRig(t, Config{}, org)
	url := front.URL + "/part.bin"
	seeds := []uint64{5}
	requests := org.requestCount
	for _, tc := range []struct {
		name     string
		hdr      []string
		code     int
		first, n int64
		origin   int // origin requests it costs
	}{
		{"a range misses: its slice is fetched", []string{"Range", "bytes=100-199"}, 206, 100, 100, 1},
		{"a range within it", []string{"Range", "bytes=150-160"}, 206, 150, 11, 0},
		{"another range within the slice", []string{"Range", "bytes=0-1048575"}, 206, 0, slice, 0},
		{"across two slices: one fetched", []string{"Range", "bytes=1048000-1049000"}, 206, 1048000, 1001, 1},
		{"suffix in the last slice", []string{"Range", "bytes=-500"}, 206, size - 500, 500, 1},
		{"the same suffix again", []string{"Range", "bytes=-20"}, 206, size - 20, 20, 0},
		{"If-None-Match the ETag", []string{"If-None-Match", `"v5"`}, 304, 0, 0, 0},
		{"If-Match another ETag", []string{"If-Match", `"v4"`, "Range", "bytes=0-1"}, 412, 0, -1, 0},
		{"past the end", []string{"Range", fmt.Sprintf("bytes=%d-", size)}, 416, 0, -1, 0},
		{"whole: the missing slice is fetched", nil, 200, 0, size, 1},
		{"whole again", nil, 200, 0, size, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := requests()
			got := fetch(t, cl, "GET", url, seeds, tc.hdr...)
			c.Wait()
			if got.code != tc.code || tc.n >= 0 && (got.n != tc.n || got.first != tc.first || !got.matched[0]) {
				t.Errorf("GET %v = %d, %d bytes from %d (right: %v); want %d, %d bytes from %d", tc.hdr, got.code, got.n, got.first, got.matched[0], tc.code, tc.n, tc.first)
			}
			if n := requests() - before; n != tc.origin {
				t.Errorf("GET %v cost %d origin requests, want %d", tc.hdr, n, tc.origin)
			}
		})
	}
	before := requests()
	req, _ := http.NewRequest("HEAD", url, nil)
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength != size || resp.Header.Get("ETag") != `"v5"` || requests() != before {
		t.Errorf("HEAD = %d, Content-Length %d, ETag %q, %d origin requests; want 200, %d, \"v5\", none",
			resp.StatusCode, resp.ContentLength, resp.Header.Get("ETag"), requests()-before, size)
	}
}

// TestSliceWholeFirst: a GET for an object above MaxObjectBytes on a cold
// cache costs one origin request, whose 200 fills the slices as it is
// sent; then the object is answered from them, and a purge drops them.
func TestSliceWholeFirst(t *testing.T) {
	size := int64(20<<20 + 7)
	org := newObjectOrigin(t, size, 9)
	c, front, cl := sliceRig(t, Config{}, org)
	url := front.URL + "/iso"
	seeds := []uint64{9}
	for i, wantStatus := range []string{"fwd=uri-miss; stored", "hit"} {
		got := fetch(t, cl, "GET", url, seeds)
		c.Wait()
		if got.code != 200 || got.n != size || !got.matched[0] || !strings.Contains(got.header.Get("Cache-Status"), wantStatus) {
			t.Errorf("GET %d = %d, %d bytes (right: %v), Cache-Status %q; want 200, %d bytes, %q", i+1, got.code, got.n, got.matched[0], got.header.Get("Cache-Status"), size, wantStatus)
		}
	}
	got := fetch(t, cl, "GET", url, seeds, "Range", "bytes=10000000-10000009")
	starts, whole := org.counts()
	if got.code != 206 || !got.matched[0] || whole != 1 || len(starts) != 0 {
		t.Errorf("after two GETs and a range: %d (right %v); origin asked %d times whole, %d ranges; want 206, 1 whole request, no range", got.code, got.matched[0], whole, len(starts))
	}
	if n, err := c.PurgeURL(url, false); err != nil || n != 1 {
		t.Errorf("PurgeURL = %d, %v; want 1", n, err)
	}
	c.Wait()
	fetch(t, cl, "GET", url, seeds, "Range", "bytes=0-9")
	if starts, _ := org.counts(); len(starts) != 1 {
		t.Errorf("after a purge, a range request asked the origin for %d ranges, want 1", len(starts))
	}
}

// TestSliceStale: a stale object kept in slices is revalidated with one
// conditional slice request; a 304 keeps its slices.
func TestSliceStale(t *testing.T) {
	size := int64(10 << 20)
	org := newObjectOrigin(t, size, 4)
	clk := &clock{t: time.Now().Truncate(time.Second)}
	c, front, cl := sliceRig(t, Config{Now: clk.now}, org)
	url := front.URL + "/stale"
	fetch(t, cl, "GET", url, []uint64{4})
	c.Wait()
	clk.add(2 * time.Hour) // max-age=3600
	before := org.sent.Load()
	got := fetch(t, cl, "GET", url, []uint64{4})
	if got.code != 200 || got.n != size || !got.matched[0] || !strings.Contains(got.header.Get("Cache-Status"), "fwd=stale") {
		t.Errorf("stale GET = %d, %d bytes (right %v), Cache-Status %q", got.code, got.n, got.matched[0], got.header.Get("Cache-Status"))
	}
	if sent := org.sent.Load() - before; sent != 0 {
		t.Errorf("revalidating cost %d body bytes, want 0 (a 304)", sent)
	}
}

// TestSliceStaleWeak304: a 304 whose ETag is the stored one made weak
// (a weak match, RFC 9110 8.8.3.2) freshens the object and keeps its
// slices: the object's strong ETag, which every slice is checked
// against, stays as stored.
func TestSliceStaleWeak304(t *testing.T) {
	size := int64(10 << 20)
	org := newObjectOrigin(t, size, 4)
	org.weak304 = true
	clk := &clock{t: time.Now().Truncate(time.Second)}
	c, front, cl := sliceRig(t, Config{Now: clk.now}, org)
	url := front.URL + "/stale"
	fetch(t, cl, "GET", url, []uint64{4})
	c.Wait()
	clk.add(2 * time.Hour) // max-age=3600
	before := org.sent.Load()
	for i := range 2 {
		got := fetch(t, cl, "GET", url, []uint64{4})
		if got.code != 200 || got.n != size || !got.matched[0] || got.header.Get("ETag") != `"v4"` {
			t.Errorf("GET %d after it went stale = %d, %d bytes (right %v), ETag %q; want all of it with ETag \"v4\"",
				i+1, got.code, got.n, got.matched[0], got.header.Get("ETag"))
		}
		c.Wait()
	}
	if sent := org.sent.Load() - before; sent != 0 {
		t.Errorf("revalidating with a weak 304 cost %d body bytes, want 0: the slices are still good", sent)
	}
}

// TestSliceNotSliceable: an object with a weak ETag is not kept in slices.
// A Range miss within the slice asked for is answered from it; one
// beyond costs a second request, once: the next misses go to the origin
// as they came. With SliceBytes negative, Range misses always do.
func TestSliceNotSliceable(t *testing.T) {
	size := int64(3 << 20)
	for _, tc := range []struct {
		name   string
		cfg    Config
		weak   bool
		hdr    string
		origin []int // origin requests for each of three GETs with Range hdr
	}{
		{"weak ETag, range within the first slice", Config{}, true, "bytes=10-19", []int{1, 1, 1}},
		{"weak ETag, open range", Config{}, true, "bytes=10-", []int{2, 1, 1}},
		{"slicing off", Config{SliceBytes: -1}, false, "bytes=10-", []int{1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			org := newObjectOrigin(t, size, 2)
			org.weak = tc.weak
			c, front, cl := sliceRig(t, tc.cfg, org)
			for i, want := range tc.origin {
				before := org.requestCount()
				got := fetch(t, cl, "GET", front.URL+"/o", []uint64{2}, "Range", tc.hdr)
				c.Wait()
				first, _ := firstRange(tc.hdr)
				if got.code != 206 || got.first != first || !got.matched[0] || got.err != nil {
					t.Errorf("GET %d Range %s = %d %q (right %v, %v)", i+1, tc.hdr, got.code, got.contentRange, got.matched[0], got.err)
				}
				if n := org.requestCount() - before; n != want {
					t.Errorf("GET %d Range %s cost %d origin requests, want %d", i+1, tc.hdr, n, want)
				}
			}
			if starts, _ := org.counts(); tc.cfg.SliceBytes < 0 && (len(starts) != 1 || starts[10] != 3) {
				t.Errorf("slicing off: the origin got range requests from %v, want 3 from byte 10", starts)
			}
		})
	}
}

func (o *objectOrigin) requestCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ranged + o.whole
}
