package drill

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/edgecdn/cdn/bench"
)

// slowlorisResult is how slowloris's connections ended.
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
func slowloris(ctx context.Context, c bench.LabClient, popAddr string, roots *tls.Config, n int, limit time.Duration) slowlorisResult {
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
