package drill

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/edgecdn/cdn/bench"
)

// response is what a poisoning check compares.
type response struct {
	status int
	header http.Header
	body   []byte
	err    error
}

func (r response) String() string {
	if r.err != nil {
		return "error: " + bench.ErrorKind(r.err)
	}
	return fmt.Sprintf("%d, %d B, Cache-Status %q", r.status, len(r.body), r.header.Get("Cache-Status"))
}

// get sends a GET with extra header pairs; a "Host" pair sets the
// request's host (HTTP/2 :authority).
func get(ctx context.Context, hc *http.Client, url string, kv ...string) response {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return response{err: err}
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i] == "Host" {
			req.Host = kv[i+1]
			continue
		}
		req.Header.Set(kv[i], kv[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		return response{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b, err: err}
}

// poisonChecks tries to make the PoP's cache serve one client's response
// to another, or to make the PoP fetch for a host it does not serve. The
// attacker and the victim are clients in different namespaces, each on its
// own connections to the PoP.
func poisonChecks(ctx context.Context, lab Lab, attacker, victim bench.LabClient, popAddr string, roots *tls.Config, stamp int64) []Check {
	a, v := popClient(attacker, popAddr, roots, false), popClient(victim, popAddr, roots, false)
	var checks []Check
	add := func(exp, measured string, pass bool) {
		checks = append(checks, Check{Drill: "hostile", Expectation: exp, Measured: measured, Pass: pass})
	}
	settle := func() { time.Sleep(300 * time.Millisecond) } // the cache stores asynchronously
	marker := func(kind string) string { return fmt.Sprintf("poison=%d-%s", stamp, kind) }
	url := func(query, kind string) string { return lab.CDNURL + "/gen/1k?" + query + marker(kind) }

	// Unkeyed headers on a miss.
	attack := get(ctx, a, url("", "unkeyed"), "X-Forwarded-Host", "evil.example", "X-Forwarded-Scheme", "http",
		"X-Forwarded-Proto", "http", "X-Original-URL", "/gen/2k", "X-Rewrite-URL", "/gen/2k", "X-Host", "evil.example",
		"X-Forwarded-Prefix", "/evil", "Forwarded", "host=evil.example;proto=http")
	settle()
	later := get(ctx, v, url("", "unkeyed"))
	clean := get(ctx, v, url("", "reference"))
	tainted := false
	for _, vals := range later.header {
		for _, val := range vals {
			tainted = tainted || strings.Contains(val, "evil") || strings.Contains(val, "/gen/2k")
		}
	}
	add("unkeyed headers (X-Forwarded-Host, X-Forwarded-Scheme/-Proto, X-Original-URL, X-Rewrite-URL, X-Host, Forwarded) sent with a miss do not change what a later plain client gets",
		fmt.Sprintf("attacker %v; later client %v, body identical to a clean copy %v, attacker values in its headers %v; origin fetched it %d times",
			attack, later, bytes.Equal(later.body, clean.body), tainted, originCount(lab, marker("unkeyed"))),
		attack.err == nil && later.err == nil && clean.err == nil && later.status == 200 && len(later.body) == 1024 &&
			bytes.Equal(later.body, clean.body) && !tainted)

	// A response to a request with Authorization, not marked public.
	withAuth := get(ctx, a, url("cc=max-age=60&", "auth"), "Authorization", "Bearer drill-secret")
	settle()
	other := get(ctx, v, url("cc=max-age=60&", "auth"))
	authFetches := originCount(lab, marker("auth"))
	add("a response to a request with Authorization (Cache-Control: max-age=60, not public) is not served to another client",
		fmt.Sprintf("with Authorization %v; other client %v; origin fetched it %d times", withAuth, other, authFetches),
		withAuth.status == 200 && other.status == 200 && bench.CacheVerdict(other.header.Get("Cache-Status")) != "hit" && authFetches == 2)

	// A private response.
	mine := get(ctx, a, url("cc=private,max-age=60&", "private"), "Cookie", "session=attacker")
	settle()
	theirs := get(ctx, v, url("cc=private,max-age=60&", "private"))
	privFetches := originCount(lab, marker("private"))
	add("a Cache-Control: private response is not served to another client",
		fmt.Sprintf("first client %v; other client %v; origin fetched it %d times", mine, theirs, privFetches),
		mine.status == 200 && theirs.status == 200 && bench.CacheVerdict(theirs.header.Get("Cache-Status")) != "hit" && privFetches == 2)

	// Hosts the PoP does not serve.
	host := roots.ServerName
	statuses := map[string]string{}
	allRefused := true
	for name, raw := range map[string]string{
		"Host evil.example":       "GET /gen/1k?" + marker("evil-host") + " HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
		"Host origin.lab":         "GET /gen/1k?" + marker("evil-origin") + " HTTP/1.1\r\nHost: origin.lab\r\nConnection: close\r\n\r\n",
		"absolute-form URI":       "GET https://evil.example/gen/1k?" + marker("evil-abs") + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n",
		"absolute-form to origin": "GET http://10.77.1.10/gen/1k?" + marker("evil-abs-origin") + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n",
	} {
		status, err := rawHTTP1(ctx, attacker, popAddr, roots, raw)
		statuses[name] = fmt.Sprint(status)
		if err != nil {
			statuses[name] = "closed"
		}
		allRefused = allRefused && (err != nil || (status >= 400 && status < 500))
	}
	h2 := get(ctx, a, lab.CDNURL+"/gen/1k?"+marker("evil-h2"), "Host", "evil.example")
	statuses["h2 :authority evil.example"] = fmt.Sprint(h2.status)
	allRefused = allRefused && h2.err == nil && h2.status >= 400 && h2.status < 500
	reached := originCount(lab, marker("evil"))
	add("the PoP fetches nothing for a host it does not serve (Host, absolute-form URI, h2 :authority): 4xx (421), and the origin's log shows nothing",
		fmt.Sprintf("statuses %v; origin requests for them %d", statuses, reached), allRefused && reached == 0)
	return checks
}
