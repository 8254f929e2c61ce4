package accesslog

import (
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzAppendString: every byte string becomes a JSON string that
// encoding/json reads back as the string with each invalid UTF-8 byte
// replaced by U+FFFD, as json.Marshal would send it.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "/gen/1k?x=1", `a"b\c`, "\x00\x1f\x7f\b\f", "é€😀", "\xff\xfe", "\u2028\u2029", "0123456789abcdef\"", "0123\\56789abcdef", "abcdefgh\"ijklmnop", strings.Repeat("x", 17) + "\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) {
		out := appendString(nil, s)
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendString(%q) = %s: not JSON: %v", s, out, err)
		}
		want := validUTF8(s)
		if got != want {
			t.Errorf("appendString(%q) reads back as %q, want %q", s, got, want)
		}
		if bytesEqualMarshal := mustMarshal(t, string(s)); string(out) != bytesEqualMarshal && !strings.ContainsAny(want, "<>&") {
			t.Errorf("appendString(%q) = %s, json.Marshal says %s", s, out, bytesEqualMarshal)
		}
	})
}

func validUTF8(s []byte) string {
	var b strings.Builder
	for len(s) > 0 {
		r, n := utf8.DecodeRune(s)
		if r == utf8.RuneError && n == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.Write(s[:n])
		}
		s = s[n:]
	}
	return b.String()
}

func mustMarshal(t *testing.T, s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// FuzzPlain8: the eight-byte test agrees with the byte-by-byte one.
func FuzzPlain8(f *testing.F) {
	f.Add(uint64(0x6f6c6c6568202020))
	f.Add(uint64(0x22))
	f.Add(uint64(0x5c) << 56)
	f.Add(uint64(0x5c41414141414141)) // a backslash among plain bytes
	f.Add(uint64(0x4141414122414141)) // a quote
	f.Add(uint64(0x41414141414141c3)) // a byte above 0x7f
	f.Add(uint64(0x1f20202020202020))
	f.Fuzz(func(t *testing.T, x uint64) {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], x)
		want := true
		for _, c := range b {
			if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
				want = false
			}
		}
		if got := plain8(x); got != want {
			t.Errorf("plain8(%q) = %v, want %v", b, got, want)
		}
	})
}

func TestAppendMillis(t *testing.T) {
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0.000"}, {-5, "0.000"}, {499, "0.000"}, {500, "0.001"}, {81 * time.Microsecond, "0.081"},
		{35214 * time.Microsecond, "35.214"}, {10400 * time.Microsecond, "10.400"}, {2*time.Second + 5*time.Microsecond, "2000.005"},
	} {
		if got := string(AppendMillis(nil, tt.d)); got != tt.want {
			t.Errorf("AppendMillis(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

// TestAppendTime: the encoder's own RFC 3339 agrees with the time
// package's, across second boundaries and before 1970.
func TestAppendTime(t *testing.T) {
	var e encoder
	e.init("p", 1)
	for _, tm := range []time.Time{
		time.Date(2026, 12, 3, 18, 4, 5, 123456789, time.UTC),
		time.Date(2026, 12, 3, 18, 4, 5, 999999999, time.UTC),
		time.Date(2026, 12, 3, 18, 4, 6, 0, time.UTC),
		time.Date(2026, 12, 3, 18, 4, 5, 1000, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 500000000, time.UTC),
	} {
		got := string(e.appendTime(nil, tm.UnixNano())) + "Z"
		if want := tm.Format("2006-01-02T15:04:05.000000Z07:00"); got != want {
			t.Errorf("appendTime(%v) = %q, want %q", tm, got, want)
		}
	}
}

func TestAppendTLSAndProto(t *testing.T) {
	for v, want := range map[uint16]string{0: "", 0x0304: "1.3", 0x0303: "1.2", 0x0301: "1.0", 0xfafa: "0xfafa"} {
		if got := string(appendTLS(nil, v)); got != want {
			t.Errorf("appendTLS(%#x) = %q, want %q", v, got, want)
		}
	}
	for v, want := range map[uint8]string{1: "h1", 2: "h2", 3: "h3", 0: "other"} {
		if got := string(appendProto(nil, v)); got != want {
			t.Errorf("appendProto(%d) = %q, want %q", v, got, want)
		}
	}
}
