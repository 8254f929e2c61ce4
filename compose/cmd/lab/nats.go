package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edgecdn/cdn/certs"
)

// natsServe is `lab nats`: the fleet's control plane in the lab, a NATS
// server with JetStream (the nats-server module, nothing downloaded),
// serving until ctx ends. Its one user's password is read from a file
// (lab-init writes it into the lab volume), so that only the lab's PoPs
// can publish purges; with -ca-dir it speaks TLS only, with a certificate
// of the lab CA that the PoPs trust. With several machines, run a real NATS cluster
// instead (see the README).
func natsServe(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("lab nats", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:4222", "client `address` (host:port)")
	store := fs.String("store", "", "JetStream store `directory` (required)")
	user := fs.String("user", "pop", "the one `user` the server takes")
	passwordFile := fs.String("password-file", "", "`file` holding that user's password (required)")
	monitor := fs.String("monitor", "", "monitoring `address` (host:port) for /healthz and /varz; empty: none")
	caDir := fs.String("ca-dir", "", "lab CA `directory`: serve TLS only, with a certificate for the -listen host from it (created if missing); empty: plain TCP")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, portText, err := net.SplitHostPort(*listen)
	port, perr := strconv.Atoi(portText)
	if err != nil || perr != nil {
		return fmt.Errorf("-listen %q: want host:port", *listen)
	}
	if *store == "" {
		return errors.New("-store: empty, want the JetStream store directory")
	}
	pw, err := os.ReadFile(*passwordFile)
	if err != nil {
		return fmt.Errorf("-password-file: %w", err)
	}
	password := strings.TrimSpace(string(pw))
	if password == "" {
		return fmt.Errorf("-password-file %s: empty, want the password", *passwordFile)
	}
	opts := &server.Options{
		ServerName: "lab-nats", Host: host, Port: port, JetStream: true, StoreDir: *store,
		Users:  []*server.User{{Username: *user, Password: password}},
		NoSigs: true, NoLog: true,
	}
	if *monitor != "" {
		mhost, mport, err := net.SplitHostPort(*monitor)
		if opts.HTTPPort, perr = strconv.Atoi(mport); err != nil || perr != nil {
			return fmt.Errorf("-monitor %q: want host:port", *monitor)
		}
		opts.HTTPHost = mhost
	}
	if *caDir != "" {
		ca, err := certs.OpenLabCA(*caDir)
		if err != nil {
			return fmt.Errorf("-ca-dir: %w", err)
		}
		cert, err := ca.Issue(host)
		if err != nil {
			return fmt.Errorf("-ca-dir: %w", err)
		}
		opts.TLS, opts.TLSConfig = true, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return fmt.Errorf("nats: not ready on %s after 10s", *listen)
	}
	fmt.Fprintf(stdout, "lab nats: ready on %s (JetStream in %s)\n", *listen, *store)
	<-ctx.Done()
	srv.Shutdown()
	srv.WaitForShutdown()
	return nil
}
