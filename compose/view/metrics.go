package view

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// metrics are the samples of a Prometheus text exposition: each line's
// metric name, its labels as written, and its value.
type metrics []sample

type sample struct {
	name   string
	labels string // the text between the braces
	value  float64
}

// parseMetrics reads the text format's sample lines, skipping comments
// and what it cannot read (the view shows what it can).
func parseMetrics(b []byte) metrics {
	var out metrics
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		var s sample
		rest := line
		if i := strings.IndexAny(line, "{ "); i > 0 && line[i] == '{' {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				continue
			}
			s.name, s.labels, rest = line[:i], line[i+1:j], line[j+1:]
		} else if i > 0 {
			s.name, rest = line[:i], line[i:]
		} else {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s.value = v
		out = append(out, s)
	}
	return out
}

// sum adds the samples of name, only those with label="value" when label
// is not empty.
func (m metrics) sum(name, label, value string) float64 {
	var t float64
	want := label + `="` + value + `"`
	for _, s := range m {
		if s.name != name {
			continue
		}
		if label != "" && !strings.Contains(","+s.labels+",", ","+want+",") {
			continue
		}
		t += s.value
	}
	return t
}
