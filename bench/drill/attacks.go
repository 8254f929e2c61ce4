package drill

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/edgecdn/cdn/bench"
)

// The four resource attacks of the hostile drill: what one client with a
// laptop did to a PoP before round 2 (slow readers holding memory, resets
// leaving fetches running, a Vary index growing without bound, clients
// ejecting the origin), each with its number beside pass or fail.

// attackEnv is what the resource attacks share.
type attackEnv struct {
	attacker, bystander bench.LabClient
	popAddr, host       string
	roots               *tls.Config
	popPID              int
	admin               *http.Client
	stamp               int64
}

// resourceAttacks runs the four attacks in turn and returns their checks.
func resourceAttacks(ctx context.Context, env attackEnv) []Check {
	var checks []Check
	add := func(exp, measured string, pass bool) {
		checks = append(checks, Check{Drill: "hostile", Expectation: exp, Measured: measured, Pass: pass})
	}
	const slowLimit = 160 << 10 // KiB
	grew, detail := env.slowReaders(ctx)
	add("slow readers (one HTTP/2 connection with a zero window asking for 150 distinct 64 MiB objects, 30 HTTP/1.1 connections that never read): the PoP's memory grows by at most 160 MiB",
		fmt.Sprintf("peak RSS growth %.1f MiB; %s", float64(grew)/1024, detail), !strings.HasPrefix(detail, "rss:") && !strings.HasPrefix(detail, "dial:") && grew <= slowLimit)

	left, by := env.resetFlood(ctx)
	add("reset flood (5 HTTP/2 connections open and reset 250 requests each for slow objects, then leave): at most 16 origin requests still outstanding 2 s later, and another client's misses get 200",
		fmt.Sprintf("%d outstanding; another client: %s", left, by), left >= 0 && left <= 16 && by.failed == 0 && by.ok > 0)

	const varyLimit = 64 << 10 // KiB
	vgrew, vdetail := env.varyFlood(ctx)
	add("Vary flood (12,000 requests for one URL that varies on X-Foo, each with its own value): the PoP's memory grows by at most 64 MiB",
		fmt.Sprintf("RSS growth %.1f MiB; %s", float64(vgrew)/1024, vdetail), vdetail != "" && !strings.HasPrefix(vdetail, "rss:") && vgrew <= varyLimit)

	okRate, bdetail := env.breakerAttack(ctx)
	add("breaker attack (5 s of requests to a path the origin answers 503): another client's misses still succeed (at least 99%)",
		fmt.Sprintf("%.1f%% succeeded; %s", 100*okRate, bdetail), okRate >= 0.99)
	return checks
}

// h2Conn is a raw HTTP/2 client connection for attacks.
type h2Conn struct {
	fr   *http2.Framer
	conn *tls.Conn
	enc  *hpack.Encoder
	buf  bytes.Buffer
	next uint32
}

func (e attackEnv) dialH2(ctx context.Context, settings ...http2.Setting) (*h2Conn, error) {
	conn, err := dialTLS(ctx, e.attacker, e.popAddr, e.roots, "h2")
	if err != nil {
		return nil, err
	}
	io.WriteString(conn, http2.ClientPreface)
	c := &h2Conn{fr: http2.NewFramer(conn, conn), conn: conn, next: 1}
	c.enc = hpack.NewEncoder(&c.buf)
	if err := c.fr.WriteSettings(settings...); err != nil {
		conn.Close()
		return nil, err
	}
	go func() { // read and drop what the PoP sends, acknowledging nothing but SETTINGS
		for {
			f, err := c.fr.ReadFrame()
			if err != nil {
				return
			}
			if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
				c.fr.WriteSettingsAck()
			}
		}
	}()
	return c, nil
}

func (c *h2Conn) get(host, path string) (uint32, error) {
	c.buf.Reset()
	for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", host}, {":path", path}} {
		c.enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	id := c.next
	c.next += 2
	return id, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.buf.Bytes(), EndStream: true, EndHeaders: true})
}

// peakRSS samples the PoP's resident size every 250 ms for d and returns
// the peak growth over base (KiB).
func (e attackEnv) peakRSS(d time.Duration, base int64) int64 {
	peak := base
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if rss, err := bench.RSSKiB(e.popPID); err == nil {
			peak = max(peak, rss)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return peak - base
}

func (e attackEnv) slowReaders(ctx context.Context) (int64, string) {
	base, err := bench.RSSKiB(e.popPID)
	if err != nil {
		return -1, "rss: " + err.Error()
	}
	c, err := e.dialH2(ctx, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	if err != nil {
		return -1, "dial: " + err.Error()
	}
	defer c.conn.Close()
	sent := 0
	for i := range 150 {
		if _, err := c.get(e.host, fmt.Sprintf("/gen/64m?slow=%d-%d", e.stamp, i)); err != nil {
			break
		}
		sent++
	}
	var h1 []io.Closer
	for i := range 30 {
		conn, err := dialTLS(ctx, e.attacker, e.popAddr, e.roots, "http/1.1")
		if err != nil {
			continue
		}
		h1 = append(h1, conn)
		fmt.Fprintf(conn, "GET /gen/64m?slow1=%d-%d HTTP/1.1\r\nHost: %s\r\n\r\n", e.stamp, i, e.host)
	}
	grew := e.peakRSS(8*time.Second, base)
	for _, c := range h1 {
		c.Close()
	}
	return grew, fmt.Sprintf("%d h2 streams and %d HTTP/1.1 connections held for 8 s", sent, len(h1))
}

func (e attackEnv) resetFlood(ctx context.Context) (int, bystanderResult) {
	var wg sync.WaitGroup
	for c := range 5 {
		wg.Go(func() {
			conn, err := e.dialH2(ctx)
			if err != nil {
				return
			}
			defer conn.conn.Close()
			for i := range 250 {
				id, err := conn.get(e.host, fmt.Sprintf("/gen/1k?delay=20s&reset=%d-%d-%d", e.stamp, c, i))
				if err != nil || conn.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	stop := make(chan struct{})
	var by bystanderResult
	var bg sync.WaitGroup
	n := atomic.Int64{}
	bg.Go(func() {
		by = bystandMisses(ctx, popClient(e.bystander, e.popAddr, e.roots, false), func() string {
			return fmt.Sprintf("https://%s/gen/1k?after-reset=%d-%d", e.host, e.stamp, n.Add(1))
		}, stop)
	})
	time.Sleep(2 * time.Second)
	text, err := popMetrics(ctx, e.admin, e.popAddr)
	close(stop)
	bg.Wait()
	if err != nil {
		return -1, by
	}
	return int(metricSum(text, "pop_upstream_outstanding_requests")), by
}

func (e attackEnv) varyFlood(ctx context.Context) (int64, string) {
	base, err := bench.RSSKiB(e.popPID)
	if err != nil {
		return -1, "rss: " + err.Error()
	}
	hc := popClient(e.attacker, e.popAddr, e.roots, true)
	url := fmt.Sprintf("https://%s/gen/1k?vary=X-Foo&v=%d", e.host, e.stamp)
	var sent, ok atomic.Int64
	var wg sync.WaitGroup
	for w := range 32 {
		wg.Go(func() {
			for i := w; i < 12000; i += 32 {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					return
				}
				req.Header.Set("X-Foo", fmt.Sprintf("%d-%064d", i, i))
				resp, err := hc.Do(req)
				sent.Add(1)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	time.Sleep(time.Second) // let the stores land
	rss, err := bench.RSSKiB(e.popPID)
	if err != nil {
		return -1, "rss: " + err.Error()
	}
	return rss - base, fmt.Sprintf("%d requests, %d answered 200", sent.Load(), ok.Load())
}

func (e attackEnv) breakerAttack(ctx context.Context) (float64, string) {
	stop := make(chan struct{})
	var attacks atomic.Int64
	var wg sync.WaitGroup
	hc := popClient(e.attacker, e.popAddr, e.roots, true)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				o := fetch(ctx, hc, fmt.Sprintf("https://%s/gen/1k?status=503&cc=no-store&breaker=%d-%d-%d", e.host, e.stamp, w, i))
				_ = o
				attacks.Add(1)
			}
		})
	}
	var by bystanderResult
	n := atomic.Int64{}
	wg.Go(func() {
		by = bystandMisses(ctx, popClient(e.bystander, e.popAddr, e.roots, false), func() string {
			return fmt.Sprintf("https://%s/gen/1k?during-breaker=%d-%d", e.host, e.stamp, n.Add(1))
		}, stop)
	})
	time.Sleep(5 * time.Second)
	close(stop)
	wg.Wait()
	total := by.ok + by.failed
	if total == 0 {
		return 0, "the other client made no request"
	}
	return float64(by.ok) / float64(total), fmt.Sprintf("%d attack requests; another client: %s", attacks.Load(), by)
}
