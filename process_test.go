package main

import (
	"bufio"
	"context"
	"encoding/json"
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
	return startProcessEnv(t, nil, args...)
}

// startProcessEnv is startProcess with extra environment variables.
func startProcessEnv(t *testing.T, env []string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(buildBinary(t), append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(append(os.Environ(), "LOG_LEVEL=info"), env...)
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

// dialProcess connects a client to a running binary, in JSON mode when
// jsonMode is set, and reads its welcome.
func dialProcess(t *testing.T, p *process, uid string, jsonMode bool) *testClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	opts := &websocket.DialOptions{
		HTTPHeader: http.Header{"uid": {uid}},
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	}
	if jsonMode {
		opts.Subprotocols = []string{jsonSubprotocol}
	}
	conn, _, err := websocket.Dial(ctx, "ws://"+p.addr+"/ws", opts)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	c := &testClient{t: t, conn: conn}
	if jsonMode {
		if ev := c.readJSON(); ev["type"] != "welcome" {
			t.Fatalf("first event %v", ev)
		}
		return c
	}
	conn.SetReadLimit(64 << 20)
	c.expect("[server]: welcome UID " + uid + ", room lobby")
	return c
}

// On SIGTERM or SIGINT the server stops accepting, delivers everything it
// has queued, closes every session with 1001 and exits 0.
func TestShutdownFlushesQueues(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startProcess(t, "-shutdown-timeout", "8s", "-max-queue-bytes", "67108864")
			reader := dialProcess(t, p, "2", false) // reads nothing until the signal
			// More than the socket buffers hold, so a backlog stays queued.
			const count, size = 300, 60000
			payload := strings.Repeat("x", size)
			for i := 0; i < count; i++ {
				status, body := p.request(t, "POST", "/api/rooms/lobby/messages", fmt.Sprintf(`{"text":"%d %s"}`, i, payload))
				if status != 200 || body != `{"room":"lobby","recipients":1}` {
					t.Fatalf("publish %d: %d %s", i, status, body)
				}
			}
			if queued := p.metric(t, "switchboard_queue_bytes"); queued <= 0 {
				t.Fatalf("nothing queued before the signal (%v bytes): the test would prove nothing", queued)
			}
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < count; i++ {
				reader.expect(fmt.Sprintf("[server]: %d %s", i, payload))
			}
			reader.expectClose(websocket.StatusGoingAway, "server shutting down")
			p.waitExit(t)
			if _, err := http.Get("http://" + p.addr + "/healthcheck"); err == nil {
				t.Fatal("server still accepts after shutdown")
			}
		})
	}
}

// Traffic that arrives while the server shuts down is either delivered to
// everyone or refused with an error to its sender: nothing accepted is lost.
func TestShutdownUnderTraffic(t *testing.T) {
	p := startProcess(t, "-rate", "0")
	sender := dialProcess(t, p, "1", true)
	reader := dialProcess(t, p, "2", true)
	sender.readJSON() // joined

	writeCtx, stopWriting := context.WithCancel(context.Background())
	defer stopWriting()
	go func() {
		for i := 0; writeCtx.Err() == nil; i++ {
			msg := fmt.Sprintf(`{"type":"message","text":"m%d"}`, i)
			if sender.conn.Write(writeCtx, websocket.MessageText, []byte(msg)) != nil {
				return
			}
		}
	}()
	type outcome struct {
		seqs    []float64
		refused int
		err     error
	}
	collect := func(c *testClient, done chan<- outcome) {
		var o outcome
		for {
			_, data, err := c.readMessage()
			if err != nil {
				o.err = err
				done <- o
				return
			}
			for _, line := range strings.Split(string(data), "\n") {
				var ev map[string]any
				json.Unmarshal([]byte(line), &ev)
				switch {
				case ev["type"] == "message":
					o.seqs = append(o.seqs, ev["seq"].(float64))
				case ev["type"] == "error" && ev["code"] == "unavailable":
					o.refused++
				}
			}
		}
	}
	senderDone, readerDone := make(chan outcome, 1), make(chan outcome, 1)
	go collect(sender, senderDone)
	go collect(reader, readerDone)
	time.Sleep(300 * time.Millisecond) // let traffic flow before the signal
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	got, want := <-readerDone, <-senderDone
	stopWriting()
	for _, o := range []outcome{got, want} {
		if websocket.CloseStatus(o.err) != websocket.StatusGoingAway {
			t.Fatalf("a client ended with %v, want 1001", o.err)
		}
	}
	if len(want.seqs) == 0 || fmt.Sprint(got.seqs) != fmt.Sprint(want.seqs) {
		t.Fatalf("the reader saw %d messages, the sender's echoes %d: they must be the same", len(got.seqs), len(want.seqs))
	}
	t.Logf("%d messages delivered to both, %d refused during shutdown", len(want.seqs), want.refused)
	p.waitExit(t)
}

func (p *process) waitExit(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		if p.err != nil {
			t.Fatalf("exit: %v\n%s", p.err, p.log())
		}
	case <-time.After(waitTimeout):
		t.Fatalf("server still running after shutdown: %s", p.log())
	}
}

func (p *process) request(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+p.addr+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(data))
}

// metric reads one unlabelled metric of the running binary.
func (p *process) metric(t *testing.T, name string) float64 {
	t.Helper()
	_, body := p.request(t, "GET", "/metrics", "")
	return metricSample(t, body, name)
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
		{[]string{"-addr", "nonsense"}, "", "-addr"},
		{[]string{"-addr", "256.0.0.1:99999"}, "", "-addr"},
		{[]string{"-rate", "NaN"}, "", "-rate"},
		{[]string{"-pprof", "6060"}, "", "-pprof"},
		{[]string{"-max-message-bytes", "9223372036854775807"}, "", "-max-message-bytes"},
		{[]string{"-allowed-origins", "ok.example.com,["}, "", "-allowed-origins"},
		{[]string{"-node-id", "a.b"}, "", "-node-id"},
		{nil, "SWITCHBOARD_NODE_ID=" + strings.Repeat("n", 65), "-node-id"},
		{[]string{"-stream-storage", "disk"}, "", "-stream-storage"},
		{nil, "SWITCHBOARD_COMPRESSION=maybe", "-compression"},
		{[]string{"-compression=sometimes"}, "", "-compression"},
		{[]string{"-stream-max-age", "0s"}, "", "-stream-max-age"},
		{[]string{"-stream-max-bytes", "0"}, "", "-stream-max-bytes"},
		{[]string{"-history-size", "-1"}, "", "-history-size"},
		{[]string{"-history-size", "1000001"}, "", "-history-size"},
		{[]string{"-history-ttl", "0s"}, "", "-history-ttl"},
		{nil, "SWITCHBOARD_HISTORY_MAX_BYTES=lots", "-history-max-bytes"},
		{[]string{"-history-max-bytes", "0"}, "", "-history-max-bytes"},
		{[]string{"-jwt-jwks-url", "ftp://keys.example.com"}, "", "-jwt-jwks-url"},
		{[]string{"-jwt-audience", "chat"}, "", "-jwt-audience"},
		{nil, "SWITCHBOARD_JWT_ISSUER=https://id.example.com", "-jwt-issuer"},
		// Keys that cannot be loaded stop the start (exit 1, not 2).
		{[]string{"-jwt-public-key", "/no/such/key.pem"}, "", "-jwt-public-key"},
		{nil, "SWITCHBOARD_JWT_PUBLIC_KEY=/no/such/key.pem", "-jwt-public-key"},
		{[]string{"-jwt-jwks-url", "http://127.0.0.1:1/keys"}, "", "-jwt-jwks-url"},
		// The broker must be reachable at start (exit 1, not 2).
		{[]string{"-nats", "nats://127.0.0.1:1"}, "", "NATS"},
		{nil, "SWITCHBOARD_NATS_URL=nats://127.0.0.1:1", "NATS"},
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
	first := dialProcess(t, p, "1", false)
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
