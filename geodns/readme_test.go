package geodns

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgecdn/cdn/pop/poptest/poll"
)

// readmeLocalBlock returns the lines of the README's fenced block that
// starts geodns with geodns/testdata/local.yaml ("Without the lab").
func readmeLocalBlock(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "```") {
			if in && len(block) > 0 && strings.Contains(block[0], "geodns/testdata/local.yaml") {
				return block
			}
			in, block = !in, nil
			continue
		}
		if in {
			block = append(block, line)
		}
	}
	t.Fatal("README.md has no code block starting with geodns -config geodns/testdata/local.yaml")
	return nil
}

// readmeLine is one command of the block and what its comment claims.
type readmeLine struct {
	args    []string // the command's words, without the comment
	comment string
	pop     string // "-> pop-ap": the PoP answered
	addr    string // "(10.77.3.20)": its address, if given
	scope   int    // "ECS scope /24"; -1 if not claimed
}

var (
	claimPoP   = regexp.MustCompile(`->\s*(pop-[a-z0-9-]+)`)
	claimAddr  = regexp.MustCompile(`\((\d+\.\d+\.\d+\.\d+)\)`)
	claimScope = regexp.MustCompile(`ECS scope /(\d+)`)
)

func parseReadmeLine(line string) readmeLine {
	cmd, comment, _ := strings.Cut(line, "#")
	l := readmeLine{args: strings.Fields(cmd), comment: strings.TrimSpace(comment), scope: -1}
	if m := claimPoP.FindStringSubmatch(comment); m != nil {
		l.pop = m[1]
	}
	if m := claimAddr.FindStringSubmatch(comment); m != nil {
		l.addr = m[1]
	}
	if m := claimScope.FindStringSubmatch(comment); m != nil {
		l.scope, _ = strconv.Atoi(m[1])
	}
	return l
}

// TestREADMELocalGeoDNS runs the README's GeoDNS-without-the-lab block as
// written against geodns started with the file its first line names
// (geodns/testdata/local.yaml), over real DNS packets on loopback. The
// README runs it beside the main job, whose PoP admin /readyz is pop-na's
// health check: a real HTTP server plays that part. The fixed ports of
// the block (geodns on 5353, its status on 9953, the PoP admin on 9901)
// are moved to free loopback ports so that the test runs beside other
// tests and a real main job, and each command's port is replaced by the
// bound one; nothing else changes. Each dig line is asked with a miekg/dns
// client and, where dig is installed, with dig itself; what its comment
// claims (the PoP, its address, the ECS scope) must be what comes back.
func TestREADMELocalGeoDNS(t *testing.T) {
	block := readmeLocalBlock(t)
	first := parseReadmeLine(block[0])
	var cfgPath string
	for i, a := range first.args {
		if a == "-config" && i+1 < len(first.args) {
			cfgPath = first.args[i+1]
		}
	}
	if cfgPath == "" {
		t.Fatalf("README line %q names no -config", block[0])
	}
	cfg, err := LoadConfig(filepath.Join("..", cfgPath))
	if err != nil {
		t.Fatal(err)
	}
	var ready atomic.Bool // the main job's PoP is up
	ready.Store(true)
	readyz := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	}))
	defer readyz.Close()
	readyHost := strings.TrimPrefix(readyz.URL, "http://")
	readmeListen, readmeAdmin := cfg.Listen, cfg.Admin
	checked := 0
	cfg.Listen, cfg.Admin = "127.0.0.1:0", "127.0.0.1:0"
	for i, p := range cfg.PoPs {
		if p.Check.URL == "" {
			continue
		}
		u, err := url.Parse(p.Check.URL)
		if err != nil {
			t.Fatal(err)
		}
		u.Host = readyHost
		cfg.PoPs[i].Check.URL = u.String()
		checked++
	}
	if checked == 0 {
		t.Fatalf("%s: no PoP is health-checked, but the README says pop-na is checked on the main job's /readyz", cfgPath)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfgPath, err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	serve(t, s)
	healthy := func(want bool) func() bool {
		return func() bool {
			for _, p := range s.state.Load().pops {
				if p.cfg.Check.URL != "" && (!p.seen.Load() || p.healthy.Load() != want) {
					return false
				}
			}
			return true
		}
	}
	poll.Until(t, "the checked PoPs to be healthy", healthy(true))

	_, readmePort, _ := net.SplitHostPort(readmeListen)
	_, dnsPort, _ := net.SplitHostPort(s.Addr().String())
	popAddr := map[string]string{}
	for _, p := range cfg.PoPs {
		if len(p.A) > 0 {
			popAddr[p.Name] = p.A[0]
		}
	}
	_, digErr := exec.LookPath("dig")
	if digErr != nil && os.Getenv("EDGECDN_REQUIRE_CLIENTS") != "" {
		t.Errorf("dig is not installed (apt-get install dnsutils)")
	}

	runDig := func(t *testing.T, l readmeLine) {
		if l.pop == "" {
			t.Fatalf("README line %q claims no PoP (want \"-> pop-XX\")", strings.Join(l.args, " "))
		}
		want := popAddr[l.pop]
		if want == "" {
			t.Fatalf("README claims %s, which %s does not define with an a: address", l.pop, cfgPath)
		}
		if l.addr != "" && l.addr != want {
			t.Errorf("README claims %s is %s; %s gives it %s", l.pop, l.addr, cfgPath, want)
		}
		args := append([]string(nil), l.args[1:]...)
		var name, subnet string
		for i := 0; i < len(args); i++ {
			switch a := args[i]; {
			case a == "-p" && i+1 < len(args):
				if args[i+1] != readmePort {
					t.Fatalf("README asks port %s, but %s listens on %s", args[i+1], cfgPath, readmeListen)
				}
				args[i+1] = dnsPort
				i++
			case strings.HasPrefix(a, "+subnet="):
				subnet = strings.TrimPrefix(a, "+subnet=")
			case strings.HasPrefix(a, "@"), strings.HasPrefix(a, "+"), strings.HasPrefix(a, "-"):
			default:
				name = a
			}
		}
		// The same question with a miekg/dns client.
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(name), dns.TypeA)
		m.SetEdns0(1232, false) // as dig does
		if subnet != "" {
			pfx := netip.MustParsePrefix(subnet)
			m.IsEdns0().Option = append(m.IsEdns0().Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1,
				SourceNetmask: uint8(pfx.Bits()), Address: net.IP(pfx.Addr().AsSlice())})
		}
		r, _, err := (&dns.Client{Net: "udp", Timeout: 5 * time.Second}).Exchange(m, s.Addr().String())
		if err != nil {
			t.Fatalf("%s A: %v", name, err)
		}
		if got := answerIPs(r); len(got) != 1 || got[0] != want {
			t.Errorf("%s A (ECS %q) = %s %v, want %s (%s) as the README says", name, subnet, dns.RcodeToString[r.Rcode], got, want, l.pop)
		}
		if l.scope >= 0 && ecsScope(r) != l.scope {
			t.Errorf("%s A (ECS %q): scope /%d, want /%d as the README says", name, subnet, ecsScope(r), l.scope)
		}
		if digErr != nil {
			t.Logf("skipped dig (not installed): %s", strings.Join(l.args, " "))
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "dig", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		addrs, scope := parseDig(string(out))
		if len(addrs) != 1 || addrs[0] != want {
			t.Errorf("dig %s: answer %v, want %s (%s) as the README says\n%s", strings.Join(args, " "), addrs, want, l.pop, out)
		}
		if l.scope >= 0 && scope != l.scope {
			t.Errorf("dig %s: ECS scope /%d, want /%d as the README says\n%s", strings.Join(args, " "), scope, l.scope, out)
		}
	}

	var digs []readmeLine
	for _, line := range block[1:] {
		l := parseReadmeLine(line)
		if len(l.args) == 0 {
			continue
		}
		switch l.args[0] {
		case "dig":
			digs = append(digs, l)
			t.Run(strings.Join(l.args[1:], " "), func(t *testing.T) { runDig(t, l) })
		case "curl":
			t.Run("status", func(t *testing.T) {
				u, err := url.Parse(l.args[len(l.args)-1])
				if err != nil || u.Host != readmeAdmin {
					t.Fatalf("README line %q: want a URL on %s (admin)", line, readmeAdmin)
				}
				u.Host = s.AdminAddr().String()
				resp, err := http.Get(u.String())
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var st struct {
					PoPs []struct {
						Name    string `json:"name"`
						Healthy bool   `json:"healthy"`
					} `json:"pops"`
					Routing map[string][]string `json:"routing"`
				}
				if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != 200 {
					t.Fatalf("GET %s: %s, %v", u, resp.Status, err)
				}
				if len(st.PoPs) != len(cfg.PoPs) || len(st.Routing) == 0 {
					t.Errorf("GET %s = %+v, want every PoP's health and the routing table", u, st)
				}
			})
		default:
			t.Errorf("README line %q: the test does not know how to run %s", line, l.args[0])
		}
	}
	if len(digs) == 0 {
		t.Fatal("the README block has no dig line")
	}

	// The case: with the local PoP down, the ECS answers of the
	// other regions do not change (only a client whose nearest PoP is
	// pop-na moves).
	ready.Store(false)
	poll.Until(t, "the checked PoPs to be unhealthy", healthy(false))
	for _, l := range digs {
		if strings.Contains(strings.Join(l.args, " "), "+subnet=") && l.pop != "" && cfgPoP(cfg, l.pop).Check.URL == "" {
			t.Run("local-pop-down/"+strings.Join(l.args[1:], " "), func(t *testing.T) { runDig(t, l) })
		}
	}
}

func cfgPoP(cfg Config, name string) PoP {
	for _, p := range cfg.PoPs {
		if p.Name == name {
			return p
		}
	}
	return PoP{}
}

// parseDig returns the A addresses of dig's ANSWER section and the scope
// of its CLIENT-SUBNET line (-1 if none).
func parseDig(out string) ([]string, int) {
	var addrs []string
	scope := -1
	section := ""
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, ";; ") && strings.HasSuffix(line, "SECTION:") {
			section = strings.TrimSuffix(strings.TrimPrefix(line, ";; "), " SECTION:")
			continue
		}
		if rest, ok := strings.CutPrefix(line, "; CLIENT-SUBNET: "); ok {
			if i := strings.LastIndexByte(rest, '/'); i >= 0 {
				scope, _ = strconv.Atoi(strings.TrimSpace(rest[i+1:]))
			}
		}
		f := strings.Fields(line)
		if section == "ANSWER" && len(f) == 5 && f[3] == "A" {
			addrs = append(addrs, f[4])
		}
	}
	return addrs, scope
}
