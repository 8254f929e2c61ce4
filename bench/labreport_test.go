package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/compose/labtest"
)

// reportRows is a lab run's shape, interleaved by client as no run
// writes them, with a direct request far slower than the rest: its bar is
// the longest and its value label the widest.
func reportRows() []LabRow {
	var rows []LabRow
	for i, s := range []struct{ target, proto, mode string }{{"hit", H2, Cold}, {"hit", H3, ZeroRTT}, {"miss", H3, Cold}, {"direct", H1, Cold}} {
		for j, c := range []string{"client-na", "client-eu", "client-ap"} {
			ttfb := float64(10+i*40+j*30) + 0.25
			if s.target == "direct" && c == "client-ap" {
				ttfb = 1234.5
			}
			phases := phaseFloors(s.proto, s.mode, 10*time.Millisecond, time.Duration(10+j*100)*time.Millisecond)
			for k := range phases {
				phases[k].P50ms, phases[k].P99ms = phases[k].Floorms+0.5, phases[k].Floorms+4.25
			}
			rows = append(rows, LabRow{Client: c, Target: s.target, Proto: s.proto, Mode: s.mode, TTFBms: ttfb, TTFBP99ms: ttfb * 1.75,
				Floorms: ttfb / 1.5, Ratio: 11.25, Phases: phases, PoP: "pop-" + c[7:]})
		}
	}
	return rows
}

var (
	svgWidth = regexp.MustCompile(`<svg[^>]* width="(\d+)"`)
	svgText  = regexp.MustCompile(`<text ([^>]*)>([^<]*)</text>`)
	attrX    = regexp.MustCompile(`\bx="([-\d.]+)"`)
)

// TestLabReportLabelsInside checks that every label of the chart lies
// inside the SVG (by an upper bound of its width), that the SVG fits a
// 1300 px window, and that rows are grouped by client. The chart before
// grouping put the value of the longest bar past the SVG's right edge.
func TestLabReportLabelsInside(t *testing.T) {
	page := labHTML(reportRows())
	m := svgWidth.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no <svg width> in the report:\n%s", page)
	}
	width, _ := strconv.ParseFloat(m[1], 64)
	if width+16 > 1300 { // the body's default margins, 8 px each side
		t.Errorf("SVG is %v px wide, want it to fit a 1300 px window", width)
	}
	texts := svgText.FindAllStringSubmatch(page, -1)
	if len(texts) == 0 {
		t.Fatal("no <text> in the chart")
	}
	var groups []string
	for _, tx := range texts {
		attrs, body := tx[1], tx[2]
		x, _ := strconv.ParseFloat(attrX.FindStringSubmatch(attrs)[1], 64)
		w := float64(len(body)) * 8 // 12 px sans-serif: under 8 px a character
		lo, hi := x, x+w
		if strings.Contains(attrs, `text-anchor="end"`) {
			lo, hi = x-w, x
		}
		if lo < 0 || hi > width {
			t.Errorf("label %q spans %.0f..%.0f px, outside the SVG's 0..%.0f", body, lo, hi, width)
		}
		if strings.Contains(attrs, `class="group"`) {
			groups = append(groups, body)
		}
	}
	if want := []string{"client-na", "client-eu", "client-ap"}; fmt.Sprint(groups) != fmt.Sprint(want) {
		t.Errorf("group headings %v, want %v (one per client, in order of appearance)", groups, want)
	}
	// Each group's rows follow its heading: the next heading comes after
	// all of them.
	for _, g := range groupByClient(reportRows()) {
		if len(g.rows) != 4 {
			t.Errorf("group %s has %d rows, want 4", g.client, len(g.rows))
		}
		for _, r := range g.rows {
			if r.Client != g.client {
				t.Errorf("group %s holds a row of %s", g.client, r.Client)
			}
		}
	}
}

// TestLabReportInChromium renders the report in headless Chromium in a
// 1300 px window and measures every text of the chart with getBBox: all
// must lie inside the SVG and the SVG inside the window. It keeps a
// screenshot as an artifact.
func TestLabReportInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("EDGECDN_REQUIRE_CLIENTS") != "" {
			t.Fatal("chromium not installed; .ci/run installs it")
		}
		t.Skip("chromium not installed")
	}
	dir := t.TempDir()
	if err := WriteLabReport(dir, reportRows()); err != nil {
		t.Fatal(err)
	}
	page, err := os.ReadFile(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	// A copy with a script that measures the rendered chart.
	measure := `<script>
const svg = document.getElementById("chart"), box = svg.getBoundingClientRect();
const out = {svgRight: box.right, window: window.innerWidth, texts: []};
for (const t of svg.querySelectorAll("text")) {
  const b = t.getBBox();
  out.texts.push({text: t.textContent, left: b.x, right: b.x + b.width, svgWidth: svg.width.baseVal.value});
}
const pre = document.createElement("pre"); pre.id = "extents"; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script></body>`
	probe := filepath.Join(dir, "measure.html")
	if err := os.WriteFile(probe, []byte(strings.Replace(string(page), "</body>", measure, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--user-data-dir=" + t.TempDir(), "--window-size=1300,1000"}
	out, err := exec.CommandContext(ctx, chromium, append(args, "--dump-dom", "file://"+probe)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	m := regexp.MustCompile(`<pre id="extents">([^<]*)</pre>`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no measurements in the rendered page:\n%s", out)
	}
	var got struct {
		SVGRight, Window float64
		Texts            []struct {
			Text                  string
			Left, Right, SVGWidth float64
		}
	}
	if err := json.Unmarshal([]byte(strings.ReplaceAll(string(m[1]), "&quot;", `"`)), &got); err != nil {
		t.Fatalf("measurements %s: %v", m[1], err)
	}
	if got.SVGRight > got.Window {
		t.Errorf("the chart ends at %.0f px, past the %.0f px window", got.SVGRight, got.Window)
	}
	for _, tx := range got.Texts {
		if tx.Left < 0 || tx.Right > tx.SVGWidth {
			t.Errorf("label %q rendered at %.1f..%.1f px, outside the SVG's 0..%.0f", tx.Text, tx.Left, tx.Right, tx.SVGWidth)
		}
	}
	t.Logf("chromium: %d labels inside a %.0f px chart in a %.0f px window", len(got.Texts), got.SVGRight, got.Window)
	shot := filepath.Join(dir, "report.png")
	if b, err := exec.CommandContext(ctx, chromium, append(args, "--screenshot="+shot, "file://"+filepath.Join(dir, "report.html"))...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, b)
	}
	labtest.KeepArtifact(t, shot, "lab-report.png")
}

func TestPhaseFloors(t *testing.T) {
	const dns, rtt = 10 * time.Millisecond, 80 * time.Millisecond
	for _, tt := range []struct {
		proto, mode string
		want        string // dns connect tls, ms
	}{
		{H1, Cold, "10 80 80"},
		{H2, Resumed, "10 80 80"},
		{H2, First, "10 80 80"},
		{H3, Cold, "10 0 80"},
		{H3, FirstHTTPS, "10 0 80"},
		{H3, ZeroRTT, "10 0 0"},
	} {
		var got []string
		for i, ph := range phaseFloors(tt.proto, tt.mode, dns, rtt) {
			if ph.Name != []string{"dns", "connect", "tls"}[i] {
				t.Errorf("phase %d is %q, want dns, connect, tls", i, ph.Name)
			}
			got = append(got, strconv.FormatFloat(ph.Floorms, 'f', -1, 64))
		}
		if strings.Join(got, " ") != tt.want {
			t.Errorf("phaseFloors(%s, %s) = %v ms, want %s", tt.proto, tt.mode, got, tt.want)
		}
	}
}

// TestLabReportPhases: the table, report.md and report.html carry every
// phase's p50 / p99 [floor] and the TTFB's p99 beside its p50.
func TestLabReportPhases(t *testing.T) {
	rows := reportRows()
	var table strings.Builder
	WriteLabTable(&table, rows)
	dir := t.TempDir()
	if err := WriteLabReport(dir, rows); err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "report.md"))
	page, _ := os.ReadFile(filepath.Join(dir, "report.html"))
	r := rows[len(rows)-1] // client-ap direct h1 cold: 210 ms to the origin
	for name, out := range map[string]string{"table": table.String(), "report.md": string(md), "report.html": string(page)} {
		for _, want := range []string{"dns", "connect", "tls/quic", "p99",
			fmt.Sprintf("%.1f", r.TTFBP99ms), "210.5", "214.2", "[210]", "10.5"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s lacks %q:\n%s", name, want, out)
			}
		}
	}
	if n := strings.Count(string(page), `class="p99"`); n != 2*len(rows) {
		t.Errorf("report.html has %d p99 marks for %d rows, want two lines a row", n, len(rows))
	}
}
