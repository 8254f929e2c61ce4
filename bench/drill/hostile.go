package drill

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/edgecdn/cdn/bench"
)

// hostile attacks a PoP and GeoDNS from one client while another
// client keeps asking the PoP for an object: the malformed HTTP/1.1
// corpus, HTTP/2 rapid reset and CONTINUATION flood, slowloris
// connections, malformed DNS packets, cache-poisoning attempts, and then
// the four resource attacks (slow readers, reset flood, Vary flood,
// breaker attack; see resourceAttacks). Nothing
// may crash, every attack must be refused the right way, the PoP must come
// back to its goroutines and memory, and the other client must not notice.
func hostile(ctx context.Context, lab Lab, t Target) ([]Check, error) {
	attacker, err := clientByName(lab.LabConfig, t.Client)
	if err != nil {
		return nil, err
	}
	bystander, err := clientByName(lab.LabConfig, t.Bystander)
	if err != nil {
		return nil, err
	}
	if err := lab.WaitGeoDNS(ctx); err != nil {
		return nil, err
	}
	host := strings.TrimPrefix(lab.CDNURL, "https://")
	roots := &tls.Config{RootCAs: lab.RootCAs, ServerName: host}
	popPID, geoPID := lab.PID(t.PoP), lab.PID("geodns")
	admin := adminClient(attacker)
	stamp := time.Now().UnixNano()
	object := fmt.Sprintf("%s/gen/1k?hostile=%d-bystander", lab.CDNURL, stamp)
	if o := fetch(ctx, popClient(bystander, t.PoPAddr, roots, false), object); o.err != nil || o.status != 200 {
		return nil, fmt.Errorf("prefetch: %v %d", o.err, o.status)
	}
	before := settle(ctx, admin, t.PoPAddr, popPID, 0, 500*time.Millisecond)

	stopBystander := make(chan struct{})
	var bg sync.WaitGroup
	var by bystanderResult
	bg.Go(func() { by = bystand(ctx, popClient(bystander, t.PoPAddr, roots, false), object, stopBystander) })
	var sl slowlorisResult
	const lorisConns, lorisLimit = 100, 15 * time.Second
	bg.Go(func() { sl = slowloris(ctx, attacker, t.PoPAddr, roots, lorisConns, lorisLimit) })

	var checks []Check
	add := func(exp, measured string, pass bool) {
		checks = append(checks, Check{Drill: "hostile", Expectation: exp, Measured: measured, Pass: pass})
	}
	corpus := HostileHTTP1(host)
	got, expected := map[string]int{}, 0
	var wrong []string
	for _, hr := range corpus {
		status, err := rawHTTP1(ctx, attacker, t.PoPAddr, roots, hr.Raw)
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
	rr, rrAfter := h2Attack(ctx, attacker, t.PoPAddr, roots, host, rapidReset)
	cf, cfAfter := h2Attack(ctx, attacker, t.PoPAddr, roots, host, continuationFlood)
	dnsSummary, dnsOK := dnsAttack(ctx, attacker, lab.Resolver, host, t.PoPAddr)
	poison := poisonChecks(ctx, lab, attacker, bystander, t.PoPAddr, roots, stamp)

	bg.Go(func() { time.Sleep(time.Second); close(stopBystander) }) // the bystander outlives the slowloris by a second
	bg.Wait()
	after := settle(ctx, admin, t.PoPAddr, popPID, before.goroutines+20, 10*time.Second)
	smuggled := originCount(lab, "path=/smuggled")

	add(fmt.Sprintf("malformed HTTP/1.1 corpus (%d requests from %s): each gets a 4xx, a closed connection or its RFC-allowed answer; nothing smuggled reaches the origin", len(corpus), t.Client),
		fmt.Sprintf("%d/%d as expected %s; wrong %v; origin saw /smuggled %d times", expected, len(corpus), sortedCounts(got), wrong, smuggled),
		expected == len(corpus) && smuggled == 0)
	add("HTTP/2 rapid reset (2000 streams opened and cancelled) and CONTINUATION flood (200 x 15 kB frames): the PoP answers a normal request after each",
		fmt.Sprintf("rapid reset: %s, then %s; continuation flood: %s, then %s", rr, rrAfter, cf, cfAfter),
		rrAfter == "200" && cfAfter == "200")
	add(fmt.Sprintf("slowloris: %d connections trickling header bytes are cut by the read-header timeout (10 s) within %v", lorisConns, lorisLimit),
		sl.String(), sl.cut == lorisConns && sl.opened == lorisConns)
	add("malformed DNS packets (truncated, bad labels, pointer loop, wrong counts, bad opcode and ECS, garbage) each get what the corpus expects: FORMERR, NOTIMP or silence; 2000 random packets; geodns answers a good query after",
		dnsSummary, dnsOK)
	popAlive, geoAlive := alive(popPID) && lab.PID(t.PoP) == popPID, alive(geoPID) && lab.PID("geodns") == geoPID
	add("no crash: "+t.PoP+" and geodns are the same live processes", fmt.Sprintf("%s pid %d alive %v; geodns pid %d alive %v", t.PoP, popPID, popAlive, geoPID, geoAlive), popAlive && geoAlive)
	const rssMargin = 64 << 10 // KiB
	add(t.PoP+" comes back to its goroutines (within 20, in 10 s) and memory (within 64 MiB) of before",
		fmt.Sprintf("before %v; after %v", before, after),
		after.goroutines >= 0 && after.goroutines <= before.goroutines+20 && after.rssKiB > 0 && after.rssKiB-before.rssKiB < rssMargin)
	add(fmt.Sprintf("a well-behaved client (%s, a new connection each request) keeps getting 200s throughout", t.Bystander),
		by.String(), by.failed == 0 && by.ok >= 10)
	checks = append(checks, poison...)
	return append(checks, resourceAttacks(ctx, attackEnv{attacker: attacker, bystander: bystander, popAddr: t.PoPAddr, host: host,
		roots: roots, popPID: popPID, admin: admin, stamp: stamp})...), nil
}

// rawHTTP1 sends raw bytes on a new TLS connection (ALPN http/1.1) and
// reads one response's status; an error means the PoP closed the
// connection without one.
func rawHTTP1(ctx context.Context, c bench.LabClient, popAddr string, roots *tls.Config, raw string) (int, error) {
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
