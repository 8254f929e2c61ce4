package cache

import (
	"net/http"
	"net/url"
	"strings"
)

// PurgeURL removes (soft: marks stale, so stale-* still apply) every stored
// response for rawURL, variants included. It returns how many it purged.
func (c *Cache) PurgeURL(rawURL string, soft bool) (int, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return 0, &url.Error{Op: "purge", URL: rawURL, Err: errBadPurgeURL}
	}
	r := &http.Request{Method: http.MethodGet, URL: u, Host: u.Host}
	if u.Scheme == "https" {
		r.URL = &url.URL{Scheme: "https", Host: u.Host, Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}
	}
	key := c.primaryKey(r)
	if u.Scheme == "https" && !strings.HasPrefix(key, "https://") {
		key = "https://" + strings.TrimPrefix(key, "http://")
	}
	return c.st.del(key, soft), nil
}

// PurgeTag removes (or soft-purges) every stored response whose
// Surrogate-Key or Cache-Tag lists tag.
func (c *Cache) PurgeTag(tag string, soft bool) int { return c.st.delTag(tag, soft) }

type purgeError string

func (e purgeError) Error() string { return string(e) }

const errBadPurgeURL = purgeError("want an absolute http:// or https:// URL")
