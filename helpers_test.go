package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if binaryDir != "" {
			os.RemoveAll(binaryDir)
		}
		os.Exit(code)
	}))
}

// waitTimeout bounds every wait for something a client should see. It is a
// deadline for correctness, not a performance assertion.
const waitTimeout = 10 * time.Second

// testServer is a real switchboard behind httptest, with its hub running
// (and in cluster mode its link to NATS).
type testServer struct {
	t    testing.TB
	sb   *switchboard
	http *httptest.Server
	// httpClient does not keep connections alive, so no transport
	// goroutine outlives a test.
	httpClient *http.Client
	stopOnce   sync.Once
	stopHub    func()
	hubDone    chan struct{}
	stopLink   func()
	linkDone   chan struct{}
}

func testConfig() Config {
	cfg := defaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.Rate = 0
	return cfg
}

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// startServer runs a server with testConfig changed by configure (may be nil)
// and stops it, sessions and hub included, when the test ends.
func startServer(t testing.TB, configure func(*Config)) *testServer {
	t.Helper()
	cfg := testConfig()
	if configure != nil {
		configure(&cfg)
	}
	sb, err := newSwitchboard(context.Background(), cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	hubCtx, stopHub := context.WithCancel(context.Background())
	linkCtx, stopLink := context.WithCancel(context.Background())
	ts := &testServer{
		t: t, sb: sb,
		httpClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
		stopHub:    stopHub, hubDone: make(chan struct{}),
		stopLink: stopLink, linkDone: make(chan struct{}),
	}
	go func() {
		defer close(ts.hubDone)
		sb.hub.Run(hubCtx)
	}()
	go func() {
		defer close(ts.linkDone)
		if sb.cluster != nil {
			if err := sb.cluster.Run(linkCtx); err != nil {
				t.Errorf("cluster link: %v", err)
			}
		}
	}()
	t.Cleanup(ts.stop)
	if err := sb.waitFilled(context.Background()); err != nil {
		t.Fatal(err)
	}
	ts.http = httptest.NewServer(sb.handler) // after the fill, as serve listens
	return ts
}

// stop shuts the server down as serve does: goodbye to the cluster,
// sessions flushed and closed, then the link and the hub.
func (ts *testServer) stop() {
	ts.stopOnce.Do(func() {
		if ts.sb.cluster != nil {
			ts.sb.cluster.goodbye(time.Second)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := ts.sb.factory.Shutdown(ctx); err != nil {
			ts.t.Errorf("shutdown: %v", err)
		}
		if ts.http != nil {
			ts.http.Close()
		}
		ts.stopLink()
		<-ts.linkDone
		ts.stopHub()
		<-ts.hubDone
		ts.sb.auth.stop()
	})
}

func (ts *testServer) wsURL(path string) string {
	return "ws" + strings.TrimPrefix(ts.http.URL, "http") + path
}

// testClient is a real WebSocket client that reads the server's text
// messages as lines, splitting batches on "\n" as PROTOCOL.md asks.
type testClient struct {
	t       testing.TB
	conn    *websocket.Conn
	pending []string
}

type dialOptions struct {
	path     string
	uid      string // sent as the uid header when not empty
	json     bool
	header   http.Header
	protocol []string
}

func (ts *testServer) dial(opts dialOptions) *testClient {
	ts.t.Helper()
	c, resp, err := ts.tryDial(opts)
	if err != nil {
		ts.t.Fatalf("dial %+v: %v (response %v)", opts, err, resp)
	}
	return c
}

func (ts *testServer) tryDial(opts dialOptions) (*testClient, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	header := http.Header{}
	for k, v := range opts.header {
		header[k] = v
	}
	if opts.uid != "" {
		header.Set("uid", opts.uid)
	}
	protocols := opts.protocol
	if opts.json {
		protocols = append(protocols, jsonSubprotocol)
	}
	path := opts.path
	if path == "" {
		path = "/ws"
	}
	conn, resp, err := websocket.Dial(ctx, ts.wsURL(path), &websocket.DialOptions{
		HTTPHeader:   header,
		Subprotocols: protocols,
		HTTPClient:   ts.httpClient,
	})
	if err != nil {
		return nil, resp, err
	}
	conn.SetReadLimit(64 << 20)
	c := &testClient{t: ts.t, conn: conn}
	ts.t.Cleanup(func() { conn.CloseNow() })
	return c, resp, nil
}

// connect dials uid into room (text mode) and reads its welcome.
func (ts *testServer) connect(uid, room string) *testClient {
	ts.t.Helper()
	c := ts.dial(dialOptions{path: "/ws/" + room, uid: uid})
	c.expect("[server]: welcome UID " + uid + ", room " + room)
	return c
}

// aliceAndBob connects uids 1 and 2 to the lobby in text mode and waits
// until alice has seen bob join.
func (ts *testServer) aliceAndBob() (alice, bob *testClient) {
	ts.t.Helper()
	alice = ts.connect("1", "lobby")
	bob = ts.connect("2", "lobby")
	alice.expect("[server]: UID 2 joined lobby")
	return alice, bob
}

// connectJSON dials uid into room in JSON mode and returns its welcome.
func (ts *testServer) connectJSON(uid, room string) (*testClient, map[string]any) {
	ts.t.Helper()
	c := ts.dial(dialOptions{path: "/ws/" + room, uid: uid, json: true})
	welcome := c.readJSON()
	if welcome["type"] != "welcome" {
		ts.t.Fatalf("first event = %v, want welcome", welcome)
	}
	return c, welcome
}

// readMessage reads one whole WebSocket message.
func (c *testClient) readMessage() (websocket.MessageType, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return c.conn.Read(ctx)
}

// readLine returns the next line the server sent.
func (c *testClient) readLine() string {
	c.t.Helper()
	for len(c.pending) == 0 {
		kind, data, err := c.readMessage()
		if err != nil {
			c.t.Fatalf("read: %v", err)
		}
		if kind != websocket.MessageText {
			c.t.Fatalf("got a binary message %q, want text", data)
		}
		c.pending = strings.Split(string(data), "\n")
	}
	line := c.pending[0]
	c.pending = c.pending[1:]
	return line
}

func (c *testClient) expect(lines ...string) {
	c.t.Helper()
	for _, want := range lines {
		if got := c.readLine(); got != want {
			c.t.Fatalf("got line %q, want %q", got, want)
		}
	}
}

func (c *testClient) readJSON() map[string]any {
	c.t.Helper()
	line := c.readLine()
	var v map[string]any
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		c.t.Fatalf("line %q is not a JSON object: %v", line, err)
	}
	return v
}

func (c *testClient) send(text string) {
	c.t.Helper()
	c.write(websocket.MessageText, []byte(text))
}

func (c *testClient) sendJSON(v any) {
	c.t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(websocket.MessageText, data)
}

func (c *testClient) write(kind websocket.MessageType, data []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.conn.Write(ctx, kind, data); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// expectClose reads until the server closes and checks its code and reason.
// Events still queued before the close are skipped.
func (c *testClient) expectClose(code websocket.StatusCode, reason string) {
	c.t.Helper()
	for {
		_, _, err := c.readMessage()
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("connection ended with %v, want close %d %q", err, code, reason)
		}
		if ce.Code != code || ce.Reason != reason {
			c.t.Fatalf("closed with %d %q, want %d %q", ce.Code, ce.Reason, code, reason)
		}
		return
	}
}

// close ends the client politely.
func (c *testClient) close() {
	c.conn.Close(websocket.StatusNormalClosure, "bye")
}

// request sends an HTTP request to the server and decodes a JSON answer.
func (ts *testServer) request(method, path, body string, header http.Header) (int, string) {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.http.URL+path, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := ts.httpClient.Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSpace(string(data))
}

// getJSON requests path and decodes the JSON answer into out.
func (ts *testServer) getJSON(path string, out any) {
	ts.t.Helper()
	status, body := ts.request("GET", path, "", nil)
	if status != http.StatusOK {
		ts.t.Fatalf("GET %s = %d %s", path, status, body)
	}
	if err := json.Unmarshal([]byte(body), out); err != nil {
		ts.t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// newStandaloneHTTP serves handler without starting its hub.
func newStandaloneHTTP(t testing.TB, handler http.Handler) *httptest.Server {
	srv := httptest.NewServer(handler)
	t.Cleanup(func() {
		srv.Client().CloseIdleConnections()
		srv.Close()
	})
	return srv
}
