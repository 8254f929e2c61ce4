package cache

import (
	"net/http"
	"net/url"
)

// PurgeURL removes (soft: marks stale, so stale-* still apply) every stored
// response for rawURL, variants included. Its host is canonicalised as
// requests' are (keyHost), so "http://WWW.example.:8080/a" purges what
// requests for www.example/a stored. It returns how many it purged.
func (c *Cache) PurgeURL(rawURL string, soft bool) (int, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return 0, &url.Error{Op: "purge", URL: rawURL, Err: errBadPurgeURL}
	}
	return c.st.del(c.urlKey(u), soft), nil
}

// urlKey is the primary key of a GET for the absolute URL u, as
// primaryKey builds it for a request.
func (c *Cache) urlKey(u *url.URL) string {
	ru := &url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery, ForceQuery: u.ForceQuery}
	return c.primaryKey(&http.Request{Method: http.MethodGet, URL: ru, Host: u.Host, Header: http.Header{}})
}

// PurgeTag removes (or soft-purges) every stored response whose
// Surrogate-Key or Cache-Tag lists tag.
func (c *Cache) PurgeTag(tag string, soft bool) int { return c.st.delTag(tag, soft) }

type purgeError string

func (e purgeError) Error() string { return string(e) }

const errBadPurgeURL = purgeError("want an absolute http:// or https:// URL")
