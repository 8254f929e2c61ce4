//go:build !linux

package pop

import (
	"syscall"
	"time"
)

// socketRTT reports 0 (no sample): only Linux's TCP_INFO is read.
func socketRTT(syscall.Conn) time.Duration { return 0 }
