package pop

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/edgecdn/cdn/cache"
)

// FuzzFastParse is a differential test of the fast loop's request parser
// against net/http's: every head the fast parser accepts must parse in
// http.ReadRequest to the same method, target, Host and connection
// handling, with no body and no field that makes it not plain. Anything
// the fast parser cannot be sure of it must refuse, so that net/http
// decides.
func FuzzFastParse(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
		"HEAD /gen/1k?x=1 HTTP/1.1\r\nHost: www.cdn.lab:443\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
		"GET /a%2Fb HTTP/1.1\r\nhost: [::1]:8443\r\nConnection: close\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nX: \t v \t\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX-Foo : bar\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n folded: x\r\n\r\n",
		"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET /?q=#frag HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nIf-None-Match: \"x\"\r\n\r\n",
		"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\x00b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fb\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\nAccept-Encoding: \r\nAccept-Encoding: br\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), 4096)
		head, err := peekHead(br)
		if err != nil || head == nil {
			return // not a complete head in the buffer: the fast loop would not look at it
		}
		var q fastRequest
		if !q.parse(head) {
			return // refused: net/http decides
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head)))
		if err != nil {
			t.Fatalf("fast parser accepted %q; net/http refuses it: %v", head, err)
		}
		method := "GET"
		if q.head {
			method = "HEAD"
		}
		switch {
		case r.Method != method:
			t.Errorf("%q: method %s here, %s in net/http", head, method, r.Method)
		case r.RequestURI != string(q.target):
			t.Errorf("%q: target %q here, %q in net/http", head, q.target, r.RequestURI)
		case r.Host != string(q.host):
			t.Errorf("%q: host %q here, %q in net/http", head, q.host, r.Host)
		case r.Close != q.close:
			t.Errorf("%q: close %v here, %v in net/http", head, q.close, r.Close)
		case r.ProtoMajor != 1 || r.ProtoMinor != 1:
			t.Errorf("%q: accepted as HTTP/1.1; net/http reads %s", head, r.Proto)
		case r.ContentLength != 0 || len(r.TransferEncoding) > 0:
			t.Errorf("%q: accepted with a body (length %d, %v)", head, r.ContentLength, r.TransferEncoding)
		case r.URL.RawQuery != "" && !strings.Contains(string(q.target), "?"+r.URL.RawQuery):
			t.Errorf("%q: net/http reads the query %q", head, r.URL.RawQuery)
		case string(q.acceptEncoding) != strings.Join(r.Header["Accept-Encoding"], ","):
			t.Errorf("%q: Accept-Encoding %q here, %q in net/http (its lines joined, as the ordinary path picks by)", head, q.acceptEncoding, strings.Join(r.Header["Accept-Encoding"], ","))
		}
		for k := range r.Header {
			if cache.PlainRefuses(k) && k != "Connection" {
				t.Errorf("%q: accepted with %s, which makes a request not plain", head, k)
			}
		}
		if v := r.Header.Get("Connection"); v != "" && !strings.EqualFold(v, "close") && !strings.EqualFold(v, "keep-alive") {
			t.Errorf("%q: accepted with Connection: %s", head, v)
		}
	})
}
