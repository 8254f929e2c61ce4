package pop

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// socketRTT is the kernel's smoothed round-trip time of a TCP socket
// (TCP_INFO's tcpi_rtt), or 0 if it cannot tell (the socket is closed).
func socketRTT(sc syscall.Conn) time.Duration {
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0
	}
	var rtt time.Duration
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			rtt = time.Duration(info.Rtt) * time.Microsecond
		}
	})
	return rtt
}
