package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// fakeCentrifugo is a small stand-in for Centrifugo's JSON client protocol
// on /connection/websocket: connect, subscribe, publish (to every
// subscriber, the publisher included, as a push), replies carrying the
// command id, several messages per frame joined by "\n", and {} pings
// every pingEvery that must be answered with {} within pongWait or the
// connection is closed (code 3012, "no pong", as Centrifugo does).
type fakeCentrifugo struct {
	pingEvery, pongWait time.Duration

	mu     sync.Mutex
	refuse string // channel whose subscribe is refused
	subs   map[string]map[*fakeCfClient]bool
	offset uint64

	pings, pongs, noPong atomic.Int64
}

type fakeCfClient struct {
	out chan []byte
}

// send queues msg; a full queue is the client's loss, as in Centrifugo
// (which disconnects a slow client).
func (c *fakeCfClient) send(msg []byte) {
	select {
	case c.out <- msg:
	default:
	}
}

type fakeCfCommand struct {
	ID      uint64    `json:"id"`
	Connect *struct{} `json:"connect"`
	Sub     *struct {
		Channel string `json:"channel"`
	} `json:"subscribe"`
	Pub *struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	} `json:"publish"`
}

func (s *fakeCentrifugo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/connection/websocket" {
		http.NotFound(w, r)
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	c := &fakeCfClient{out: make(chan []byte, 8192)}
	defer s.leave(c)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go s.write(ctx, conn, c)

	var ponged atomic.Bool
	ponged.Store(true)
	go func() { // pinger: ends with the handler's context
		tick := time.NewTicker(s.pingEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			ponged.Store(false)
			s.pings.Add(1)
			c.send([]byte(`{}`))
			select {
			case <-ctx.Done():
				return
			case <-time.After(s.pongWait):
			}
			if !ponged.Load() {
				s.noPong.Add(1)
				conn.Close(3012, "no pong")
				cancel()
				return
			}
		}
	}()

	connected := false
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			return
		}
		for _, line := range bytes.Split(msg, []byte{'\n'}) {
			var cmd fakeCfCommand
			if json.Unmarshal(line, &cmd) != nil {
				conn.Close(3501, "bad request")
				return
			}
			id := strconv.FormatUint(cmd.ID, 10)
			switch {
			case cmd.ID == 0 && cmd.Connect == nil && cmd.Sub == nil && cmd.Pub == nil:
				s.pongs.Add(1)
				ponged.Store(true)
			case cmd.ID == 0:
				conn.Close(3501, "bad request")
				return
			case cmd.Connect != nil:
				connected = true
				c.send([]byte(`{"id":` + id + `,"connect":{"client":"c1","version":"0.0.0","ping":25,"pong":true}}`))
			case !connected:
				conn.Close(3501, "bad request")
				return
			case cmd.Sub != nil && s.refused(cmd.Sub.Channel):
				c.send([]byte(`{"id":` + id + `,"error":{"code":103,"message":"permission denied"}}`))
			case cmd.Sub != nil:
				s.join(cmd.Sub.Channel, c)
				c.send([]byte(`{"id":` + id + `,"subscribe":{}}`))
			case cmd.Pub != nil:
				s.publish(cmd.Pub.Channel, cmd.Pub.Data)
				c.send([]byte(`{"id":` + id + `,"publish":{}}`))
			}
		}
	}
}

// write sends everything queued for c, batching what has piled up into
// one frame with "\n" between messages.
func (s *fakeCentrifugo) write(ctx context.Context, conn *websocket.Conn, c *fakeCfClient) {
	var frame []byte
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-c.out:
			frame = append(frame[:0], msg...)
		}
	more:
		for len(frame) < 64<<10 {
			select {
			case msg := <-c.out:
				frame = append(append(frame, '\n'), msg...)
			default:
				break more
			}
		}
		if conn.Write(ctx, websocket.MessageText, frame) != nil {
			return
		}
	}
}

func (s *fakeCentrifugo) refused(channel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return channel == s.refuse
}

func (s *fakeCentrifugo) join(channel string, c *fakeCfClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs[channel] == nil {
		s.subs[channel] = map[*fakeCfClient]bool{}
	}
	s.subs[channel][c] = true
}

func (s *fakeCentrifugo) leave(c *fakeCfClient) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.subs {
		delete(m, c)
	}
}

func (s *fakeCentrifugo) subscribers(channel string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs[channel])
}

func (s *fakeCentrifugo) publish(channel string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.offset++
	push := []byte(`{"push":{"channel":"` + channel + `","pub":{"data":` + string(data) +
		`,"info":{"user":"","client":"c1"},"offset":` + strconv.FormatUint(s.offset, 10) + `}}}`)
	for c := range s.subs[channel] {
		c.send(push)
	}
}

func startFakeCentrifugo(t *testing.T, pingEvery, pongWait time.Duration) (*fakeCentrifugo, string) {
	t.Helper()
	fake := &fakeCentrifugo{pingEvery: pingEvery, pongWait: pongWait, subs: map[string]map[*fakeCfClient]bool{}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)
	return fake, "ws" + strings.TrimPrefix(srv.URL, "http") + "/connection/websocket"
}

func centrifugoEnv(url string) *runEnv {
	env := testEnv(url)
	env.target = targets["centrifugo"]
	return env
}

func TestCentrifugoParse(t *testing.T) {
	tg := targets["centrifugo"]
	p := encodePayload(testRun, Stamp{1, 5, 500}, 100)
	var cmd struct {
		ID      uint64 `json:"id"`
		Publish struct {
			Channel string `json:"channel"`
			Data    struct {
				Text string `json:"text"`
			} `json:"data"`
		} `json:"publish"`
	}
	enc := tg.Encode(p)
	if err := json.Unmarshal(enc, &cmd); err != nil || cmd.ID < 3 || cmd.Publish.Channel != "bench" || cmd.Publish.Data.Text != string(p) {
		t.Fatalf("Encode gave %s (%v)", enc, err)
	}
	var next struct{ ID uint64 }
	if err := json.Unmarshal(tg.Encode(p), &next); err != nil || next.ID <= cmd.ID {
		t.Fatalf("ids %d then %d: want increasing", cmd.ID, next.ID)
	}
	p2 := string(encodePayload(testRun, Stamp{0, 2, 600}, 10))
	msg := strings.Join([]string{
		`{"id":1,"connect":{"client":"c1","version":"6.9.1","ping":25,"pong":true}}`,
		`{}`,
		`{"push":{"channel":"bench","pub":{"data":{"text":"` + string(p) + `"},"info":{"client":"c1"},"offset":3}}}`,
		`{"id":7,"publish":{}}`,
		`{"push":{"channel":"bench","join":{"info":{"client":"c2"}}}}`,
		// Same push with the data's keys in another order: the slow path.
		`{"push":{"channel":"bench","pub":{"offset":4,"data":{"n":1,"text":"` + p2 + `"}}}}`,
		`{"push":{"channel":"bench","pub":{"data":{"text":"say \"hi\""}}}}`,
		`{"id":9,"error":{"code":103,"message":"permission denied"}}`,
		"",
	}, "\n")
	got := collect(tg, msg)
	want := []Stamp{{1, 5, 500}, {0, 2, 600}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	st := tg.(sessionTarget)
	if a := st.answer([]byte(`{}`)); string(a) != `{}` {
		t.Fatalf("answer to a ping = %q, want {}", a)
	}
	if a := st.answer([]byte(`{"id":7,"publish":{}}`)); a != nil {
		t.Fatalf("answer to a reply = %q, want none", a)
	}
	if u := tg.URL("ws://127.0.0.1:8000/connection/websocket", "room"); u != "ws://127.0.0.1:8000/connection/websocket" {
		t.Fatalf("URL = %q", u)
	}
	if err := checkPayloadSize(tg, 65001); err == nil {
		t.Fatal("centrifugo must refuse payloads over its message size limit")
	}
}

// join connects and subscribes before the connection counts as dialled,
// and a refused subscribe fails the dial.
func TestCentrifugoJoinSubscribes(t *testing.T) {
	fake, url := startFakeCentrifugo(t, time.Hour, time.Second)
	env := centrifugoEnv(url)
	conn, err := env.dial(context.Background(), 0, dialSpec{uid: "r0", url: url})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if n := fake.subscribers("bench"); n != 1 {
		t.Fatalf("%d subscribers of bench after the dial, want 1", n)
	}

	fake.mu.Lock()
	fake.refuse = "bench"
	fake.mu.Unlock()
	if c, err := env.dial(context.Background(), 1, dialSpec{uid: "r1", url: url}); err == nil || !strings.Contains(err.Error(), "permission denied") {
		if c != nil {
			c.CloseNow()
		}
		t.Fatalf("dial with a refused subscribe: err %v, want permission denied", err)
	}
}

// The fake closes a connection that leaves its ping unanswered; our
// connections answer and are held.
func TestCentrifugoAnswersPings(t *testing.T) {
	fake, url := startFakeCentrifugo(t, 50*time.Millisecond, 100*time.Millisecond)

	// Control: a connection that does not answer is closed with "no pong".
	raw, _, err := websocket.Dial(context.Background(), url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.CloseNow()
	if err := raw.Write(context.Background(), websocket.MessageText, []byte(`{"id":1,"connect":{}}`)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		_, _, err := raw.Read(ctx) // sees the pings but never answers
		if err != nil {
			if websocket.CloseStatus(err) != 3012 {
				t.Fatalf("silent client ended with %v, want close 3012 no pong", err)
			}
			break
		}
	}

	env := centrifugoEnv(url)
	res, err := runIdle(context.Background(), env, idleConfig{Conns: 10, Hold: 600 * time.Millisecond, Procs: 1, UIDs: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 10 || res.Dropped != 0 {
		t.Fatalf("opened %d, dropped %d (%s); want 10 held", res.Opened, res.Dropped, res.DropReason)
	}
	if fake.pongs.Load() < 10 || fake.noPong.Load() != 1 {
		t.Fatalf("pings %d, pongs %d, no-pong closes %d; want pongs from every connection and only the control closed",
			fake.pings.Load(), fake.pongs.Load(), fake.noPong.Load())
	}
}

func TestCentrifugoFanoutEndToEnd(t *testing.T) {
	fake, url := startFakeCentrifugo(t, 200*time.Millisecond, 400*time.Millisecond)
	env := centrifugoEnv(url)
	cfg := fanoutConfig{Receivers: 4, Senders: 2, Rate: 50, Duration: time.Second, Drain: 2 * time.Second, Payload: 100}
	res, err := runFanout(context.Background(), env, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.MessagesSent != 100 || res.SendErrors != 0 {
		t.Fatalf("sent %d (errors %d), want 100", res.MessagesSent, res.SendErrors)
	}
	if res.ExpectedDeliveries != 600 || res.Delivered != 600 || res.Lost != 0 || res.Reordered != 0 || res.DroppedClients != 0 {
		t.Fatalf("deliveries %d/%d lost %d reordered %d dropped %d (%s)", res.Delivered, res.ExpectedDeliveries,
			res.Lost, res.Reordered, res.DroppedClients, res.DropReason)
	}
	if res.Latency.Count != 600 || res.Latency.P99Ms <= 0 { // every delivery timed; how fast is not a test's to say
		t.Fatalf("latency %+v", res.Latency)
	}
	if fake.pongs.Load() == 0 || fake.noPong.Load() != 0 {
		t.Fatalf("pongs %d, no-pong closes %d: the run should have answered pings", fake.pongs.Load(), fake.noPong.Load())
	}
}
