package main

import (
	"fmt"
	"syscall"
)

// raiseFileLimit lifts the soft limit on open files to the hard limit: every
// connection is a descriptor, and the usual soft limit (1,024) would cap the
// server far below what the machine allows. It returns the resulting limit.
func raiseFileLimit() (uint64, error) {
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		return 0, fmt.Errorf("read open-file limit: %w", err)
	}
	if limit.Cur < limit.Max {
		limit.Cur = limit.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
			return limit.Cur, fmt.Errorf("raise open-file limit to %d: %w", limit.Max, err)
		}
	}
	return limit.Cur, nil
}
