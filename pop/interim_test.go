package pop_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/edgecdn/cdn/certs/certstest"
	"github.com/edgecdn/cdn/pop/poptest"
)

// TestInterimResponses: an origin's 103 Early Hints (and 102) reach the
// client before the final response over HTTP/1.1, HTTP/2 and HTTP/3; the
// final response carries neither their fields nor loses its own; and the
// stored response, served as a hit, has no interim response and no Link.
func TestInterimResponses(t *testing.T) {
	var fetched atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			return
		}
		fetched.Add(1)
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.WriteHeader(http.StatusProcessing)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("X-Final", "yes")
		io.WriteString(w, "final body "+r.URL.Path)
	}))
	defer origin.Close()
	ca := certstest.LabCA(t)
	p := poptest.StartPoP(t, poptest.Config(ca, origin.URL))
	for proto := range clients(t, ca) {
		t.Run(proto, func(t *testing.T) {
			url := "https://localhost:" + port(p.Addr()) + "/" + proto
			type interim struct {
				code int
				link string
			}
			fetch := func() (got []interim, resp *http.Response, body string) {
				t.Helper()
				trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
					got = append(got, interim{code, h.Get("Link")})
					return nil
				}}
				req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(t.Context(), trace), "GET", url, nil)
				resp, err := clients(t, ca)[proto].Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return got, resp, string(b)
			}
			got, resp, body := fetch()
			if len(got) != 2 || got[0] != (interim{103, "</style.css>; rel=preload; as=style"}) || got[1].code != 102 || got[1].link != "" {
				t.Errorf("miss: interim responses %+v, want 103 with the Link, then 102 without", got)
			}
			if resp.StatusCode != 200 || body != "final body /"+proto || resp.Header.Get("X-Final") != "yes" ||
				resp.Header.Get("Link") != "" || resp.Header.Get("X-Served-By") == "" {
				t.Errorf("miss: final %d %q, fields %v; want 200 with X-Final and X-Served-By and no Link", resp.StatusCode, body, resp.Header)
			}
			p.WaitCache()
			got, resp, body = fetch()
			if len(got) != 0 || resp.StatusCode != 200 || body != "final body /"+proto || resp.Header.Get("Link") != "" ||
				!strings.Contains(resp.Header.Get("Cache-Status"), "hit") {
				t.Errorf("hit: interim %+v, final %d %q, fields %v; want a stored 200 hit without interim responses or Link", got, resp.StatusCode, body, resp.Header)
			}
		})
	}
	if n := fetched.Load(); n != 3 {
		t.Errorf("origin fetched %d times, want 3 (one miss per protocol's URL)", n)
	}
}
