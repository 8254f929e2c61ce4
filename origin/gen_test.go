package origin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  string // in the error; "" for none
	}{
		{"0", 0, ""},
		{"1234", 1234, ""},
		{"007", 7, ""},
		{"1k", 1 << 10, ""},
		{"1K", 1 << 10, ""},
		{"100k", 100 << 10, ""},
		{"1m", 1 << 20, ""},
		{"1024m", 1 << 30, ""},
		{"1g", 1 << 30, ""},
		{"1073741824", 1 << 30, ""},
		{"1073741825", 0, "larger than the limit"},
		{"2g", 0, "larger than the limit"},
		{"99999999999999999999", 0, "larger than the limit"},
		{"", 0, `size "": want digits`},
		{"k", 0, "want digits"},
		{"-1", 0, "want digits"},
		{"+1", 0, "want digits"},
		{" 1", 0, "want digits"},
		{"1.5k", 0, "want digits"},
		{"1kb", 0, "want digits"},
		{"0x10", 0, "want digits"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if tt.err == "" {
				if err != nil || got != tt.want {
					t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), strconv.Quote(tt.in)) {
				t.Errorf("ParseSize(%q) = %d, %v; want an error naming the size with %q", tt.in, got, err, tt.err)
			}
		})
	}
}

// genWant is the body /gen/<n> must have: the first n bytes of the
// pattern repeated, independent of genReader.
func genWant(n int) string {
	period := string(newGenBlock()[:genPeriod])
	return strings.Repeat(period, n/genPeriod+1)[:n]
}

func TestGenSizes(t *testing.T) {
	poll.CheckGoroutines(t)
	base := serve(t, newServer(t, Config{}))
	c := client(t, nil)
	for _, tt := range []struct {
		size string
		n    int
	}{{"0", 0}, {"1", 1}, {"1k", 1024}, {"1K", 1024}, {"8191", 8191}, {"8192", 8192}, {"100k", 100 << 10}, {"1m", 1 << 20}, {"3m", 3 << 20}} {
		t.Run(tt.size, func(t *testing.T) {
			resp, body := do(t, c, "GET", base+"/gen/"+tt.size)
			if resp.StatusCode != 200 || len(body) != tt.n || resp.ContentLength != int64(tt.n) {
				t.Fatalf("Get(/gen/%s) = %d, %d bytes, Content-Length %d; want 200 with %d", tt.size, resp.StatusCode, len(body), resp.ContentLength, tt.n)
			}
			if body != genWant(tt.n) {
				t.Errorf("Get(/gen/%s) body differs from the pattern", tt.size)
			}
			if _, again := do(t, c, "GET", base+"/gen/"+tt.size); again != body {
				t.Errorf("Get(/gen/%s) twice gave different bodies", tt.size)
			}
			want := map[string]string{
				"ETag":          fmt.Sprintf(`"gen-%d"`, tt.n),
				"Content-Type":  "application/octet-stream",
				"Cache-Control": "public, max-age=3600",
				"Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT",
				"Accept-Ranges": "bytes",
			}
			for h, w := range want {
				if got := resp.Header.Get(h); got != w {
					t.Errorf("Get(/gen/%s) %s = %q, want %q", tt.size, h, got, w)
				}
			}
		})
	}
}

func TestGenBadSize(t *testing.T) {
	poll.CheckGoroutines(t)
	base := serve(t, newServer(t, Config{}))
	c := client(t, nil)
	for _, bad := range []string{"abc", "-1", "+5", "1.5k", "2g", "1025m", "", "1kb", "1k/x"} {
		t.Run(bad, func(t *testing.T) {
			resp, body := do(t, c, "GET", base+"/gen/"+bad)
			if resp.StatusCode != 400 || !strings.Contains(body, strconv.Quote(bad)) || !strings.Contains(body, "100k") && !strings.Contains(body, "1g") {
				t.Errorf("Get(/gen/%s) = %d %q, want 400 naming the size and the expected form", bad, resp.StatusCode, body)
			}
		})
	}
}

func TestGenKnobs(t *testing.T) {
	poll.CheckGoroutines(t)
	base := serve(t, newServer(t, Config{}))
	c := client(t, nil)
	tests := []struct {
		query string
		code  int
		cc    string // "-" for none
		vary  string
		body  string // in the body
	}{
		{"cc=no-store", 200, "no-store", "", ""},
		{"cc=private%2C+max-age%3D5", 200, "private, max-age=5", "", ""},
		{"cc=", 200, "-", "", ""},
		{"vary=Accept-Encoding", 200, "public, max-age=3600", "Accept-Encoding", ""},
		{"v=cache-buster", 200, "public, max-age=3600", "", ""},
		{"status=503", 503, "public, max-age=3600", "", "503 Service Unavailable"},
		{"status=404&cc=max-age%3D10", 404, "max-age=10", "", "404 Not Found"},
		{"status=200", 200, "public, max-age=3600", "", ""},
		{"delay=0s", 200, "public, max-age=3600", "", ""},
		{"status=99", 400, "-", "", `status "99"`},
		{"status=abc", 400, "-", "", `status "abc"`},
		{"delay=soon", 400, "-", "", `delay "soon"`},
		{"delay=-1s", 400, "-", "", `delay "-1s"`},
		{"delay=11m", 400, "-", "", `delay "11m"`},
		{"cc=a%0Ab", 400, "-", "", "cc: "},
		{"status=1&delay=x", 400, "-", "", `delay "x"`},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp, body := do(t, c, "GET", base+"/gen/1k?"+tt.query)
			if resp.StatusCode != tt.code || !strings.Contains(body, tt.body) {
				t.Fatalf("Get(/gen/1k?%s) = %d %q, want %d with %q", tt.query, resp.StatusCode, body, tt.code, tt.body)
			}
			cc, ok := resp.Header["Cache-Control"]
			if tt.cc == "-" && ok || tt.cc != "-" && resp.Header.Get("Cache-Control") != tt.cc {
				t.Errorf("Get(/gen/1k?%s) Cache-Control = %q, want %q", tt.query, cc, tt.cc)
			}
			if v := resp.Header.Get("Vary"); v != tt.vary {
				t.Errorf("Get(/gen/1k?%s) Vary = %q, want %q", tt.query, v, tt.vary)
			}
			if tt.code == 200 && len(body) != 1024 {
				t.Errorf("Get(/gen/1k?%s) = %d bytes, want 1024", tt.query, len(body))
			}
		})
	}
}

func TestGenRangesAndConditional(t *testing.T) {
	poll.CheckGoroutines(t)
	base := serve(t, newServer(t, Config{}))
	c := client(t, nil)
	const n = 100 << 10
	full := genWant(n)
	tests := []struct {
		name, rng string
		from, to  int // inclusive
	}{
		{"first byte", "bytes=0-0", 0, 0},
		{"across a repeat", "bytes=8190-8192", 8190, 8192},
		{"across 64 KiB", "bytes=65535-65537", 65535, 65537},
		{"long", "bytes=1000-70000", 1000, 70000},
		{"suffix", "bytes=-100", n - 100, n - 1},
		{"open end", "bytes=102300-", 102300, n - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, c, "GET", base+"/gen/100k", "Range", tt.rng)
			crange := fmt.Sprintf("bytes %d-%d/%d", tt.from, tt.to, n)
			if resp.StatusCode != 206 || resp.Header.Get("Content-Range") != crange || body != full[tt.from:tt.to+1] {
				t.Errorf("Get(/gen/100k, %s) = %d %q, %d bytes; want 206 %q with bytes %d to %d",
					tt.rng, resp.StatusCode, resp.Header.Get("Content-Range"), len(body), crange, tt.from, tt.to)
			}
		})
	}
	t.Run("multipart", func(t *testing.T) {
		resp, body := do(t, c, "GET", base+"/gen/100k", "Range", "bytes=0-3,8191-8194")
		parts := multipartRanges(t, resp, body)
		want := []string{
			fmt.Sprintf("bytes 0-3/%d application/octet-stream %s", n, full[0:4]),
			fmt.Sprintf("bytes 8191-8194/%d application/octet-stream %s", n, full[8191:8195]),
		}
		if strings.Join(parts, "|") != strings.Join(want, "|") {
			t.Errorf("Get(/gen/100k, bytes=0-3,8191-8194) = %q, want %q", parts, want)
		}
	})
	t.Run("same answer with or without a precondition", func(t *testing.T) {
		// A plain GET is written straight from the block; one with a
		// precondition goes through http.ServeContent.
		plain, pbody := do(t, c, "GET", base+"/gen/100k")
		cond, cbody := do(t, c, "GET", base+"/gen/100k", "If-None-Match", `"other"`)
		plain.Header.Del("Date")
		cond.Header.Del("Date")
		if plain.StatusCode != 200 || cond.StatusCode != 200 || pbody != cbody || !reflect.DeepEqual(plain.Header, cond.Header) {
			t.Errorf("Get(/gen/100k) = %d %v, with If-None-Match = %d %v; want the same 200", plain.StatusCode, plain.Header, cond.StatusCode, cond.Header)
		}
	})
	for _, tt := range []struct {
		name string
		hdr  []string
		code int
	}{
		{"If-None-Match", []string{"If-None-Match", `"gen-102400"`}, 304},
		{"If-None-Match other size", []string{"If-None-Match", `"gen-1024"`}, 200},
		{"If-Modified-Since", []string{"If-Modified-Since", "Thu, 01 Jan 2026 00:00:00 GMT"}, 304},
		{"If-Range", []string{"If-Range", `"gen-102400"`, "Range", "bytes=0-1"}, 206},
	} {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := do(t, c, "GET", base+"/gen/100k", tt.hdr...)
			if resp.StatusCode != tt.code {
				t.Errorf("Get(/gen/100k, %q) = %d, want %d", tt.hdr, resp.StatusCode, tt.code)
			}
		})
	}
}

func TestGenReaderSeek(t *testing.T) {
	full := genWant(20000)
	g := &genReader{block: newGenBlock(), size: int64(len(full))}
	for _, tt := range []struct {
		off    int64
		whence int
		pos    int64
	}{{5, io.SeekStart, 5}, {10, io.SeekCurrent, 15}, {-7, io.SeekEnd, 19993}, {8190, io.SeekStart, 8190}} {
		pos, err := g.Seek(tt.off, tt.whence)
		if err != nil || pos != tt.pos {
			t.Fatalf("Seek(%d, %d) = %d, %v; want %d", tt.off, tt.whence, pos, err, tt.pos)
		}
		b := make([]byte, 5)
		n, _ := io.ReadFull(g, b)
		if want := full[pos:min(pos+5, int64(len(full)))]; string(b[:n]) != want {
			t.Errorf("Read after Seek(%d, %d) = %q, want %q", tt.off, tt.whence, b[:n], want)
		}
		g.Seek(pos, io.SeekStart)
	}
	if _, err := g.Seek(-1, io.SeekStart); err == nil {
		t.Errorf("Seek(-1, io.SeekStart) = nil error, want one")
	}
	if _, err := g.Seek(0, 42); err == nil {
		t.Errorf("Seek(0, 42) = nil error, want one")
	}
	g.Seek(0, io.SeekStart)
	all, err := io.ReadAll(g)
	if err != nil || string(all) != full {
		t.Errorf("ReadAll = %d bytes, %v; want the %d-byte pattern", len(all), err, len(full))
	}
}

func TestGenDelay(t *testing.T) {
	poll.CheckGoroutines(t)
	log, lines := newLogger()
	s := newServer(t, Config{Logger: log, LogRequests: true})
	base := serve(t, s)
	c := client(t, nil)

	t.Run("waits", func(t *testing.T) {
		start := time.Now()
		resp, body := do(t, c, "GET", base+"/gen/10?delay=100ms")
		if resp.StatusCode != 200 || len(body) != 10 {
			t.Errorf("Get(/gen/10?delay=100ms) = %d, %d bytes; want 200 with 10", resp.StatusCode, len(body))
		}
		if d := time.Since(start); d < 100*time.Millisecond {
			t.Errorf("Get(/gen/10?delay=100ms) answered after %v, want at least 100ms", d)
		}
		lines.next(t)
	})

	t.Run("ends when the client goes away", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/gen/1k?delay=10m", nil)
		errc := make(chan error, 1)
		go func() {
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		poll.Until(t, "the delayed request to arrive", func() bool { return s.Requests("/gen/1k") == 1 })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Get(/gen/1k?delay=10m) after cancel = %v, want context.Canceled", err)
		}
		// The handler ends: its log line comes long before 10 minutes.
		var line struct {
			Path   string
			Status int
			Bytes  int64
		}
		if err := json.Unmarshal([]byte(lines.next(t)), &line); err != nil {
			t.Fatal(err)
		}
		if line.Path != "/gen/1k" || line.Status != 499 || line.Bytes != 0 {
			t.Errorf("log line = %+v, want /gen/1k with status 499 and no bytes", line)
		}
	})
}
