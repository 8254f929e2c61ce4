package bench

import (
	"fmt"
	"html"
	"os"
	"path/filepath"
	"strings"
)

// WriteLabReport writes report.md and report.html (a self-contained page
// with an SVG bar chart, the floor marked on every bar) into dir.
func WriteLabReport(dir string, rows []LabRow) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var md strings.Builder
	md.WriteString("# edgecdn lab report\n\nTime to first byte (DNS included) and its phases, p50 / p99 beside the floor from the lab's RTT matrix.\n\n")
	md.WriteString("| client | target | proto | mode | dns ms | connect ms | tls/quic ms | ttfb p50 ms | ttfb p99 ms | floor ms | ratio | PoP |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, r := range rows {
		if r.Error != "" {
			fmt.Fprintf(&md, "| %s | %s | %s | %s | error: %s | | | | | | | |\n", r.Client, r.Target, r.Proto, r.Mode, r.Error)
			continue
		}
		fmt.Fprintf(&md, "| %s | %s | %s | %s |", r.Client, r.Target, r.Proto, r.Mode)
		for _, ph := range r.Phases {
			fmt.Fprintf(&md, " %s |", phaseCell(ph))
		}
		fmt.Fprintf(&md, " %.1f | %.1f | %.1f | %.2f | %s |\n", r.TTFBms, r.TTFBP99ms, r.Floorms, r.Ratio, r.PoP)
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "report.html"), []byte(labHTML(rows)), 0o644)
}

// The chart's geometry. The SVG is chartWidth wide, so that it fits a
// 1300 px browser window with the page's margins; the bars get what the
// labels leave of it. Text widths are estimated at charWidth per
// character, an upper bound for 12 px sans-serif (DejaVu Sans, the widest
// common default, averages under 7 px for these labels; digits are 7.6).
const (
	chartWidth  = 1200
	fontSize    = 12
	charWidth   = 8.0 // px per character at fontSize, an upper bound
	barHeight   = 18
	barGap      = 6
	groupHeader = 26 // the region's heading above its rows
	labelPad    = 8
)

// textWidth is the estimated width of s at fontSize.
func textWidth(s string) float64 { return float64(len([]rune(s))) * charWidth }

// labGroup is one client's rows, in their original order.
type labGroup struct {
	client string
	rows   []LabRow
}

// groupByClient groups rows by client (region), keeping the order in
// which clients and rows first appear.
func groupByClient(rows []LabRow) []labGroup {
	var groups []labGroup
	index := map[string]int{}
	for _, r := range rows {
		i, ok := index[r.Client]
		if !ok {
			i = len(groups)
			index[r.Client] = i
			groups = append(groups, labGroup{client: r.Client})
		}
		groups[i].rows = append(groups[i].rows, r)
	}
	return groups
}

// phaseCell is a phase's p50 / p99 and [floor], in ms.
func phaseCell(ph LabPhase) string {
	return fmt.Sprintf("%.1f / %.1f [%.0f]", ph.P50ms, ph.P99ms, ph.Floorms)
}

func rowLabel(r LabRow) string { return fmt.Sprintf("%s %s %s", r.Target, r.Proto, r.Mode) }

func valueLabel(r LabRow) string {
	if r.Error != "" {
		return "error"
	}
	return fmt.Sprintf("p50 %.1f / p99 %.1f ms (x%.2f)", r.TTFBms, r.TTFBP99ms, r.Ratio)
}

// labSVG draws one bar per row, grouped under a heading per client: the
// row's label left of its bar, its value right of it, the floor a black
// mark. Every label stays inside the SVG: the label column is as wide as
// the longest label and the bars' scale leaves room right of the longest
// bar for the longest value.
func labSVG(rows []LabRow) string {
	groups := groupByClient(rows)
	maxv := 1.0
	var labelW, valueW float64
	for _, r := range rows {
		maxv = max(maxv, r.TTFBms, r.TTFBP99ms, r.Floorms)
		labelW = max(labelW, textWidth(rowLabel(r)))
		valueW = max(valueW, textWidth(valueLabel(r)))
	}
	left := labelW + 2*labelPad
	width := chartWidth - left - valueW - 2*labelPad
	height := 10 + len(groups)*groupHeader + len(rows)*(barHeight+barGap)
	var svg strings.Builder
	fmt.Fprintf(&svg, `<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="%d">`,
		chartWidth, height, chartWidth, height, fontSize)
	y := 10
	for _, g := range groups {
		fmt.Fprintf(&svg, `<text class="group" x="0" y="%d" font-weight="bold">%s</text>`, y+16, html.EscapeString(g.client))
		y += groupHeader
		for _, r := range g.rows {
			fmt.Fprintf(&svg, `<text class="label" x="%.0f" y="%d" text-anchor="end">%s</text>`, left-labelPad, y+13, html.EscapeString(rowLabel(r)))
			w := r.TTFBms / maxv * width
			color := map[string]string{"hit": "#2a7", "miss": "#e92", "direct": "#c44"}[r.Target]
			fmt.Fprintf(&svg, `<rect class="bar" x="%.0f" y="%d" width="%.0f" height="%d" fill="%s"><title>%.1f ms</title></rect>`, left, y, w, barHeight, color, r.TTFBms)
			if r.TTFBP99ms > 0 {
				px := left + r.TTFBP99ms/maxv*width
				fmt.Fprintf(&svg, `<line class="p99" x1="%.0f" y1="%d" x2="%.0f" y2="%d" stroke="#555" stroke-width="1"/>`, left+w, y+barHeight/2, px, y+barHeight/2)
				fmt.Fprintf(&svg, `<line class="p99" x1="%.0f" y1="%d" x2="%.0f" y2="%d" stroke="#555" stroke-width="1"/>`, px, y+3, px, y+barHeight-3)
				w = max(w, px-left) // the value goes right of the p99 mark
			}
			fx := left + r.Floorms/maxv*width
			fmt.Fprintf(&svg, `<line class="floor" x1="%.0f" y1="%d" x2="%.0f" y2="%d" stroke="#000" stroke-width="2"/>`, fx, y-2, fx, y+barHeight+2)
			fmt.Fprintf(&svg, `<text class="value" x="%.0f" y="%d">%s</text>`, left+w+labelPad, y+13, html.EscapeString(valueLabel(r)))
			y += barHeight + barGap
		}
	}
	svg.WriteString(`</svg>`)
	return svg.String()
}

func labHTML(rows []LabRow) string {
	var table strings.Builder
	table.WriteString(`<table id="phases"><thead><tr><th>client</th><th>target</th><th>proto</th><th>mode</th>` +
		`<th>dns</th><th>connect</th><th>tls/quic</th><th>ttfb p50</th><th>ttfb p99</th><th>floor</th><th>ratio</th><th>PoP</th></tr></thead><tbody>`)
	for _, r := range rows {
		fmt.Fprintf(&table, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td>", html.EscapeString(r.Client), r.Target, r.Proto, r.Mode)
		if r.Error != "" {
			fmt.Fprintf(&table, `<td colspan="8">error: %s</td></tr>`, html.EscapeString(r.Error))
			continue
		}
		for _, ph := range r.Phases {
			fmt.Fprintf(&table, "<td>%s</td>", phaseCell(ph))
		}
		fmt.Fprintf(&table, "<td>%.1f</td><td>%.1f</td><td>%.1f</td><td>%.2f</td><td>%s</td></tr>\n", r.TTFBms, r.TTFBP99ms, r.Floorms, r.Ratio, html.EscapeString(r.PoP))
	}
	table.WriteString("</tbody></table>")
	return `<!doctype html><html><head><meta charset="utf-8"><title>edgecdn lab report</title>
<style>body{font-family:sans-serif} table{border-collapse:collapse;font-size:13px;margin-top:1em} td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} td:nth-child(-n+4),th{text-align:left}</style></head><body>
<h1>edgecdn lab report</h1><p>Time to first byte (DNS included), grouped by client region: the bar is the p50, the thin line reaches the p99, the black mark is the floor from the RTT matrix.
Green: hit through the PoP, orange: miss, red: direct to the origin.</p>
` + labSVG(rows) + `
<h2>Phases</h2><p>Milliseconds, p50 / p99 [floor]: DNS (one round trip to GeoDNS), connect (TCP; none for QUIC), TLS or the QUIC handshake (none with 0-RTT); then the TTFB, which includes them.</p>
` + table.String() + `
</body></html>
`
}
