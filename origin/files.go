package origin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
)

// serveFile serves a file under Root. The ServeMux in front has already
// redirected paths holding "." or ".." segments to their clean form; the
// os.Root refuses whatever would still leave the directory, symbolic links
// included.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request) {
	if !allowMethod(w, r) {
		return
	}
	if s.root == nil {
		http.Error(w, "404 not found: this origin serves no files (no root directory)", http.StatusNotFound)
		return
	}
	upath := r.URL.Path
	if !strings.HasPrefix(upath, "/") {
		upath = "/" + upath
	}
	name := path.Clean(upath)
	f, fi, err := s.open(name)
	if err != nil {
		openError(w, r, err)
		return
	}
	defer func() { f.Close() }()
	switch {
	case fi.IsDir() && !strings.HasSuffix(upath, "/"):
		// As http.FileServer and nginx do, so relative links work.
		dirRedirect(w, r)
		return
	case fi.IsDir():
		f.Close()
		name = path.Join(name, "index.html")
		if f, fi, err = s.open(name); err != nil || fi.IsDir() {
			http.Error(w, "404 not found: "+r.URL.Path+" is a directory without index.html", http.StatusNotFound)
			return
		}
	case strings.HasSuffix(upath, "/"):
		http.Error(w, "404 not found: "+r.URL.Path+" is a file, not a directory", http.StatusNotFound)
		return
	}
	h := w.Header()
	h.Set("ETag", fileETag(name, fi))
	if cc, ok := s.cfg.cacheControl(name); ok {
		h.Set("Cache-Control", cc)
	}
	// ServeContent sets Content-Type (by extension, else sniffed),
	// Last-Modified and Content-Length, and answers If-Match,
	// If-None-Match, If-Modified-Since, If-Unmodified-Since, If-Range,
	// Range (one or several) and HEAD.
	http.ServeContent(w, r, name, fi.ModTime(), f)
}

// open opens name (clean, with a leading slash) under Root.
func (s *Server) open(name string) (*os.File, fs.FileInfo, error) {
	rel := strings.TrimPrefix(name, "/")
	if rel == "" {
		rel = "."
	}
	f, err := s.root.Open(rel)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// fileETag is a strong validator from the file's path, size and modification
// time (to the nanosecond): stable across restarts, equal on replicas that
// copied the tree with its times (docker COPY, rsync -t, cp -p), and new
// whenever the file is rewritten. The path is in it so that two files never
// share an ETag, which would hide a cache mixing up keys. It costs no read
// of the file.
func fileETag(name string, fi fs.FileInfo) string {
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, fi.Size(), 10))
	h.Write([]byte{0})
	h.Write(strconv.AppendInt(nil, fi.ModTime().UnixNano(), 10))
	var sum [sha256.Size]byte
	return `"` + hex.EncodeToString(h.Sum(sum[:0])[:12]) + `"`
}

// openError answers a failed open: 404 for what is not there, 403 for the
// rest (escapes from Root, permissions), telling the client no more.
func openError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ENAMETOOLONG) {
		http.Error(w, "404 not found: "+r.URL.Path, http.StatusNotFound)
		return
	}
	http.Error(w, "403 forbidden: "+r.URL.Path, http.StatusForbidden)
}

// dirRedirect sends a directory's path without its slash to the path with
// it, relative ("./" first, so no name reads as a scheme), keeping the query.
func dirRedirect(w http.ResponseWriter, r *http.Request) {
	target := "./" + url.PathEscape(path.Base(r.URL.Path)) + "/"
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	w.Header().Set("Location", target)
	w.WriteHeader(http.StatusMovedPermanently)
}
