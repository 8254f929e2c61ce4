package pop

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// ReadyPath is answered by the PoP itself on its TLS and plain-HTTP
// listeners, for any host and before any routing: 200 "ready" while the
// PoP can serve (Server.Ready), 503 otherwise, never cached. It is the
// health_path of a parent group (Site.Parent): a child checks that its
// parent PoP is up, not that the parent's origin is, since a parent with
// a dead origin still serves what it has cached.
const ReadyPath = "/.well-known/edgecdn/ready"

// serveReadyPath answers ReadyPath.
func (s *Server) serveReadyPath(w http.ResponseWriter) {
	w.Header().Set("Cache-Control", "no-store")
	if !s.Ready() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ready\n"))
}

// loopCheck is what a request's CDN-Loop (RFC 8586) says about this CDN:
// how many times it passed through it (ours) and whether through this
// PoP (self).
type loopCheck struct {
	ours int
	self bool
}

// checkLoop reads the request's CDN-Loop members ("cdn-id; params", comma
// separated, over any number of fields) for this CDN's id and this PoP's
// pop= parameter.
func checkLoop(h http.Header, cdn, pop string) loopCheck {
	var lc loopCheck
	for _, field := range h["Cdn-Loop"] {
		for member := range strings.SplitSeq(field, ",") {
			id, params, _ := strings.Cut(member, ";")
			if !strings.EqualFold(strings.TrimSpace(id), cdn) {
				continue
			}
			lc.ours++
			for p := range strings.SplitSeq(params, ";") {
				k, v, _ := strings.Cut(p, "=")
				if strings.EqualFold(strings.TrimSpace(k), "pop") && strings.Trim(strings.TrimSpace(v), `"`) == pop {
					lc.self = true
				}
			}
		}
	}
	return lc
}

// loop reports a request that must not be forwarded again: one that
// already passed through this PoP, or through this CDN twice (a child
// and its parent: no legitimate path passes a third time).
func (lc loopCheck) loop() bool { return lc.self || lc.ours >= 2 }

// recentPurges remembers, for a while, what was purged, so that a child
// PoP's first fetches after a purge do not store its parent's copy again
// when the parent has not applied the same purge yet (the fleet delivers
// it to every PoP, but not at the same instant): a fetch of a URL purged
// here asks the parent to revalidate (Cache-Control: no-cache), and one
// whose answer carries a tag purged here is asked again that way.
type recentPurges struct {
	mu   sync.Mutex
	urls map[string]time.Time // purgeKey → purged at
	tags map[string]time.Time // tag → purged at
	// all is when the maps overflowed: until the window has passed,
	// every URL counts as purged.
	all    time.Time
	window time.Duration
}

func newRecentPurges(window time.Duration) *recentPurges {
	return &recentPurges{urls: map[string]time.Time{}, tags: map[string]time.Time{}, window: window}
}

// purgeKey is what recentPurges knows a URL by: the canonical host, the
// escaped path and the query as sent, as a purge by URL names a stored
// response (cache.PurgeURL keeps the query as it is given).
func purgeKey(host string, u *url.URL) string {
	k := canonicalHost(host) + u.EscapedPath()
	if u.RawQuery != "" || u.ForceQuery {
		k += "?" + u.RawQuery
	}
	return k
}

// recentPurgeWindow is how long a purge makes a child ask its parent to
// revalidate: a purge reaches every live PoP within a few hundred
// milliseconds (a PoP that lost the control plane does not serve from its
// cache until it has caught up: package fleet), so this is ample.
const recentPurgeWindow = 10 * time.Second

// maxRecentPurges bounds the remembered URLs and tags, each; past it,
// the oldest go and, if all are recent, every URL counts as purged for a
// window, so that a flood of purges cannot grow memory.
const maxRecentPurges = 65536

// url records a purge of the URL known by key (purgeKey).
func (rp *recentPurges) url(key string, now time.Time) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.add(rp.urls, key, now)
}

// tag records a purge by tag.
func (rp *recentPurges) tag(tag string, now time.Time) {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	rp.add(rp.tags, tag, now)
}

// add records k in m, making room first. Caller holds mu.
func (rp *recentPurges) add(m map[string]time.Time, k string, now time.Time) {
	if len(m) >= maxRecentPurges {
		for k, t := range m {
			if now.Sub(t) > rp.window {
				delete(m, k)
			}
		}
	}
	if len(m) >= maxRecentPurges {
		rp.all = now
		return
	}
	m[k] = now
}

// recent reports whether t is within the window before now.
func (rp *recentPurges) recent(t, now time.Time) bool {
	return !t.IsZero() && now.Sub(t) <= rp.window
}

// coversURL reports whether a purge within the window may have covered
// the URL known by key: one of it, or an overflow.
func (rp *recentPurges) coversURL(key string, now time.Time) bool {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.recent(rp.all, now) || len(rp.urls) > 0 && rp.recent(rp.urls[key], now)
}

// coversTags reports whether a purge within the window was of one of tags.
func (rp *recentPurges) coversTags(tags []string, now time.Time) bool {
	if len(tags) == 0 {
		return false
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if len(rp.tags) == 0 {
		return false
	}
	for _, tag := range tags {
		if rp.recent(rp.tags[tag], now) {
			return true
		}
	}
	return false
}
