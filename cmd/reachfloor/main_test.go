package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A publish reaches every open connection once, and the answer counts
// them; a connection that left is not counted.
func TestPublishReachesEveryConnection(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv := httptest.NewServer(newFloor(2).routes())
	defer srv.Close()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	var conns []*websocket.Conn
	for i := range 6 {
		path := url
		if i%2 == 1 {
			path += "/some-room"
		}
		c, _, err := websocket.Dial(ctx, path, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		if _, greeting, err := c.Read(ctx); err != nil || string(greeting) != "[floor]: connected" {
			t.Fatalf("greeting %q, %v", greeting, err)
		}
		conns = append(conns, c)
	}
	conns[5].Close(websocket.StatusNormalClosure, "")
	conns = conns[:5]
	answer := waitForCount(t, srv.URL, 5)
	if answer.WriteMs < 0 {
		t.Fatalf("write_ms %v", answer.WriteMs)
	}
	for i, c := range conns {
		// Earlier attempts of waitForCount may have been delivered too;
		// every connection has at least one copy, all of them the text.
		if _, got, err := c.Read(ctx); err != nil || string(got) != "hello all" {
			t.Fatalf("connection %d read %q, %v", i, got, err)
		}
	}
}

type publishAnswer struct {
	Recipients int     `json:"recipients"`
	WriteMs    float64 `json:"write_ms"`
}

// waitForCount publishes until the server counts want connections (the
// closed one leaves a moment after its close handshake).
func waitForCount(t *testing.T, base string, want int) publishAnswer {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Post(base+"/api/rooms/any/messages", "application/json", strings.NewReader(`{"text":"hello all"}`))
		if err != nil {
			t.Fatal(err)
		}
		var answer publishAnswer
		err = json.NewDecoder(resp.Body).Decode(&answer)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("publish: %s, %v", resp.Status, err)
		}
		if answer.Recipients == want {
			return answer
		}
		if time.Now().After(deadline) {
			t.Fatalf("recipients %d, want %d", answer.Recipients, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A publish without text is a 400 with a JSON error.
func TestPublishWithoutTextIsRefused(t *testing.T) {
	srv := httptest.NewServer(newFloor(1).routes())
	defer srv.Close()
	for _, body := range []string{`{}`, `not json`, `{"text":""}`} {
		resp, err := http.Post(srv.URL+"/api/rooms/any/messages", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var answer struct {
			Error string `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&answer)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || answer.Error == "" {
			t.Fatalf("%s: %s %q", body, resp.Status, answer.Error)
		}
	}
}

// Bad flags are a one-line error and exit 2.
func TestBadFlags(t *testing.T) {
	var out strings.Builder
	if code := run([]string{"-writers", "-1"}, &out); code != 2 || !strings.Contains(out.String(), "-writers") {
		t.Fatalf("exit %d, %q", code, out.String())
	}
}
