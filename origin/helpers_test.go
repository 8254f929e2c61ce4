package origin

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// siteFiles returns the tree site writes.
func siteFiles() map[string]string {
	return map[string]string{
		"index.html":      "<h1>home</h1>",
		"static/app.css":  "body{}",
		"static/app.js":   "1;",
		"static/v2/x.css": "a{}",
		"img/logo.png":    "\x89PNG\r\n\x1a\n0000",
		"docs/index.html": "<p>docs</p>",
		"0123.txt":        "0123456789",
		"data.unknownext": "plain text without a known extension",
	}
}

// site writes siteFiles, an empty directory and a symbolic link that stays
// inside into a new directory and returns it.
func site(t testing.TB) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range siteFiles() {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("0123.txt", filepath.Join(root, "inside-link.txt")); err != nil {
		t.Fatal(err)
	}
	return root
}

func newServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// serve runs s over plain HTTP on loopback until the test ends and returns
// its base URL.
func serve(t testing.TB, s *Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("Serve = %v, want http.ErrServerClosed", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// serveTLS runs s over TLS with a fresh self-signed certificate for
// 127.0.0.1 and returns its base URL and a pool trusting the certificate.
func serveTLS(t testing.TB, s *Server) (string, *x509.CertPool) {
	t.Helper()
	cert, pool := selfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServeTLS(ln, cert) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("ServeTLS = %v, want http.ErrServerClosed", err)
		}
	})
	return "https://" + ln.Addr().String(), pool
}

// selfSigned makes an ECDSA P-256 certificate for 127.0.0.1 and localhost.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "origin test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// client returns an HTTP client of its own, which does not follow
// redirects and whose connections close when the test ends.
func client(t testing.TB, tr *http.Transport) *http.Client {
	t.Helper()
	if tr == nil {
		tr = &http.Transport{}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// do sends a request with header pairs and returns the response with its
// body read.
func do(t testing.TB, c *http.Client, method, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp, string(b)
}

// rawGet sends target as the request line's target, unaltered by any URL
// parser, and returns the whole reply.
func rawGet(t testing.TB, base, target string) string {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET "+target+" HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n")
	reply, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	return string(reply)
}

// logLines is a slog JSON destination that hands each line to a channel.
type logLines struct {
	mu    sync.Mutex // guards part
	part  bytes.Buffer
	lines chan string
}

func newLogger() (*slog.Logger, *logLines) {
	l := &logLines{lines: make(chan string, 100)}
	return slog.New(slog.NewJSONHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug})), l
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.part.Write(p)
	for {
		line, err := l.part.ReadString('\n')
		if err != nil {
			l.part.WriteString(line)
			return len(p), nil
		}
		l.lines <- line
	}
}

// next returns the next line, failing the test after 10 s.
func (l *logLines) next(t testing.TB) string {
	t.Helper()
	select {
	case line := <-l.lines:
		return line
	case <-time.After(10 * time.Second):
		t.Fatal("no log line within 10s")
		return ""
	}
}
