package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunRejectsBadInput(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "bench ttfb"},
		{[]string{"load", "https://x/"}, "want -d DURATION or -n COUNT"},
		{[]string{"load", "-n", "1"}, "exactly one URL"},
		{[]string{"fly"}, `unknown command "fly"`},
		{[]string{"drill", "nope"}, "want one of origin-down, origin-slow, origin-partition, pop-down, pop-drain, cold-restart, flood, hostile, latency-steer"},
		{[]string{"ttfb"}, "no URL"},
		{[]string{"ttfb", "-proto", "h4", "https://x/"}, `proto "h4"`},
		{[]string{"ttfb", "-proto", "h2", "-mode", "0rtt", "https://x/"}, "only with -proto h3"},
		{[]string{"ttfb", "-o", "xml", "https://x/"}, `-o "xml"`},
		{[]string{"ttfb", "http://x/"}, "want an https:// URL"},
		{[]string{"ttfb", "-cacert", "/nonexistent.pem", "https://x/"}, "-cacert"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), tt.args, &out, &errb)
		if err == nil || !strings.Contains(err.Error()+errb.String(), tt.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}
