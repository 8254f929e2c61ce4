package cache

import (
	"math"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// maxRanges is the most ranges the cache answers in one multipart
// response; see ignoreRange.
const maxRanges = 16

// ignoreRange reports whether the cache answers a request with Range
// field v with the whole representation (a 200, as if there were no
// Range), as RFC 9110 14.2 allows: v asks for more than maxRanges ranges,
// or for several ranges that overlap or are not in ascending order. Each
// is a way to make a small stored object answer with a multipart response
// many times its size (every part repeats its own header block). Ranges
// that are merely adjacent are kept; so is a single range.
//
// size is the representation's length, or -1 before it is known (a
// miss): then suffix ranges ("-500") are not compared, and an open range
// ("500-") reaches to the end. A field that is not a valid byte range set
// is left to http.ServeContent, which answers it as it always has.
func ignoreRange(v string, size int64) bool {
	spec, ok := strings.CutPrefix(v, "bytes=")
	if !ok || strings.IndexByte(spec, ',') < 0 {
		return false // another unit, or a single range
	}
	n := 0
	prevLast := int64(-1) // last byte of the previous range
	for spec != "" {
		var part string
		part, spec, _ = strings.Cut(spec, ",")
		part = textproto.TrimString(part)
		if part == "" {
			continue // empty list elements do not count (RFC 9110 5.6.1)
		}
		if n++; n > maxRanges {
			return true
		}
		first, last, ok := strings.Cut(part, "-")
		if !ok {
			return false
		}
		first, last = textproto.TrimString(first), textproto.TrimString(last)
		var start, end int64
		if first == "" { // suffix: the last n bytes
			sfx, err := strconv.ParseInt(last, 10, 64)
			if err != nil || sfx < 0 {
				return false
			}
			if size < 0 || sfx == 0 {
				continue // not known yet, or unsatisfiable
			}
			start, end = max(size-sfx, 0), size-1
		} else {
			var err error
			if start, err = strconv.ParseInt(first, 10, 64); err != nil || start < 0 {
				return false
			}
			if size >= 0 && start >= size {
				continue // unsatisfiable, whatever its end: ServeContent leaves it out
			}
			end = math.MaxInt64
			if last != "" {
				if end, err = strconv.ParseInt(last, 10, 64); err != nil || end < start {
					return false
				}
			}
			if size >= 0 {
				end = min(end, size-1)
			}
		}
		if start <= prevLast {
			return true // overlaps or goes back
		}
		prevLast = end
	}
	return false
}

// withoutRange is r without Range and If-Range, for answering it whole.
func withoutRange(r *http.Request) *http.Request {
	r2 := r.WithContext(r.Context()) // a shallow copy: r belongs to the caller
	r2.Header = r.Header.Clone()
	delete(r2.Header, "Range")
	delete(r2.Header, "If-Range")
	return r2
}
