package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestRunRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
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
		{"half key pair", []string{"-origin", "http://127.0.0.1:1", "-cert", "c.pem"}, "tls.cert_file, tls.key_file"},
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
