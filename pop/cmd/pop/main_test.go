package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

func TestRunRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no origin", []string{"-ca-dir", dir}, "-origin: missing"},
		{"bad origin", []string{"-ca-dir", dir, "-origin", "ftp://x"}, `upstreams.origin.servers[0]: "ftp://x"`},
		{"bad listen", []string{"-ca-dir", dir, "-origin", "http://127.0.0.1:1", "-listen", "nowhere"}, `listen: "nowhere"`},
		{"bad balancer", []string{"-ca-dir", dir, "-origin", "http://127.0.0.1:1", "-balancer", "dice"}, "upstreams.origin.balancer"},
		{"unknown flag", []string{"-orign", "x"}, "flag provided but not defined: -orign"},
		{"stray argument", []string{"-ca-dir", dir, "extra"}, `unexpected argument "extra"`},
		{"missing config", []string{"-config", dir + "/nope.yaml"}, "nope.yaml"},
		{"negative max object", []string{"-ca-dir", dir, "-origin", "http://127.0.0.1:1", "-cache-max-object", "-5"}, "cache.max_object_bytes"},
		{"half key pair", []string{"-origin", "http://127.0.0.1:1", "-cert", "c.pem"}, "tls.cert_file, tls.key_file"},
		{"unwritable access log", []string{"-ca-dir", dir, "-origin", "http://127.0.0.1:1", "-access-log", dir + "/no/such/dir/access.log"}, "access_log: open " + dir + "/no/such/dir/access.log"},
		{"access log is a directory", []string{"-ca-dir", dir, "-origin", "http://127.0.0.1:1", "-access-log", dir}, "access_log: open " + dir},
		{"missing purge token file", []string{"-ca-dir", dir, "-origin", "http://127.0.0.1:1", "-purge-token-file", dir + "/nope"}, "-purge-token-file: open " + dir + "/nope"},
		{"empty fleet password file", []string{"-ca-dir", dir, "-origin", "http://127.0.0.1:1", "-fleet", "nats://127.0.0.1:1", "-fleet-password-file", empty}, "-fleet-password-file " + empty + ": empty"},
		{"fleet without credentials", []string{"-ca-dir", dir, "-origin", "http://127.0.0.1:1", "-fleet", "nats://127.0.0.1:1"}, "fleet.user, fleet.password: required"},
		{"bad fleet url", []string{"-ca-dir", dir, "-origin", "http://127.0.0.1:1", "-fleet", "http://u:secret@127.0.0.1:1"}, `fleet.url: "http://u:xxxxx@127.0.0.1:1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			err := run(context.Background(), tt.args, &out, &errb)
			if err == nil || !strings.Contains(err.Error()+errb.String(), tt.want) {
				t.Errorf("run(%q) = %v (stderr %q), want an error containing %q", tt.args, err, errb.String(), tt.want)
			}
		})
	}
}

func TestRunServesAndStopsOnSignal(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb poll.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-ca-dir", dir,
			"-origin", "http://127.0.0.1:1", "-drain-timeout", "2s"}, &out, &errb)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stderr:\n%s", errb.String())
		}
	})
	poll.Within(t, 15*time.Second, "the ready line", func() bool {
		select {
		case err := <-done:
			t.Fatalf("run ended before ready: %v", err)
		default:
		}
		return strings.Contains(out.String(), "pop ready")
	})
	line := out.String()
	for _, want := range []string{"listen=127.0.0.1:", "admin=127.0.0.1:", "ca=" + dir + "/root.pem", "spki="} {
		if !strings.Contains(line, want) {
			t.Errorf("ready line %q lacks %q", line, want)
		}
	}
	cancel() // what SIGTERM does through signal.NotifyContext
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after cancel")
	}
}

// TestRunAccessLogToStdout: -access-log - writes one JSON line per
// request to standard output, after the ready line.
func TestRunAccessLogToStdout(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb poll.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-admin", "", "-ca-dir", dir, "-no-h3",
			"-origin", "http://127.0.0.1:1", "-access-log", "-"}, &out, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("run did not return after cancel")
		}
	})
	poll.Within(t, 15*time.Second, "the ready line", func() bool { return strings.Contains(out.String(), "pop ready") })
	listen := strings.Fields(strings.SplitN(out.String(), "listen=", 2)[1])[0]
	pool, err := certs.LoadPool(dir + "/root.pem")
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	resp, err := client.Get("https://" + listen + "/nothing")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var line map[string]any
	poll.Until(t, "an access log line on stdout", func() bool {
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		return len(lines) == 2 && json.Unmarshal([]byte(lines[1]), &line) == nil
	})
	if line["path"] != "/nothing" || line["status"] != float64(resp.StatusCode) || line["proto"] != "h1" {
		t.Errorf("access log line %v, want GET /nothing answered %d over h1", line, resp.StatusCode)
	}
}
