package clientrtt

import (
	"math"
	"net/netip"
	"time"
)

// Report is the JSON form of a PoP's table, which the PoP serves on its
// admin listener (GET /rtt) for geodns to pull, one line:
//
//	{"pop":"pop-eu","prefixes":[{"prefix":"10.77.4.0/24","rtt_ms":10.25,"min_ms":9.8,"samples":12,"age_ms":1500}]}
type Report struct {
	// PoP is the name of the PoP that measured.
	PoP string `json:"pop"`
	// Prefixes are the table's entries sorted by prefix; empty, not
	// null, for an empty table.
	Prefixes []ReportEntry `json:"prefixes"`
}

// ReportEntry is one Entry in a Report. Times are in milliseconds, the
// round trips to the microsecond.
type ReportEntry struct {
	Prefix    netip.Prefix `json:"prefix"`  // "10.77.4.0/24", "2001:db8:1::/48"
	RTTMillis float64      `json:"rtt_ms"`  // Entry.RTT, the moving average
	MinMillis float64      `json:"min_ms"`  // Entry.Min
	Samples   int64        `json:"samples"` // Entry.Samples
	AgeMillis int64        `json:"age_ms"`  // since Entry.Updated
}

// Report returns the table as the PoP named pop serves it.
func (t *Table) Report(pop string) Report {
	entries := t.Snapshot()
	now := t.now()
	r := Report{PoP: pop, Prefixes: make([]ReportEntry, len(entries))}
	for i, e := range entries {
		r.Prefixes[i] = ReportEntry{
			Prefix:    e.Prefix,
			RTTMillis: millis(e.RTT),
			MinMillis: millis(e.Min),
			Samples:   e.Samples,
			AgeMillis: max(now.Sub(e.Updated), 0).Milliseconds(),
		}
	}
	return r
}

// millis is d in milliseconds, rounded to the microsecond.
func millis(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1e3
}
