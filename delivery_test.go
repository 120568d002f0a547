package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
)

// Several senders, several receivers: every receiver sees every message, in
// one identical order, and each sender's messages in the order it sent them.
func TestOrderingAndNoLoss(t *testing.T) {
	const senders, receivers, perSender = 4, 4, 150
	ts := startServer(t, nil)
	var readers []*testClient
	for i := 0; i < receivers; i++ {
		readers = append(readers, ts.connect(fmt.Sprintf("r%d", i), "race"))
	}
	var writers []*testClient
	for i := 0; i < senders; i++ {
		w, _ := ts.connectJSON(fmt.Sprintf("s%d", i), "race")
		writers = append(writers, w)
	}
	// Every receiver was welcomed before any sender arrived, so the last
	// one hears every sender join.
	last := readers[receivers-1]
	for joined := 0; joined < senders; {
		if strings.HasSuffix(last.readLine(), " joined race") {
			joined++
		}
	}

	var wg sync.WaitGroup
	for i, w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < perSender; n++ {
				data := fmt.Sprintf(`{"type":"message","text":"s%d-%d"}`, i, n)
				if err := w.conn.Write(context.Background(), websocket.MessageText, []byte(data)); err != nil {
					t.Errorf("sender %d: %v", i, err)
					return
				}
			}
		}()
	}
	sequences := make([][]string, receivers)
	var readWG sync.WaitGroup
	for i, r := range readers {
		readWG.Add(1)
		go func() {
			defer readWG.Done()
			sequences[i] = readMessagesText(t, r, senders*perSender)
		}()
	}
	wg.Wait()
	readWG.Wait()
	if t.Failed() {
		return
	}
	for i := 1; i < receivers; i++ {
		if strings.Join(sequences[i], ",") != strings.Join(sequences[0], ",") {
			t.Fatalf("receiver %d saw another order than receiver 0", i)
		}
	}
	next := make([]int, senders)
	for _, text := range sequences[0] {
		var s, n int
		fmt.Sscanf(text, "s%d-%d", &s, &n)
		if n != next[s] {
			t.Fatalf("sender %d: got message %d, want %d", s, n, next[s])
		}
		next[s]++
	}
}

// readMessagesText reads count room messages (text mode) and returns their
// texts, skipping presence lines. It must not call t.Fatal: it runs off the
// test goroutine.
func readMessagesText(t *testing.T, c *testClient, count int) []string {
	var texts []string
	for len(texts) < count {
		kind, data, err := c.readMessage()
		if err != nil || kind != websocket.MessageText {
			t.Errorf("read after %d messages: %v", len(texts), err)
			return texts
		}
		for _, line := range strings.Split(string(data), "\n") {
			if _, text, ok := strings.Cut(line, "]: "); ok && strings.HasPrefix(line, "[UID: ") {
				texts = append(texts, text)
			}
		}
	}
	return texts
}

// A client that stops reading is closed with 1008 "slow consumer"; the
// others in the room still get every message.
func TestSlowConsumer(t *testing.T) {
	const publishes, size = 400, 32 << 10
	ts := startServer(t, func(c *Config) {
		c.MaxQueueBytes = 256 << 10
		c.WriteTimeout = time.Minute // the slow client reads again in time
	})
	slow := ts.connect("slow", "feed")
	fast := []*testClient{ts.connect("f1", "feed"), ts.connect("f2", "feed")}
	fast[0].expect("[server]: UID f2 joined feed")

	payload := strings.Repeat("x", size)
	var fastWG sync.WaitGroup
	for _, c := range fast {
		fastWG.Add(1)
		go func() {
			defer fastWG.Done()
			got := 0
			for got < publishes {
				_, data, err := c.readMessage()
				if err != nil {
					t.Errorf("fast reader after %d: %v", got, err)
					return
				}
				got += strings.Count(string(data), "[server]: "+payload)
			}
		}()
	}
	overflowAt := -1
	for i := 0; i < publishes; i++ {
		status, body := ts.request("POST", "/api/rooms/feed/messages", `{"text":"`+payload+`"}`, nil)
		if status != 200 {
			t.Fatalf("publish %d: %d %s", i, status, body)
		}
		if overflowAt < 0 && body == `{"room":"feed","recipients":2}` {
			overflowAt = i // the slow client's queue refused it
		}
	}
	fastWG.Wait()
	if overflowAt < 0 {
		t.Fatal("the slow client's queue never overflowed")
	}
	t.Logf("slow client's queue overflowed at publish %d of %d", overflowAt, publishes)
	slow.expectClose(websocket.StatusPolicyViolation, "slow consumer")
	fast[0].expect("[server]: UID slow left feed")
}

// Hundreds of clients that vanish without a close frame leave no presence
// entry and no goroutine behind.
func TestChurnLeavesNothingBehind(t *testing.T) {
	const clients = 300
	ts := startServer(t, nil)
	watcher := ts.connect("watcher", "churn")
	before := goleak.IgnoreCurrent() // the server's and the watcher's goroutines
	for round := 0; round < 3; round++ {
		var wg sync.WaitGroup
		for i := 0; i < clients/3; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				uid := fmt.Sprintf("c%d-%d", round, i)
				c, _, err := ts.tryDial(dialOptions{path: "/ws/churn", uid: uid})
				if err != nil {
					t.Errorf("dial %s: %v", uid, err)
					return
				}
				if i%2 == 0 {
					c.send("hello from " + uid)
				}
				c.conn.CloseNow() // no close frame: the TCP connection just ends
			}()
		}
		wg.Wait()
	}
	eventually(t, "every churned session to be gone", func() bool {
		var rooms []RoomSummary
		ts.getJSON("/api/rooms", &rooms)
		return len(rooms) == 1 && rooms[0] == RoomSummary{"churn", 1, 1}
	})
	watcher.send("/who")
	for {
		if line := watcher.readLine(); strings.HasPrefix(line, "[server]: online in") {
			if line != "[server]: online in churn: watcher" {
				t.Fatalf("who after churn: %q", line)
			}
			break
		}
	}
	// Nothing started since the churn began is still running.
	if err := goleak.Find(before); err != nil {
		t.Fatalf("goroutines left after churn: %v", err)
	}
}

// A client that never answers pings is dropped within the ping interval plus
// the pong timeout, and the room hears that it left.
func TestHeartbeatDropsHalfOpenClient(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.PingInterval = 100 * time.Millisecond
		c.PongTimeout = 200 * time.Millisecond
	})
	watcher := ts.connect("watcher", "lobby")
	// This client reads once (its welcome) and then never again, so the
	// library never answers the server's pings.
	ts.connect("ghost", "lobby")
	watcher.expect("[server]: UID ghost joined lobby")
	start := time.Now()
	watcher.expect("[server]: UID ghost left lobby")
	t.Logf("half-open client dropped after %v", time.Since(start))
	status, body := ts.request("GET", "/metrics", "", nil)
	if status != 200 || !strings.Contains(body, `switchboard_session_closes_total{reason="heartbeat"} 1`) {
		t.Fatalf("metrics do not count the heartbeat close")
	}
	// The watcher answers pings by reading, so it is still connected.
	watcher.send("alive")
	watcher.expect("[UID: watcher]: alive")
}

// Events that queue up while a client is busy go out joined into few
// messages, each small enough for a client with coder/websocket's default
// 32 KiB read limit.
func TestBatchesFitDefaultReadLimit(t *testing.T) {
	const events, size = 300, 1000
	ts := startServer(t, func(c *Config) { c.BatchWindow = 50 * time.Millisecond })
	c := ts.connect("reader", "batch")
	c.conn.SetReadLimit(32768) // the library's default, which dial raised
	payload := strings.Repeat("y", size)
	for i := 0; i < events; i++ {
		status, _ := ts.request("POST", "/api/rooms/batch/messages", fmt.Sprintf(`{"text":"%d %s"}`, i, payload), nil)
		if status != 200 {
			t.Fatalf("publish %d: %d", i, status)
		}
	}
	messages, got := 0, 0
	for got < events {
		_, data, err := c.readMessage()
		if err != nil {
			t.Fatalf("after %d events in %d messages: %v", got, messages, err)
		}
		messages++
		for _, line := range strings.Split(string(data), "\n") {
			if line != fmt.Sprintf("[server]: %d %s", got, payload) {
				t.Fatalf("event %d: got %.40q", got, line)
			}
			got++
		}
	}
	if messages >= events {
		t.Fatalf("%d events came in %d messages: nothing was joined", events, messages)
	}
	t.Logf("%d events in %d messages", events, messages)
}

// A client that closes while the server is streaming to it gets the
// server's close reply, even when the close arrives in the middle of a
// batched write.
func TestClientCloseDuringStreamIsAnswered(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.BatchWindow = 20 * time.Millisecond })
	talker := ts.connect("talker", "stream")
	stop := make(chan struct{})
	talkerDone := make(chan struct{})
	go func() {
		defer close(talkerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if talker.conn.Write(context.Background(), websocket.MessageText, []byte(strings.Repeat("z", 200))) != nil {
				return
			}
		}
	}()
	go func() { // the talker reads its own echoes, or the server drops it
		for {
			if _, _, err := talker.conn.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	for i := 0; i < 30; i++ {
		c := ts.connect(fmt.Sprintf("l%d", i), "stream")
		c.readLine() // the stream is flowing to this client
		if err := c.conn.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Errorf("close %d: %v, want the server's close reply", i, err)
		}
	}
	close(stop)
	<-talkerDone
}

// Events the hub accepted are flushed before the 1001, also when they sit in
// the batch window and the client keeps talking as shutdown begins.
func TestShutdownFlushesBatchWindow(t *testing.T) {
	for round := 0; round < 10; round++ {
		ts := startServer(t, func(c *Config) { c.BatchWindow = 300 * time.Millisecond })
		c, _ := ts.connectJSON("1", "lobby")
		c.sendJSON(map[string]any{"type": "message", "text": "first"})
		first := c.readJSON()
		wantFields(t, first, map[string]any{"text": "first"})
		c.sendJSON(map[string]any{"type": "message", "text": "waits in the window"})
		time.Sleep(50 * time.Millisecond) // accepted by the hub, held by the window
		go func() {
			for i := 0; ; i++ {
				msg := fmt.Sprintf(`{"type":"message","text":"more %d"}`, i)
				if c.conn.Write(context.Background(), websocket.MessageText, []byte(msg)) != nil {
					return
				}
			}
		}()
		go ts.sb.factory.Shutdown(context.Background())
		next := seqOf(t, first) + 1
		for {
			_, data, err := c.readMessage()
			if err != nil {
				if websocket.CloseStatus(err) != websocket.StatusGoingAway {
					t.Fatalf("round %d: ended with %v, want 1001", round, err)
				}
				break
			}
			for _, line := range strings.Split(string(data), "\n") {
				var ev map[string]any
				json.Unmarshal([]byte(line), &ev)
				if ev["type"] == "message" {
					if ev["seq"] != next {
						t.Fatalf("round %d: got seq %v, want %v: an accepted event was lost", round, ev["seq"], next)
					}
					next++
				}
			}
		}
		if next < seqOf(t, first)+2 {
			t.Fatalf("round %d: the event in the batch window never arrived", round)
		}
	}
}
