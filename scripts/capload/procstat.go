//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// Per-process and per-core figures from /proc (Linux). CPU times are in
// clock ticks; USER_HZ is 100 on every Linux this runs on.
const userHZ = 100

// procTicks is utime + stime of /proc/PID/stat (PID "self" for this
// process).
func procTicks(pid string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatTicks(b)
}

// parseStatTicks reads utime and stime (fields 14 and 15) of a
// /proc/PID/stat line; the command name, in parentheses, may hold spaces.
func parseStatTicks(b []byte) (int64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat line")
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state): utime is field 14, f[11].
	if len(f) < 13 {
		return 0, errors.New("short /proc stat line")
	}
	u, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	s, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("malformed /proc stat times")
	}
	return u + s, nil
}

// procMem is VmRSS and VmHWM of /proc/PID/status, in kB.
func procMem(pid string) (rss, hwm int64, err error) {
	b, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0, err
	}
	return parseStatusMem(b), parseStatusField(b, "VmHWM:"), nil
}

func parseStatusMem(b []byte) int64 { return parseStatusField(b, "VmRSS:") }

// parseStatusField reads a "Name:   1234 kB" line of /proc/PID/status.
func parseStatusField(b []byte, name string) int64 {
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte(name)); ok {
			f := bytes.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(string(f[0]), 10, 64)
				return n
			}
		}
	}
	return 0
}

// coreTimes is one core's line of /proc/stat: busy and total ticks.
type coreTimes struct{ busy, total int64 }

// readCore reads core n's times from /proc/stat.
func readCore(n int) (coreTimes, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return coreTimes{}, err
	}
	return parseCore(b, n)
}

// parseCore finds "cpuN user nice system idle iowait irq softirq steal
// ..." and counts everything but idle and iowait as busy (guest time is
// already inside user).
func parseCore(b []byte, n int) (coreTimes, error) {
	prefix := []byte("cpu" + strconv.Itoa(n) + " ")
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		v, ok := bytes.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		f := bytes.Fields(v)
		if len(f) < 4 {
			break
		}
		var t coreTimes
		for i, x := range f {
			if i >= 8 {
				break // guest, guest_nice: counted in user already
			}
			k, err := strconv.ParseInt(string(x), 10, 64)
			if err != nil {
				return coreTimes{}, fmt.Errorf("/proc/stat cpu%d: %w", n, err)
			}
			t.total += k
			if i != 3 && i != 4 {
				t.busy += k
			}
		}
		return t, nil
	}
	return coreTimes{}, fmt.Errorf("/proc/stat has no cpu%d", n)
}

// pct is the share of a core that busy ticks over total ticks make.
func (t coreTimes) pct(before coreTimes) float64 {
	if t.total <= before.total {
		return 0
	}
	return float64(t.busy-before.busy) * 100 / float64(t.total-before.total)
}
