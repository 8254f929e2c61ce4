//go:build !linux

package upstream

import "net"

// peerClosed reports false: only Linux tells a closed connection without
// reading from it.
func peerClosed(net.Conn) bool { return false }
