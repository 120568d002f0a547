package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestHealthcheck(t *testing.T) {
	ts := startServer(t, nil)
	resp, err := ts.httpClient.Get(ts.http.URL + "/healthcheck")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	status, body := ts.request("GET", "/healthcheck", "", nil)
	if status != 200 || body != "switchboard is live" {
		t.Fatalf("healthcheck = %d %q", status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Fatalf("content type %q", ct)
	}
}

// A hub loop that does not turn (here: never started) makes the health
// check fail within its 1 s bound.
func TestHealthcheckHubNotAnswering(t *testing.T) {
	sb, err := newSwitchboard(context.Background(), testConfig(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	srv := newStandaloneHTTP(t, sb.handler)
	resp, err := srv.Client().Get(srv.URL + "/healthcheck")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", resp.StatusCode)
	}
}

func TestWelcomeJoinLeaveText(t *testing.T) {
	ts := startServer(t, nil)
	alice, bob := ts.aliceAndBob()

	// A second session of uid 2 is no new join; its end is no leave.
	bob2 := ts.connect("2", "lobby")
	bob2.close()
	bob.send("still here")
	alice.expect("[UID: 2]: still here")

	bob.close()
	alice.expect("[server]: UID 2 left lobby")
}

func TestRoomMessagesText(t *testing.T) {
	ts := startServer(t, nil)
	alice, bob := ts.aliceAndBob()

	alice.send("hello")
	alice.expect("[UID: 1]: hello")
	bob.expect("[UID: 1]: hello")

	// Lines of one message are handled one by one; empty ones are skipped.
	bob.send("a\r\nb\n\nc\n")
	for _, c := range []*testClient{alice, bob} {
		c.expect("[UID: 2]: a", "[UID: 2]: b", "[UID: 2]: c")
	}
}

func TestRoomsAreIsolated(t *testing.T) {
	ts := startServer(t, nil)
	byPath := ts.connect("1", "blue")
	byQuery := ts.dial(dialOptions{path: "/ws?room=blue", uid: "2"})
	byQuery.expect("[server]: welcome UID 2, room blue")
	byPath.expect("[server]: UID 2 joined blue")
	byHeader := ts.dial(dialOptions{uid: "3", header: http.Header{"Room": {"green"}}})
	byHeader.expect("[server]: welcome UID 3, room green")
	lobby := ts.dial(dialOptions{uid: "4"})
	lobby.expect("[server]: welcome UID 4, room lobby")
	// The path wins over the query, which wins over the header.
	both := ts.dial(dialOptions{path: "/ws/green?room=blue", uid: "5", header: http.Header{"Room": {"blue"}}})
	both.expect("[server]: welcome UID 5, room green")
	byHeader.expect("[server]: UID 5 joined green")

	lobby.send("lobby only")
	byHeader.send("green only")
	byPath.send("blue only")
	lobby.expect("[UID: 4]: lobby only")
	byHeader.expect("[UID: 3]: green only")
	both.expect("[UID: 3]: green only")
	byPath.expect("[UID: 1]: blue only")
	byQuery.expect("[UID: 1]: blue only")
}

func TestUIDFromQuery(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(dialOptions{path: "/ws?uid=alice@example.com"})
	c.expect("[server]: welcome UID alice@example.com, room lobby")
}

func TestDirectMessagesText(t *testing.T) {
	ts := startServer(t, nil)
	alice, bobLobby := ts.aliceAndBob()
	bobOther := ts.connect("2", "other") // same uid, another room

	alice.send("/dm 2 psst, two words")
	alice.expect("[DM to UID: 2]: psst, two words")
	bobLobby.expect("[DM from UID: 1]: psst, two words")
	bobOther.expect("[DM from UID: 1]: psst, two words")

	alice.send("/dm 9 anyone?")
	alice.expect("[server]: error: UID 9 is not online")
	for _, bad := range []string{"/dm", "/dm 2", "/dm 2 ", "/dm  2 x"} {
		alice.send(bad)
		alice.expect("[server]: error: usage: /dm <uid> <text>")
	}
	alice.send("/foo bar")
	alice.expect("[server]: error: unknown command /foo")
	// The connection stays open after errors.
	alice.send("/dm 2 again")
	alice.expect("[DM to UID: 2]: again")
	bobLobby.expect("[DM from UID: 1]: again")
}

func TestWhoText(t *testing.T) {
	ts := startServer(t, nil)
	seven := ts.connect("7", "lobby")
	ts.connect("1", "lobby")
	ts.connect("2", "lobby")
	ts.connect("2", "lobby")
	ts.connect("3", "elsewhere")
	seven.expect("[server]: UID 1 joined lobby", "[server]: UID 2 joined lobby")
	seven.send("/who")
	seven.expect("[server]: online in lobby: 1, 2, 7")
}

func TestBinaryRelay(t *testing.T) {
	ts := startServer(t, nil)
	alice := ts.connect("1", "lobby")
	bob, _ := ts.connectJSON("2", "lobby")
	alice.expect("[server]: UID 2 joined lobby")
	payload := []byte{0, 1, 2, 0xff, '\n', 'x'}
	alice.write(websocket.MessageBinary, payload)
	for _, c := range []*testClient{alice, bob} {
		kind, data, err := c.readMessage()
		if err != nil || kind != websocket.MessageBinary || string(data) != string(payload) {
			t.Fatalf("got %v %q %v, want the binary payload unchanged", kind, data, err)
		}
	}
}

func TestUpgradeRejections(t *testing.T) {
	ts := startServer(t, nil)
	long := fmt.Sprintf("%065d", 0)
	cases := []struct {
		name   string
		opts   dialOptions
		reason string
	}{
		{"no uid", dialOptions{}, "uid is missing"},
		{"empty uid", dialOptions{path: "/ws?uid="}, "uid is missing"},
		{"uid with space", dialOptions{path: "/ws?uid=a%20b"}, "uid is invalid"},
		{"uid too long", dialOptions{uid: long}, "uid is invalid"},
		{"uid with slash", dialOptions{uid: "a/b"}, "uid is invalid"},
		{"room with @", dialOptions{uid: "1", path: "/ws/a@b"}, "room is invalid"},
		{"room too long", dialOptions{uid: "1", path: "/ws/" + long}, "room is invalid"},
		{"room in query", dialOptions{uid: "1", path: "/ws?room=a%2Cb"}, "room is invalid"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dial(tc.opts)
			c.expectClose(websocket.StatusPolicyViolation, tc.reason)
		})
	}
	// 64 characters is the longest name allowed.
	ts.connect(long[:64], long[:64])
}

func TestOriginCheck(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.AllowedOrigins = []string{"chat.example.com"} })
	_, resp, err := ts.tryDial(dialOptions{uid: "1", header: http.Header{"Origin": {"https://evil.example.net"}}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin upgrade: err %v, response %v; want 403", err, resp)
	}
	allowed := ts.dial(dialOptions{uid: "1", header: http.Header{"Origin": {"https://chat.example.com"}}})
	allowed.expect("[server]: welcome UID 1, room lobby")
	sameOrigin := ts.dial(dialOptions{uid: "2", header: http.Header{"Origin": {ts.http.URL}}})
	sameOrigin.expect("[server]: welcome UID 2, room lobby")
}

func TestMaxConns(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxConns = 2 })
	first := ts.connect("1", "lobby")
	ts.connect("2", "lobby")
	_, resp, err := ts.tryDial(dialOptions{uid: "3"})
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection: err %v, response %v; want 503", err, resp)
	}
	// A freed place can be taken again.
	first.close()
	eventually(t, "a free connection slot", func() bool {
		c, _, err := ts.tryDial(dialOptions{uid: "3"})
		if err == nil {
			c.expect("[server]: welcome UID 3, room lobby")
		}
		return err == nil
	})
}

func TestMessageTooBig(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxMessageBytes = 100 })
	c := ts.connect("1", "lobby")
	c.send(string(make([]byte, 100))) // exactly the limit is fine
	c.expect("[UID: 1]: " + string(make([]byte, 100)))
	c.send(string(make([]byte, 101)))
	c.expectClose(websocket.StatusMessageTooBig, "message too big")
}

func TestInvalidUTF8(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.connect("1", "lobby")
	c.write(websocket.MessageText, []byte{'h', 'i', 0xff})
	c.expectClose(websocket.StatusInvalidFramePayloadData, "invalid UTF-8")
}

func TestRateLimit(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Rate = 1 }) // burst 2
	watcher := ts.connect("2", "lobby")
	c := ts.connect("1", "lobby")
	watcher.expect("[server]: UID 1 joined lobby")
	for i := 0; i < 5; i++ {
		if err := c.conn.Write(t.Context(), websocket.MessageText, []byte("spam")); err != nil {
			break // the server may have closed already
		}
	}
	c.expectClose(websocket.StatusPolicyViolation, "rate limit exceeded")
	// The burst got through; the rest did not, and the sender is gone.
	watcher.expect("[UID: 1]: spam", "[UID: 1]: spam", "[server]: UID 1 left lobby")
}

// Once shutdown has begun the hub takes no new traffic and says so, in each
// mode and over HTTP, instead of accepting what it could not deliver.
func TestClosingHubRefusesTraffic(t *testing.T) {
	ts := startServer(t, nil)
	text := ts.connect("1", "lobby")
	js, _ := ts.connectJSON("2", "lobby")
	text.expect("[server]: UID 2 joined lobby")
	reply := make(chan struct{}, 1)
	if _, err := ask(t.Context(), ts.sb.hub, BeginShutdown{Reply: reply}, reply); err != nil {
		t.Fatal(err)
	}
	text.send("late")
	text.expect("[server]: error: server shutting down, message not sent")
	js.sendJSON(map[string]any{"type": "direct", "to": "1", "text": "late"})
	wantFields(t, js.readJSON(), map[string]any{"type": "error", "code": "unavailable", "message": "server shutting down, message not sent"})
	status, body := ts.request("POST", "/api/rooms/lobby/messages", `{"text":"late"}`, nil)
	if status != 503 || body != `{"error":"server shutting down"}` {
		t.Fatalf("publish while closing = %d %s", status, body)
	}
}

// Answers come in the order the client asked, errors included.
func TestAnswersKeepRequestOrder(t *testing.T) {
	ts := startServer(t, nil)
	text := ts.connect("1", "lobby")
	for i := 0; i < 20; i++ {
		text.send("/who\n/foo\n/dm 9 x\nhi")
		text.expect("[server]: online in lobby: 1", "[server]: error: unknown command /foo",
			"[server]: error: UID 9 is not online", "[UID: 1]: hi")
	}
	js, _ := ts.connectJSON("2", "lobby")
	text.expect("[server]: UID 2 joined lobby")
	for i := 0; i < 20; i++ {
		js.sendJSON(map[string]any{"type": "direct", "to": "9", "text": "x"})
		js.send("garbage")
		wantFields(t, js.readJSON(), map[string]any{"code": "not_online"})
		wantFields(t, js.readJSON(), map[string]any{"code": "bad_request"})
	}
}

// A client may send its first frame right behind the upgrade request, in
// the same TCP write. Those bytes arrive before the server swaps in its own
// connection buffers (buffers.go) and must not be lost.
func TestFrameSentWithTheUpgradeIsKept(t *testing.T) {
	ts := startServer(t, nil)
	conn, err := net.Dial("tcp", ts.http.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	request := "GET /ws/early HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nuid: early\r\n\r\n"
	payload := []byte("first words")
	mask := []byte{1, 2, 3, 4}
	frame := append([]byte{0x81, 0x80 | byte(len(payload))}, mask...) // FIN + text, masked
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	if _, err := conn.Write(append([]byte(request), frame...)); err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(waitTimeout))
	reader := bufio.NewReader(conn)
	resp, err := http.ReadResponse(reader, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	var got []string
	for len(got) < 2 {
		header := make([]byte, 2)
		if _, err := io.ReadFull(reader, header); err != nil {
			t.Fatalf("read frame after %q: %v", got, err)
		}
		body := make([]byte, header[1]&0x7f) // short, unmasked server frames
		if _, err := io.ReadFull(reader, body); err != nil {
			t.Fatal(err)
		}
		got = append(got, strings.Split(string(body), "\n")...)
	}
	if got[0] != "[server]: welcome UID early, room early" || got[1] != "[UID: early]: first words" {
		t.Fatalf("got %q", got)
	}
}
