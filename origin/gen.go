package origin

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// MaxGenSize caps generated objects.
const MaxGenSize = 1 << 30

// genModTime is the Last-Modified of generated objects: they never change.
var genModTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// ParseSize parses a generated object's size: digits with an optional k or
// m suffix (KiB, MiB), case-insensitive, at most MaxGenSize.
func ParseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			num, mult = s[:n-1], 1<<10
		case 'm', 'M':
			num, mult = s[:n-1], 1<<20
		case 'g', 'G':
			num, mult = s[:n-1], 1<<30
		}
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v < 0 || num == "" || num[0] == '+' || num[0] == '-' {
		return 0, fmt.Errorf("size %q: want digits with an optional k, m or g suffix, such as 100k", s)
	}
	if v > MaxGenSize/mult {
		return 0, fmt.Errorf("size %q: larger than the %d-byte limit", s, MaxGenSize)
	}
	return v * mult, nil
}

// serveGen serves /gen/<size>: deterministic bytes, a strong ETag from the
// size, ranges and conditional requests.
func (s *Server) serveGen(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r) {
		return
	}
	size, err := ParseSize(strings.TrimPrefix(r.URL.Path, "/gen/"))
	if err != nil {
		http.Error(w, "400 bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	if d := q.Get("delay"); d != "" {
		delay, err := time.ParseDuration(d)
		if err != nil || delay < 0 {
			http.Error(w, fmt.Sprintf("400 bad request: delay %q, want a duration such as 2s", d), http.StatusBadRequest)
			return
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	h := w.Header()
	cc := "public, max-age=3600"
	if v, ok := q["cc"]; ok {
		cc = v[0]
	}
	if cc != "" {
		h.Set("Cache-Control", cc)
	}
	if v := q.Get("vary"); v != "" {
		h.Set("Vary", v)
	}
	if st := q.Get("status"); st != "" {
		code, err := strconv.Atoi(st)
		if err != nil || code < 200 || code > 599 {
			http.Error(w, fmt.Sprintf("400 bad request: status %q, want a code from 200 to 599", st), http.StatusBadRequest)
			return
		}
		h.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		fmt.Fprintf(w, "status %d as asked\n", code)
		return
	}
	h.Set("ETag", `"gen-`+strconv.FormatInt(size, 10)+`"`)
	h.Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", genModTime, &genReader{size: size})
}

// genPattern is the repeating content of generated objects.
const genPattern = "edgecdn generated object: 0123456789abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n"

// genReader is an io.ReadSeeker over size bytes of genPattern repeated, so
// objects of any size cost no memory.
type genReader struct {
	size, off int64
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.size {
		return 0, io.EOF
	}
	if rem := g.size - g.off; int64(len(p)) > rem {
		p = p[:rem]
	}
	n := 0
	for n < len(p) {
		i := int((g.off + int64(n)) % int64(len(genPattern)))
		n += copy(p[n:], genPattern[i:])
	}
	g.off += int64(n)
	return n, nil
}

func (g *genReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += g.off
	case io.SeekEnd:
		offset += g.size
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek to %d: negative position", offset)
	}
	g.off = offset
	return offset, nil
}
