package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/switchboard/switchboard/internal/mint"
)

// sseEvent is one event as a stream client reads it.
type sseEvent struct {
	name, id string
	data     map[string]any
}

// sseClient reads one event stream in its own goroutine.
type sseClient struct {
	t      *testing.T
	resp   *http.Response
	events chan sseEvent
	cancel context.CancelFunc
}

// openSSE opens path (with its query) and fails the test unless the server
// starts a stream.
func (ts *testServer) openSSE(path string, header http.Header) *sseClient {
	ts.t.Helper()
	resp, cancel := ts.requestSSE(path, header)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		ts.t.Fatalf("GET %s: %s %s", path, resp.Status, resp.Header.Get("Content-Type"))
	}
	c := &sseClient{t: ts.t.(*testing.T), resp: resp, events: make(chan sseEvent, 1024), cancel: cancel}
	go c.readAll()
	return c
}

// requestSSE sends the GET; the caller owns the answer.
func (ts *testServer) requestSSE(path string, header http.Header) (*http.Response, context.CancelFunc) {
	ts.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ts.http.URL+path, nil)
	if err != nil {
		ts.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := ts.httpClient.Do(req)
	if err != nil {
		cancel()
		ts.t.Fatalf("GET %s: %v", path, err)
	}
	ts.t.Cleanup(func() { cancel(); resp.Body.Close() })
	return resp, cancel
}

// readAll parses the stream into events until it ends; comment lines
// (pings) are skipped.
func (c *sseClient) readAll() {
	defer close(c.events)
	scanner := bufio.NewScanner(c.resp.Body)
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	var ev sseEvent
	for scanner.Scan() {
		line := scanner.Text()
		switch {
		case line == "":
			if ev.name != "" {
				c.events <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.data); err != nil {
				c.t.Errorf("data line %q: %v", line, err)
			}
		default:
			c.t.Errorf("unexpected line %q", line)
		}
	}
}

// next returns the next event, skipping presence the test is not about.
func (c *sseClient) next(skip ...string) sseEvent {
	c.t.Helper()
	for {
		select {
		case ev, ok := <-c.events:
			if !ok {
				c.t.Fatal("stream ended")
			}
			if !contains(skip, ev.name) {
				return ev
			}
		case <-time.After(waitTimeout):
			c.t.Fatal("no event")
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ended waits for the stream to end and says whether it did.
func (c *sseClient) ended() bool {
	for {
		select {
		case _, ok := <-c.events:
			if !ok {
				return true
			}
		case <-time.After(waitTimeout):
			return false
		}
	}
}

// A stream gets the welcome, then every event of its room and the DMs to
// its uid as the JSON objects of JSON mode, with id = seq where there is
// one; it counts in presence, and cannot send.
func TestSSEStream(t *testing.T) {
	ts := startServer(t, nil)
	watch := ts.openSSE("/sse/news?uid=watcher", nil)
	welcome := watch.next()
	if welcome.name != "welcome" || welcome.data["uid"] != "watcher" || welcome.data["room"] != "news" || welcome.id != "" {
		t.Fatalf("first event %+v", welcome)
	}
	alice, _ := ts.connectJSON("alice", "news")
	if ev := watch.next(); ev.name != "joined" || ev.data["uid"] != "alice" {
		t.Fatalf("join %+v", ev)
	}
	var presence struct {
		Online []string `json:"online"`
	}
	ts.getJSON("/api/rooms/news/presence", &presence)
	if strings.Join(presence.Online, ",") != "alice,watcher" {
		t.Fatalf("presence %v", presence.Online)
	}

	alice.sendJSON(map[string]string{"type": "message", "text": "hello"})
	msg := watch.next()
	if msg.name != "message" || msg.data["text"] != "hello" || msg.id != fmt.Sprint(uint64(msg.data["seq"].(float64))) {
		t.Fatalf("message %+v", msg)
	}
	if status, _ := ts.request("POST", "/api/rooms/news/messages", `{"data":{"up":true}}`, nil); status != 200 {
		t.Fatal("publish failed")
	}
	pub := watch.next()
	if pub.name != "publish" || pub.id == "" || pub.id <= msg.id {
		t.Fatalf("publish %+v after %s", pub, msg.id)
	}
	alice.sendJSON(map[string]string{"type": "direct", "to": "watcher", "text": "psst"})
	if dm := watch.next(); dm.name != "direct" || dm.data["text"] != "psst" || dm.id != "" {
		t.Fatalf("dm %+v", dm)
	}
	alice.close()
	if ev := watch.next(); ev.name != "left" || ev.data["uid"] != "alice" {
		t.Fatalf("leave %+v", ev)
	}
	// The client leaving ends its session: its uid leaves the room.
	watch.cancel()
	eventually(t, "the stream's uid leaves", func() bool {
		ts.getJSON("/api/rooms/news/presence", &presence)
		return len(presence.Online) == 0
	})
}

// Refusals come before the stream: an HTTP status and the JSON error
// with the reason words of the WebSocket closes, in both modes.
func TestSSERefusals(t *testing.T) {
	secret := "sse-secret"
	dev := startServer(t, nil)
	tokens := startServer(t, func(c *Config) { c.JWTSecret = secret })
	token := func(o mint.Options) string {
		signed, err := mint.HS256([]byte(secret), o)
		if err != nil {
			t.Fatal(err)
		}
		return signed
	}
	good := token(mint.Options{Subject: "ann", Rooms: []string{"ok"}, TTL: time.Hour})
	expired := token(mint.Options{Subject: "ann", TTL: time.Minute, Now: time.Now().Add(-time.Hour)})
	cases := []struct {
		ts     *testServer
		path   string
		header http.Header
		status int
		reason string
	}{
		{dev, "/sse/news", nil, 401, reasonUIDMissing},
		{dev, "/sse/news?uid=" + strings.Repeat("u", 200), nil, 400, reasonUIDInvalid},
		{dev, "/sse/bad%20room?uid=a", nil, 400, reasonRoomInvalid},
		{dev, "/sse/news?uid=a&since=soon", nil, 400, reasonSinceInvalid},
		{tokens, "/sse/ok?uid=ann", nil, 401, reasonTokenMissing},
		{tokens, "/sse/ok?token=nonsense", nil, 401, reasonTokenInvalid},
		{tokens, "/sse/ok?token=" + expired, nil, 401, reasonTokenExpired},
		{tokens, "/sse/elsewhere", http.Header{"Authorization": {"Bearer " + good}}, 403, reasonRoomForbidden},
	}
	for _, tc := range cases {
		resp, _ := tc.ts.requestSSE(tc.path, tc.header)
		var body struct {
			Error string `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&body)
		if resp.StatusCode != tc.status || body.Error != tc.reason {
			t.Errorf("%s: %s %q, want %d %q", tc.path, resp.Status, body.Error, tc.status, tc.reason)
		}
	}
	// And the good token streams, with its expiry in the welcome.
	ok := tokens.openSSE("/sse/ok", http.Header{"Authorization": {"Bearer " + good}})
	if w := ok.next(); w.name != "welcome" || w.data["uid"] != "ann" || w.data["expires"] == nil {
		t.Fatalf("welcome %+v", w)
	}
}

// Last-Event-ID (what EventSource sends on its own when it reconnects)
// or ?since= recovers what the stream missed, once and in order.
func TestSSERecovery(t *testing.T) {
	ts := startServer(t, nil)
	first := ts.openSSE("/sse/feed?uid=w", nil)
	first.next()
	sender, _ := ts.connectJSON("s", "feed")
	first.next() // joined
	sender.sendJSON(map[string]string{"type": "message", "text": "one"})
	seen := first.next()
	first.cancel()
	for _, text := range []string{"two", "three"} {
		sender.sendJSON(map[string]string{"type": "message", "text": text})
	}
	sender.readEvents(3, "message")
	for name, open := range map[string]func() *sseClient{
		"Last-Event-ID": func() *sseClient {
			return ts.openSSE("/sse/feed?uid=w", http.Header{"Last-Event-ID": {seen.id}})
		},
		"since": func() *sseClient { return ts.openSSE("/sse/feed?uid=w&since="+seen.id, nil) },
	} {
		back := open()
		if w := back.next(); w.name != "welcome" || w.data["recovered"] != true {
			t.Fatalf("%s: welcome %+v", name, w)
		}
		for _, want := range []string{"two", "three"} {
			if ev := back.next("joined", "left"); ev.name != "message" || ev.data["text"] != want {
				t.Fatalf("%s: replayed %+v, want %q", name, ev, want)
			}
		}
		back.cancel()
	}
}

// A stream that is not read is ended as a slow consumer, with a last
// "event: close" saying so once it reads again; the room's other
// sessions lose nothing.
func TestSSESlowReader(t *testing.T) {
	const publishes, size = 400, 32 << 10
	ts := startServer(t, func(c *Config) {
		c.MaxQueueBytes = 256 << 10
		c.WriteTimeout = time.Minute
	})
	resp, _ := ts.requestSSE("/sse/feed?uid=slow", nil)
	payload := strings.Repeat("x", size)
	for i := 0; i < publishes; i++ {
		if status, body := ts.request("POST", "/api/rooms/feed/messages", `{"text":"`+payload+`"}`, nil); status != 200 {
			t.Fatalf("publish %d: %d %s", i, status, body)
		}
	}
	// Now read everything: the stream ends with the close event.
	c := &sseClient{t: t, resp: resp, events: make(chan sseEvent, publishes+8)}
	go c.readAll()
	var last sseEvent
	for ev := range c.events {
		last = ev
	}
	if last.name != "close" || last.data["reason"] != "slow consumer" || last.data["code"] != float64(1008) {
		t.Fatalf("last event %+v", last)
	}
}

// On shutdown a stream gets what was queued, then "event: close" with
// 1001 server shutting down.
func TestSSEShutdown(t *testing.T) {
	ts := startServer(t, nil)
	watch := ts.openSSE("/sse/news?uid=w", nil)
	watch.next()
	ts.request("POST", "/api/rooms/news/messages", `{"text":"last words"}`, nil)
	ts.stop()
	if ev := watch.next(); ev.name != "publish" || ev.data["text"] != "last words" {
		t.Fatalf("before close %+v", ev)
	}
	if ev := watch.next(); ev.name != "close" || ev.data["reason"] != "server shutting down" || ev.data["code"] != float64(1001) {
		t.Fatalf("close %+v", ev)
	}
	if !watch.ended() {
		t.Fatal("stream still open after shutdown")
	}
}

// A token's exp ends the stream with "event: close" 1008 token expired;
// a quiet stream gets a ": ping" comment every -ping-interval.
func TestSSEExpiryAndPings(t *testing.T) {
	secret := "sse-secret"
	ts := startServer(t, func(c *Config) {
		c.JWTSecret = secret
		c.PingInterval = 50 * time.Millisecond
	})
	short, err := mint.HS256([]byte(secret), mint.Options{Subject: "brief", TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := ts.requestSSE("/sse/news?token="+short, nil)
	scanner := bufio.NewScanner(resp.Body)
	var lines []string
	for scanner.Scan() {
		lines = append(lines, scanner.Text())
	}
	all := strings.TrimSpace(strings.Join(lines, "\n"))
	if !strings.HasPrefix(all, "event: welcome\n") || !strings.Contains(all, "\n: ping\n") ||
		!strings.HasSuffix(all, "event: close\n"+`data: {"code":1008,"reason":"token expired"}`) {
		t.Fatalf("stream:\n%s", all)
	}
}

// The delivery promise over SSE: a stream cut again and again while a
// sender keeps sending, reopened each time with Last-Event-ID, has every
// message once, in order.
func TestSSERecoveryUnderLoad(t *testing.T) {
	const total = 300
	ts := startServer(t, nil)
	stream := ts.openSSE("/sse/busy?uid=r", nil)
	stream.next()
	sender, _ := ts.connectJSON("s", "busy")
	go func() {
		for i := range total {
			sender.sendJSON(map[string]string{"type": "message", "text": fmt.Sprint("m", i)})
			time.Sleep(time.Millisecond)
		}
	}()
	go sender.discardAll()
	var got []string
	last := ""
	for len(got) < total {
		for k := 0; k < 40 && len(got) < total; k++ {
			ev := stream.next("joined", "left")
			if ev.name != "message" {
				t.Fatalf("event %+v", ev)
			}
			last = ev.id
			got = append(got, ev.data["text"].(string))
		}
		if len(got) >= total {
			break
		}
		stream.cancel()
		stream = ts.openSSE("/sse/busy?uid=r", http.Header{"Last-Event-ID": {last}})
		if w := stream.next(); w.name != "welcome" || w.data["recovered"] != true {
			t.Fatalf("welcome %+v", w)
		}
	}
	for i, text := range got {
		if text != fmt.Sprint("m", i) {
			t.Fatalf("message %d is %q: lost, doubled or out of order", i, text)
		}
	}
}

// A real EventSource in Chromium receives a publish, and after the server
// ends its stream reconnects by itself with Last-Event-ID and recovers
// what it missed.
func TestBrowserEventSource(t *testing.T) {
	ts := startServer(t, nil)
	p := newTab(t, newBrowser(t), "dashboard")
	p.do(chromedp.Navigate(ts.http.URL + "/"))
	evalIn[any](p, `(() => {
		window.got = [];
		const es = new EventSource("/sse/stats?uid=board");
		for (const name of ["welcome", "publish", "close"]) {
			es.addEventListener(name, e => window.got.push({name, id: e.lastEventId, data: JSON.parse(e.data)}));
		}
		return true;
	})()`)
	p.waitJS("the welcome", `window.got.some(e => e.name === "welcome")`)
	ts.request("POST", "/api/rooms/stats/messages", `{"text":"before"}`, nil)
	p.waitJS("the first publish", `window.got.some(e => e.name === "publish" && e.data.text === "before")`)
	if status, _ := ts.request("POST", "/api/users/board/disconnect", "", nil); status != 200 {
		t.Fatal("disconnect failed")
	}
	ts.request("POST", "/api/rooms/stats/messages", `{"text":"during"}`, nil)
	p.waitJS("a recovered welcome", `window.got.some(e => e.name === "welcome" && e.data.recovered === true)`)
	p.waitJS("the missed publish", `window.got.some(e => e.name === "publish" && e.data.text === "during")`)
	texts := evalIn[[]any](p, `window.got.filter(e => e.name === "publish").map(e => e.data.text)`)
	if fmt.Sprint(texts) != "[before during]" {
		t.Fatalf("publishes %v", texts)
	}
}

// The page's "listen only" switch listens over SSE: it shows the room's
// messages and presence, cannot send, and shows the server's close.
func TestBrowserPageListensOverSSE(t *testing.T) {
	ts := startServer(t, nil)
	p := newTab(t, newBrowser(t), "listener")
	p.do(
		chromedp.Navigate(ts.http.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS("#connect")),
		chromedp.SetValue(chromedp.CSS("#uid"), "pat"),
		chromedp.SetValue(chromedp.CSS("#room"), "feed"),
		chromedp.Click(chromedp.CSS("#sse")),
		chromedp.Click(chromedp.CSS("#connect")),
	)
	p.waitJS("connected", `document.querySelector("#state").dataset.state === "connected"`)
	p.waitOnline("pat")
	if !evalIn[bool](p, `document.querySelector("#input").disabled && document.querySelector("#send").disabled`) {
		t.Fatal("the composer is enabled on a stream")
	}
	talker, _ := ts.connectJSON("talker", "feed")
	p.waitOnline("pat", "talker")
	talker.sendJSON(map[string]string{"type": "message", "text": "hi from a socket"})
	p.waitEntry(".entry.msg", "hi from a socket")
	if status, _ := ts.request("POST", "/api/users/pat/disconnect", "", nil); status != 200 {
		t.Fatal("disconnect failed")
	}
	p.waitJS("closed by the server", `document.querySelector("#state").dataset.state === "closed" && document.querySelector("#state").dataset.closeReason === "disconnected by the server"`)
}

// Last-Event-ID is newer than a ?since= in the URL EventSource reconnects
// to, so it wins.
func TestSSELastEventIDBeatsSince(t *testing.T) {
	ts := startServer(t, nil)
	sender, _ := ts.connectJSON("s", "feed")
	var seqs []string
	for _, text := range []string{"one", "two", "three"} {
		sender.sendJSON(map[string]string{"type": "message", "text": text})
		seqs = append(seqs, fmt.Sprint(uint64(seqOf(t, sender.readEvents(1, "message")[0]))))
	}
	back := ts.openSSE("/sse/feed?uid=w&since="+seqs[0], http.Header{"Last-Event-ID": {seqs[1]}})
	if w := back.next(); w.name != "welcome" || w.data["recovered"] != true {
		t.Fatalf("welcome %+v", w)
	}
	if ev := back.next("joined", "left"); ev.data["text"] != "three" || ev.id != seqs[2] {
		t.Fatalf("replayed %+v, want only three", ev)
	}
}

// sseHead reads type and seq as encoding/json would, for every kind of
// event the server sends, also when user text or data holds a "seq".
func TestSSEHeadMatchesJSON(t *testing.T) {
	events := []serverEvent{
		&welcomeEvent{Type: "welcome", UID: "u", Room: "r", Session: "s", Online: []string{"a"}},
		&presenceChange{Type: "joined", UID: "u", Room: "r"},
		&messageEvent{Type: "message", Room: "r", From: "u", Text: `tricky ,"seq":1 and "seq":2`, Seq: 1796127643144559, TS: "t"},
		&publishEvent{Type: "publish", Room: "r", Data: json.RawMessage(`{"seq":5,"inner":{"seq":6}}`), Seq: 42, TS: "t"},
		&publishEvent{Type: "publish", Room: "r", Text: "plain", Seq: 7, TS: "t"},
		&directEvent{Type: "direct", From: "a", To: "b", Text: `,"seq":3`, TS: "t"},
		&presenceEvent{Type: "presence", Room: "r", Online: []string{"a"}},
		&refreshedEvent{Type: "refreshed"},
	}
	for _, ev := range events {
		encoded := encodeEvent(ev, modeJSON)
		var want sseEventHead
		if err := json.Unmarshal(encoded, &want); err != nil {
			t.Fatal(err)
		}
		typ, seq := sseHead(encoded)
		if string(typ) != want.Type || string(seq) != string(want.Seq) {
			t.Errorf("%s: sseHead %q %q, encoding/json %q %q", encoded, typ, seq, want.Type, want.Seq)
		}
	}
}
