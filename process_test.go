package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// These tests run the real binary as a child process: flags, environment,
// signals and exit codes are only real there.

var (
	binaryOnce sync.Once
	binaryDir  string
	binaryPath string
	binaryErr  error
)

// buildBinary builds switchboard once per test run.
func buildBinary(t *testing.T) string {
	t.Helper()
	binaryOnce.Do(func() {
		binaryDir, binaryErr = os.MkdirTemp("", "switchboard-bin")
		if binaryErr != nil {
			return
		}
		binaryPath = filepath.Join(binaryDir, "switchboard")
		out, err := exec.Command("go", "build", "-race", "-o", binaryPath, ".").CombinedOutput()
		if err != nil {
			binaryErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// process is a running switchboard binary.
type process struct {
	cmd    *exec.Cmd
	addr   string
	stderr *strings.Builder
	mu     sync.Mutex
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, once exited is closed
}

var listeningLine = regexp.MustCompile(`msg="switchboard listening" addr=(\S+)`)

// startProcess starts the binary on a free loopback port and waits until it
// listens.
func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	cmd := exec.Command(buildBinary(t), append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "LOG_LEVEL=info")
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, stderr: &strings.Builder{}, exited: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		scanner := bufio.NewScanner(pipe)
		for scanner.Scan() {
			line := scanner.Text()
			p.mu.Lock()
			p.stderr.WriteString(line + "\n")
			p.mu.Unlock()
			if m := listeningLine.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.addr = <-addr:
	case <-time.After(waitTimeout):
		t.Fatalf("server did not start: %s", p.log())
	}
	return p
}

func (p *process) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// dialProcess connects a text-mode client to a running binary.
func dialProcess(t *testing.T, p *process, uid string) *testClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+p.addr+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"uid": {uid}},
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	c := &testClient{t: t, conn: conn}
	c.expect("[server]: welcome UID " + uid + ", room lobby")
	return c
}

// On SIGTERM the server stops accepting, delivers what it has queued,
// closes every session with 1001 and exits 0.
func TestShutdownOnSignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startProcess(t, "-shutdown-timeout", "5s")
			sender := dialProcess(t, p, "1")
			reader := dialProcess(t, p, "2")
			sender.expect("[server]: UID 2 joined lobby")
			// One client message of many lines: many events, one rate token.
			const count = 200
			var lines []string
			for i := 0; i < count; i++ {
				lines = append(lines, fmt.Sprintf("m%d", i))
			}
			sender.send(strings.Join(lines, "\n"))
			// The sender's own echo of the last message proves the hub has
			// queued all of them to the reader, which has read nothing yet.
			for i := 0; i < count; i++ {
				sender.expect(fmt.Sprintf("[UID: 1]: m%d", i))
			}
			start := time.Now()
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < count; i++ {
				reader.expect(fmt.Sprintf("[UID: 1]: m%d", i))
			}
			reader.expectClose(websocket.StatusGoingAway, "server shutting down")
			select {
			case <-p.exited:
				if p.err != nil {
					t.Fatalf("exit: %v\n%s", p.err, p.log())
				}
			case <-time.After(waitTimeout):
				t.Fatalf("server still running after shutdown: %s", p.log())
			}
			t.Logf("signal to exit: %v", time.Since(start))
			if _, err := http.Get("http://" + p.addr + "/healthcheck"); err == nil {
				t.Fatal("server still accepts after shutdown")
			}
		})
	}
}

// A bad option stops the binary with exit code 2 and one line naming it.
func TestBadOptionsExit(t *testing.T) {
	bin := buildBinary(t)
	cases := []struct {
		args []string
		env  string
		want string
	}{
		{[]string{"-rate", "fast"}, "", "-rate"},
		{[]string{"-rate", "-1"}, "", "-rate"},
		{[]string{"-ping-interval", "0s"}, "", "-ping-interval"},
		{[]string{"-pong-timeout", "soon"}, "", "-pong-timeout"},
		{[]string{"-max-conns", "0"}, "", "-max-conns"},
		{[]string{"-max-message-bytes", "-5"}, "", "-max-message-bytes"},
		{[]string{"-max-queue-bytes", "lots"}, "", "-max-queue-bytes"},
		{[]string{"-shutdown-timeout", "0"}, "", "-shutdown-timeout"},
		{[]string{"-no-such-flag"}, "", "-no-such-flag"},
		{[]string{"stray"}, "", "stray"},
		{nil, "SWITCHBOARD_MAX_CONNS=many", "-max-conns"},
		{nil, "SWITCHBOARD_PONG_TIMEOUT=1x", "-pong-timeout"},
		{nil, "LOG_LEVEL=loud", "LOG_LEVEL"},
		{[]string{"-addr", "256.0.0.1:99999"}, "", "listen"},
	}
	for _, tc := range cases {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = os.Environ()
		if tc.env != "" {
			cmd.Env = append(cmd.Env, tc.env)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() == 0 {
			t.Errorf("%v %s: err %v, want a non-zero exit", tc.args, tc.env, err)
			continue
		}
		out := strings.TrimSpace(stderr.String())
		if strings.Count(out, "\n") != 0 || !strings.Contains(out, tc.want) {
			t.Errorf("%v %s: stderr %q, want one line naming %s", tc.args, tc.env, out, tc.want)
		}
	}
}

// Environment twins configure the binary; a flag beats its twin.
func TestEnvironmentTwins(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "-max-conns", "1")
	cmd.Env = append(os.Environ(), "SWITCHBOARD_ADDR=127.0.0.1:0", "SWITCHBOARD_MAX_CONNS=5", "LOG_LEVEL=info")
	pipe, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		io.Copy(io.Discard, pipe)
		cmd.Wait()
	}()
	scanner := bufio.NewScanner(pipe)
	var addr string
	for addr == "" && scanner.Scan() {
		if m := listeningLine.FindStringSubmatch(scanner.Text()); m != nil {
			addr = m[1]
		}
	}
	if !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("SWITCHBOARD_ADDR ignored: listening on %q", addr)
	}
	p := &process{addr: addr}
	first := dialProcess(t, p, "1")
	defer first.conn.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{
		HTTPHeader: http.Header{"uid": {"2"}},
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second connection with -max-conns 1 over SWITCHBOARD_MAX_CONNS=5: %v %v", err, resp)
	}
}
