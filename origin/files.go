package origin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

// serveFile serves a file under Root. os.Root refuses paths that leave the
// directory, symbolic links included.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r) {
		return
	}
	if s.root == nil {
		http.Error(w, "404 not found: this origin serves no files (no -root)", http.StatusNotFound)
		return
	}
	name := path.Clean("/" + r.URL.Path)
	if strings.HasSuffix(name, "/") || name == "/" {
		name = path.Join(name, "index.html")
	}
	f, err := s.root.Open(strings.TrimPrefix(name, "/"))
	if err != nil {
		notFound(w, r, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		notFound(w, r, err)
		return
	}
	if fi.IsDir() {
		f.Close()
		name = path.Join(name, "index.html")
		if f, err = s.root.Open(strings.TrimPrefix(name, "/")); err != nil {
			notFound(w, r, err)
			return
		}
		defer f.Close()
		if fi, err = f.Stat(); err != nil || fi.IsDir() {
			http.Error(w, "404 not found: no index.html in this directory", http.StatusNotFound)
			return
		}
	}
	h := w.Header()
	h.Set("ETag", fileETag(name, fi))
	h.Set("Cache-Control", s.cacheControl(name))
	// ServeContent sets Content-Type, Last-Modified, Content-Length and
	// handles If-None-Match, If-Modified-Since, If-Range, Range and HEAD.
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

// fileETag is a strong validator from the file's name, size and
// modification time: stable across restarts, new when the file changes.
func fileETag(name string, fi fs.FileInfo) string {
	sum := sha256.Sum256([]byte(name + "\x00" + strconv.FormatInt(fi.Size(), 10) + "\x00" + fi.ModTime().UTC().Format(time.RFC3339Nano)))
	return `"` + hex.EncodeToString(sum[:12]) + `"`
}

func (s *Server) cacheControl(name string) string {
	for _, rule := range s.cfg.Rules {
		if strings.HasSuffix(rule.Path, "/") {
			if strings.HasPrefix(name, rule.Path) {
				return rule.CacheControl
			}
			continue
		}
		if ok, _ := path.Match(rule.Path, name); ok {
			return rule.CacheControl
		}
	}
	return s.cfg.DefaultCacheControl
}

func notFound(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, fs.ErrNotExist) {
		http.Error(w, "404 not found: "+r.URL.Path, http.StatusNotFound)
		return
	}
	// Escapes from the root and permission problems look the same to clients.
	http.Error(w, "403 forbidden: "+r.URL.Path, http.StatusForbidden)
}

func allowMethod(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, "405 method not allowed: "+r.Method+"; this origin serves GET and HEAD", http.StatusMethodNotAllowed)
	return false
}
