package cache

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestInterimNotToHTTP10: an HTTP/1.0 client gets the final response
// only, never the origin's 103 (RFC 9110 15.2: a server must not send a
// 1xx response to an HTTP/1.0 client); an HTTP/1.1 client gets the 103
// first.
func TestInterimNotToHTTP10(t *testing.T) {
	rg := newRig(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</s.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, "final")
	})
	for _, tc := range []struct {
		proto, want string
	}{
		{"HTTP/1.0", "HTTP/1.0 200"},
		{"HTTP/1.1", "HTTP/1.1 103"},
	} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(rg.front.URL, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET /i "+tc.proto+"\r\nHost: example.com\r\nConnection: close\r\n\r\n")
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if err != nil || !strings.HasPrefix(line, tc.want) {
			t.Errorf("%s client: first line %q (%v), want %q...", tc.proto, line, err, tc.want)
		}
	}
}
