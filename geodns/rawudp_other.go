//go:build !linux

package geodns

import (
	"errors"
	"net"
)

// rawSocket is Linux's (rawudp_linux.go); elsewhere the batch loops go
// through x/net's PacketConn.
type rawSocket struct{}

func newRawSocket(*net.UDPConn) (*rawSocket, error) { return nil, errors.ErrUnsupported }

func (r *rawSocket) wake()                  {}
func (r *rawSocket) close()                 {}
func (r *rawSocket) loop(b *batchUDP) error { return nil }
