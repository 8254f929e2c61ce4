package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

func TestRunServesBothAndStops(t *testing.T) {
	root, caDir := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(root, "hello.txt"), []byte("hello"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb poll.Buffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-http", "127.0.0.1:0", "-root", root, "-ca-dir", caDir}, &out, &errb)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
		}
	})
	re := regexp.MustCompile(`origin ready https=(\S+) http=(\S+) root=`)
	var m []string
	poll.Until(t, "the ready line", func() bool {
		m = re.FindStringSubmatch(out.String())
		return m != nil
	})
	ca := certstest.OpenLabCA(t, caDir)
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.RootPool()}}}
	for _, u := range []string{"https://" + m[1] + "/hello.txt", "http://" + m[2] + "/hello.txt"} {
		resp, err := c.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello" {
			t.Errorf("GET %s = %q, want hello", u, b)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run after cancel = %v, want nil", err)
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("rules:\n- {path: nope, cache_control: x}\n"), 0o644)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-root", file, "-ca-dir", dir}, "root:"},
		{[]string{"-listen", "", "-root", dir}, "-listen and -http are both empty"},
		{[]string{"-cert", "c.pem", "-root", dir}, "-cert and -key"},
		{[]string{"-bogus"}, "flag provided but not defined"},
		{[]string{"-config", bad}, "rules[0].path"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		err := run(context.Background(), tt.args, &out, &errb)
		if err == nil || !strings.Contains(err.Error()+errb.String(), tt.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}
