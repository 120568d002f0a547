package main

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// wantFields checks that ev has every field of want, with equal values.
func wantFields(t *testing.T, ev map[string]any, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if !reflect.DeepEqual(ev[k], v) {
			t.Fatalf("event %v: field %q = %#v, want %#v", ev, k, ev[k], v)
		}
	}
}

// seqOf is an event's seq. A room's first seq is the clock in
// microseconds (History), so tests count from it rather than from 1; it
// stays exact in a float64 (below 2^53) for centuries.
func seqOf(t *testing.T, ev map[string]any) float64 {
	t.Helper()
	seq, ok := ev["seq"].(float64)
	if !ok || seq < 1e15 || seq != float64(uint64(seq)) {
		t.Fatalf("event %v: seq is not a number from the microsecond clock", ev)
	}
	return seq
}

func wantTimestamp(t *testing.T, ev map[string]any) {
	t.Helper()
	ts, _ := ev["ts"].(string)
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		t.Fatalf("event %v: ts is not RFC 3339: %v", ev, err)
	}
}

func TestJSONWelcomeJoinLeave(t *testing.T) {
	ts := startServer(t, nil)
	alice, welcome := ts.connectJSON("1", "lobby")
	wantFields(t, welcome, map[string]any{"type": "welcome", "uid": "1", "room": "lobby", "online": []any{"1"}})
	if id, _ := welcome["session"].(string); id == "" {
		t.Fatalf("welcome without a session id: %v", welcome)
	}
	bob, welcome2 := ts.connectJSON("2", "lobby")
	wantFields(t, welcome2, map[string]any{"online": []any{"1", "2"}})
	if welcome2["session"] == welcome["session"] {
		t.Fatalf("two sessions share the id %v", welcome["session"])
	}
	wantFields(t, alice.readJSON(), map[string]any{"type": "joined", "uid": "2", "room": "lobby"})
	bob.close()
	wantFields(t, alice.readJSON(), map[string]any{"type": "left", "uid": "2", "room": "lobby"})
}

func TestJSONMessagesAndSeq(t *testing.T) {
	ts := startServer(t, nil)
	alice, _ := ts.connectJSON("1", "lobby")
	bob := ts.connect("2", "lobby") // text and JSON share a room
	alice.readJSON()                // joined

	alice.sendJSON(map[string]any{"type": "message", "text": "hi"})
	first := alice.readJSON()
	wantFields(t, first, map[string]any{"type": "message", "room": "lobby", "from": "1", "text": "hi"})
	seq := seqOf(t, first)
	wantTimestamp(t, first)
	bob.expect("[UID: 1]: hi")

	bob.send("from text")
	wantFields(t, alice.readJSON(), map[string]any{"type": "message", "from": "2", "text": "from text", "seq": seq + 1})

	// A text with a newline is one JSON event, and one line per line in text mode.
	alice.sendJSON(map[string]any{"type": "message", "text": "two\nlines"})
	wantFields(t, alice.readJSON(), map[string]any{"text": "two\nlines", "seq": seq + 2})
	bob.expect("[UID: 2]: from text", "[UID: 1]: two", "[UID: 1]: lines")

	// Text reaches JSON clients as it was typed, not HTML-escaped.
	bob.send("<3 & co")
	if line := alice.readLine(); !strings.Contains(line, `"text":"<3 & co"`) {
		t.Fatalf("got %s", line)
	}

	// seq counts per room.
	other, _ := ts.connectJSON("3", "other")
	other.sendJSON(map[string]any{"type": "message", "text": "elsewhere"})
	elsewhere := other.readJSON()
	wantFields(t, elsewhere, map[string]any{"room": "other"})
	other.sendJSON(map[string]any{"type": "message", "text": "again"})
	wantFields(t, other.readJSON(), map[string]any{"seq": seqOf(t, elsewhere) + 1})
}

func TestJSONDirectAndPresence(t *testing.T) {
	ts := startServer(t, nil)
	alice, _ := ts.connectJSON("1", "lobby")
	bobJSON, _ := ts.connectJSON("2", "lobby")
	bobText := ts.connect("2", "side")
	alice.readJSON() // joined

	alice.sendJSON(map[string]any{"type": "direct", "to": "2", "text": "psst"})
	echo := alice.readJSON()
	wantFields(t, echo, map[string]any{"type": "direct", "from": "1", "to": "2", "text": "psst"})
	wantTimestamp(t, echo)
	wantFields(t, bobJSON.readJSON(), map[string]any{"type": "direct", "from": "1", "to": "2", "text": "psst"})
	bobText.expect("[DM from UID: 1]: psst")

	bobText.send("/dm 1 back")
	bobText.expect("[DM to UID: 1]: back")
	wantFields(t, alice.readJSON(), map[string]any{"type": "direct", "from": "2", "to": "1", "text": "back"})

	alice.sendJSON(map[string]any{"type": "direct", "to": "9", "text": "?"})
	wantFields(t, alice.readJSON(), map[string]any{"type": "error", "code": "not_online", "message": "UID 9 is not online"})

	alice.sendJSON(map[string]any{"type": "who"})
	wantFields(t, alice.readJSON(), map[string]any{"type": "presence", "room": "lobby", "online": []any{"1", "2"}})
}

func TestJSONErrorsKeepConnection(t *testing.T) {
	ts := startServer(t, nil)
	c, _ := ts.connectJSON("1", "lobby")
	cases := []struct {
		send string
		code string
	}{
		{`not json`, "bad_request"},
		{`[1,2]`, "bad_request"},
		{`{"text":"no type"}`, "bad_request"},
		{`{"type":"dance"}`, "unknown_type"},
		{`{"type":"message"}`, "bad_request"},
		{`{"type":"message","text":""}`, "bad_request"},
		{`{"type":"message","text":5}`, "bad_request"},
		{`{"type":"direct","text":"x"}`, "bad_request"},
		{`{"type":"direct","to":"2"}`, "bad_request"},
	}
	for _, tc := range cases {
		c.send(tc.send)
		ev := c.readJSON()
		wantFields(t, ev, map[string]any{"type": "error", "code": tc.code})
		if msg, _ := ev["message"].(string); msg == "" {
			t.Fatalf("error for %s has no message: %v", tc.send, ev)
		}
	}
	c.sendJSON(map[string]any{"type": "message", "text": "still open"})
	wantFields(t, c.readJSON(), map[string]any{"type": "message", "text": "still open"})
}

// An unknown subprotocol alone means text mode.
func TestUnknownSubprotocolIsTextMode(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(dialOptions{uid: "1", protocol: []string{"mqtt"}})
	c.expect("[server]: welcome UID 1, room lobby")
	if p := c.conn.Subprotocol(); p != "" {
		t.Fatalf("subprotocol %q, want none", p)
	}
}
