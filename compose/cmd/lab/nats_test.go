package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgecdn/cdn/certs"
	"github.com/edgecdn/cdn/pop/fleet"
	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// TestNATS: lab nats serves the fleet's control plane, which PoPs join
// with the password from the file and no other; bad arguments are named.
func TestNATS(t *testing.T) {
	dir, pwFile := natsFiles(t)
	addr, monitor := freeAddr(t), freeAddr(t)
	var out bytes.Buffer
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"-listen", "nohost", "-store", dir, "-password-file", pwFile}, `-listen "nohost"`},
		{[]string{"-listen", addr, "-password-file", pwFile}, "-store: empty"},
		{[]string{"-listen", addr, "-store", dir, "-password-file", pwFile, "-monitor", "x"}, `-monitor "x"`},
		{[]string{"-listen", addr, "-store", dir, "-password-file", filepath.Join(dir, "nosuch")}, "nosuch"},
	} {
		if err := run(context.Background(), append([]string{"nats"}, tt.args...), &out, &out); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("lab nats %q = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
	serveNATS(t, "-listen", addr, "-monitor", monitor, "-store", filepath.Join(dir, "js"), "-password-file", pwFile)
	cfg := fleet.Config{URL: "nats://" + addr, PoP: "pop-x", User: "pop", Password: "s3cret", Apply: func(fleet.Purge) (int, error) { return 1, nil }}
	var f *fleet.Fleet
	poll.Within(t, 10*time.Second, "a PoP joins lab nats", func() bool {
		jctx, jcancel := context.WithTimeout(context.Background(), time.Second)
		defer jcancel()
		var err error
		f, err = fleet.Join(jctx, cfg)
		return err == nil
	})
	defer f.Close()
	if resp, err := http.Get("http://" + monitor + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("GET /healthz on -monitor %s: %v, want 200 (the lab's health check)", monitor, err)
	} else {
		resp.Body.Close()
	}
	res, err := f.Purge(context.Background(), fleet.Purge{URL: "https://www.cdn.lab/"}, 5*time.Second)
	if err != nil || len(res.Missing()) != 0 || len(res.Acks) != 1 {
		t.Errorf("purge through lab nats: %+v, %v; want pop-x's acknowledgement", res, err)
	}
	cfg.Password = "wrong"
	if g, err := fleet.Join(context.Background(), cfg); err == nil {
		g.Close()
		t.Error("joined lab nats with a wrong password")
	}
}

// TestNATSOverTLS: with -ca-dir, lab nats speaks TLS only, with a lab CA
// certificate for its address: a PoP trusting the lab root joins, one that
// does not use TLS is refused.
func TestNATSOverTLS(t *testing.T) {
	dir, pwFile := natsFiles(t)
	addr, caDir := freeAddr(t), filepath.Join(dir, "ca")
	serveNATS(t, "-listen", addr, "-store", filepath.Join(dir, "js"), "-password-file", pwFile, "-ca-dir", caDir)
	apply := func(fleet.Purge) (int, error) { return 1, nil }
	var f *fleet.Fleet
	poll.Within(t, 10*time.Second, "a PoP joins lab nats over TLS", func() bool {
		ca, err := certs.OpenLabCA(caDir)
		if err != nil {
			return false
		}
		jctx, jcancel := context.WithTimeout(context.Background(), time.Second)
		defer jcancel()
		f, err = fleet.Join(jctx, fleet.Config{URL: "tls://" + addr, PoP: "pop-x", User: "pop", Password: "s3cret", RootCAs: ca.RootPool(), Apply: apply})
		return err == nil
	})
	f.Close()
	jctx, jcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer jcancel()
	if g, err := fleet.Join(jctx, fleet.Config{URL: "nats://" + addr, PoP: "pop-y", User: "pop", Password: "s3cret", Apply: apply}); err == nil {
		g.Close()
		t.Error("joined lab nats -ca-dir without TLS")
	}
}

// natsFiles is a directory for lab nats with its password file (s3cret).
func natsFiles(t *testing.T) (dir, pwFile string) {
	dir = t.TempDir()
	pwFile = filepath.Join(dir, "fleet.password")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, pwFile
}

// freeAddr is a loopback address with a port nothing listens on.
func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serveNATS runs lab nats with args until the test ends, and fails the
// test if it returns an error.
func serveNATS(t *testing.T, args ...string) {
	ctx, cancel := context.WithCancel(context.Background())
	var out poll.Buffer
	var wg sync.WaitGroup
	var err error
	wg.Go(func() { err = run(ctx, append([]string{"nats"}, args...), &out, &out) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		if err != nil {
			t.Errorf("lab nats = %v (output %q)", err, out.String())
		}
	})
}
