package drill

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSelect(t *testing.T) {
	all, err := Select(nil, time.Second)
	if err != nil || len(all) != len(Names()) {
		t.Fatalf("Select(nil) = %d drills, %v; want all %d", len(all), err, len(Names()))
	}
	got, err := Select([]string{"hostile", "pop-down"}, time.Second)
	if err != nil || len(got) != 2 || got[0].Name != "hostile" || got[1].Name != "pop-down" {
		t.Errorf("Select(hostile, pop-down) = %v, %v; want those two in that order", got, err)
	}
	if got[0].Target.PoP == "" || got[0].Target.Bystander == "" {
		t.Errorf("hostile's target %+v: want a PoP and a bystander", got[0].Target)
	}
	_, err = Select([]string{"nope"}, time.Second)
	if want := `drill "nope": want one of origin-down, origin-slow, origin-partition, pop-down, pop-drain, cold-restart, flood, hostile, latency-steer, purge, control-plane, shield`; err == nil || err.Error() != want {
		t.Errorf("Select(nope) = %v, want %q", err, want)
	}
}

func TestWriteReport(t *testing.T) {
	checks := []Check{
		{Drill: "pop-down", Expectation: "moves", Measured: "after 2s", Pass: true},
		{Drill: "pop-down", Expectation: "comes back", Measured: "never", Pass: false},
		{Drill: "pop-down", Expectation: "PoPs at the end of the drill", Measured: "pop-na 40 goroutines", Pass: true, Info: true},
	}
	var table bytes.Buffer
	if err := WriteTable(&table, checks); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| drill | expectation | measured | result |\n|---|---|---|---|\n", "| after 2s | PASS |", "| never | FAIL |", "| info |"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if Passed(checks) || !Passed(checks[:1]) {
		t.Errorf("Passed: want false with a failed check, true without")
	}
	dir := filepath.Join(t.TempDir(), "report")
	if err := WriteReport(dir, checks); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "drills.md"))
	if err != nil || string(md) != table.String() {
		t.Errorf("drills.md = %q, %v; want the table", md, err)
	}
	var back []Check
	b, err := os.ReadFile(filepath.Join(dir, "drills.json"))
	if err != nil || json.Unmarshal(b, &back) != nil || len(back) != len(checks) || back[2] != checks[2] {
		t.Errorf("drills.json = %s, %v; want the checks back", b, err)
	}
	// A report that cannot be written is an error, not a silent loss.
	blocked := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocked, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteReport(filepath.Join(blocked, "report"), checks); err == nil {
		t.Errorf("WriteReport under a file: no error")
	}
	readOnly := filepath.Join(t.TempDir(), "ro")
	if err := os.MkdirAll(filepath.Join(readOnly, "drills.md"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteReport(readOnly, checks); err == nil {
		t.Errorf("WriteReport where drills.md is a directory: no error")
	}
}
