package drill

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// WriteTable prints checks as a markdown table: drill, expectation,
// measured, and PASS, FAIL or info.
func WriteTable(w io.Writer, checks []Check) error {
	_, err := io.WriteString(w, table(checks))
	return err
}

func table(checks []Check) string {
	var b strings.Builder
	b.WriteString("| drill | expectation | measured | result |\n|---|---|---|---|\n")
	for _, c := range checks {
		res := "PASS"
		switch {
		case c.Info:
			res = "info"
		case !c.Pass:
			res = "FAIL"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", c.Drill, c.Expectation, c.Measured, res)
	}
	return b.String()
}

// WriteReport writes the checks into dir, which it creates if need be:
// drills.md (WriteTable's table) and drills.json.
func WriteReport(dir string, checks []Check) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "drills.md"), []byte(table(checks)), 0o644); err != nil {
		return err
	}
	b, err := json.MarshalIndent(checks, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "drills.json"), b, 0o644)
}

// Passed reports whether every check passed.
func Passed(checks []Check) bool {
	for _, c := range checks {
		if !c.Pass {
			return false
		}
	}
	return true
}

// sortedCounts prints a count map in key order, for a table cell.
func sortedCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// short cuts an example error message for a table cell.
func short(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return "(e.g. " + s + ")"
}
