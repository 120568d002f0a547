package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// sendAll sends n room messages from c, texts prefix0..prefix(n-1), and
// returns their seqs as c sees them come back.
func sendAll(t *testing.T, c *testClient, prefix string, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for i := range n {
		c.sendJSON(map[string]string{"type": "message", "text": fmt.Sprintf("%s%d", prefix, i)})
		ev := c.readEvents(1, "message")[0]
		seqs = append(seqs, uint64(seqOf(t, ev)))
	}
	return seqs
}

// recoverFrom dials uid into room with ?since= and returns the client and
// its welcome.
func (ts *testServer) recoverFrom(uid, room string, since uint64) (*testClient, map[string]any) {
	ts.t.Helper()
	c := ts.dial(dialOptions{path: fmt.Sprintf("/ws/%s?since=%d", room, since), uid: uid, json: true})
	welcome := c.readJSON()
	if welcome["type"] != "welcome" {
		ts.t.Fatalf("first event = %v, want welcome", welcome)
	}
	return c, welcome
}

// A client that comes back with since gets what it missed, in order, then
// live events, with nothing between and nothing twice.
func TestHistoryRecovery(t *testing.T) {
	ts := startServer(t, nil)
	sender, _ := ts.connectJSON("s", "room")
	receiver, _ := ts.connectJSON("r", "room")
	seqs := sendAll(t, sender, "before", 3)
	for range 3 {
		receiver.readEvents(1, "message")
	}
	last := seqs[2]
	receiver.close()
	missed := sendAll(t, sender, "missed", 4)
	if missed[0] != last+1 || missed[3] != last+4 {
		t.Fatalf("seqs %v then %v: want one room counting up by one", seqs, missed)
	}

	back, welcome := ts.recoverFrom("r", "room", last)
	if welcome["recovered"] != true {
		t.Fatalf("welcome = %v, want recovered:true", welcome)
	}
	for i, want := range missed {
		ev := back.readEvents(1, "message")[0]
		if uint64(seqOf(t, ev)) != want || ev["text"] != fmt.Sprintf("missed%d", i) {
			t.Fatalf("replayed %v, want seq %d missed%d", ev, want, i)
		}
		wantTimestamp(t, ev)
	}
	sender.sendJSON(map[string]string{"type": "message", "text": "live"})
	if ev := back.readEvents(1, "message")[0]; ev["text"] != "live" || uint64(seqOf(t, ev)) != missed[3]+1 {
		t.Fatalf("after the replay: %v, want the live message", ev)
	}

	// since = the room's last seq: recovered, nothing replayed.
	upToDate, welcome := ts.recoverFrom("u", "room", missed[3]+1)
	if welcome["recovered"] != true {
		t.Fatalf("welcome at the last seq = %v", welcome)
	}
	sender.sendJSON(map[string]string{"type": "message", "text": "next"})
	if ev := upToDate.readEvents(1, "message")[0]; ev["text"] != "next" {
		t.Fatalf("got %v, want only the live message", ev)
	}
	// A publish is numbered and kept like a message.
	if status, _ := ts.request("POST", "/api/rooms/room/messages", `{"data":{"n":1}}`, nil); status != 200 {
		t.Fatal("publish failed")
	}
	pub := upToDate.readEvents(1, "publish")[0]
	again, welcome := ts.recoverFrom("u2", "room", uint64(seqOf(t, pub))-1)
	if welcome["recovered"] != true {
		t.Fatalf("welcome = %v", welcome)
	}
	if ev := again.readEvents(1, "publish")[0]; fmt.Sprint(ev["data"]) != "map[n:1]" || ev["seq"] != pub["seq"] || ev["ts"] != pub["ts"] {
		t.Fatalf("replayed publish %v, want %v", ev, pub)
	}
	if n := metricValue(t, ts, `switchboard_recoveries_total{result="recovered"}`); n != 3 {
		t.Fatalf("recovered = %v, want 3", n)
	}
}

// When the history does not reach back to since, the welcome says
// recovered:false and nothing is replayed: never a partial replay.
func TestHistoryNotRecovered(t *testing.T) {
	check := func(t *testing.T, ts *testServer, room string, since uint64) {
		t.Helper()
		c, welcome := ts.recoverFrom("late", room, since)
		if welcome["recovered"] != false {
			t.Fatalf("welcome = %v, want recovered:false", welcome)
		}
		c.sendJSON(map[string]string{"type": "who"})
		if ev := c.readJSON(); ev["type"] != "presence" {
			t.Fatalf("after the welcome: %v, want nothing replayed", ev)
		}
	}
	t.Run("more missed than -history-size", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.HistorySize = 3 })
		s, _ := ts.connectJSON("s", "room")
		seqs := sendAll(t, s, "m", 5)
		check(t, ts, "room", seqs[0]) // 4 after it, 3 kept
		c, welcome := ts.recoverFrom("ok", "room", seqs[1])
		if welcome["recovered"] != true {
			t.Fatalf("3 missed of 3 kept: %v", welcome)
		}
		c.readEvents(3, "message")
	})
	t.Run("older than -history-ttl", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.HistoryTTL = 100 * time.Millisecond })
		s, _ := ts.connectJSON("s", "room")
		seqs := sendAll(t, s, "m", 2)
		time.Sleep(300 * time.Millisecond)
		check(t, ts, "room", seqs[0])
	})
	t.Run("evicted by -history-max-bytes", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.HistoryMaxBytes = 16 << 10 })
		s, _ := ts.connectJSON("s", "room")
		first := sendAll(t, s, "m", 1)[0]
		big := strings.Repeat("x", 8<<10)
		for range 4 {
			if status, _ := ts.request("POST", "/api/rooms/other/messages", `{"text":"`+big+`"}`, nil); status != 200 {
				t.Fatal("publish failed")
			}
		}
		check(t, ts, "room", first-1)
	})
	t.Run("since above the last seq", func(t *testing.T) {
		ts := startServer(t, nil)
		s, _ := ts.connectJSON("s", "room")
		seqs := sendAll(t, s, "m", 2)
		check(t, ts, "room", seqs[1]+1)
	})
	t.Run("a room with no history", func(t *testing.T) {
		ts := startServer(t, nil)
		check(t, ts, "never", 5)
	})
	t.Run("from an earlier server", func(t *testing.T) {
		before := startServer(t, nil)
		s, _ := before.connectJSON("s", "room")
		seqs := sendAll(t, s, "m", 3)
		s.close()
		before.stop()
		after := startServer(t, nil)
		s2, _ := after.connectJSON("s", "room")
		fresh := sendAll(t, s2, "n", 1)[0]
		if fresh <= seqs[2] {
			t.Fatalf("after a restart seq %d is not above %d", fresh, seqs[2])
		}
		check(t, after, "room", seqs[1])
		if n := metricValue(t, after, `switchboard_recoveries_total{result="not_recovered"}`); n != 1 {
			t.Fatalf("not_recovered = %v", n)
		}
	})
	t.Run("history off", func(t *testing.T) {
		ts := startServer(t, func(c *Config) { c.HistorySize = 0 })
		s, _ := ts.connectJSON("s", "room")
		seqs := sendAll(t, s, "m", 2)
		check(t, ts, "room", seqs[0])
		if _, welcome := ts.recoverFrom("current", "room", seqs[1]); welcome["recovered"] != true {
			t.Fatalf("since = last seq with history off: %v", welcome)
		}
	})
}

// A malformed since closes the connection; text mode ignores since.
func TestHistorySinceInvalid(t *testing.T) {
	ts := startServer(t, nil)
	for _, since := range []string{"abc", "-1", "1.5", "%2B5", "18446744073709551616"} {
		c := ts.dial(dialOptions{path: "/ws/room?since=" + since, uid: "1", json: true})
		c.expectClose(websocket.StatusPolicyViolation, "since is invalid")
	}
	text := ts.dial(dialOptions{path: "/ws/room?since=abc", uid: "2"})
	text.expect("[server]: welcome UID 2, room room")
	empty, welcome := ts.connectJSON("3", "room")
	if _, has := welcome["recovered"]; has {
		t.Fatalf("welcome without since = %v, want no recovered", welcome)
	}
	empty.close()
}

// History outlives the room's sessions, and seq goes on from where it was.
func TestHistoryAcrossEmptyRoom(t *testing.T) {
	ts := startServer(t, nil)
	s, _ := ts.connectJSON("s", "room")
	seqs := sendAll(t, s, "m", 3)
	s.close()
	eventually(t, "the room to empty", func() bool {
		var rooms []RoomSummary
		ts.getJSON("/api/rooms", &rooms)
		return len(rooms) == 0
	})
	c, _ := ts.connectJSON("n", "room")
	c.sendJSON(map[string]string{"type": "history"})
	h := c.readEvents(1, "history")[0]
	messages := h["messages"].([]any)
	if h["room"] != "room" || len(messages) != 3 || messages[0].(map[string]any)["text"] != "m0" {
		t.Fatalf("history = %v", h)
	}
	if next := sendAll(t, c, "after", 1)[0]; next != seqs[2]+1 {
		t.Fatalf("seq after the room emptied = %d, want %d", next, seqs[2]+1)
	}
}

// History asked for in both modes, with and without a limit.
func TestHistoryQueries(t *testing.T) {
	ts := startServer(t, nil)
	s, _ := ts.connectJSON("s", "room")
	sendAll(t, s, "m", 3)
	ts.request("POST", "/api/rooms/room/messages", `{"text":"two\nlines"}`, nil)
	s.readEvents(1, "publish")

	text := ts.connect("t", "room")
	text.send("/history")
	text.expect("[server]: history of room: 4 messages", "[UID: s]: m0", "[UID: s]: m1", "[UID: s]: m2", "[server]: two", "[server]: lines")
	text.send("/history 1")
	text.expect("[server]: history of room: 1 message", "[server]: two", "[server]: lines")
	for _, bad := range []string{"/history 0", "/history -2", "/history x", "/history 1.5"} {
		text.send(bad)
		text.expect("[server]: error: usage: /history [N]")
	}
	empty := ts.connect("e", "quiet")
	empty.send("/history")
	empty.expect("[server]: history of quiet: 0 messages")

	s.sendJSON(map[string]any{"type": "history", "limit": 2})
	h := s.readEvents(1, "history")[0]
	if messages := h["messages"].([]any); len(messages) != 2 || messages[0].(map[string]any)["text"] != "m2" || messages[1].(map[string]any)["type"] != "publish" {
		t.Fatalf("history limit 2 = %v", h)
	}
	for _, bad := range []string{`0`, `-1`, `1.5`, `"3"`, `true`} {
		s.write(websocket.MessageText, []byte(`{"type":"history","limit":`+bad+`}`))
		if ev := s.readJSON(); ev["type"] != "error" || ev["code"] != "bad_request" {
			t.Fatalf("limit %s: %v, want bad_request", bad, ev)
		}
	}
}

// GET /api/rooms/{room}/history, with since and limit.
func TestHistoryHTTP(t *testing.T) {
	ts := startServer(t, nil)
	s, _ := ts.connectJSON("s", "room")
	seqs := sendAll(t, s, "m", 5)
	var all struct {
		Room      string           `json:"room"`
		Messages  []map[string]any `json:"messages"`
		Recovered *bool            `json:"recovered"`
	}
	ts.getJSON("/api/rooms/room/history", &all)
	if all.Room != "room" || len(all.Messages) != 5 || all.Recovered != nil || all.Messages[4]["text"] != "m4" {
		t.Fatalf("history = %+v", all)
	}
	ts.getJSON("/api/rooms/room/history?limit=2", &all)
	if len(all.Messages) != 2 || all.Messages[0]["text"] != "m3" {
		t.Fatalf("limit 2 = %+v", all)
	}
	ts.getJSON(fmt.Sprintf("/api/rooms/room/history?since=%d&limit=2", seqs[0]), &all)
	if len(all.Messages) != 2 || all.Messages[0]["text"] != "m1" || all.Recovered == nil || !*all.Recovered {
		t.Fatalf("since first, limit 2 = %+v", all)
	}
	ts.getJSON(fmt.Sprintf("/api/rooms/room/history?since=%d", seqs[4]+10), &all)
	if len(all.Messages) != 0 || all.Recovered == nil || *all.Recovered {
		t.Fatalf("since above the last = %+v", all)
	}
	if status, body := ts.request("GET", "/api/rooms/nobody/history", "", nil); status != 200 || body != `{"room":"nobody","messages":[]}` {
		t.Fatalf("a room nobody used = %d %s", status, body)
	}
	for _, path := range []string{"?limit=0", "?limit=x", "?since=-1", "?since=x"} {
		if status, body := ts.request("GET", "/api/rooms/room/history"+path, "", nil); status != 400 || !strings.HasPrefix(body, `{"error":`) {
			t.Errorf("%s = %d %s, want 400", path, status, body)
		}
	}
	if status, _ := ts.request("GET", "/api/rooms/bad%20room/history", "", nil); status != 400 {
		t.Errorf("bad room = %d", status)
	}
	if status, _ := ts.request("GET", "/api/rooms/room/history", "", http.Header{"X-Forwarded-For": {"1.2.3.4"}}); status != 403 {
		t.Errorf("proxied = %d, want 403", status)
	}
}

// Memory stays bounded by -history-max-bytes whatever clients do: many
// rooms, big messages, rooms that come and go.
func TestHistoryByteCapHolds(t *testing.T) {
	const capBytes = 1 << 20
	ts := startServer(t, func(c *Config) {
		c.HistoryMaxBytes = capBytes
		c.MaxMessageBytes = 1 << 20
	})
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapInuse
	}
	before := heap()
	big := strings.Repeat("y", 60<<10)
	published := 0
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				room := fmt.Sprintf("r%d-%d", w, i%50)
				if status, _ := ts.request("POST", "/api/rooms/"+room+"/messages", `{"text":"`+big+`"}`, nil); status != 200 {
					t.Errorf("publish to %s failed", room)
					return
				}
			}
		}()
	}
	// Sessions that come and go in their own rooms, talking.
	for i := range 30 {
		c, _ := ts.connectJSON(fmt.Sprint("c", i), fmt.Sprint("churn", i))
		c.sendJSON(map[string]string{"type": "message", "text": big})
		c.readEvents(1, "message")
		c.close()
		if kept := metricValue(t, ts, "switchboard_history_bytes"); kept > capBytes {
			t.Fatalf("history holds %v bytes, over the %d cap", kept, capBytes)
		}
	}
	wg.Wait()
	published = 4*150*len(big) + 30*len(big)
	kept := metricValue(t, ts, "switchboard_history_bytes")
	if kept > capBytes || kept < capBytes/2 {
		t.Fatalf("history holds %v bytes after %d published, want just under the %d cap", kept, published, capBytes)
	}
	// The real heap agrees: tens of megabytes went through, about one
	// cap's worth stays (frames, events, entries).
	if grown := int64(heap()) - int64(before); grown > 8*capBytes {
		t.Fatalf("heap grew %d bytes with a %d-byte history cap after %d bytes published", grown, capBytes, published)
	}
	var answer struct {
		Messages []json.RawMessage `json:"messages"`
	}
	ts.getJSON("/api/rooms/r0-0/history", &answer) // the oldest rooms are gone
	if len(answer.Messages) != 0 {
		t.Fatalf("the oldest room still holds %d messages", len(answer.Messages))
	}
}

// The delivery promise across reconnects: a receiver cut again and again
// without a close frame, coming back with since while a sender keeps
// sending, ends with every message exactly once, in order.
func TestHistoryRecoveryUnderLoad(t *testing.T) {
	const total = 400
	ts := startServer(t, nil)
	c, _ := ts.connectJSON("r", "busy")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range total {
			if status, _ := ts.request("POST", "/api/rooms/busy/messages", fmt.Sprintf(`{"text":"p%d"}`, i), nil); status != 200 {
				t.Errorf("publish %d failed", i)
				return
			}
		}
	}()
	var got []string
	var last uint64
	for cut := 0; len(got) < total; cut++ {
		// Read a little, then drop the connection on the floor.
		for n := 0; n < 30 && len(got) < total; n++ {
			ev := c.readEvents(1, "publish")[0]
			seq := uint64(seqOf(t, ev))
			if last != 0 && seq != last+1 {
				t.Fatalf("cut %d: seq %d after %d", cut, seq, last)
			}
			last = seq
			got = append(got, ev["text"].(string))
		}
		if len(got) >= total {
			break
		}
		c.conn.CloseNow()
		var welcome map[string]any
		c, welcome = ts.recoverFrom("r", "busy", last)
		if welcome["recovered"] != true {
			t.Fatalf("cut %d: %v", cut, welcome)
		}
	}
	<-done
	for i, text := range got {
		if text != fmt.Sprintf("p%d", i) {
			t.Fatalf("message %d is %q: lost, doubled or out of order", i, text)
		}
	}
	if len(got) != total {
		t.Fatalf("got %d of %d", len(got), total)
	}
}

// History is in memory: a restarted binary starts every room afresh, above
// every seq it handed out before, so a since from before the restart is
// answered recovered:false rather than taken for a recent one.
func TestHistoryProcessRestart(t *testing.T) {
	first := startProcess(t)
	c := dialProcess(t, first, "1", true)
	var last float64
	for i := range 3 {
		c.sendJSON(map[string]string{"type": "message", "text": fmt.Sprint("m", i)})
		last = seqOf(t, c.readEvents(1, "message")[0])
	}
	c.conn.CloseNow()
	first.cmd.Process.Signal(syscall.SIGTERM)
	first.waitExit(t)

	second := startProcess(t)
	fresh := dialProcess(t, second, "2", true)
	fresh.sendJSON(map[string]string{"type": "message", "text": "after"})
	if seq := seqOf(t, fresh.readEvents(1, "message")[0]); seq <= last {
		t.Fatalf("seq after the restart %v is not above %v", seq, last)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://%s/ws?since=%d", second.addr, uint64(last)-1), &websocket.DialOptions{
		HTTPHeader:   http.Header{"uid": {"1"}},
		Subprotocols: []string{jsonSubprotocol},
		HTTPClient:   &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	back := &testClient{t: t, conn: conn}
	if welcome := back.readJSON(); welcome["recovered"] != false {
		t.Fatalf("welcome after the restart = %v, want recovered:false", welcome)
	}
}

// A recovery of big messages is not a slow consumer: the replay shares the
// history's bytes and is not counted against -max-queue-bytes.
func TestHistoryBigRecoveryIsNotSlowConsumer(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxQueueBytes = 256 << 10 })
	s, _ := ts.connectJSON("s", "room")
	first := sendAll(t, s, "m", 1)[0]
	big := strings.Repeat("z", 60<<10)
	for range 20 { // 1.2 MB after first, over the 256 KiB cap
		ts.request("POST", "/api/rooms/room/messages", `{"text":"`+big+`"}`, nil)
		s.readEvents(1, "publish")
	}
	back, welcome := ts.recoverFrom("r", "room", first)
	if welcome["recovered"] != true {
		t.Fatalf("welcome = %v", welcome)
	}
	if got := back.readEvents(20, "publish"); len(got) != 20 {
		t.Fatalf("replayed %d of 20", len(got))
	}
}
