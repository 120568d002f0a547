package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// broadcastServer is a tiny stand-in for the gorilla chat example: every
// text message a client sends goes to every connected client, the sender
// included, each through its own queue and writer goroutine.
type broadcastServer struct {
	mu       sync.Mutex
	clients  map[chan []byte]int // each client's number, in accept order
	next     int
	compress bool // negotiate permessage-deflate with clients that offer it
	// skip, when set, says which messages a client does not get, for
	// tests of a client that misses one.
	skip func(client int, msg []byte) bool
}

func (s *broadcastServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	opts := &websocket.AcceptOptions{}
	if s.compress {
		opts.CompressionMode = websocket.CompressionNoContextTakeover
	}
	conn, err := websocket.Accept(w, r, opts)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	out := make(chan []byte, 4096)
	s.mu.Lock()
	s.clients[out] = s.next
	s.next++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.clients, out)
		s.mu.Unlock()
	}()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { // writer: ends with the handler's context
		for {
			select {
			case <-ctx.Done():
				return
			case msg := <-out:
				if conn.Write(ctx, websocket.MessageText, msg) != nil {
					return
				}
			}
		}
	}()
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			return
		}
		s.mu.Lock()
		for c, n := range s.clients {
			if s.skip != nil && s.skip(n, msg) {
				continue
			}
			select {
			case c <- msg:
			default: // like gorilla: a full queue is the client's loss
			}
		}
		s.mu.Unlock()
	}
}

func startBroadcastServer(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(&broadcastServer{clients: map[chan []byte]int{}})
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

func testEnv(url string) *runEnv {
	return &runEnv{target: targets["gorilla"], urls: []string{url}, senderURLs: []string{url},
		sources: sourceClients(2), dialConc: 8}
}

func TestFanoutEndToEnd(t *testing.T) {
	env := testEnv(startBroadcastServer(t))
	cfg := fanoutConfig{Receivers: 4, Senders: 2, Rate: 50, Duration: time.Second, Drain: 2 * time.Second, Payload: 100}
	res, err := runFanout(context.Background(), env, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.MessagesSent != 100 || res.MessagesScheduled != 100 {
		t.Fatalf("sent %d of %d scheduled, want 100", res.MessagesSent, res.MessagesScheduled)
	}
	if res.ExpectedDeliveries != 600 || res.Delivered != 600 || res.Lost != 0 || res.DroppedClients != 0 {
		t.Fatalf("deliveries %d/%d lost %d dropped %d", res.Delivered, res.ExpectedDeliveries, res.Lost, res.DroppedClients)
	}
	if res.Latency.Count != 600 || res.Latency.P99Ms <= 0 || res.Latency.P99Ms > 500 {
		t.Fatalf("latency %+v", res.Latency)
	}
	if res.OfferedPerSec < 590 || res.OfferedPerSec > 610 {
		t.Fatalf("offered %v/s, want 600", res.OfferedPerSec)
	}
	if pass, why := judgeStep(res); !pass {
		t.Fatalf("a local echo server should be sustainable at this rate: %s", why)
	}
}

// A run cut short (SIGINT, timeout) must fail, never pass as a result with
// a lower offered load.
func TestFanoutInterruptedIsNoResult(t *testing.T) {
	env := testEnv(startBroadcastServer(t))
	cfg := fanoutConfig{Receivers: 4, Senders: 2, Rate: 50, Duration: 4 * time.Second, Drain: time.Second, Payload: 100}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	res, err := runFanout(ctx, env, cfg)
	if err == nil {
		t.Fatalf("an interrupted run returned a result: %+v", res)
	}
}

func TestIdleEndToEnd(t *testing.T) {
	env := testEnv(startBroadcastServer(t))
	env.probe = serverProbe{pid: os.Getpid()} // the test server runs in this process
	res, err := runIdle(context.Background(), env, idleConfig{Conns: 20, Hold: 100 * time.Millisecond, Procs: 1, UIDs: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 20 || res.FailedDials != 0 || res.Dropped != 0 || res.HandshakesPerSec <= 0 {
		t.Fatalf("idle result %+v", res)
	}
	if res.RSSPerConnBytes == nil {
		t.Fatal("no RSS per connection despite a pid")
	}
}

func TestBadFlagsExit2WithOneLine(t *testing.T) {
	cases := map[string][]string{
		"-target":       {"-target", "nginx"},
		"-url":          {"-url", "ws://10.0.0.1:5000/ws"},
		"-conns":        {"-conns", "abc"},
		"-rates":        {"-rates", "200,100"},
		"-payload":      {"-target", "gorilla", "-payload", "600"},
		"-scenario":     {"-scenario", "soak"},
		"-sources":      {"-sources", "0"},
		"-token-secret": {"-target", "gorilla", "-token-secret", "s"},
		"-token-ttl":    {"-token-ttl", "-1s"},
	}
	for flagName, args := range cases {
		var stderr bytes.Buffer
		code := run(args, nil, &bytes.Buffer{}, &stderr)
		out := stderr.String()
		if code != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, flagName) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line naming %s", args, code, out, flagName)
		}
	}
}

// pingingServer pings every connection as soon as it is accepted and
// drops it if the pong does not come within pongTimeout, like switchboard's
// heartbeat; each handshake takes accept time.
func pingingServer(t *testing.T, accept, pongTimeout time.Duration) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(accept)
		conn, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer conn.CloseNow()
		ctx := conn.CloseRead(r.Context()) // reads, so pongs are seen
		for {
			pctx, cancel := context.WithTimeout(ctx, pongTimeout)
			err := conn.Ping(pctx)
			cancel()
			if err != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(pongTimeout / 4):
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

// The dial phase of a big run outlasts the server's ping interval plus
// pong timeout; connections opened early must answer pings meanwhile.
func TestIdleConnectionsAnswerPingsWhileDialing(t *testing.T) {
	env := testEnv(pingingServer(t, 40*time.Millisecond, 200*time.Millisecond))
	env.dialConc = 1 // 20 handshakes in a row: about 800 ms of dialing
	res, err := runIdle(context.Background(), env, idleConfig{Conns: 20, Hold: 300 * time.Millisecond, Procs: 1, UIDs: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 20 || res.Dropped != 0 {
		t.Fatalf("opened %d, dropped %d (%s); want 20 held", res.Opened, res.Dropped, res.DropReason)
	}
}

// With -compression the connections offer permessage-deflate; against a
// server that takes it, the bytes it writes per delivery (wchar of the
// process, which here is the test itself) fall far below the payload.
func TestFanoutCompressionShowsOnTheWire(t *testing.T) {
	perDelivery := func(compress bool) float64 {
		srv := httptest.NewServer(&broadcastServer{clients: map[chan []byte]int{}, compress: compress})
		defer srv.Close()
		env := testEnv("ws" + strings.TrimPrefix(srv.URL, "http") + "/ws")
		env.compression = compress
		env.probe = serverProbe{pid: os.Getpid()}
		cfg := fanoutConfig{Receivers: 4, Senders: 2, Rate: 50, Duration: time.Second, Drain: 2 * time.Second, Payload: 4000}
		res, err := runFanout(context.Background(), env, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if res.Delivered != 600 || res.ServerBytesPerDeliv == nil {
			t.Fatalf("compress %v: delivered %d, bytes per delivery %v", compress, res.Delivered, res.ServerBytesPerDeliv)
		}
		return *res.ServerBytesPerDeliv
	}
	plain, deflated := perDelivery(false), perDelivery(true)
	if plain < 4000 || deflated > plain/4 {
		t.Fatalf("bytes written per delivery: %.0f plain, %.0f deflated, for 4000-byte payloads", plain, deflated)
	}
}
