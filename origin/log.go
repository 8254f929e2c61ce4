package origin

import (
	"io"
	"net/http"
)

// recorder is the ResponseWriter request logging wraps around the real
// one, to learn the status and the body's size. It keeps what callers
// check for: Flush (http.Flusher), ReadFrom (so net/http can still
// sendfile a file to a plain-HTTP client) and Unwrap (for
// http.ResponseController).
type recorder struct {
	http.ResponseWriter
	status int // first final status; 0 until one is written
	bytes  int64
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 { // 1xx are informational
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *recorder) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{w.ResponseWriter}, src)
	}
	w.bytes += n
	return n, err
}

func (w *recorder) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	// The controller also finds a Flusher under other wrappers.
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writerOnly hides every method but Write, so io.Copy does not call back
// into ReadFrom.
type writerOnly struct{ io.Writer }
