package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
)

// Percentiles of one phase over a set of results.
type Percentiles struct {
	P50, P90, P99, Max float64
}

// percentiles uses the nearest-rank method.
func percentiles(v []float64) Percentiles {
	if len(v) == 0 {
		return Percentiles{}
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	rank := func(p float64) float64 {
		i := int(math.Ceil(p/100*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return Percentiles{rank(50), rank(90), rank(99), s[len(s)-1]}
}

// WriteTable prints results as a human table: per phase p50/p90/p99/max,
// then what the server said (status, cache, PoP, protocol, resumption).
func WriteTable(w io.Writer, rs []Result) error {
	if len(rs) == 0 {
		return nil
	}
	phases := []struct {
		name string
		get  func(Result) float64
	}{
		{"dns", func(r Result) float64 { return r.DNSms }},
		{"connect", func(r Result) float64 { return r.Connectms }},
		{"tls", func(r Result) float64 { return r.TLSms }},
		{"ttfb", func(r Result) float64 { return r.TTFBms }},
		{"total", func(r Result) float64 { return r.Totalms }},
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%s %s %s (n=%d)\t\t\t\t\t\n", rs[0].Proto, rs[0].Mode, rs[0].URL, len(rs))
	fmt.Fprintln(tw, "phase ms\tp50\tp90\tp99\tmax\t")
	for _, ph := range phases {
		var v []float64
		for _, r := range rs {
			if r.Error == "" {
				v = append(v, ph.get(r))
			}
		}
		p := percentiles(v)
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t\n", ph.name, p.P50, p.P90, p.P99, p.Max)
	}
	// The TTFB split by the PoP's Server-Timing, over the requests that
	// carried one.
	split := []struct {
		name string
		get  func(TTFBSplit) float64
	}{
		{"  client<->pop", func(s TTFBSplit) float64 { return s.ClientPoPms }},
		{"  pop", func(s TTFBSplit) float64 { return s.PoPms }},
		{"  pop<->origin", func(s TTFBSplit) float64 { return s.PoPOriginms }},
	}
	for _, ph := range split {
		var v []float64
		for _, r := range rs {
			if r.Error == "" && r.Split != nil {
				v = append(v, ph.get(*r.Split))
			}
		}
		if len(v) == 0 {
			break
		}
		p := percentiles(v)
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f\t\n", ph.name, p.P50, p.P90, p.P99, p.Max)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	counts := map[string]int{}
	for _, r := range rs {
		key := fmt.Sprintf("status=%d proto=%s resumed=%v early_data=%v pop=%q cache=%q", r.Status, r.Negotiated, r.Resumed, r.EarlyData, r.PoP, CacheVerdict(r.CacheStatus))
		if r.Timing != nil {
			key += fmt.Sprintf(" server-timing: pop=%q cache=%q", r.Timing.PoP, r.Timing.Cache)
		}
		if r.ServerTimingError != "" {
			key += " " + r.ServerTimingError
		}
		if r.Error != "" {
			key = "error: " + r.Error
		}
		counts[key]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %4d x %s\n", counts[k], k)
	}
	return nil
}

// CacheVerdict reduces a Cache-Status value to our last hop's verdict:
// hit, stale, miss, or that hop's entry as it is; "" for no Cache-Status.
func CacheVerdict(cs string) string {
	if cs == "" {
		return ""
	}
	parts := strings.Split(cs, ",")
	last := strings.TrimSpace(parts[len(parts)-1])
	switch {
	case strings.Contains(last, "; hit"):
		return "hit"
	case strings.Contains(last, "fwd=stale"):
		return "stale"
	case strings.Contains(last, "fwd="):
		return "miss"
	}
	return last
}

// WriteJSON writes one JSON object per result, one per line.
func WriteJSON(w io.Writer, rs []Result) error {
	enc := json.NewEncoder(w)
	for _, r := range rs {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// ReadJSON reads results written by WriteJSON; lines that are not result
// objects are an error naming the line.
func ReadJSON(r io.Reader) ([]Result, error) {
	var out []Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var res Result
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&res); err != nil {
			return nil, fmt.Errorf("line %d: %w", line, err)
		}
		if res.Proto == "" || res.URL == "" {
			return nil, fmt.Errorf("line %d: not a bench result (no proto or url)", line)
		}
		out = append(out, res)
	}
	return out, sc.Err()
}
