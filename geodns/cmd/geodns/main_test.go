package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// cfgTmpl turns rate limiting off: the reload loop below asks as fast as
// it can from 127.0.0.1.
const cfgTmpl = `
listen: 127.0.0.1:0
rate_limit: {responses_per_second: -1}
zones:
  - origin: cdn.lab.
    ns: [ns1.cdn.lab.]
    geo: [{name: www}]
pops:
  - {name: pop-na, a: [ADDR], lat: 40.7, lon: -74.0}
`

func TestRunServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "geodns.yaml")
	os.WriteFile(file, []byte(strings.Replace(cfgTmpl, "ADDR", "10.77.1.20", 1)), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan os.Signal, 1)
	var out, errb poll.Buffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"-config", file, "-admin", "127.0.0.1:0"}, &out, &errb, hup) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
		}
	})
	re := regexp.MustCompile(`geodns ready listen=(\S+) admin=\S+`)
	var m []string
	poll.Until(t, "the ready line", func() bool {
		m = re.FindStringSubmatch(out.String())
		return m != nil
	})
	ask := func() string {
		q := new(dns.Msg)
		q.SetQuestion("www.cdn.lab.", dns.TypeA)
		r, err := dns.Exchange(q, m[1])
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("query: %v %v", r, err)
		}
		return r.Answer[0].(*dns.A).A.String()
	}
	if got := ask(); got != "10.77.1.20" {
		t.Fatalf("answer %s", got)
	}
	os.WriteFile(file, []byte(strings.Replace(cfgTmpl, "ADDR", "10.77.1.21", 1)), 0o644)
	hup <- os.Interrupt // any value: what SIGHUP delivers
	poll.Until(t, "the reload to take effect", func() bool { return ask() == "10.77.1.21" })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run after cancel = %v", err)
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listen: 127.0.0.1:0\nzones: []\n"), 0o644)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "-config: missing"},
		{[]string{"-config", bad}, "zones: empty"},
		{[]string{"-config", filepath.Join(dir, "nope.yaml")}, "nope.yaml"},
		{[]string{"-bogus"}, "flag provided but not defined"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), tt.args, &out, &errb, nil)
		if err == nil || !strings.Contains(err.Error()+errb.String(), tt.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}
