package compose

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	nfqueue "github.com/florianl/go-nfqueue/v2"
	"github.com/mdlayher/netlink"
)

// The queue backend is the userspace delay line for a host that has its
// own network stack but no sch_netem (a container on such a kernel): one
// iptables rule sends what the host sends into the lab subnet to an
// NFQUEUE, and QueueDelay gives each packet its ACCEPT verdict once the
// plan's delay for its destination has passed. Packets stay in the
// kernel while they wait; only their IPv4 header is copied out.
//
// Within one band the delay is constant, so packets leave in the order
// they came: each band is a FIFO drained by one goroutine.

// QueueNum is the NFQUEUE number the lab's delay line uses.
const QueueNum = 7707

const (
	queueMaxLen = 20000 // packets the kernel holds for us (one-way delay × rate)
	queueCopy   = 20    // bytes copied per packet: the IPv4 header
)

// QueueDelay delays a host's egress through an NFQUEUE. Close removes the
// iptables rule and stops the line.
type QueueDelay struct {
	// plan is looked up for each packet; SetPlan swaps it whole, so a
	// packet sees the old plan or the new one, never half of each.
	plan   atomic.Pointer[DelayPlan]
	rule   []string // the iptables rule, without -A/-D
	nf     *nfqueue.Nfqueue
	cancel context.CancelFunc
	bands  []chan queued
	wg     sync.WaitGroup // owns the band goroutines

	mu sync.Mutex // guards verdicts on nf (one netlink socket)
}

type queued struct {
	id  uint32
	due time.Time
}

// StartQueueDelay installs plan for the calling process's network
// namespace: it binds NFQUEUE QueueNum, then adds an iptables rule (mangle
// OUTPUT, not via loopback, destination subnet) that queues packets there.
// The rule has --queue-bypass: if this process dies, packets pass
// undelayed rather than being lost. Needs CAP_NET_ADMIN and the iptables
// command.
func StartQueueDelay(ctx context.Context, plan DelayPlan, subnet netip.Prefix) (*QueueDelay, error) {
	nf, err := nfqueue.Open(&nfqueue.Config{
		NfQueue:      QueueNum,
		MaxPacketLen: queueCopy,
		MaxQueueLen:  queueMaxLen,
		Copymode:     nfqueue.NfQnlCopyPacket,
		WriteTimeout: time.Second,
	})
	if err != nil {
		return nil, fmt.Errorf("open nfqueue %d: %w", QueueNum, withCapHint(err))
	}
	_ = nf.SetOption(netlink.NoENOBUFS, true) // a full socket buffer must not end the line
	ctx, cancel := context.WithCancel(ctx)
	q := &QueueDelay{nf: nf, cancel: cancel}
	q.plan.Store(&plan)
	for range plan.Bands {
		ch := make(chan queued, queueMaxLen)
		q.bands = append(q.bands, ch)
		q.wg.Go(func() { q.drain(ctx, ch) })
	}
	err = nf.RegisterWithErrorFunc(ctx, q.hook, func(e error) int {
		if ctx.Err() != nil {
			return 1
		}
		return 0 // keep reading: a lost packet is retransmitted, a stopped line is not
	})
	if err != nil {
		q.Close()
		return nil, fmt.Errorf("bind nfqueue %d: %w", QueueNum, withCapHint(err))
	}
	q.rule = []string{"OUTPUT", "-t", "mangle", "!", "-o", "lo", "-d", subnet.String(),
		"-j", "NFQUEUE", "--queue-num", strconv.Itoa(QueueNum), "--queue-bypass"}
	if err := iptables(append([]string{"-A"}, q.rule...)...); err != nil {
		q.rule = nil
		q.Close()
		return nil, err
	}
	return q, nil
}

// hook runs on the library's reader for each queued packet.
func (q *QueueDelay) hook(a nfqueue.Attribute) int {
	if a.PacketID == nil {
		return 0
	}
	id := *a.PacketID
	plan := q.plan.Load()
	band := 0
	if a.Payload != nil && len(*a.Payload) >= 20 && (*a.Payload)[0]>>4 == 4 {
		dst := netip.AddrFrom4([4]byte((*a.Payload)[16:20]))
		band = plan.bandTo(dst)
	}
	if band == 0 {
		q.verdict(id)
		return 0
	}
	select {
	case q.bands[band-1] <- queued{id: id, due: time.Now().Add(plan.Bands[band-1])}:
	default:
		q.verdict(id) // the band is full: late is better than lost
	}
	return 0
}

// SetPlan replaces the plan, for the packets queued from now on (lab
// link: the plan with an extra delay). The new plan must have as many
// bands as the one the line started with: each band is one FIFO. A band
// whose delay shrank releases its newer packets behind the older ones,
// in order.
func (q *QueueDelay) SetPlan(p DelayPlan) error {
	if len(p.Bands) != len(q.bands) {
		return fmt.Errorf("delay line of %s: a plan of %d bands, want %d as it started with", p.Host, len(p.Bands), len(q.bands))
	}
	q.plan.Store(&p)
	return nil
}

func (q *QueueDelay) drain(ctx context.Context, ch chan queued) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-ch:
			if d := time.Until(p.due); d > 0 {
				t.Reset(d)
				select {
				case <-ctx.Done():
					return
				case <-t.C:
				}
			}
			q.verdict(p.id)
		}
	}
}

func (q *QueueDelay) verdict(id uint32) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.nf.SetVerdict(id, nfqueue.NfAccept)
}

// Close removes the rule first (new packets pass undelayed), then stops
// the line; packets still queued are released by the kernel when the
// queue's socket closes.
func (q *QueueDelay) Close() error {
	var err error
	if q.rule != nil {
		err = iptables(append([]string{"-D"}, q.rule...)...)
		q.rule = nil
	}
	q.cancel()
	q.wg.Wait()
	return errors.Join(err, q.nf.Close())
}

// bandTo is the 1-based band of the first rule matching dst, 0 for none.
func (p DelayPlan) bandTo(dst netip.Addr) int {
	for _, r := range p.Rules {
		if r.Dst.Contains(dst) {
			return r.Band
		}
	}
	return 0
}

func iptables(args ...string) error {
	path, err := exec.LookPath("iptables")
	if err != nil {
		return fmt.Errorf("the userspace delay line needs the iptables command: %w", err)
	}
	out, err := exec.Command(path, append([]string{"-w", "5"}, args...)...).CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "ermission denied") || strings.Contains(msg, "not permitted") {
			msg += " (a container needs cap_add: [NET_ADMIN])"
		}
		return fmt.Errorf("iptables %s: %s", strings.Join(args, " "), msg)
	}
	return nil
}

func withCapHint(err error) error {
	if s := err.Error(); strings.Contains(s, "operation not permitted") || strings.Contains(s, "permission denied") {
		return fmt.Errorf("%w (a container needs cap_add: [NET_ADMIN])", err)
	}
	return err
}
