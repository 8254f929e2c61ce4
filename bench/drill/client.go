package drill

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/edgecdn/cdn/bench"
)

// The clients drills send requests with, all opening their sockets inside
// a lab client's network namespace.

// labClient is an HTTP/2 client that resolves through the lab's resolver
// (GeoDNS) and dials from inside a client's namespace.
func labClient(c bench.LabClient, resolver string, cfg bench.LabConfig, timeout time.Duration) *http.Client {
	res := newResolver(resolver, c.Dial)
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: cfg.RootCAs},
		ForceAttemptHTTP2: true,
		DisableKeepAlives: true, // every request re-resolves: a moved name is followed
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := res.LookupHost(ctx, host)
			if err != nil {
				return nil, err
			}
			return c.Dial(ctx, network, net.JoinHostPort(ips[0], port))
		},
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// newResolver asks the DNS server at addr, dialling it with dial; with no
// addr, the system's resolver.
func newResolver(addr string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *net.Resolver {
	if addr == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return dial(ctx, network, addr)
	}}
}

// popClient is an HTTP/2 client from a client's namespace to one PoP,
// whatever the URL's host resolves to.
func popClient(c bench.LabClient, popAddr string, roots *tls.Config, keepAlive bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: roots.Clone(), ForceAttemptHTTP2: true, DisableKeepAlives: !keepAlive,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return c.Dial(ctx, network, net.JoinHostPort(popAddr, "443"))
		}}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// adminClient fetches a PoP's admin endpoints from a client's namespace.
func adminClient(c bench.LabClient) *http.Client {
	return &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DialContext: c.Dial, DisableKeepAlives: true}}
}

// dialTLS opens a TLS connection to a PoP from a client's namespace,
// offering one ALPN protocol.
func dialTLS(ctx context.Context, c bench.LabClient, popAddr string, roots *tls.Config, proto string) (*tls.Conn, error) {
	raw, err := c.Dial(ctx, "tcp", net.JoinHostPort(popAddr, "443"))
	if err != nil {
		return nil, err
	}
	cfg := roots.Clone()
	cfg.NextProtos = []string{proto}
	conn := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}

// outcome is what a drill keeps of one request.
type outcome struct {
	status int
	err    error
	took   time.Duration
	pop    string        // X-Served-By
	cache  string        // Cache-Status
	age    time.Duration // Age
}

// fetch GETs url and reads the body to the end.
func fetch(ctx context.Context, c *http.Client, url string) outcome {
	return fetchWith(ctx, c, url, nil)
}

// fetchWith is fetch with extra request header fields.
func fetchWith(ctx context.Context, c *http.Client, url string, h http.Header) outcome {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return outcome{err: err}
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return outcome{err: err, took: time.Since(start)}
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	age, _ := strconv.Atoi(resp.Header.Get("Age"))
	return outcome{status: resp.StatusCode, took: time.Since(start), pop: resp.Header.Get("X-Served-By"), cache: resp.Header.Get("Cache-Status"),
		age: time.Duration(age) * time.Second}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
