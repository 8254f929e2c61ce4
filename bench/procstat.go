package bench

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// RSSKiB is a process's resident memory in KiB (VmRSS of /proc/PID/status):
// what load's -watch-pid samples and the drills hold a PoP's memory to.
func RSSKiB(pid int) (int64, error) { return procStatusKiB(pid, "VmRSS:") }

// procStatusKiB reads one kB field of /proc/PID/status, such as "VmRSS:"
// or "VmHWM:" (the resident high-water mark since the process started).
func procStatusKiB(pid int, field string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, strings.TrimSuffix(field, ":"))
}
