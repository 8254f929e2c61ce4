package compose

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

func TestNativeLabDelays(t *testing.T) {
	needRoot(t)
	topo, err := Load(context.Background(), "../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("ect%d-", os.Getpid())
	n, err := Up(context.Background(), topo, NetConfig{Prefix: prefix, Delay: BackendUserspace})
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, h := range topo.Hosts {
			if _, err := netns.GetFromName(prefix + h.Name); err == nil {
				t.Errorf("namespace %s%s left behind", prefix, h.Name)
			}
		}
	})
	for _, tt := range []struct{ a, b string }{
		{"client-na", "pop-na"}, {"client-eu", "pop-na"}, {"client-ap", "origin"}, {"pop-eu", "pop-ap"}, {"client-ap", "geodns"},
		{"client-moved", "pop-na"}, {"client-moved", "pop-eu"}, {"client-moved", "pop-ap"},
	} {
		want := topo.RTTBetween(mustHost(t, topo, tt.a), mustHost(t, topo, tt.b))
		got, err := n.MeasureRTT(context.Background(), tt.a, tt.b, 5)
		if err != nil {
			t.Fatalf("%s -> %s: %v", tt.a, tt.b, err)
		}
		t.Logf("%s -> %s: measured %v, matrix %v", tt.a, tt.b, got.Round(10*time.Microsecond), want)
		// The calibration rule of the lab: within 2 ms + 5% of the matrix.
		if tol := 2*time.Millisecond + want/20; got < want || got > want+tol {
			t.Errorf("RTT %s -> %s = %v, want %v (+%v)", tt.a, tt.b, got, want, tol)
		}
	}
}

// lab link on the userspace delay line, measured: +100 ms on pop-eu
// raises every round trip to pop-eu by 100 ms (from its own region, from
// another, and pop-eu's own to the misplaced client) and leaves the
// others alone; 0 restores the matrix. Through a Runner, each change is
// logged.
func TestNativeLabLinkDelay(t *testing.T) {
	needRoot(t)
	topo := labTopology(t)
	n, _ := upNet(t, topo, "eck", NetConfig{Delay: BackendUserspace})
	var logs bytes.Buffer
	r := &Runner{Topo: topo, Net: n, Delay: n.Delay(), log: slog.New(slog.NewTextHandler(&logs, nil))}
	pairs := []struct {
		a, b   string
		raised bool // by pop-eu's extra
	}{
		{"client-eu", "pop-eu", true}, {"client-na", "pop-eu", true}, {"pop-eu", "client-moved", true}, {"client-eu", "pop-na", false},
	}
	for _, extra := range []time.Duration{100 * ms, 0} {
		if err := r.SetLinkDelay("pop-eu", extra); err != nil {
			t.Fatalf("SetLinkDelay(pop-eu, %v) = %v", extra, err)
		}
		if want := fmt.Sprintf("host=pop-eu extra=%v", extra); !strings.Contains(logs.String(), want) {
			t.Errorf("log after SetLinkDelay(pop-eu, %v):\n%s\nwant a line with %q", extra, logs.String(), want)
		}
		for _, p := range pairs {
			want := topo.RTTBetween(mustHost(t, topo, p.a), mustHost(t, topo, p.b))
			if p.raised {
				want += extra
			}
			got, err := n.MeasureRTT(context.Background(), p.a, p.b, 5)
			if err != nil {
				t.Fatalf("%s -> %s: %v", p.a, p.b, err)
			}
			t.Logf("pop-eu +%v: %s -> %s measured %v, want %v", extra, p.a, p.b, got.Round(10*time.Microsecond), want)
			if tol := 2*time.Millisecond + want/20; got < want || got > want+tol {
				t.Errorf("pop-eu +%v: RTT %s -> %s = %v, want %v (+%v)", extra, p.a, p.b, got, want, tol)
			}
		}
	}
}

// Both topologies carry TCP: TUN devices and the delay line, and veths
// on a bridge (with FIFOs in place of netem, so it runs on any kernel).
func TestNativeLabCarriesTCP(t *testing.T) {
	needRoot(t)
	topo, err := Load(context.Background(), "../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		cfg     NetConfig
		delayed bool
	}{
		{"userspace", NetConfig{Delay: BackendUserspace}, true},
		{"bridge", NetConfig{leaf: fifoLeaf}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Prefix = fmt.Sprintf("ecu%d-", os.Getpid())
			n, err := Up(context.Background(), topo, tt.cfg)
			if err != nil {
				t.Fatalf("Up: %v", err)
			}
			defer n.Close()
			ln, err := n.Listen("pop-eu", "10.77.2.20:8080")
			if err != nil {
				t.Fatal(err)
			}
			body := strings.Repeat("x", 200<<10) // several segments each way
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
			go srv.Serve(ln)
			defer srv.Close()
			c := &http.Client{Transport: &http.Transport{DialContext: n.Dialer("client-eu")}}
			start := time.Now()
			resp, err := c.Get("http://10.77.2.20:8080/")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			took := time.Since(start)
			if string(got) != body {
				t.Fatalf("got %d bytes, want %d", len(got), len(body))
			}
			// A TCP handshake and a request: at least two round trips of 10 ms.
			if tt.delayed && took < 20*time.Millisecond {
				t.Errorf("fetch over the lab took %v, want at least 2 RTT (20 ms)", took)
			}
			// A host outside the lab is not reachable from inside: nothing leaves.
			if _, err := n.Dialer("client-eu")(context.Background(), "tcp", "192.0.2.1:80"); err == nil {
				t.Errorf("dialled an address outside the lab")
			}
		})
	}
}

func mustHost(t *testing.T, topo *Topology, name string) Host {
	t.Helper()
	h, ok := topo.Host(name)
	if !ok {
		t.Fatalf("no host %s", name)
	}
	return h
}

func TestNetemDetection(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("tc"); err != nil {
		t.Skip("tc (iproute2) not installed")
	}
	// The detection must agree with tc(8) trying the same in a namespace.
	ns := fmt.Sprintf("ecn%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	tcErr := exec.Command("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms").Run()
	got := NetemAvailable()
	t.Logf("netem: tc says %v, NetemAvailable says %v", tcErr, got)
	if (tcErr == nil) != (got == nil) {
		t.Errorf("NetemAvailable() = %v but tc says %v", got, tcErr)
	}
}
