package bench

import (
	"bytes"
	"strings"
	"testing"
)

func TestCompareTTFBAndLoad(t *testing.T) {
	var a, b bytes.Buffer
	WriteJSON(&a, []Result{{Proto: "h2", Mode: "cold", URL: "u", TTFBms: 10, Totalms: 12}, {Proto: "h2", Mode: "cold", URL: "u", TTFBms: 20, Totalms: 22}})
	WriteJSON(&b, []Result{{Proto: "h2", Mode: "cold", URL: "u", TTFBms: 5, Totalms: 6}})
	sa, err := Summarize(&a)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := Summarize(&b)
	if err != nil {
		t.Fatal(err)
	}
	rows := Compare(sa, sb)
	var found bool
	for _, r := range rows {
		if r.Metric == "ttfb_p50_ms" {
			found = true
			if r.A != 10 || r.B != 5 || r.Change() != -0.5 {
				t.Errorf("ttfb p50 row %+v, want 10 -> 5 (-50%%)", r)
			}
		}
	}
	if !found {
		t.Fatalf("no ttfb_p50_ms row in %+v", rows)
	}
	la := `{"proto":"h2","mode":"closed","url":"u","rps":1000,"p50_ms":1,"p99_ms":5}`
	lb := `{"proto":"h2","mode":"closed","url":"u","rps":1500,"p50_ms":1,"p99_ms":4}`
	ma, err1 := Summarize(strings.NewReader(la))
	mb, err2 := Summarize(strings.NewReader(lb))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	var out bytes.Buffer
	WriteCompare(&out, Compare(ma, mb))
	if !strings.Contains(out.String(), "+50.0%") {
		t.Errorf("compare table:\n%s", out.String())
	}
	if _, err := Summarize(strings.NewReader("garbage\n")); err == nil {
		t.Errorf("garbage input: no error")
	}
}
