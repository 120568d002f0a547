package main

import (
	"os"
	"testing"
)

func TestParseStatCPU(t *testing.T) {
	// The command name holds spaces and a ')' to make sure fields are
	// counted from the last one. utime 250 + stime 50 ticks = 3 s.
	line := "1234 (my (odd) server) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0"
	got, err := parseStatCPU([]byte(line))
	if err != nil || got != 3 {
		t.Fatalf("parseStatCPU = %v, %v; want 3", got, err)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Fatal("garbage accepted")
	}
}

func TestReadOwnProcess(t *testing.T) {
	pid := os.Getpid()
	if rss, err := serverRSSBytes(pid); err != nil || rss <= 0 {
		t.Fatalf("rss = %d, %v", rss, err)
	}
	if _, err := serverCPUSeconds(pid); err != nil {
		t.Fatal(err)
	}
	if w, err := serverWrittenBytes(pid); err != nil || w < 0 {
		t.Fatalf("written = %d, %v", w, err)
	}
	if p := (serverProbe{}); p.cpu() != nil || p.rss() != nil {
		t.Fatal("readings without a pid")
	}
}
