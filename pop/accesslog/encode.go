package accesslog

import (
	"encoding/binary"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/edgecdn/cdn/cache"
)

// encoder appends lines of JSON: field names and what never changes
// (the PoP's name, the id's prefix) are appended as prepared bytes, the
// time's date and second are formatted once a second, and strings are
// escaped in one pass that copies runs of plain bytes as they are. It is
// the encoder goroutine's alone.
type encoder struct {
	pop  []byte // `Z","pop":"NAME","client":`
	boot []byte // `,"id":"XXXXXXXX-`

	sec       int64  // the Unix second secPrefix shows
	secPrefix []byte // "2006-01-02T15:04:05"

	line []byte // reused for each line
}

func (e *encoder) init(name string, boot uint32) {
	e.pop = appendString(append([]byte(nil), `Z","pop":`...), []byte(name))
	e.pop = append(e.pop, `,"client":`...)
	e.boot = append([]byte(`,"id":"`), hex8(boot)...)
	e.boot = append(e.boot, '-')
	e.sec = -1 << 62
}

func hex8(v uint32) []byte {
	var b [8]byte
	for i := 7; i >= 0; i-- {
		b[i] = hexDigits[v&0xf]
		v >>= 4
	}
	return b[:]
}

const hexDigits = "0123456789abcdef"

// appendLine appends r as one line of JSON, newline included.
func (e *encoder) appendLine(b []byte, r *rec, q *batch) []byte {
	b = append(b, `{"time":"`...)
	b = e.appendTime(b, r.unixNano)
	b = append(b, e.pop...)
	b = appendString(b, q.str(r.client))
	b = append(b, `,"proto":"`...)
	b = appendProto(b, r.proto)
	b = append(b, `","tls":"`...)
	b = appendTLS(b, r.tls)
	b = append(b, `","resumed":`...)
	b = strconv.AppendBool(b, r.resumed)
	b = append(b, `,"early_data":`...)
	b = strconv.AppendBool(b, r.early)
	b = append(b, `,"method":`...)
	b = appendString(b, q.str(r.method))
	b = append(b, `,"host":`...)
	b = appendString(b, q.str(r.host))
	b = append(b, `,"path":`...)
	b = appendString(b, q.str(r.path))
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.status), 10)
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, r.bytes, 10)
	b = append(b, `,"cache":"`...)
	if int(r.result) < len(cache.Results) {
		b = append(b, cache.Results[r.result]...)
	}
	b = append(b, `","cache_status":`...)
	b = appendString(b, q.str(r.cacheStatus))
	b = append(b, `,"ttfb_ms":`...)
	b = AppendMillis(b, time.Duration(r.ttfb))
	if r.origin > 0 {
		b = append(b, `,"origin_ms":`...)
		b = AppendMillis(b, time.Duration(r.origin))
		b = append(b, `,"upstream":`...)
		b = appendString(b, q.str(r.upstream))
	}
	b = append(b, e.boot...)
	b = strconv.AppendUint(b, r.id, 10)
	return append(b, "\"}\n"...)
}

// appendTime appends a Unix time in nanoseconds as RFC 3339 in UTC with
// microseconds, without the final Z.
func (e *encoder) appendTime(b []byte, ns int64) []byte {
	sec, frac := ns/1e9, ns%1e9
	if frac < 0 {
		sec, frac = sec-1, frac+1e9
	}
	if sec != e.sec {
		e.sec = sec
		e.secPrefix = time.Unix(sec, 0).UTC().AppendFormat(e.secPrefix[:0], "2006-01-02T15:04:05")
	}
	b = append(b, e.secPrefix...)
	us := frac / 1000
	return append(b, '.', byte('0'+us/100000), byte('0'+us/10000%10), byte('0'+us/1000%10),
		byte('0'+us/100%10), byte('0'+us/10%10), byte('0'+us%10))
}

// AppendMillis appends d in milliseconds with three decimals (rounded to
// the microsecond), as "35.214"; a negative d as "0.000". Server-Timing
// durations and the log's share it.
func AppendMillis(b []byte, d time.Duration) []byte {
	if d < 0 {
		d = 0
	}
	us := (int64(d) + 500) / 1000
	if ms := us / 1000; ms < 10 {
		b = append(b, byte('0'+ms)) // most: no strconv
	} else {
		b = strconv.AppendInt(b, ms, 10)
	}
	f := us % 1000
	return append(b, '.', byte('0'+f/100), byte('0'+f/10%10), byte('0'+f%10))
}

func appendProto(b []byte, major uint8) []byte {
	if major >= 1 && major <= 3 {
		return append(b, 'h', '0'+major)
	}
	return append(b, "other"...)
}

func appendTLS(b []byte, v uint16) []byte {
	switch v {
	case 0:
		return b
	case 0x0304:
		return append(b, "1.3"...)
	case 0x0303:
		return append(b, "1.2"...)
	case 0x0302:
		return append(b, "1.1"...)
	case 0x0301:
		return append(b, "1.0"...)
	}
	return append(append(b, "0x"...), hex8(uint32(v))[4:]...)
}

// appendString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD, and
// U+2028 and U+2029 escaped as encoding/json does.
func appendString(b []byte, s []byte) []byte {
	b = append(b, '"')
	start, i := 0, 0
	// Eight bytes at a time while none needs a second look (most
	// fields are plain ASCII throughout).
	for i+8 <= len(s) && plain8(binary.LittleEndian.Uint64(s[i:])) {
		i += 8
	}
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(append(b, s[start:i]...), `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain8 reports whether none of the eight bytes of x is a control
// character, '"', '\\' or above 0x7f: the bytes appendString copies as
// they are (bit tricks from "Bit Twiddling Hacks": a byte below n, a byte
// equal to zero).
func plain8(x uint64) bool {
	below := (x - ones*0x20) &^ x
	quote := x ^ (ones * '"')
	quote = (quote - ones) &^ quote
	bslash := x ^ (ones * '\\')
	bslash = (bslash - ones) &^ bslash
	return (below|quote|bslash|x)&highs == 0
}
