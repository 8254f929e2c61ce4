package pop

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgecdn/cdn/cache"
	"github.com/edgecdn/cdn/pop/accesslog"
)

// This file connects the PoP to its access log (package accesslog): the
// file Config.AccessLog names, a Record for every response of the
// ordinary path and of the three fast paths (built only when the log is
// Wanted: a file or a follower of GET /logs), the admin listener's /logs
// stream, and the log's metrics.

// openAccessLog opens what cfg.AccessLog names: nil without one, the
// writer or standard output for "-", else the file, created if missing
// and appended to. closer is the file to close, or nil.
func openAccessLog(cfg *Config) (w io.Writer, closer io.Closer, err error) {
	switch cfg.AccessLog {
	case "":
		return cfg.AccessLogWriter, nil, nil
	case "-":
		if cfg.AccessLogWriter != nil {
			return cfg.AccessLogWriter, nil, nil
		}
		return os.Stdout, nil, nil
	}
	f, err := os.OpenFile(cfg.AccessLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("access_log: %w; want a writable file, or - for standard output", err)
	}
	return f, f, nil
}

// logExchange logs a response of the ordinary path.
func (s *Server) logExchange(r *http.Request, sw *statusWriter) {
	x := sw.x
	if !sw.stamped {
		x.ttfb = time.Since(x.start)
		x.result = cache.ResultPass // nothing was sent
	}
	origin, server, _ := x.upstreamTimes()
	rec := accesslog.Record{
		Time: x.start, Client: r.RemoteAddr, ProtoMajor: r.ProtoMajor,
		Method: r.Method, Host: r.Host, Path: r.RequestURI,
		Status: sw.code(), Bytes: sw.bytes, Cache: x.result, CacheStatus: x.cacheStatus,
		TTFB: x.ttfb, Origin: origin, Upstream: server,
	}
	if rec.Path == "" {
		rec.Path = r.URL.RequestURI()
	}
	if r.TLS != nil {
		rec.TLSVersion, rec.Resumed, rec.EarlyData = r.TLS.Version, r.TLS.DidResume, !r.TLS.HandshakeComplete
	}
	s.alog.Log(&rec)
}

// hitClient is what a fast path knows of a TLS connection for the
// access log and Server-Timing, kept for the connection's life.
type hitClient struct {
	remote  string  // ip:port
	tls     uint16  // TLS version
	resumed bool    // the session was resumed
	rtt     *tcpRTT // nil: unknown (QUIC gives its own)
}

func newHitClient(remote string, st *tls.ConnectionState, rtt *tcpRTT) hitClient {
	return hitClient{remote: remote, tls: st.Version, resumed: st.DidResume, rtt: rtt}
}

// logHit logs a hit a fast path served: a fresh 200 from the cache. host
// and path may be views of a read buffer (Log copies them).
func (s *Server) logHit(c *hitClient, major int, early bool, method, host, path string, bytes int64, cacheStatus []byte, start time.Time, ttfb time.Duration) {
	s.alog.Log(&accesslog.Record{
		Time: start, Client: c.remote, ProtoMajor: major, TLSVersion: c.tls, Resumed: c.resumed, EarlyData: early,
		Method: method, Host: host, Path: path, Status: http.StatusOK, Bytes: bytes,
		Cache: cache.ResultHit, CacheStatus: view(cacheStatus), TTFB: ttfb,
	})
}

// followLogs is GET /logs on the admin listener: the access log's lines
// as they happen, newline-delimited JSON, filtered by the query
// (accesslog.ParseFilter).
func (s *Server) followLogs(w http.ResponseWriter, r *http.Request) {
	f, err := accesslog.ParseFilter(r.URL.Query())
	if err != nil {
		http.Error(w, "logs: "+err.Error(), http.StatusBadRequest)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/x-ndjson")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush() // the client sees the stream start before the first line
	err = s.alog.Follow(r.Context(), &streamWriter{w: w, rc: rc}, f)
	if err != nil && !errors.Is(err, accesslog.ErrTooSlow) {
		s.log.Debug("logs follower ended", "remote", r.RemoteAddr, "error", err)
	}
}

// streamWriter writes a follower's lines to its response, flushed at
// once, and lets the log cut a write short when it drops the follower.
type streamWriter struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

func (sw *streamWriter) Write(p []byte) (int, error) {
	n, err := sw.w.Write(p)
	if err == nil {
		err = sw.rc.Flush()
	}
	return n, err
}

func (sw *streamWriter) SetWriteDeadline(t time.Time) error { return sw.rc.SetWriteDeadline(t) }

// accessLogCollector exports the access log's counts.
type accessLogCollector struct{ l *accesslog.Logger }

var (
	descLogLines = prometheus.NewDesc("pop_access_log_lines_total",
		"Access log lines written to the access_log file.", nil, nil)
	descLogDropped = prometheus.NewDesc("pop_access_log_dropped_total",
		"Access log lines lost because a queue was full (a slow disk, or the PoP out of CPU) or a write failed.", nil, nil)
	descLogErrors = prometheus.NewDesc("pop_access_log_write_errors_total",
		"Failed writes to the access_log file.", nil, nil)
	descLogFollowers = prometheus.NewDesc("pop_logs_followers",
		"Clients following GET /logs on the admin listener.", nil, nil)
	descLogFollowersDropped = prometheus.NewDesc("pop_logs_followers_dropped_total",
		"GET /logs followers whose stream was ended because they read too slowly.", nil, nil)
)

func (c accessLogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLogLines, descLogDropped, descLogErrors, descLogFollowers, descLogFollowersDropped} {
		ch <- d
	}
}

func (c accessLogCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.l.Stats()
	ch <- prometheus.MustNewConstMetric(descLogLines, prometheus.CounterValue, float64(st.Lines))
	ch <- prometheus.MustNewConstMetric(descLogDropped, prometheus.CounterValue, float64(st.Dropped))
	ch <- prometheus.MustNewConstMetric(descLogErrors, prometheus.CounterValue, float64(st.WriteErrors))
	ch <- prometheus.MustNewConstMetric(descLogFollowers, prometheus.GaugeValue, float64(st.Followers))
	ch <- prometheus.MustNewConstMetric(descLogFollowersDropped, prometheus.CounterValue, float64(st.FollowersDropped))
}
