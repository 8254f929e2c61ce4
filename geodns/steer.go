package geodns

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"
)

// Latency steering. Every PoP measures the round trip to the clients it
// serves (TCP's smoothed RTT, QUIC's RTT stats) per client prefix, /24 or
// /48, and serves the table on its admin /rtt. geodns pulls the tables and,
// for a client prefix whose geographic choice is measured too, answers the
// healthy PoP with the lowest measured RTT instead. PoPs within the
// tolerance of the best are equally good and share the answers by weight;
// a PoP stays in that set until it is twice the tolerance behind
// (hysteresis), so noise does not flap answers.
//
// A PoP only measures the clients DNS sends it. To learn the others, a
// bounded share of the answers (latency.explore, at most 5%) for a prefix
// whose PoP is measured far away (over explore_above_ms, 20 ms) goes to the
// healthy PoPs outside the answered set, with a short TTL; the client's
// next connections there are measured like any other. This keeps going
// after every PoP is measured, so that a PoP that was slow and recovered
// wins its clients back; a client close to its PoP never explores.

// Latency configures latency steering.
type Latency struct {
	// PullInterval is how often each PoP's rtt_url is fetched. If zero, 5s.
	PullInterval time.Duration `yaml:"pull_interval"`
	// MinSamples a PoP must have of a prefix before its RTT counts. If zero, 3.
	MinSamples int `yaml:"min_samples"`
	// MaxAge is how old a PoP's last sample of a prefix may be. If zero, 2m.
	MaxAge time.Duration `yaml:"max_age"`
	// ToleranceMs and TolerancePct: PoPs whose RTT is within the larger of
	// the two of the best are equally good. If zero, 5 ms and 10%.
	ToleranceMs  float64 `yaml:"tolerance_ms"`
	TolerancePct float64 `yaml:"tolerance_pct"`
	// Explore is the share of a prefix's answers given to PoPs that have
	// not measured it, 0 to 0.05. If zero, 0.05; negative turns it off.
	Explore float64 `yaml:"explore"`
	// ExploreTTL is the TTL of an exploratory answer. If zero, 5s.
	ExploreTTL time.Duration `yaml:"explore_ttl"`
	// ExploreAboveMs: a prefix explores only while the PoP it is answered
	// is measured at more than this. If zero, 20 ms; negative: always.
	ExploreAboveMs float64 `yaml:"explore_above_ms"`
	// MaxPrefixes bounds the prefixes kept from all PoPs together; a PoP's
	// table beyond it keeps its freshest entries. If zero, 65536.
	MaxPrefixes int `yaml:"max_prefixes"`
}

// maxExplore is the most exploration the issue of cost allows: one answer
// in twenty.
const maxExplore = 0.05

func (l *Latency) validate(add func(string, ...any)) {
	if l.PullInterval < 0 || l.MaxAge < 0 || l.ExploreTTL < 0 {
		add("latency: negative durations are not allowed")
	}
	if l.MinSamples < 0 {
		add("latency.min_samples: %d, want 1 or more (0 for 3)", l.MinSamples)
	}
	if l.ToleranceMs < 0 || l.TolerancePct < 0 || math.IsNaN(l.ToleranceMs) || math.IsNaN(l.TolerancePct) {
		add("latency.tolerance_ms/tolerance_pct: want 0 or more")
	}
	if l.Explore > maxExplore || math.IsNaN(l.Explore) {
		add("latency.explore: %v, want at most %v (a negative value turns exploration off)", l.Explore, maxExplore)
	}
	if l.MaxPrefixes < 0 {
		add("latency.max_prefixes: %d, want 1 or more (0 for 65536)", l.MaxPrefixes)
	}
}

// withDefaults fills the zero fields.
func (l Latency) withDefaults() Latency {
	if l.PullInterval == 0 {
		l.PullInterval = 5 * time.Second
	}
	if l.MinSamples == 0 {
		l.MinSamples = 3
	}
	if l.MaxAge == 0 {
		l.MaxAge = 2 * time.Minute
	}
	if l.ToleranceMs == 0 {
		l.ToleranceMs = 5
	}
	if l.TolerancePct == 0 {
		l.TolerancePct = 10
	}
	switch {
	case l.Explore == 0:
		l.Explore = maxExplore
	case l.Explore < 0:
		l.Explore = 0
	}
	if l.ExploreTTL == 0 {
		l.ExploreTTL = 5 * time.Second
	}
	if l.ExploreAboveMs == 0 {
		l.ExploreAboveMs = 20
	}
	if l.MaxPrefixes == 0 {
		l.MaxPrefixes = 65536
	}
	return l
}

// tolerance is how far behind best a PoP may be and still be equally good.
func (l Latency) tolerance(best float64) float64 {
	return max(l.ToleranceMs, best*l.TolerancePct/100)
}

// fresh reports whether m counts at now: enough samples, recent enough.
func (l Latency) fresh(m measure, now time.Time) bool {
	return m.samples >= l.MinSamples && now.Sub(m.last) <= l.MaxAge
}

// rttPrefix is the prefix a client's RTTs are kept under: /24 for IPv4,
// /48 for IPv6, as the PoPs aggregate them.
func rttPrefix(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	bits := 48
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p
}

// measure is one PoP's view of one prefix.
type measure struct {
	rttMs, minMs float64
	samples      int
	last         time.Time // when the PoP took its last sample
}

// prefixRTT is what the fleet knows of one client prefix.
type prefixRTT struct {
	byPoP map[string]measure
	// chosen is the equally good set last answered, for hysteresis.
	chosen []string
}

// rttTable holds the pulled tables of every PoP. It belongs to the Server
// and survives reloads.
type rttTable struct {
	mu       sync.Mutex
	prefixes map[netip.Prefix]*prefixRTT
	pulls    map[string]pullResult // by PoP name
	now      func() time.Time
}

type pullResult struct {
	at       time.Time
	prefixes int
	err      string
}

func newRTTTable() *rttTable {
	return &rttTable{prefixes: map[netip.Prefix]*prefixRTT{}, pulls: map[string]pullResult{}, now: time.Now}
}

// rttReport is a PoP's /rtt.
type rttReport struct {
	PoP      string `json:"pop"`
	Prefixes []struct {
		Prefix  string  `json:"prefix"`
		RTTms   float64 `json:"rtt_ms"`
		MinMs   float64 `json:"min_ms"`
		Samples int     `json:"samples"`
		AgeMs   int64   `json:"age_ms"`
	} `json:"prefixes"`
}

// maxRTTReport bounds what one pull reads.
const maxRTTReport = 16 << 20

// replace puts pop's report in place of what the table had from it,
// keeping at most lat.MaxPrefixes prefixes in the whole table (the
// report's freshest first when it would exceed it). changed is false
// when no route can differ for it: the table holds what it held from
// pop, but for the times of samples that were and are fresh at.
func (t *rttTable) replace(pop string, rep rttReport, at time.Time, lat Latency) (kept int, changed bool) {
	limit := lat.MaxPrefixes
	type entry struct {
		p netip.Prefix
		m measure
	}
	var in []entry
	for _, e := range rep.Prefixes {
		p, err := netip.ParsePrefix(e.Prefix)
		if err != nil || e.Samples <= 0 || e.RTTms < 0 || math.IsNaN(e.RTTms) || math.IsInf(e.RTTms, 0) || e.AgeMs < 0 {
			continue // one bad row does not cost the rest
		}
		in = append(in, entry{rttPrefix(p.Addr()), measure{rttMs: e.RTTms, minMs: e.MinMs, samples: e.Samples, last: at.Add(-time.Duration(e.AgeMs) * time.Millisecond)}})
	}
	slices.SortFunc(in, func(a, b entry) int { return b.m.last.Compare(a.m.last) })
	t.mu.Lock()
	defer t.mu.Unlock()
	old := map[netip.Prefix]measure{}
	for p, r := range t.prefixes {
		if m, ok := r.byPoP[pop]; ok {
			old[p] = m
		}
		delete(r.byPoP, pop)
		if len(r.byPoP) == 0 {
			delete(t.prefixes, p)
		}
	}
	for _, e := range in {
		r := t.prefixes[e.p]
		if r == nil {
			if len(t.prefixes) >= limit {
				continue
			}
			r = &prefixRTT{byPoP: map[string]measure{}}
			t.prefixes[e.p] = r
		}
		r.byPoP[pop] = e.m
		kept++
		if o, ok := old[e.p]; !ok || o.rttMs != e.m.rttMs || lat.fresh(o, at) != lat.fresh(e.m, at) {
			changed = true
		}
	}
	t.pulls[pop] = pullResult{at: at, prefixes: kept}
	return kept, changed || kept != len(old)
}

func (t *rttTable) failed(pop string, at time.Time, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.pulls[pop]
	r.err = err.Error()
	r.at = at
	t.pulls[pop] = r
}

// pullLoop fetches p's RTT table every interval until ctx ends.
func (s *Server) pullLoop(ctx context.Context, st *state, p *popState) {
	lat := st.latency
	client := &http.Client{Timeout: max(lat.PullInterval, time.Second)}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(lat.PullInterval)
	defer tick.Stop()
	for {
		if err := s.pull(ctx, client, st, p); err != nil {
			s.rtt.failed(p.cfg.Name, s.rtt.now(), err)
			s.metrics.pulls.WithLabelValues(p.cfg.Name, "error").Inc()
			s.log.Debug("rtt pull failed", "pop", p.cfg.Name, "err", err)
		} else {
			s.metrics.pulls.WithLabelValues(p.cfg.Name, "ok").Inc()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *Server) pull(ctx context.Context, client *http.Client, st *state, p *popState) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.RTTURL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "edgecdn-geodns-rtt")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", p.cfg.RTTURL, resp.Status)
	}
	var rep rttReport
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxRTTReport)).Decode(&rep); err != nil {
		return fmt.Errorf("%s: %w", p.cfg.RTTURL, err)
	}
	if _, changed := s.rtt.replace(p.cfg.Name, rep, s.rtt.now(), st.latency); changed {
		s.invalidate()
	}
	return nil
}

// route is how a geo name is answered for one client: the PoPs in answer
// order for each option, and the share of the answers each option gets.
type route struct {
	options []option
	// steered is true when measured latency decided (the ECS scope is then
	// the measured prefix's).
	steered bool
	reason  string
	// until is when, on the RTT table's clock, the first measurement the
	// route counted goes stale, which changes it with no new pull; zero
	// if none did.
	until time.Time
}

type option struct {
	pops    []*popState
	share   float64 // of all answers; the options' shares sum to 1
	explore bool
}

// pick chooses the option for two rolls in [0, 1): explore decides whether
// the answer explores (and which PoP), main which of the equally good
// PoPs answers otherwise.
func (r *route) pick(explore, main float64) *option {
	return &r.options[r.pickIndex(explore, main)]
}

// pickIndex is pick's choice as an index of r.options; it allocates
// nothing, for the fast path.
func (r *route) pickIndex(explore, main float64) int {
	share, exploring := 0.0, 0
	for _, o := range r.options {
		if o.explore {
			exploring++
			share += o.share
		}
	}
	if explore < share {
		k := int(explore/share*float64(exploring)) % exploring
		for i, o := range r.options {
			if o.explore {
				if k == 0 {
					return i
				}
				k--
			}
		}
	}
	main *= 1 - share
	last := -1
	for i, o := range r.options {
		if o.explore {
			continue
		}
		last = i
		if main < o.share {
			return i
		}
		main -= o.share
	}
	return last
}

// route decides how to answer a geo name with candidates cands for a
// client at addr, located at loc. Without latency data it is the
// geographic order (nearest), with PoPs tied for first place sharing the
// answers by weight.
func (st *state) route(rtt *rttTable, cands []*popState, addr netip.Addr, loc location, n int) route {
	ranked, ties := st.rank(cands, loc)
	if len(ranked) == 0 {
		return route{reason: "no PoP checked yet"}
	}
	if !st.steering || rtt == nil || !addr.IsValid() {
		return route{options: shares(ranked[:ties], ranked, n, 1), reason: "geo"}
	}
	lat := st.latency
	now := rtt.now()
	pfx := rttPrefix(addr)
	rtt.mu.Lock()
	defer rtt.mu.Unlock()
	rec := rtt.prefixes[pfx]
	fresh := func(p *popState) (float64, bool) {
		if rec == nil {
			return 0, false
		}
		m, ok := rec.byPoP[p.cfg.Name]
		if !ok || !lat.fresh(m, now) {
			return 0, false
		}
		return m.rttMs, true
	}
	var measured, unmeasured []*popState
	var until time.Time
	for _, p := range ranked {
		if _, ok := fresh(p); ok {
			measured = append(measured, p)
			if stale := rec.byPoP[p.cfg.Name].last.Add(lat.MaxAge); until.IsZero() || stale.Before(until) {
				until = stale
			}
		} else {
			unmeasured = append(unmeasured, p)
		}
	}
	var r route
	if _, ok := fresh(ranked[0]); !ok || len(measured) < 2 {
		// Geography decides until the PoP it picks is measured and there
		// is another to compare it with.
		r = route{options: shares(ranked[:ties], ranked, n, 1), reason: "geo: " + unmeasuredWhy(ranked[0], measured)}
	} else {
		slices.SortStableFunc(measured, func(a, b *popState) int {
			ra, _ := fresh(a)
			rb, _ := fresh(b)
			return cmp.Compare(ra, rb)
		})
		best, _ := fresh(measured[0])
		tol := lat.tolerance(best)
		var set []*popState
		for _, p := range measured {
			v, _ := fresh(p)
			if v <= best+tol || (slices.Contains(rec.chosen, p.cfg.Name) && v <= best+2*tol) {
				set = append(set, p)
			}
		}
		rec.chosen = rec.chosen[:0]
		for _, p := range set {
			rec.chosen = append(rec.chosen, p.cfg.Name)
		}
		order := append(slices.Clone(measured), unmeasured...)
		r = route{options: shares(set, order, n, 1), steered: true, reason: latencyWhy(measured, set, fresh)}
	}
	// Explore: when the answered PoP is measured and farther than
	// explore_above_ms, a share of the answers goes to each healthy PoP
	// outside the answered set, so that its measurement of this prefix
	// starts or stays fresh (a PoP that was slow yesterday is not slow for
	// ever). A client already close to its PoP has little to win and pays
	// nothing.
	answered := math.Inf(1)
	for _, o := range r.options {
		if v, ok := fresh(o.pops[0]); ok {
			answered = min(answered, v)
		}
	}
	var explore []option
	for _, p := range ranked {
		// A degraded PoP (its origin is down) is not explored: the
		// client would find there only what happens to be cached.
		if p.degraded.Load() {
			continue
		}
		if !slices.ContainsFunc(r.options, func(o option) bool { return o.pops[0] == p }) {
			explore = append(explore, option{pops: firstThen(p, ranked, n), explore: true})
		}
	}
	if lat.Explore > 0 && len(explore) > 0 && !math.IsInf(answered, 1) && answered > lat.ExploreAboveMs {
		for i := range r.options {
			r.options[i].share *= 1 - lat.Explore
		}
		for i := range explore {
			explore[i].share = lat.Explore / float64(len(explore))
		}
		r.options = append(r.options, explore...)
		r.reason += fmt.Sprintf("; exploring %d other PoP(s) in %.0f%% of answers", len(explore), lat.Explore*100)
	}
	r.until = until
	return r
}

// shares makes one option per PoP of set, each with that PoP first and
// then the rest of order, sharing total by weight.
func shares(set, order []*popState, n int, total float64) []option {
	sum := 0
	for _, p := range set {
		sum += p.weight()
	}
	out := make([]option, 0, len(set))
	for _, p := range set {
		out = append(out, option{pops: firstThen(p, order, n), share: total * float64(p.weight()) / float64(sum)})
	}
	return out
}

// firstThen is p followed by order without p, n PoPs at most.
func firstThen(p *popState, order []*popState, n int) []*popState {
	out := []*popState{p}
	for _, q := range order {
		if len(out) >= n {
			break
		}
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

func unmeasuredWhy(first *popState, measured []*popState) string {
	if !slices.Contains(measured, first) {
		return first.cfg.Name + " (nearest) has not measured this prefix"
	}
	return "no other PoP has measured this prefix"
}

func latencyWhy(measured, set []*popState, rtt func(*popState) (float64, bool)) string {
	var b strings.Builder
	b.WriteString("latency:")
	for i, p := range measured {
		v, _ := rtt(p)
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %s %.1f ms", p.cfg.Name, v)
		if slices.Contains(set, p) {
			b.WriteString(" (answered)")
		}
	}
	return b.String()
}

// latencyStatus is the latency part of /status: every pull's outcome and,
// per measured prefix, each PoP's RTT, the answer's shares and why.
type latencyStatus struct {
	Pulls    map[string]pullStatus `json:"pulls"`
	Prefixes []prefixStatus        `json:"prefixes"`
}

type pullStatus struct {
	AgeS     float64 `json:"age_s"`
	Prefixes int     `json:"prefixes"`
	Error    string  `json:"error,omitempty"`
}

type prefixStatus struct {
	Prefix string                  `json:"prefix"`
	RTT    map[string]measureState `json:"rtt"`
	// Shares is each PoP's share of the answers as their first record.
	Shares map[string]float64 `json:"shares"`
	Reason string             `json:"reason"`
}

type measureState struct {
	RTTms   float64 `json:"rtt_ms"`
	Samples int     `json:"samples"`
	AgeS    float64 `json:"age_s"`
	Fresh   bool    `json:"fresh"`
}

func (s *Server) latencyStatus(st *state) *latencyStatus {
	t := s.rtt
	now := t.now()
	out := &latencyStatus{Pulls: map[string]pullStatus{}}
	t.mu.Lock()
	for name, p := range t.pulls {
		out.Pulls[name] = pullStatus{AgeS: now.Sub(p.at).Seconds(), Prefixes: p.prefixes, Error: p.err}
	}
	var pfxs []netip.Prefix
	for p, r := range t.prefixes {
		pfxs = append(pfxs, p)
		ps := prefixStatus{Prefix: p.String(), RTT: map[string]measureState{}, Shares: map[string]float64{}}
		for name, m := range r.byPoP {
			age := now.Sub(m.last)
			ps.RTT[name] = measureState{RTTms: m.rttMs, Samples: m.samples, AgeS: age.Seconds(), Fresh: st.latency.fresh(m, now)}
		}
		out.Prefixes = append(out.Prefixes, ps)
	}
	t.mu.Unlock()
	for i, p := range pfxs {
		r := st.route(t, st.pops, p.Addr(), st.locate(p.Addr()), st.answers)
		for _, o := range r.options {
			out.Prefixes[i].Shares[o.pops[0].cfg.Name] += o.share
		}
		out.Prefixes[i].Reason = r.reason
	}
	slices.SortFunc(out.Prefixes, func(a, b prefixStatus) int { return strings.Compare(a.Prefix, b.Prefix) })
	return out
}
