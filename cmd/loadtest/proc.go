package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime/stime in /proc/N/stat. Linux
// fixes it at 100 for user space on every architecture we run on, so we do
// not need cgo's sysconf(_SC_CLK_TCK).
const clockTicks = 100

// serverCPUSeconds reads utime+stime of process pid from /proc/pid/stat.
func serverCPUSeconds(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu of pid %d: %w", pid, err)
	}
	return parseStatCPU(raw)
}

// parseStatCPU extracts utime+stime (fields 14 and 15) from a stat line.
// The command name (field 2) is in parentheses and may hold spaces, so the
// fields are counted from the last ')'.
func parseStatCPU(raw []byte) (float64, error) {
	end := bytes.LastIndexByte(raw, ')')
	if end < 0 {
		return 0, fmt.Errorf("parse /proc stat: no command name")
	}
	fields := strings.Fields(string(raw[end+1:]))
	// fields[0] is field 3 (state), so field 14 is fields[11].
	if len(fields) < 13 {
		return 0, fmt.Errorf("parse /proc stat: only %d fields", len(fields))
	}
	utime, err1 := strconv.ParseUint(fields[11], 10, 64)
	stime, err2 := strconv.ParseUint(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc stat: bad utime/stime %q %q", fields[11], fields[12])
	}
	return float64(utime+stime) / clockTicks, nil
}

// serverRSSBytes reads VmRSS of process pid from /proc/pid/status.
func serverRSSBytes(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read rss of pid %d: %w", pid, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmRSS of pid %d: %w", pid, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// selfCPUSeconds is the generator's own user+system CPU time, so a report
// shows when the load generator rather than the server was the bottleneck.
func selfCPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 {
		return (time.Duration(t.Sec)*time.Second + time.Duration(t.Usec)*time.Microsecond).Seconds()
	}
	return tv(ru.Utime) + tv(ru.Stime)
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit: every
// connection is a file descriptor and the default soft limit (1024) is far
// below what the idle scenario opens. Child processes inherit the raised
// limit.
func raiseFileLimit() error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("get RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur >= lim.Max {
		return nil
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
	}
	return nil
}

// serverProbe samples the server process when -pid was given; with pid 0
// every reading is absent, which the output shows as empty columns.
type serverProbe struct{ pid int }

// cpu returns the server's CPU seconds, or nil without a pid or on error.
func (p serverProbe) cpu() *float64 { return reading(p.pid, serverCPUSeconds) }

// rss returns the server's resident set size in bytes, or nil.
func (p serverProbe) rss() *int64 { return reading(p.pid, serverRSSBytes) }

// reading returns read(pid), or nil without a pid or when it fails: a
// missing reading shows as an empty column rather than a wrong number.
func reading[T any](pid int, read func(int) (T, error)) *T {
	if pid <= 0 {
		return nil
	}
	v, err := read(pid)
	if err != nil {
		return nil
	}
	return &v
}

// written returns the bytes the server has handed to write(2) and its
// kin (wchar in /proc/PID/io), sockets included, or nil.
func (p serverProbe) written() *int64 { return reading(p.pid, serverWrittenBytes) }

// serverWrittenBytes reads wchar from /proc/PID/io: for a server that
// writes only to its sockets and a little to its log, the bytes it put
// on the wire (TCP and IP headers aside).
func serverWrittenBytes(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, fmt.Errorf("read io of pid %d: %w", pid, err)
	}
	return parseWchar(raw)
}

// parseWchar extracts the wchar line of /proc/PID/io.
func parseWchar(raw []byte) (int64, error) {
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "wchar:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse wchar %q: %w", rest, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("no wchar in /proc io")
}

// cpuDelta subtracts two optional CPU readings.
func cpuDelta(before, after *float64) *float64 {
	if before == nil || after == nil {
		return nil
	}
	d := *after - *before
	return &d
}
