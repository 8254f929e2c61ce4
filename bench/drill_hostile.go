package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// DrillHostile attacks a PoP and GeoDNS from one client while another
// client keeps asking the PoP for an object: the malformed HTTP/1.1
// corpus, HTTP/2 rapid reset and CONTINUATION flood, slowloris
// connections, malformed DNS packets, cache-poisoning attempts, and then
// the four resource attacks (slow readers, reset flood, Vary flood,
// breaker attack; see resourceAttacks). Nothing
// may crash, every attack must be refused the right way, the PoP must come
// back to its goroutines and memory, and the other client must not notice.
func DrillHostile(ctx context.Context, cfg LabConfig, ctl LabControl, popName, popAddr, attackerName, bystanderName string) ([]DrillCheck, error) {
	attacker, err := clientByName(cfg, attackerName)
	if err != nil {
		return nil, err
	}
	bystander, err := clientByName(cfg, bystanderName)
	if err != nil {
		return nil, err
	}
	if err := ctl.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	host := strings.TrimPrefix(cfg.CDNURL, "https://")
	roots := &tls.Config{RootCAs: cfg.RootCAs, ServerName: host}
	popPID, geoPID := ctl.PID(popName), ctl.PID("geodns")
	admin := adminClient(attacker)
	stamp := time.Now().UnixNano()
	object := fmt.Sprintf("%s/gen/1k?hostile=%d-bystander", cfg.CDNURL, stamp)
	if o := fetch(ctx, popClient(bystander, popAddr, roots, false), object); o.err != nil || o.status != 200 {
		return nil, fmt.Errorf("prefetch: %v %d", o.err, o.status)
	}
	before := settle(ctx, admin, popAddr, popPID, 0, 500*time.Millisecond)

	stopBystander := make(chan struct{})
	var bg sync.WaitGroup
	var by bystanderResult
	bg.Go(func() { by = bystand(ctx, popClient(bystander, popAddr, roots, false), object, stopBystander) })
	var sl slowlorisResult
	const lorisConns, lorisLimit = 100, 15 * time.Second
	bg.Go(func() { sl = slowloris(ctx, attacker, popAddr, roots, lorisConns, lorisLimit) })

	var checks []DrillCheck
	add := func(exp, measured string, pass bool) {
		checks = append(checks, DrillCheck{Drill: "hostile", Expectation: exp, Measured: measured, Pass: pass})
	}
	corpus := HostileHTTP1(host)
	got, expected := map[string]int{}, 0
	var wrong []string
	for _, hr := range corpus {
		status, err := rawHTTP1(ctx, attacker, popAddr, roots, hr.Raw)
		k := fmt.Sprint(status)
		if err != nil {
			k = "closed"
		}
		got[k]++
		if err != nil || (status >= 400 && status < 500) || status == hr.Also {
			expected++
		} else {
			wrong = append(wrong, fmt.Sprintf("%s: %d", hr.Name, status))
		}
	}
	rr, rrAfter := h2Attack(ctx, attacker, popAddr, roots, host, rapidReset)
	cf, cfAfter := h2Attack(ctx, attacker, popAddr, roots, host, continuationFlood)
	dnsSummary, dnsOK := dnsAttack(ctx, attacker, cfg.Resolver, host, popAddr)
	poison := poisonChecks(ctx, cfg, ctl, attacker, bystander, popAddr, roots, stamp)

	bg.Go(func() { time.Sleep(time.Second); close(stopBystander) }) // the bystander outlives the slowloris by a second
	bg.Wait()
	after := settle(ctx, admin, popAddr, popPID, before.goroutines+20, 10*time.Second)
	logData, _ := os.ReadFile(ctl.ServiceLog("origin"))
	smuggled := strings.Count(string(logData), "path=/smuggled")

	add(fmt.Sprintf("malformed HTTP/1.1 corpus (%d requests from %s): each gets a 4xx, a closed connection or its RFC-allowed answer; nothing smuggled reaches the origin", len(corpus), attackerName),
		fmt.Sprintf("%d/%d as expected %s; wrong %v; origin saw /smuggled %d times", expected, len(corpus), sortedCounts(got), wrong, smuggled),
		expected == len(corpus) && smuggled == 0)
	add("HTTP/2 rapid reset (2000 streams opened and cancelled) and CONTINUATION flood (200 x 15 kB frames): the PoP answers a normal request after each",
		fmt.Sprintf("rapid reset: %s, then %s; continuation flood: %s, then %s", rr, rrAfter, cf, cfAfter),
		rrAfter == "200" && cfAfter == "200")
	add(fmt.Sprintf("slowloris: %d connections trickling header bytes are cut by the read-header timeout (10 s) within %v", lorisConns, lorisLimit),
		sl.String(), sl.cut == lorisConns && sl.opened == lorisConns)
	add("malformed DNS packets (truncated, bad labels, pointer loop, wrong counts, bad opcode and ECS, garbage) each get what the corpus expects: FORMERR, NOTIMP or silence; 2000 random packets; geodns answers a good query after",
		dnsSummary, dnsOK)
	popAlive, geoAlive := alive(popPID) && ctl.PID(popName) == popPID, alive(geoPID) && ctl.PID("geodns") == geoPID
	add("no crash: "+popName+" and geodns are the same live processes", fmt.Sprintf("%s pid %d alive %v; geodns pid %d alive %v", popName, popPID, popAlive, geoPID, geoAlive), popAlive && geoAlive)
	const rssMargin = 64 << 10 // KiB
	add(popName+" comes back to its goroutines (within 20, in 10 s) and memory (within 64 MiB) of before",
		fmt.Sprintf("before %v; after %v", before, after),
		after.goroutines >= 0 && after.goroutines <= before.goroutines+20 && after.rssKiB > 0 && after.rssKiB-before.rssKiB < rssMargin)
	add(fmt.Sprintf("a well-behaved client (%s, a new connection each request) keeps getting 200s throughout", bystanderName),
		by.String(), by.failed == 0 && by.ok >= 10)
	checks = append(checks, poison...)
	return append(checks, resourceAttacks(ctx, attackEnv{attacker: attacker, bystander: bystander, popAddr: popAddr, host: host,
		roots: roots, popPID: popPID, admin: admin, stamp: stamp})...), nil
}

// rawHTTP1 sends raw bytes on a new TLS connection (ALPN http/1.1) and
// reads one response's status; an error means the PoP closed the
// connection without one.
func rawHTTP1(ctx context.Context, c LabClient, popAddr string, roots *tls.Config, raw string) (int, error) {
	conn, err := dialTLS(ctx, c, popAddr, roots, "http/1.1")
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, raw)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func dialTLS(ctx context.Context, c LabClient, popAddr string, roots *tls.Config, proto string) (*tls.Conn, error) {
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

// An h2 attack writes frames on a fresh connection.
type h2Frames func(fr *http2.Framer, headers func() []byte) int

func rapidReset(fr *http2.Framer, headers func() []byte) int {
	n := 0
	for i := uint32(1); i < 4000; i += 2 {
		if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: i, BlockFragment: headers(), EndStream: true, EndHeaders: true}) != nil ||
			fr.WriteRSTStream(i, http2.ErrCodeCancel) != nil {
			break
		}
		n += 2
	}
	return n
}

func continuationFlood(fr *http2.Framer, headers func() []byte) int {
	if fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: headers(), EndHeaders: false}) != nil {
		return 0
	}
	junk := bytes.Repeat([]byte{0x40, 0x01, 'x', 0x01, 'y'}, 3000)
	n := 1
	for range 200 {
		if fr.WriteContinuation(1, false, junk) != nil {
			break
		}
		n++
	}
	return n
}

// h2Attack runs one attack and reports what the PoP answered (frames by
// type, a GOAWAY's code, how the connection ended), then the status of a
// normal request on a new connection.
func h2Attack(ctx context.Context, c LabClient, popAddr string, roots *tls.Config, host string, attack h2Frames) (string, string) {
	conn, err := dialTLS(ctx, c, popAddr, roots, "h2")
	if err != nil {
		return "dial: " + err.Error(), ""
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, http2.ClientPreface)
	fr := http2.NewFramer(conn, conn)
	fr.WriteSettings()
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	headers := func() []byte {
		buf.Reset()
		for _, kv := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", host}, {":path", "/gen/1k"}} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		return append([]byte(nil), buf.Bytes()...)
	}
	// Read what the server says while writing, so neither side blocks.
	frames := map[string]int{}
	var goaway string
	var rd sync.WaitGroup
	rd.Go(func() {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			frames[f.Header().Type.String()]++
			if g, ok := f.(*http2.GoAwayFrame); ok {
				goaway = g.ErrCode.String()
			}
		}
	})
	start := time.Now()
	sent := attack(fr, headers)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second)) // drain until the PoP hangs up or goes quiet
	rd.Wait()
	conn.Close()
	keys := make([]string, 0, len(frames))
	for k, v := range frames {
		keys = append(keys, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(keys)
	what := fmt.Sprintf("%d frames sent in %v, PoP sent %v", sent, time.Since(start).Round(time.Millisecond), keys)
	if goaway != "" {
		what += ", GOAWAY " + goaway
	}
	o := fetch(ctx, popClient(c, popAddr, roots, false), "https://"+host+"/gen/1k")
	if o.err != nil {
		return what, "error: " + o.err.Error()
	}
	return what, fmt.Sprint(o.status)
}

type slowlorisResult struct {
	opened, cut      int
	first, last      time.Duration
	dialErr, stillUp int
}

func (r slowlorisResult) String() string {
	return fmt.Sprintf("opened %d (dial errors %d), cut %d between %v and %v, still open at the limit %d",
		r.opened, r.dialErr, r.cut, r.first.Round(100*time.Millisecond), r.last.Round(100*time.Millisecond), r.stillUp)
}

// slowloris opens n connections and sends a request's header one byte
// every half second, until the PoP closes each or limit passes.
func slowloris(ctx context.Context, c LabClient, popAddr string, roots *tls.Config, n int, limit time.Duration) slowlorisResult {
	var mu sync.Mutex // guards r
	var r slowlorisResult
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 10 * time.Millisecond) // spread the handshakes
			conn, err := dialTLS(ctx, c, popAddr, roots, "http/1.1")
			mu.Lock()
			if err != nil {
				r.dialErr++
				mu.Unlock()
				return
			}
			r.opened++
			mu.Unlock()
			defer conn.Close()
			start := time.Now()
			head := "GET /gen/1k HTTP/1.1\r\nHost: " + roots.ServerName + "\r\n" + strings.Repeat("X-Slow: loris\r\n", 100)
			one := make([]byte, 1)
			for k := 0; time.Since(start) < limit && ctx.Err() == nil; k++ {
				_, werr := conn.Write([]byte{head[k%len(head)]})
				conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
				_, rerr := conn.Read(one)
				if werr != nil || (rerr != nil && !isTimeout(rerr)) || rerr == nil {
					took := time.Since(start)
					mu.Lock()
					if r.cut == 0 || took < r.first {
						r.first = took
					}
					r.last = max(r.last, took)
					r.cut++
					mu.Unlock()
					return
				}
			}
			mu.Lock()
			r.stillUp++
			mu.Unlock()
		})
	}
	wg.Wait()
	return r
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

type bystanderResult struct {
	ok, failed int
	statuses   map[string]int
	slowest    time.Duration
}

func (r bystanderResult) String() string {
	return fmt.Sprintf("%d requests 200, %d failed %v, slowest %v", r.ok, r.failed, sortedCounts(r.statuses), r.slowest.Round(time.Millisecond))
}

// bystand requests url every 100 ms until stop.
func bystand(ctx context.Context, hc *http.Client, url string, stop chan struct{}) bystanderResult {
	return bystandMisses(ctx, hc, func() string { return url }, stop)
}

// dnsAttack sends the malformed corpus (each on its own socket, waiting
// for the reply or its absence) and seeded random packets, then a good
// query, which must be answered with the attacker's PoP.
func dnsAttack(ctx context.Context, c LabClient, resolver, host, popAddr string) (string, bool) {
	ok := true
	got := map[string]int{}
	var wrong []string
	corpus := MalformedDNSQueries(host + ".")
	for _, m := range corpus {
		conn, err := c.Dial(ctx, "udp", resolver)
		if err != nil {
			return "dial: " + err.Error(), false
		}
		out := dnsOutcome(conn, m.Packet, 400*time.Millisecond)
		conn.Close()
		got[out]++
		found := false
		for _, w := range m.Want {
			found = found || w == out
		}
		if !found {
			ok = false
			wrong = append(wrong, m.Name+": "+out+";")
		}
	}
	// Random packets: fired without waiting; what comes back is counted.
	random := RandomDNSPackets(uint64(time.Now().UnixNano()), 2000)
	replies := map[string]int{}
	if conn, err := c.Dial(ctx, "udp", resolver); err == nil {
		var rd sync.WaitGroup
		rd.Go(func() {
			buf := make([]byte, 65536)
			for {
				conn.SetReadDeadline(time.Now().Add(time.Second))
				n, err := conn.Read(buf)
				if err != nil {
					return
				}
				if n < 12 {
					replies["short"]++
					continue
				}
				replies[rcodeName(buf[3]&0x0f)]++
			}
		})
		for i, p := range random {
			conn.Write(p)
			if i%100 == 99 {
				time.Sleep(5 * time.Millisecond) // stay under the delay line's queue
			}
		}
		rd.Wait()
		conn.Close()
	}
	ips, err := newResolver(resolver, c.Dial).LookupHost(ctx, host)
	good := err == nil && len(ips) > 0 && ips[0] == popAddr
	ok = ok && good
	return fmt.Sprintf("%d kinds %s, unexpected %v; %d random packets got replies %s; then %s → %v %v",
		len(corpus), sortedCounts(got), wrong, len(random), sortedCounts(replies), host, ips, err), ok
}
