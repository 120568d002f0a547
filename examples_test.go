package main

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildExample builds the program in examples/<name> into a temporary
// directory.
func buildExample(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "./examples/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./examples/%s: %v\n%s", name, err, out)
	}
	return bin
}

// syncBuffer collects a process's output while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitExit waits for cmd to end and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatalf("wait: %v", err)
	case <-time.After(waitTimeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not exit within %v", cmd.Path, waitTimeout)
	}
	return -1
}

func TestExampleClient(t *testing.T) {
	bin := buildExample(t, "client")
	ts := startServer(t, nil)
	other := ts.connect("2", "lobby")

	// Interactive: lines from stdin, every received line printed.
	{
		cmd := exec.Command(bin, "-url", ts.wsURL("/ws"), "-uid", "7", "-room", "lobby")
		var stdout, stderr syncBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the welcome", func() bool {
			return strings.Contains(stdout.String(), "[server]: welcome UID 7, room lobby")
		})
		other.expect("[server]: UID 7 joined lobby")
		if _, err := stdin.Write([]byte("hello from the example\n/dm 2 psst\n")); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the echo and the DM echo", func() bool {
			out := stdout.String()
			return strings.Contains(out, "[UID: 7]: hello from the example") && strings.Contains(out, "[DM to UID: 2]: psst")
		})
		other.expect("[UID: 7]: hello from the example", "[DM from UID: 7]: psst")
		other.send("hi 7")
		other.expect("[UID: 2]: hi 7")
		eventually(t, "a message from uid 2", func() bool {
			return strings.Contains(stdout.String(), "[UID: 2]: hi 7")
		})
		stdin.Close() // end of input: the client closes politely and exits 0
		if code := waitExit(t, cmd); code != 0 {
			t.Fatalf("exit code %d; stdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
		}
		other.expect("[server]: UID 7 left lobby")
	}

	// One shot with -send.
	{
		cmd := exec.Command(bin, "-url", ts.wsURL("/ws/lobby"), "-uid", "8", "-send", "one shot", "-wait", "500ms")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !strings.Contains(string(out), "[UID: 8]: one shot") {
			t.Fatalf("output lacks %q:\n%s", "[UID: 8]: one shot", out)
		}
		other.expect("[server]: UID 8 joined lobby", "[UID: 8]: one shot", "[server]: UID 8 left lobby")
	}

	// A policy close is reported and exits 1.
	{
		cmd := exec.Command(bin, "-url", ts.wsURL("/ws"), "-uid", "bad uid!", "-send", "x")
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Fatalf("err = %v, want exit status 1\n%s", err, out)
		}
		if !strings.Contains(string(out), "closed 1008: uid is invalid") {
			t.Fatalf("output lacks the close reason:\n%s", out)
		}
	}
}
