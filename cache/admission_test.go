package cache

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

func TestFreqSketchCounts(t *testing.T) {
	s := newFreqSketch(1<<12, 1<<30)
	a, b, never := keyHash("a"), keyHash("b"), keyHash("never")
	for range 100 {
		s.increment(a)
	}
	for range 3 {
		s.increment(b)
	}
	if got := s.estimate(a); got != 100 {
		t.Errorf("estimate(a) = %d after 100 increments, want 100", got)
	}
	if got := s.estimate(b); got < 3 || got >= 100 {
		t.Errorf("estimate(b) = %d after 3 increments, want 3 (or a little more)", got)
	}
	if got := s.estimate(never); got > 3 {
		t.Errorf("estimate(never) = %d, want about 0", got)
	}
}

// TestFreqSketchSaturates: a counter stops at 65535 instead of carrying
// into its neighbour, the other half of its word.
func TestFreqSketchSaturates(t *testing.T) {
	s := newFreqSketch(64, 1<<30)
	h := keyHash("hot")
	for range 70_000 {
		s.increment(h)
	}
	if got := s.estimate(h); got != 0xffff {
		t.Errorf("estimate after 70000 increments = %d, want 65535", got)
	}
	for r := range 4 {
		w, sh := s.slot(h, r)
		if other := (w.Load() >> (16 - sh)) & 0xffff; other != 0 {
			t.Errorf("row %d: the neighbouring counter is %d, want 0", r, other)
		}
	}
}

// TestFreqSketchHalves: about every window increments (counted one in
// windowSample at random), every count halves.
func TestFreqSketchHalves(t *testing.T) {
	const window = 1 << 12
	s := newFreqSketch(1<<10, window)
	a, b := keyHash("a"), keyHash("b")
	for range 100 {
		s.increment(b)
	}
	for range 4 * window {
		s.increment(a)
	}
	halvings := s.halved.Load()
	if halvings < 2 || halvings > 6 {
		t.Errorf("%d increments in windows of %d: %d halvings, want about 4", 4*window, window, halvings)
	}
	if got := s.estimate(b); got > 100>>halvings+1 {
		t.Errorf("b, counted 100 times before %d halvings: estimate %d, want at most %d", halvings, got, 100>>halvings+1)
	}
	if got := s.estimate(a); got >= 2*window {
		t.Errorf("a, counted %d times in windows of %d: estimate %d, want less than %d", 4*window, window, got, 2*window)
	}
}

// counted makes an admission of budget bytes whose sketch has counted
// each key of counts that many times.
func counted(budget int64, counts map[string]int) *admission {
	a := newAdmission(budget, newFreqSketch(1<<12, 1<<30))
	for k, n := range counts {
		for range n {
			a.count(k)
		}
	}
	return a
}

func TestAdmission(t *testing.T) {
	t.Run("fits: admitted, nothing evicted", func(t *testing.T) {
		a := counted(10, nil)
		for i := range 10 {
			if v, ok, _ := a.admit(strconv.Itoa(i), i, 1); !ok || len(v) > 0 {
				t.Fatalf("admit(%d) = %v, %v into room; want true, no victims", i, v, ok)
			}
		}
		if used, _ := a.usage(); used != 10 {
			t.Errorf("used %d, want 10", used)
		}
	})
	t.Run("larger than the budget: refused", func(t *testing.T) {
		a := counted(10, map[string]int{"big": 100})
		if _, ok, _ := a.admit("big", nil, 11); ok {
			t.Error("an 11-byte object was admitted in a 10-byte budget")
		}
	})
	t.Run("evicts only less requested objects", func(t *testing.T) {
		counts := map[string]int{"new": 5}
		for i := range 10 {
			counts["r"+strconv.Itoa(i)] = i // r0 requested 0 times ... r9 9 times
		}
		a := counted(10, counts)
		for i := range 10 {
			a.admit("r"+strconv.Itoa(i), nil, 1)
		}
		victims, ok, _ := a.admit("new", nil, 3)
		if !ok || len(victims) != 3 {
			t.Fatalf("admit(new, requested 5 times, 3 bytes) = %d victims, %v; want 3, true", len(victims), ok)
		}
		for _, v := range victims {
			if n := counts[v.key]; n > 5 {
				t.Errorf("victim %s was requested %d times, more than the newcomer's 5", v.key, n)
			}
			if _, still := a.index[v.key]; still {
				t.Errorf("victim %s is still resident", v.key)
			}
		}
		if used, ev := a.usage(); used != 10 || ev != 3 {
			t.Errorf("used %d, evictions %d; want 10, 3", used, ev)
		}
	})
	t.Run("refused when every candidate is requested more", func(t *testing.T) {
		counts := map[string]int{"once": 1}
		for i := range 10 {
			counts["p"+strconv.Itoa(i)] = 4
		}
		a := counted(10, counts)
		for i := range 10 {
			a.admit("p"+strconv.Itoa(i), nil, 1)
		}
		if victims, ok, _ := a.admit("once", nil, 1); ok || len(victims) > 0 {
			t.Errorf("a one-hit object: %d victims, admitted %v; want none, false", len(victims), ok)
		}
		if used, ev := a.usage(); used != 10 || ev != 0 || len(a.items) != 10 {
			t.Errorf("used %d, evictions %d, %d resident; want 10, 0, 10", used, ev, len(a.items))
		}
	})
	t.Run("an update replaces the cost; a stale removal keeps the successor", func(t *testing.T) {
		a := counted(10, map[string]int{"k": 3})
		old, cur := new(int), new(int)
		a.admit("k", old, 4)
		if _, ok, replaced := a.admit("k", cur, 6); !ok || !replaced {
			t.Fatalf("update: ok %v replaced %v, want true, true", ok, replaced)
		}
		a.remove("k", old) // ristretto evicting the value replaced
		if used, _ := a.usage(); used != 6 {
			t.Errorf("used %d after the update and a stale removal, want 6", used)
		}
		a.remove("k", cur)
		if used, _ := a.usage(); used != 0 || len(a.index) != 0 {
			t.Errorf("used %d, %d indexed after removing k; want 0, 0", used, len(a.index))
		}
	})
}

// TestOneHitWondersNeverEvictPopular: a cache full of objects requested
// again and again, then objects requested once each, many times its
// budget of them between the popular ones' requests: no popular object
// is ever fetched twice. (With ristretto's TinyLFU deciding, as before
// admission.go, every one of them was fetched again, up to 14 times:
// ristretto refuses nothing while its counts tie, and admits at once
// whatever fits.)
func TestOneHitWondersNeverEvictPopular(t *testing.T) {
	// With a Content-Length, a response the store would refuse is sent on
	// without a copy (detail=not-admitted); without one it is read whole
	// and refused when stored.
	for _, withLength := range []bool{true, false} {
		t.Run(fmt.Sprintf("content-length %v", withLength), func(t *testing.T) {
			oneHitWonders(t, withLength)
		})
	}
}

func oneHitWonders(t *testing.T, withLength bool) {
	const rounds, wondersPerRound = 12, 30 // 330 one-hit objects of 16 KiB through 1 MiB
	body := strings.Repeat("x", 16<<10)
	var mu sync.Mutex
	fetched := map[string]int{}
	rg := newRigWith(t, Config{MaxBytes: 1 << 20}, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fetched[r.URL.Path]++
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=3600")
		if withLength {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		w.Write([]byte(body))
	})
	// As many popular objects as the budget holds, so that a one-hit
	// object fits only by evicting one.
	rg.get("/popular/0")
	popular := int(rg.cache.st.adm.budget / rg.cache.Stats().Bytes)
	wonder, notAdmitted := 0, 0
	for round := range rounds {
		for i := range popular {
			rg.get(fmt.Sprintf("/popular/%d", i))
		}
		if round == 0 {
			continue // the popular ones' first requests filled the cache
		}
		for range wondersPerRound {
			resp, got := rg.get(fmt.Sprintf("/wonder/%d", wonder))
			if got != body {
				t.Fatalf("/wonder/%d: %d bytes, want the origin's %d", wonder, len(got), len(body))
			}
			if strings.Contains(resp.Header.Get("Cache-Status"), "detail=not-admitted") {
				notAdmitted++
			}
			wonder++
		}
	}
	rg.cache.Wait()
	mu.Lock()
	defer mu.Unlock()
	for i := range popular {
		if n := fetched[fmt.Sprintf("/popular/%d", i)]; n != 1 {
			t.Errorf("/popular/%d fetched %d times, want once", i, n)
		}
	}
	st := rg.cache.Stats()
	if st.Rejected == 0 {
		t.Errorf("no one-hit object refused (stats %+v): the cache never filled, so the test proves nothing", st)
	}
	if withLength && notAdmitted == 0 {
		t.Error("no one-hit object was sent on as not admitted")
	}
	if st.Bytes > 1<<20 {
		t.Errorf("the store holds %d bytes, more than its budget of %d", st.Bytes, 1<<20)
	}
}

// TestAllocSize: allocSize is what Go allocates for a body (below 16
// bytes, a tiny allocation's 16-byte block).
func TestAllocSize(t *testing.T) {
	for _, n := range []int{1, 7, 8, 9, 100, 1000, 4095, 4096, 4097, 16 << 10, 20000, 32 << 10, 32<<10 + 1, 100_000, 1 << 20} {
		want := max(cap(slices.Grow([]byte(nil), n)), 16)
		if got := allocSize(int64(n)); got != int64(want) {
			t.Errorf("allocSize(%d) = %d, want %d (Go's allocation)", n, got, want)
		}
	}
}

// TestStoreAccountsWhatRistrettoHolds: after a Zipf workload through a
// small store, ristretto holds exactly the objects the admission counts,
// within the budget.
func TestStoreAccountsWhatRistrettoHolds(t *testing.T) {
	const budget = 2 << 20
	sim, err := NewStoreSim(SimConfig{MaxBytes: budget})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rng, 1.1, 1, 5000)
	for range 20_000 {
		id := zipf.Uint64()
		size := int64(1<<10 + id*37%(64<<10))
		if _, err := sim.Request("/o/"+strconv.FormatUint(id, 10), size); err != nil {
			t.Fatal(err)
		}
		if held := sim.Held(); held > budget {
			t.Fatalf("holds %d bytes, more than its budget of %d", held, budget)
		}
	}
	sim.st.rc.Wait()
	n := 0
	sim.st.rc.IterValues(func(any) bool { n++; return false })
	sim.st.adm.mu.Lock()
	resident := len(sim.st.adm.items)
	sim.st.adm.mu.Unlock()
	if n != resident || n == 0 {
		t.Errorf("ristretto holds %d values, the admission counts %d resident", n, resident)
	}
}

func TestStoreSim(t *testing.T) {
	sim, err := NewStoreSim(SimConfig{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	for i, want := range []bool{false, true, true} {
		if hit, err := sim.Request("/a", 1000); hit != want || err != nil {
			t.Errorf("request %d for /a: hit %v, %v; want %v", i+1, hit, err, want)
		}
	}
	if hit, _ := sim.Request("/big", 1<<20/16+1); hit {
		t.Error("/big, above the max object size, hit")
	}
	if hit, _ := sim.Request("/big", 1<<20/16+1); hit {
		t.Error("/big, above the max object size, was stored")
	}
	if _, err := sim.Request("/neg", -1); err == nil || !strings.Contains(err.Error(), "size -1") {
		t.Errorf("a negative size: error %v, want one naming it", err)
	}
	if _, err := NewStoreSim(SimConfig{MaxBytes: 100}); err == nil || !strings.Contains(err.Error(), "max bytes 100") {
		t.Errorf("a 100-byte store: error %v, want one naming the budget", err)
	}
}

// TestResidentOverhead: what a stored response holds on the heap, beyond
// the bytes of its body, is no more than its cost counts: the budget
// bounds the memory (the fast paths' header blocks aside: the PoP builds
// them). Small bodies, so that the entries' own structures dominate; a
// text body is also kept compressed at the edge, each representation
// with its own fields. Each response is looked up once stored, so that
// what a first hit computes (entry.prepare) is on the heap too: for
// "odd", a Last-Modified it puts in canonical form and a Content-Length
// it makes (the response came chunked).
func TestResidentOverhead(t *testing.T) {
	for _, tc := range []struct {
		name, ctype string
		size, n     int
		odd         bool
	}{{"octets", "application/octet-stream", 100, 2000, false}, {"text", "text/html", 3000, 400, false}, {"odd", "application/octet-stream", 1000, 2000, true}} {
		t.Run(tc.name, func(t *testing.T) { heapPerEntry(t, tc.ctype, tc.size, tc.n, tc.odd) })
	}
}

func heapPerEntry(t *testing.T, ctype string, size, n int, odd bool) {
	body := strings.Repeat("<p>some text</p>", size/16+1)[:size]
	rg := newRigWith(t, Config{MaxBytes: 64 << 20}, func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "max-age=3600")
		h.Set("Content-Type", ctype)
		h.Set("ETag", `"gen-100"`)
		h.Set("Accept-Ranges", "bytes")
		if odd {
			h.Set("Last-Modified", "Monday, 02-Jan-06 15:04:05 GMT") // RFC 850
			w.(http.Flusher).Flush()                                 // chunked: no Content-Length
		} else {
			h.Set("Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT")
			h.Set("Content-Length", strconv.Itoa(len(body)))
		}
		w.Write([]byte(body))
	})
	rg.get("/warm")
	rg.cache.Wait()
	heap := func() int64 {
		runtime.GC()
		runtime.GC() // and sync.Pool's victims (the compressors') go
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return int64(m.HeapAlloc)
	}
	before, held := heap(), rg.cache.Stats().Bytes
	host := strings.TrimPrefix(rg.front.URL, "http://")
	for i := range n {
		rg.get("/gen/" + strconv.Itoa(size) + "?o=" + strconv.Itoa(i))
	}
	rg.cache.Wait()
	for i := range n {
		target := "/gen/" + strconv.Itoa(size) + "?o=" + strconv.Itoa(i)
		if _, ok := rg.cache.LookupFast(AppendKey(nil, false, host, target, QueryKeep), ""); !ok && ctype != "text/html" {
			t.Fatalf("%s is not a fast hit", target)
		}
	}
	grew, counted := heap()-before, rg.cache.Stats().Bytes-held
	// The header blocks the PoP's fast paths encode on a first hit are
	// counted but not built here.
	e := rg.cache.st.getEntry(string(AppendKey(nil, false, host, "/gen/"+strconv.Itoa(size)+"?o=0", QueryKeep)))
	if e == nil {
		t.Fatal("the first object is not stored")
	}
	unbuilt := encodingCost(&e.header)
	if len(e.reps) > 0 {
		unbuilt = 0
		for _, r := range e.reps {
			unbuilt += encodingCost(&r.header)
		}
	}
	counted -= int64(n) * unbuilt
	t.Logf("%d entries of %d bytes: the heap grew %d bytes (%d each), their costs count %d (%d each)", n, size, grew, grew/int64(n), counted, counted/int64(n))
	if grew > counted {
		t.Errorf("%d entries of %d bytes: the heap grew %d bytes (%d each), more than their costs count, %d (%d each)", n, size, grew, grew/int64(n), counted, counted/int64(n))
	}
}
