package bench

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// ReplayReport is what bench replay prints: the trace, the offline
// references at the budget and, unless it was offline only, the replay.
type ReplayReport struct {
	// Source says where the trace came from: a file, or the generator's
	// parameters.
	Source  string          `json:"source"`
	Trace   TraceSummary    `json:"trace"`
	Budget  int64           `json:"budget"`
	Offline []OfflineResult `json:"offline"`
	Replay  *ReplayResult   `json:"replay,omitempty"`
	// Anchors are the same replay against caches of known policy.
	Anchors []AnchorResult `json:"anchors,omitempty"`
	// ToOracle is the replay's byte hit ratio over the oracle's: the
	// origin's account when its bytes are exact, else the headers'. Zero
	// without a replay or an oracle.
	ToOracle float64 `json:"to_oracle,omitempty"`
}

// NewReplayReport puts a report together; replay may be nil, anchors
// empty.
func NewReplayReport(source string, trace TraceSummary, budget int64, offline []OfflineResult, replay *ReplayResult, anchors []AnchorResult) ReplayReport {
	r := ReplayReport{Source: source, Trace: trace, Budget: budget, Offline: offline, Replay: replay, Anchors: anchors}
	if replay != nil {
		if o := r.oracle(); o != nil && o.ByteHitRatio > 0 {
			r.ToOracle = replayByteHitRatio(replay) / o.ByteHitRatio
		}
	}
	return r
}

func (r ReplayReport) oracle() *OfflineResult {
	for i := range r.Offline {
		if r.Offline[i].Policy == PolicyOracle {
			return &r.Offline[i]
		}
	}
	return nil
}

// replayByteHitRatio is the origin's account if exact, else the headers'.
func replayByteHitRatio(r *ReplayResult) float64 {
	if r.Origin != nil && r.Origin.BytesExact {
		return r.Origin.ByteHitRatio
	}
	return r.Header.ByteHitRatio
}

// WriteReplay prints a report as a table: hit ratios by object and by
// byte, for the replay by both accounts and for the references, each
// byte hit ratio beside the oracle's; then the replay's speed, the
// cross-check of the two accounts and the cache's memory.
func WriteReplay(w io.Writer, r ReplayReport) error {
	t := r.Trace
	fmt.Fprintf(w, "trace: %s\n", r.Source)
	fmt.Fprintf(w, "  %d requests (%d warm-up), %d objects of %s (median object %s)\n", t.Requests, t.Warmup, t.Objects, formatBytes(t.FootprintBytes), formatBytes(t.MedianSize))
	fmt.Fprintf(w, "  window: %d requests for %s, %d objects of %s, %.1f%% of requests to one-hit objects\n",
		t.Requests-t.Warmup, formatBytes(t.WindowBytes), t.WindowObjects, formatBytes(t.WindowFootprintBytes), 100*t.OneHitShare)
	fmt.Fprintf(w, "budget: %s (%.1f%% of the window's objects)\n\n", formatBytes(r.Budget), 100*ratio(r.Budget, t.WindowFootprintBytes))

	var oracleBHR float64
	if o := r.oracle(); o != nil {
		oracleBHR = o.ByteHitRatio
	}
	toOracle := func(bhr float64) string {
		if oracleBHR == 0 {
			return "-"
		}
		return fmt.Sprintf("%.3f", bhr/oracleBHR)
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "\tobject hit\tbyte hit\tbyte hit / oracle\t")
	rows := func(name string, p *ReplayResult) {
		if o := p.Origin; o != nil {
			note := ""
			if !o.BytesExact {
				note = " (bytes inexact)"
			}
			fmt.Fprintf(tw, "%s, origin's account%s\t%.3f\t%.3f\t%s\t\n", name, note, o.ObjectHitRatio, o.ByteHitRatio, toOracle(o.ByteHitRatio))
		}
		fmt.Fprintf(tw, "%s, its headers\t%.3f\t%.3f\t%s\t\n", name, p.Header.ObjectHitRatio, p.Header.ByteHitRatio, toOracle(p.Header.ByteHitRatio))
	}
	if r.Replay != nil {
		rows("cache", r.Replay)
	}
	for _, a := range r.Anchors {
		rows(a.Name, &a.Replay)
	}
	for _, o := range r.Offline {
		fmt.Fprintf(tw, "%s (offline)\t%.3f\t%.3f\t%s\t\n", o.Policy, o.ObjectHitRatio, o.ByteHitRatio, toOracle(o.ByteHitRatio))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.Replay != nil {
		fmt.Fprintln(w)
		writeReplayRun(w, r.Replay)
	}
	for _, a := range r.Anchors {
		fmt.Fprintf(w, "\nanchor %s:\n", a.Name)
		writeReplayRun(w, &a.Replay)
	}
	return nil
}

// writeReplayRun prints a replay's speed, the cross-check of its two
// accounts, the cache's memory, and the statuses and errors.
func writeReplayRun(w io.Writer, p *ReplayResult) {
	fmt.Fprintf(w, "replay %s x%d %s: %d requests in %.1fs after %.1fs of warm-up: %.0f req/s, %.1f MB/s; latency ms p50 %.2f p99 %.2f\n",
		p.Proto, p.Workers, p.Target, p.Requests, p.Seconds, p.WarmupSeconds, p.RPS, p.BytesPerSec/1e6, p.P50ms, p.P99ms)
	h := p.Header
	fmt.Fprintf(w, "cross-check: headers say %d hits, %d misses (%d of them coalesced), %d without a verdict", h.Hits, h.Misses, h.Coalesced, h.Unknown)
	if o := p.Origin; o != nil {
		fmt.Fprintf(w, "; origin served %d requests, %s: difference %d requests, %d bytes", o.Requests, formatBytes(o.Bytes), o.Difference, o.ByteDifference)
		if o.Uncounted > 0 {
			fmt.Fprintf(w, " (%d requests' bytes not counted)", o.Uncounted)
		}
	}
	fmt.Fprintln(w)
	if p.PeakRSSMiB > 0 {
		fmt.Fprintf(w, "cache RSS: peak %.1f MiB sampled, %.1f MiB high-water mark (VmHWM)\n", p.PeakRSSMiB, p.HWMMiB)
	}
	writeCounts(w, p.Status, p.Errors)
}

// formatBytes prints n in B, KiB, MiB or GiB.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
