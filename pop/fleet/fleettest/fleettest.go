// Package fleettest runs a real NATS server with JetStream on loopback for
// tests of the fleet's control plane: the server the lab runs, in-process,
// which a test can stop and start again on the same port and store.
package fleettest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// The credentials the server takes.
const (
	User     = "pop"
	Password = "lab-secret"
)

// Server is a NATS server with JetStream, on 127.0.0.1.
type Server struct {
	t    testing.TB
	opts *server.Options
	srv  *server.Server
}

// Start starts a server, stopped when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	n := &Server{t: t, opts: &server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{{Username: User, Password: Password}},
		NoLog: true, NoSigs: true,
	}}
	n.Restart()
	n.opts.Port = n.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.Stop)
	return n
}

// Restart starts the server again after Stop, on the same port and store.
func (n *Server) Restart() {
	n.t.Helper()
	srv, err := server.NewServer(n.opts)
	if err != nil {
		n.t.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		n.t.Fatal("nats server not ready in 10s")
	}
	n.srv = srv
}

// Stop stops the server; Restart starts it again.
func (n *Server) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// URL is the server's nats:// URL.
func (n *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port) }

// Addr is the server's host:port.
func (n *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", n.opts.Port) }
