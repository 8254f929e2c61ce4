// Package origin is a real static origin server for the CDN's lab, tests and
// benchmarks: something honest to put behind a PoP.
//
// A Server serves the files under Config.Root the way a careful origin
// should, through http.ServeContent: strong ETags, Last-Modified,
// conditional GET (If-None-Match, If-Modified-Since → 304), HEAD, single and
// multipart byte ranges and Content-Type. Cache-Control comes from
// Config.Rules, matched against the served file's path, first match wins,
// else Config.DefaultCacheControl. Paths never leave Root: ".." is cleaned
// away and files are opened through an os.Root, which refuses symbolic links
// that point outside it. A directory serves its index.html or 404; there are
// no listings. Methods other than GET and HEAD get 405 with Allow.
//
// Generated objects of any size need no files:
//
//	GET /gen/<size>            size as 1234, 1k, 100k, 1m or 1g (KiB, MiB, GiB), at most 1 GiB
//	    ?cc=no-store           Cache-Control of the response (default "public, max-age=3600";
//	                           "?cc=" sends none)
//	    ?delay=2s              wait this long before the headers, at most 10m; a client that
//	                           goes away ends the wait
//	    ?status=503            answer this status (200 to 599) with a short text body instead
//	    ?vary=Accept-Encoding  set Vary
//
// Their bytes are the same on every request and every run (a fixed text
// pattern, copied from a buffer built once per Server), their ETag is strong
// and derived from the size, and ranges and conditional requests work as for
// files. Other query parameters are ignored, so cache-busting ones are fine.
//
// One object changes on its own, for the lab's demo page:
//
//	GET /clock           {"tick": N, "changed": "2026-...Z", "period_s": 5}: a new tick every
//	                     ClockPeriod, with that period's ETag and Last-Modified and a max-age
//	                     of the seconds left in it
//
// Two endpoints are for operators and tests:
//
//	GET /healthz         200 "ok", Cache-Control: no-store
//	GET /_origin/stats   JSON {"requests": N, "by_path": {"/gen/1k": 3}, "tls_handshakes": N}
//
// Stats counts every request except those two, so a test in another process
// can tell how many requests reached the origin through a CDN. The same
// numbers are in (*Server).Stats and (*Server).Requests.
//
// With Config.LogRequests, each request ends with one Info log line (method,
// path, status, bytes, proto, remote, duration, and query when there is
// one); health and stats requests log at Debug. A request whose client left
// before any answer logs status 499, as nginx does.
//
// A Server is an http.Handler. It also serves itself the net/http way:
// listen first, then Serve (plain HTTP/1.1) or ServeTLS (HTTP/2 and
// HTTP/1.1), and stop with Shutdown (drain) or Close (now):
//
//	srv, err := origin.New(origin.Config{Root: "www"})
//	ln, err := net.Listen("tcp", "127.0.0.1:0")
//	go srv.ServeTLS(ln, cert)
//	defer srv.Close()
package origin
