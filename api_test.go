package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestPublishText(t *testing.T) {
	ts := startServer(t, nil)
	text := ts.connect("1", "news")
	js, _ := ts.connectJSON("2", "news")
	ts.connect("3", "lobby") // not in the room
	text.expect("[server]: UID 2 joined news")

	status, body := ts.request("POST", "/api/rooms/news/messages", `{"text":"breaking\nnews"}`, nil)
	if status != 200 || body != `{"room":"news","recipients":2}` {
		t.Fatalf("publish = %d %s", status, body)
	}
	text.expect("[server]: breaking", "[server]: news")
	ev := js.readJSON()
	wantFields(t, ev, map[string]any{"type": "publish", "room": "news", "text": "breaking\nnews"})
	first := seqOf(t, ev)
	wantTimestamp(t, ev)
	if _, has := ev["data"]; has {
		t.Fatalf("text publish carries data: %v", ev)
	}

	// Publishes and messages share the room's seq.
	text.send("reply")
	wantFields(t, js.readJSON(), map[string]any{"type": "message", "seq": first + 1})
}

// A dashboard publishes a JSON array of statistics.
func TestPublishData(t *testing.T) {
	ts := startServer(t, nil)
	text := ts.connect("1", "stats")
	js, _ := ts.connectJSON("2", "stats")
	text.expect("[server]: UID 2 joined stats")

	status, body := ts.request("POST", "/api/rooms/stats/messages",
		`{"data": [ {"cpu": 0.5, "host": "a"}, {"cpu": 0.25, "host": "b"} ]}`, nil)
	if status != 200 || body != `{"room":"stats","recipients":2}` {
		t.Fatalf("publish = %d %s", status, body)
	}
	text.expect(`[server]: [{"cpu":0.5,"host":"a"},{"cpu":0.25,"host":"b"}]`)
	ev := js.readJSON()
	seqOf(t, ev)
	wantFields(t, ev, map[string]any{"type": "publish", "room": "stats",
		"data": []any{map[string]any{"cpu": 0.5, "host": "a"}, map[string]any{"cpu": 0.25, "host": "b"}}})
	if _, has := ev["text"]; has {
		t.Fatalf("data publish carries text: %v", ev)
	}
}

func TestPublishToEmptyRoom(t *testing.T) {
	ts := startServer(t, nil)
	status, body := ts.request("POST", "/api/rooms/nobody/messages", `{"text":"hello?"}`, nil)
	if status != 200 || body != `{"room":"nobody","recipients":0}` {
		t.Fatalf("publish = %d %s", status, body)
	}
}

func TestPublishBadBodies(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MaxMessageBytes = 64 })
	cases := []struct {
		path, body string
		status     int
	}{
		{"/api/rooms/lobby/messages", `not json`, 400},
		{"/api/rooms/lobby/messages", `{}`, 400},
		{"/api/rooms/lobby/messages", `{"text":""}`, 400},
		{"/api/rooms/lobby/messages", `{"data":null}`, 400},
		{"/api/rooms/lobby/messages", `{"text":"a","data":1}`, 400},
		{"/api/rooms/lobby/messages", `{"txt":"typo"}`, 400},
		{"/api/rooms/lobby/messages", `{"text":"a"} {"text":"b"}`, 400},
		{"/api/rooms/lobby/messages", `{"text":"` + strings.Repeat("x", 80) + `"}`, 413},
		{"/api/rooms/a@b/messages", `{"text":"a"}`, 400},
		{"/api/rooms/lobby/messages", "{\"data\":\"\xff\xfe\"}", 400},
	}
	for _, tc := range cases {
		status, body := ts.request("POST", tc.path, tc.body, nil)
		var answer map[string]string
		if err := json.Unmarshal([]byte(body), &answer); err != nil || answer["error"] == "" || status != tc.status {
			t.Errorf("POST %s %s = %d %s, want %d with a JSON error", tc.path, tc.body, status, body, tc.status)
		}
	}
}

func TestRoomsAndPresenceAPI(t *testing.T) {
	ts := startServer(t, nil)
	var rooms []RoomSummary
	ts.getJSON("/api/rooms", &rooms)
	if len(rooms) != 0 {
		t.Fatalf("rooms of an empty server: %v", rooms)
	}
	lobby := ts.connect("2", "lobby")
	ts.connect("1", "lobby")
	ts.connect("1", "lobby")
	ts.connect("9", "attic")
	lobby.expect("[server]: UID 1 joined lobby")

	ts.getJSON("/api/rooms", &rooms)
	want := []RoomSummary{{"attic", 1, 1}, {"lobby", 2, 3}}
	if len(rooms) != 2 || rooms[0] != want[0] || rooms[1] != want[1] {
		t.Fatalf("rooms = %v, want %v", rooms, want)
	}
	var presence struct {
		Room   string   `json:"room"`
		Online []string `json:"online"`
	}
	ts.getJSON("/api/rooms/lobby/presence", &presence)
	if presence.Room != "lobby" || strings.Join(presence.Online, ",") != "1,2" {
		t.Fatalf("presence = %+v", presence)
	}
	status, body := ts.request("GET", "/api/rooms/empty/presence", "", nil)
	if status != 200 || body != `{"room":"empty","online":[]}` {
		t.Fatalf("presence of an empty room = %d %s", status, body)
	}
	status, _ = ts.request("GET", "/api/rooms/a@b/presence", "", nil)
	if status != 400 {
		t.Fatalf("presence of an invalid room = %d, want 400", status)
	}
}

func TestAPIUnknownPath(t *testing.T) {
	ts := startServer(t, nil)
	for _, path := range []string{"/api/nothing", "/api/rooms/lobby/messages"} {
		status, body := ts.request("GET", path, "", nil)
		if status != 404 || !strings.HasPrefix(body, `{"error":`) {
			t.Errorf("GET %s = %d %s, want a 404 JSON error", path, status, body)
		}
	}
}

func TestAPIKey(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.APIKey = "s3cret" })
	for _, auth := range []string{"", "Bearer wrong", "s3cret", "Basic s3cret"} {
		header := http.Header{}
		if auth != "" {
			header.Set("Authorization", auth)
		}
		status, body := ts.request("GET", "/api/rooms", "", header)
		if status != 401 || !strings.HasPrefix(body, `{"error":`) {
			t.Errorf("Authorization %q: %d %s, want a 401 JSON error", auth, status, body)
		}
	}
	status, body := ts.request("GET", "/api/rooms", "", http.Header{"Authorization": {"Bearer s3cret"}})
	if status != 200 || body != "[]" {
		t.Fatalf("with the key: %d %s", status, body)
	}
}

// Without a key, only loopback peers may use the API. The test server only
// listens on loopback, so the foreign peer is simulated at the handler.
func TestAPIWithoutKeyRefusesRemotePeers(t *testing.T) {
	sb, err := newSwitchboard(context.Background(), testConfig(), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	for _, remote := range []string{"192.0.2.7:5555", "[2001:db8::1]:80"} {
		req := httptest.NewRequest("GET", "/api/rooms", nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		sb.handler.ServeHTTP(rec, req)
		if rec.Code != 403 || !strings.HasPrefix(rec.Body.String(), `{"error":`) {
			t.Errorf("peer %s: %d %s, want a 403 JSON error", remote, rec.Code, rec.Body)
		}
	}
}

func TestMetrics(t *testing.T) {
	ts := startServer(t, nil)
	a := ts.connect("1", "lobby")
	ts.connect("2", "lobby")
	a.expect("[server]: UID 2 joined lobby")
	a.send("one")
	a.expect("[UID: 1]: one")
	status, body := ts.request("GET", "/metrics", "", nil)
	if status != 200 {
		t.Fatalf("metrics = %d", status)
	}
	for _, line := range []string{
		"switchboard_sessions 2",
		"switchboard_rooms 1",
		"switchboard_messages_received_total 1",
		// welcome×2, joined×1, message×2
		"switchboard_messages_delivered_total 5",
		`switchboard_session_closes_total{reason="slow_consumer"} 0`,
		"switchboard_queue_bytes 0",
		"go_goroutines",
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(body, "\n"+line) {
			t.Errorf("metrics lack %q", line)
		}
	}
}
