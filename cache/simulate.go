package cache

import (
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"time"
)

// StoreSim replays requests through the Cache's store alone: the same
// admission, eviction, costs and budget as a Cache of the same MaxBytes
// and MaxObjectBytes, without HTTP. Each request counts once, as one to a
// Cache does; a miss stores a response of the request's size, as a
// Cache's fill does. bench replay -offline reports it beside its exact
// LRU and hindsight oracle, so that a policy can be judged on a trace in
// seconds. Like the store, it is not deterministic to the last request:
// ristretto applies sets in the background, and the sketch's hash is
// seeded per process.
type StoreSim struct {
	st        *store
	maxObject int64
	header    http.Header
	zeros     []byte // the bodies: a shared slice of it, never written
}

// SimConfig configures a StoreSim.
type SimConfig struct {
	// MaxBytes and MaxObjectBytes are as in Config, with the same
	// defaults (256 MiB; 8 MiB or a sixteenth of MaxBytes).
	MaxBytes, MaxObjectBytes int64
	// Header is the stored fields of every response, which count in its
	// cost; a Content-Length in it is set to each response's size, as the
	// Cache's fill sets it. If nil, GenFields.
	Header http.Header
}

// NewStoreSim returns a StoreSim; Close it.
func NewStoreSim(cfg SimConfig) (*StoreSim, error) {
	if cfg.MaxBytes < 0 || cfg.MaxObjectBytes < 0 {
		return nil, fmt.Errorf("store sim: max bytes %d, max object bytes %d: want 0 (default) or more", cfg.MaxBytes, cfg.MaxObjectBytes)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = 256 << 20
	}
	if cfg.MaxObjectBytes == 0 {
		cfg.MaxObjectBytes = min(8<<20, cfg.MaxBytes/16)
	}
	if cfg.Header == nil {
		cfg.Header = GenFields()
	}
	st, err := newStore(cfg.MaxBytes)
	if err != nil {
		return nil, fmt.Errorf("store sim: %w", err)
	}
	return &StoreSim{st: st, maxObject: cfg.MaxObjectBytes, header: cfg.Header}, nil
}

// Request counts one request for key, an object of size bytes, and
// reports whether the store held it; if not, the object is offered to
// the store.
func (s *StoreSim) Request(key string, size int64) (hit bool, err error) {
	if size < 0 {
		return false, fmt.Errorf("store sim: size %d of %q: want 0 or more", size, key)
	}
	if e, ok := s.st.get(key).(*entry); ok && e.key == key {
		return true, nil
	}
	if size > s.maxObject {
		return false, nil
	}
	// As the Cache's fill does: ask the store first, then allocate the
	// body (in newBody's pieces, each rounded up to its size class) and
	// store it.
	h := maps.Clone(s.header)
	if _, ok := h["Content-Length"]; ok {
		h["Content-Length"] = []string{strconv.FormatInt(size, 10)}
	}
	e := &entry{key: key, status: http.StatusOK, header: FieldsOf(h), encoded: true}
	if !s.st.wouldAdmit(key, e.cost()+bodyAlloc(size)) {
		return false, nil
	}
	if alloc := allocSize(size); int64(len(s.zeros)) < alloc {
		s.zeros = make([]byte, alloc)
	}
	n := splitLen(size)
	e.data.head = s.zeros[:n:allocSize(n)]
	if size > n {
		e.data.tail = s.zeros[: size-n : allocSize(size-n)]
	}
	if s.st.put(e, time.Hour) {
		s.st.rc.Wait() // as Cache.save does: the next request finds it
	}
	return false, nil
}

// Held is the bytes the store holds, by its accounting.
func (s *StoreSim) Held() int64 {
	used, _ := s.st.adm.usage()
	return used
}

// Close frees the store.
func (s *StoreSim) Close() {
	s.st.close()
}

// GenFields are the fields the origin sends with a generated object
// (/gen/16k): what StoreSim stores with every response unless told
// otherwise, and what tests of the stored fields' costs take as typical.
func GenFields() http.Header {
	return http.Header{
		"Content-Type":   {"application/octet-stream"},
		"Etag":           {`"gen-16384"`},
		"Last-Modified":  {"Mon, 02 Jan 2006 15:04:05 GMT"},
		"Accept-Ranges":  {"bytes"},
		"Content-Length": {"16384"},
		"Cache-Control":  {"max-age=3600"},
		"Date":           {"Mon, 02 Jan 2006 15:04:05 GMT"},
	}
}
