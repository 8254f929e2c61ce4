package compose

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// lab link changes a host's delay while the lab runs: it adds an extra
// one-way delay to everything the host sends (DelayPlan.WithExtra), as a
// slower or congested link out of it would, and 0 restores the matrix.
// The delay lines live in long-running processes, so lab link asks the
// process that holds the host's line, over a unix socket (a LinkServer):
//
//   - natively, the lab up process (NativeLinkSocket in its state
//     directory), which changes the host's plan in its TUN delay line or
//     its netem qdiscs in the host's namespace (Runner.SetLinkDelay);
//   - in Docker, inside the host's container (lab link -docker runs
//     lab link -container there): its lab delay process, on LinkSocket,
//     where the userspace NFQUEUE line runs; where netem delays the
//     container no process stays (lab delay became the service), and
//     lab link changes the qdiscs itself.

// LinkSocket is where a container's lab delay process, running the
// userspace delay line, answers lab link.
const LinkSocket = "/run/lab-link.sock"

// NativeLinkSocket is where lab up answers lab link: link.sock in the
// lab's state directory.
func NativeLinkSocket(stateDir string) string { return filepath.Join(stateDir, "link.sock") }

// ErrNoLinkServer says that no lab process answers on a link socket.
var ErrNoLinkServer = errors.New("no lab process answers on the link socket")

// ParseLinkDelay reads lab link's delay: a Go duration ("150ms", "1.5s")
// from 0 up to MaxLinkDelay; a bare "0" restores the matrix.
func ParseLinkDelay(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 || d > MaxLinkDelay {
		return 0, fmt.Errorf("link delay %q: want an extra one-way delay from 0 (the matrix) up to %v, like 150ms", s, MaxLinkDelay)
	}
	return d, nil
}

// LinkSetter sets the extra one-way delay of what a host sends (0: the
// matrix); *Runner and *ContainerDelay are ones.
type LinkSetter interface {
	SetLinkDelay(host string, extra time.Duration) error
}

// LinkServer answers lab link on a unix socket for the delay lines of
// this process: POST /link with the form values host and extra (a
// duration). Errors go back to lab link; the setter logs what it changed.
type LinkServer struct {
	path string
	srv  *http.Server
	done chan struct{} // closed when Serve returns
}

// StartLinkServer listens on the unix socket path (only root may connect)
// and serves lab link's requests to s until Close. A socket a dead
// process left is replaced; one a live process answers on is an error.
func StartLinkServer(path string, s LinkSetter) (*LinkServer, error) {
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("link socket %s: another lab process answers on it", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("link socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("link socket: %w", err)
	}
	l := &LinkServer{path: path, done: make(chan struct{}),
		srv: &http.Server{Handler: linkHandler(s), ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		defer close(l.done)
		l.srv.Serve(ln)
	}()
	return l, nil
}

// Close stops answering, waits for the server to end and removes the
// socket.
func (l *LinkServer) Close() error {
	err := l.srv.Close()
	<-l.done
	os.Remove(l.path)
	return err
}

func linkHandler(s LinkSetter) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /link", func(w http.ResponseWriter, r *http.Request) {
		host := r.FormValue("host")
		extra, err := ParseLinkDelay(r.FormValue("extra"))
		if err == nil {
			err = s.SetLinkDelay(host, extra)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, DescribeLinkDelay(host, extra))
	})
	return mux
}

// DescribeLinkDelay says what lab link set, for people.
func DescribeLinkDelay(host string, extra time.Duration) string {
	if extra == 0 {
		return host + ": the matrix's delays (no extra)"
	}
	return fmt.Sprintf("%s: +%v one way on everything it sends (every RTT to %s +%v)", host, extra, host, extra)
}

// SetLinkDelayAt asks the lab process answering on socket to set host's
// extra delay, and returns its answer (DescribeLinkDelay). If nothing
// answers there, the error is ErrNoLinkServer.
func SetLinkDelayAt(ctx context.Context, socket, host string, extra time.Duration) (string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	form := url.Values{"host": {host}, "extra": {extra.String()}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://lab/link", strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return "", fmt.Errorf("%w (%s)", ErrNoLinkServer, socket)
		}
		return "", fmt.Errorf("link socket %s: %w", socket, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := strings.TrimSpace(string(b))
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(msg)
	}
	return msg, nil
}
