//go:build !linux

package geodns

import (
	"errors"
	"net"
	"syscall"
)

// rawSocket is Linux's (rawudp_linux.go); elsewhere the batch loops go
// through x/net's PacketConn.
type rawSocket struct{}

// udpControl sets no socket options here (rawudp_linux.go's sets
// IP_PMTUDISC_PROBE).
func udpControl(string, string, syscall.RawConn) error { return nil }

func newRawSocket(*net.UDPConn) (*rawSocket, error) { return nil, errors.ErrUnsupported }

func (r *rawSocket) wake()                                {}
func (r *rawSocket) sendTo([]byte, net.Addr) (int, error) { return 0, errors.ErrUnsupported }
func (r *rawSocket) close()                               {}
func (r *rawSocket) loop(b *batchUDP) error               { return nil }
