package origin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const genPrefix = "/gen/"

// MaxGenSize is the largest generated object, 1 GiB.
const MaxGenSize = 1 << 30

// MaxGenDelay is the longest ?delay a generated object accepts.
const MaxGenDelay = 10 * time.Minute

// genCacheControl is the Cache-Control of generated objects without ?cc.
const genCacheControl = "public, max-age=3600"

// genPeriod is the length of the pattern generated objects repeat: a prime,
// so that no power-of-two offset (where range and chunking bugs live) lands
// on a repeat and hides a misplaced byte.
const genPeriod = 8191

// genBlockMin is how many bytes one copy out of the block can serve;
// net/http reads in 32 KiB pieces.
const genBlockMin = 64 << 10

// genLastModified is the Last-Modified of generated objects: they never
// change.
func genLastModified() time.Time { return time.Date(2026, time.January, 1, 0, 0, 0, 0, time.UTC) }

// ParseSize parses a generated object's size: decimal digits with an
// optional k, m or g suffix (KiB, MiB, GiB; either case), at most
// MaxGenSize.
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
	if num == "" || strings.TrimLeft(num, "0123456789") != "" {
		return 0, fmt.Errorf("size %q: want digits with an optional k, m or g suffix, such as 1234, 100k or 1m", s)
	}
	v, err := strconv.ParseInt(num, 10, 64)
	if err != nil || v > MaxGenSize/mult {
		return 0, fmt.Errorf("size %q: larger than the limit of %d bytes (1g)", s, MaxGenSize)
	}
	return v * mult, nil
}

// genKnobs are a generated object's query parameters.
type genKnobs struct {
	cc     string // Cache-Control; "" for none
	vary   string
	delay  time.Duration
	status int // 0 for the object itself
}

func parseGenKnobs(q url.Values) (genKnobs, error) {
	k := genKnobs{cc: genCacheControl}
	var errs []error
	if v, ok := q["cc"]; ok {
		k.cc = v[0]
		if err := checkHeaderValue(k.cc); err != nil {
			errs = append(errs, fmt.Errorf("cc: %w", err))
		}
	}
	if v := q.Get("vary"); v != "" {
		k.vary = v
		if err := checkHeaderValue(v); err != nil {
			errs = append(errs, fmt.Errorf("vary: %w", err))
		}
	}
	if v := q.Get("delay"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxGenDelay {
			errs = append(errs, fmt.Errorf("delay %q: want a duration from 0 to %v, such as 2s or 150ms", v, MaxGenDelay))
		}
		k.delay = d
	}
	if v := q.Get("status"); v != "" {
		code, err := strconv.Atoi(v)
		if err != nil || code < 200 || code > 599 {
			errs = append(errs, fmt.Errorf("status %q: want a status code from 200 to 599, such as 503", v))
		}
		if code != http.StatusOK {
			k.status = code
		}
	}
	return k, errors.Join(errs...)
}

// serveGen serves /gen/<size>.
func (s *Server) serveGen(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r) {
		return
	}
	size, err := ParseSize(strings.TrimPrefix(r.URL.Path, genPrefix))
	if err != nil {
		http.Error(w, "400 bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	k := genKnobs{cc: genCacheControl}
	if r.URL.RawQuery != "" {
		if k, err = parseGenKnobs(r.URL.Query()); err != nil {
			http.Error(w, "400 bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	if k.delay > 0 {
		t := time.NewTimer(k.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return // the client is gone; nothing to answer
		}
	}
	h := w.Header()
	if k.cc != "" {
		h.Set("Cache-Control", k.cc)
	}
	if k.vary != "" {
		h.Set("Vary", k.vary)
	}
	if k.status != 0 {
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(k.status)
		fmt.Fprintf(w, "%d %s, as asked by ?status\n", k.status, http.StatusText(k.status))
		return
	}
	h.Set("ETag", `"gen-`+strconv.FormatInt(size, 10)+`"`)
	h.Set("Content-Type", "application/octet-stream")
	if !plainGet(r) {
		http.ServeContent(w, r, "", genLastModified(), &genReader{block: s.gen, size: size})
		return
	}
	// The common case, with the headers ServeContent would set, writes
	// straight from the block: no buffer to fill, nothing allocated.
	h.Set("Last-Modified", genLastModified().Format(http.TimeFormat))
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	for off := int64(0); off < size; {
		i := off % genPeriod
		n := min(size-off, genBlockMin)
		if _, err := w.Write(s.gen[i : i+n]); err != nil {
			return // the client is gone
		}
		off += n
	}
}

// plainGet reports whether r has no Range and no precondition, so that the
// answer is the whole object.
func plainGet(r *http.Request) bool {
	h := r.Header
	return h.Get("Range") == "" && h.Get("If-None-Match") == "" && h.Get("If-Modified-Since") == "" &&
		h.Get("If-Match") == "" && h.Get("If-Unmodified-Since") == ""
}

// newGenBlock returns the pattern of generated objects, genPeriod bytes of
// numbered text lines, repeated to at least genBlockMin+genPeriod bytes so
// that any read up to genBlockMin is one copy from any offset.
func newGenBlock() []byte {
	var b bytes.Buffer
	for line := 0; b.Len() < genPeriod; line++ {
		fmt.Fprintf(&b, "%04d edgecdn generated object: a %d-byte pattern, repeated\n", line, genPeriod)
	}
	return bytes.Repeat(b.Bytes()[:genPeriod], (genBlockMin+genPeriod-1)/genPeriod+1)
}

// genReader is an io.ReadSeeker over size bytes of the repeating pattern in
// block: objects of any size cost no memory.
type genReader struct {
	block     []byte // read only
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
		n += copy(p[n:], g.block[(g.off+int64(n))%genPeriod:])
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
	default:
		return 0, fmt.Errorf("seek: whence %d, want io.SeekStart, io.SeekCurrent or io.SeekEnd", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("seek to %d: negative position", offset)
	}
	g.off = offset
	return offset, nil
}
