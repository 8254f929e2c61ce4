package origin

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// clockPath is the object that changes every ClockPeriod.
const clockPath = "/clock"

// ClockPeriod is how often /clock changes.
const ClockPeriod = 5 * time.Second

// serveClock answers /clock: a small JSON object that changes every
// ClockPeriod, for the demo page (a resource a cache may keep only until
// it changes). Its ETag and Last-Modified are those of the current
// period, and its max-age the whole seconds left in it (at least 1), so a
// cache holds it no longer than it is true.
func (s *Server) serveClock(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r) {
		return
	}
	now := s.now().UTC()
	tick := now.UnixNano() / int64(ClockPeriod)
	start := time.Unix(0, tick*int64(ClockPeriod)).UTC()
	left := start.Add(ClockPeriod).Sub(now)
	maxAge := max(1, int(left/time.Second))
	body := fmt.Sprintf(`{"tick":%d,"changed":%q,"period_s":%d}`+"\n", tick, start.Format(time.RFC3339), int(ClockPeriod/time.Second))
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age="+strconv.Itoa(maxAge))
	h.Set("ETag", `"clock-`+strconv.FormatInt(tick, 10)+`"`)
	http.ServeContent(w, r, "", start, bytes.NewReader([]byte(body)))
}
