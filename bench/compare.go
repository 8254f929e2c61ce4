package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
)

// Row is one compared measurement.
type Row struct {
	Key    string  // proto mode url (ttfb) or proto mode url (load)
	Metric string  // e.g. ttfb_p50_ms, rps
	A, B   float64 // the two runs
}

// Change is B relative to A, as a fraction (0.1 = 10% more).
func (r Row) Change() float64 {
	if r.A == 0 {
		return 0
	}
	return (r.B - r.A) / r.A
}

// Summarize turns a JSON-lines file of ttfb results or load results into
// named numbers: per proto/mode/url, the ttfb and total p50 and p99 (ttfb
// files) or req/s, p50 and p99 (load files).
func Summarize(r io.Reader) (map[string]map[string]float64, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]float64{}
	if rs, err := ReadJSON(strings.NewReader(string(data))); err == nil && len(rs) > 0 {
		groups := map[string][]Result{}
		for _, x := range rs {
			if x.Error == "" {
				k := x.Proto + " " + x.Mode + " " + x.URL
				groups[k] = append(groups[k], x)
			}
		}
		for k, g := range groups {
			var ttfb, total []float64
			for _, x := range g {
				ttfb, total = append(ttfb, x.TTFBms), append(total, x.Totalms)
			}
			pt, pl := percentiles(ttfb), percentiles(total)
			out[k] = map[string]float64{"ttfb_p50_ms": pt.P50, "ttfb_p99_ms": pt.P99, "total_p50_ms": pl.P50, "total_p99_ms": pl.P99}
		}
		return out, nil
	}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		var lr LoadResult
		dec := json.NewDecoder(strings.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&lr); err != nil || lr.Proto == "" {
			return nil, fmt.Errorf("line %d: neither a ttfb result nor a load result", line)
		}
		out[lr.Proto+" "+lr.Mode+" "+lr.URL] = map[string]float64{"rps": lr.RPS, "p50_ms": lr.P50ms, "p99_ms": lr.P99ms}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no results")
	}
	return out, nil
}

// Compare lines up two summaries: rows present in both, sorted.
func Compare(a, b map[string]map[string]float64) []Row {
	var rows []Row
	for k, ma := range a {
		mb, ok := b[k]
		if !ok {
			continue
		}
		for m, va := range ma {
			if vb, ok := mb[m]; ok {
				rows = append(rows, Row{Key: k, Metric: m, A: va, B: vb})
			}
		}
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Key != rows[j].Key {
			return rows[i].Key < rows[j].Key
		}
		return rows[i].Metric < rows[j].Metric
	})
	return rows
}

// WriteCompare prints rows side by side with the change.
func WriteCompare(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tmetric\tA\tB\tchange\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%+.1f%%\t\n", r.Key, r.Metric, r.A, r.B, 100*r.Change())
	}
	return tw.Flush()
}
