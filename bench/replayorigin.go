package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/edgecdn/cdn/origin"
)

// ReplayOrigin is an origin for replays that counts what it served: the
// project's origin (origin.Server, generated objects only) behind a
// handler that counts the requests for /gen/ and the body bytes it wrote
// for them (each write counted as it starts, so a client that has its
// answer finds it counted). Put the cache under test in front of its URL.
// It follows net/http: ListenReplayOrigin, then Serve, then Close.
type ReplayOrigin struct {
	ln       net.Listener
	hs       *http.Server
	requests atomic.Int64
	bytes    atomic.Int64
}

// ListenReplayOrigin listens on addr (host:port; port 0 picks one) for
// plain HTTP.
func ListenReplayOrigin(addr string) (*ReplayOrigin, error) {
	srv, err := origin.New(origin.Config{})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("replay origin: %w", err)
	}
	o := &ReplayOrigin{ln: ln}
	o.hs = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, "/gen/") {
				srv.ServeHTTP(w, r)
				return
			}
			o.requests.Add(1)
			srv.ServeHTTP(&countingWriter{ResponseWriter: w, n: &o.bytes}, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
	}
	return o, nil
}

// URL is the origin's base URL, such as http://127.0.0.1:41234.
func (o *ReplayOrigin) URL() string { return "http://" + o.ln.Addr().String() }

// Serve serves until Close and then returns http.ErrServerClosed.
func (o *ReplayOrigin) Serve() error { return o.hs.Serve(o.ln) }

// Close closes the listener and every connection now.
func (o *ReplayOrigin) Close() error { return o.hs.Close() }

// Served returns the /gen/ requests served so far and their body bytes.
func (o *ReplayOrigin) Served(context.Context) (OriginServed, error) {
	return OriginServed{Requests: o.requests.Load(), Bytes: o.bytes.Load()}, nil
}

// countingWriter adds the body bytes written to n. It counts them before
// it writes them: once they are on the wire the cache can pass them on and
// the replay's client can have its whole answer, and read the counts,
// before this handler's goroutine runs again. Counted after the write, a
// fetch that ended just before Replay read the counts was missing from
// them (or, at the warm-up's end, counted in the window).
type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n.Add(int64(len(p)))
	n, err := w.ResponseWriter.Write(p)
	if n < len(p) {
		w.n.Add(int64(n - len(p))) // not written: the connection failed
	}
	return n, err
}

// OriginStats reads what an origin.Server in another process has served
// from its /_origin/stats: every request but health and stats, and, for
// the bytes, each /gen/<size> path's count times its size. That is exact
// for whole-object GETs; a HEAD, a 304 or a range is counted as the whole
// object, and paths past the origin's origin.MaxStatsPaths distinct ones
// are Uncounted.
type OriginStats struct {
	// URL is the origin's base URL, such as http://127.0.0.1:9000.
	URL string
	// Client fetches the stats. If nil, a client with a 10s timeout.
	Client *http.Client
}

// Served reads the origin's stats.
func (o OriginStats) Served(ctx context.Context) (OriginServed, error) {
	c := o.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	url := strings.TrimSuffix(o.URL, "/") + "/_origin/stats"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return OriginServed{}, fmt.Errorf("origin stats: %w", err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return OriginServed{}, fmt.Errorf("origin stats: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return OriginServed{}, fmt.Errorf("origin stats: GET %s: %s; want 200 from the project's origin", url, resp.Status)
	}
	var st origin.Stats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return OriginServed{}, fmt.Errorf("origin stats: GET %s: %w", url, err)
	}
	return servedFromStats(st), nil
}

// servedFromStats counts the bytes of st's /gen/<size> paths.
func servedFromStats(st origin.Stats) OriginServed {
	s := OriginServed{Requests: st.Requests}
	for path, n := range st.ByPath {
		size, ok := strings.CutPrefix(path, "/gen/")
		if !ok {
			continue
		}
		b, err := origin.ParseSize(size)
		if err != nil {
			continue // answered 400: no object bytes
		}
		s.Bytes += n * b
	}
	s.Uncounted = st.ByPath[origin.OtherPaths]
	return s
}
