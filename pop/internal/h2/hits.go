package h2

import (
	"strings"

	"golang.org/x/net/http2"

	"github.com/edgecdn/cdn/cache"
)

// serveHit offers a request whose stream has ended to the Hits hook when
// it is plain (see plainRequest), and queues the answer. It reports false
// when the request goes to the Handler instead.
func (c *Conn) serveHit(mh *http2.MetaHeadersFrame) bool {
	head, authority, path, ae, ok := plainRequest(mh)
	if !ok {
		return false
	}
	b, body, tail, ok := c.hits.Hit(c.hbuf[:0], head, authority, path, ae)
	if !ok {
		return false
	}
	if len(body) == 0 {
		body, tail = tail, nil
	}
	c.hbuf = b
	id := mh.StreamID
	c.mu.Lock()
	defer c.mu.Unlock()
	if head || len(body) == 0 {
		c.hits.Done(true)
		c.appendHeaders(id, b, true)
		return true
	}
	if n := int64(len(body) + len(tail)); n <= min(int64(c.sendConn), c.peerInit) {
		c.hits.Done(true)
		c.appendHeaders(id, b, false)
		c.sendConn.take(n)
		if c.appendDataFlushing(id, body, len(tail) == 0) == nil && len(tail) > 0 {
			c.appendDataFlushing(id, tail, true)
		}
		return true
	}
	// Not enough send window: a goroutine waits for it.
	st, ok := c.newStreamLocked(id, true)
	if st == nil {
		c.hits.Done(false)
		return ok
	}
	c.hits.Done(true)
	block := append([]byte(nil), b...)
	go func() {
		defer c.streamDone(st)
		if c.writeHeaders(st, block, false) == nil && c.writeData(st, body, len(tail) == 0) == nil && len(tail) > 0 {
			c.writeData(st, tail, true)
		}
	}()
	return true
}

// plainRequest reports whether a request is one Hits may answer, and its
// method (HEAD or GET), :authority, :path and accept-encoding: GET or HEAD of an https
// origin-form target, with the same refusals as every fast path (see
// Hits). A malformed request is not plain: the Handler's path refuses it.
func plainRequest(mh *http2.MetaHeadersFrame) (head bool, authority, path, acceptEncoding string, ok bool) {
	var method bool
	var scheme, host string
	hosts, encodings := 0, 0
	for _, hf := range mh.Fields {
		switch hf.Name {
		case ":method":
			method = true
			switch hf.Value {
			case "GET":
			case "HEAD":
				head = true
			default:
				return
			}
		case ":scheme":
			if hf.Value != "https" {
				return
			}
			scheme = hf.Value
		case ":path":
			path = hf.Value
		case ":authority":
			authority = hf.Value
		case ":protocol":
			return
		case "host":
			host = hf.Value
			hosts++
		case "accept-encoding":
			acceptEncoding = hf.Value
			if encodings++; encodings > 1 {
				return
			}
		default:
			if cache.PlainRefuses(hf.Name) {
				return
			}
		}
	}
	if !method || scheme == "" {
		return
	}
	if authority == "" {
		if hosts != 1 {
			return
		}
		authority = host
	} else if hosts > 1 || hosts == 1 && !strings.EqualFold(host, authority) {
		return
	}
	if !cache.PlainTarget(path) || !cache.PlainHost(authority) {
		return
	}
	return head, authority, path, acceptEncoding, true
}
