package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestURLListFlags(t *testing.T) {
	o, err := parseFlags([]string{"-url", "ws://127.0.0.1:5001/ws, ws://127.0.0.2:5002/ws"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ws://127.0.0.1:5001/ws/bench", "ws://127.0.0.2:5002/ws/bench"}
	env := o.env()
	if strings.Join(env.urls, " ") != strings.Join(want, " ") || strings.Join(env.senderURLs, " ") != strings.Join(want, " ") {
		t.Fatalf("urls %v senders %v, want both %v", env.urls, env.senderURLs, want)
	}
	o, err = parseFlags([]string{"-url", "ws://127.0.0.1:5002/ws", "-sender-url", "ws://127.0.0.1:5001/ws"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if env := o.env(); env.senderURLs[0] != "ws://127.0.0.1:5001/ws/bench" || env.urls[0] != "ws://127.0.0.1:5002/ws/bench" {
		t.Fatalf("urls %v senders %v", env.urls, env.senderURLs)
	}
}

func TestBadURLAndPublishFlags(t *testing.T) {
	pub := "http://127.0.0.1:5001/api/rooms/bench/messages"
	cases := []struct {
		flag string
		args []string
	}{
		{"-url", []string{"-url", "ws://127.0.0.1:1/ws,ws://10.0.0.1:2/ws"}},
		{"-url", []string{"-url", "ws://127.0.0.1:1/ws,,ws://127.0.0.1:2/ws"}},
		{"-sender-url", []string{"-sender-url", "ws://[::1]:5000/ws"}},
		{"-sender-url", []string{"-sender-url", "http://127.0.0.1:5000/ws"}},
		{"-publish-url", []string{"-scenario", "idle", "-publish-url", "http://10.0.0.1:5001/api/rooms/bench/messages"}},
		{"-publish-url", []string{"-scenario", "idle", "-publish-url", "ws://127.0.0.1:5001/api/rooms/bench/messages"}},
		{"-publish-url", []string{"-scenario", "fanout", "-publish-url", pub}},
		{"-publish-url", []string{"-scenario", "idle", "-target", "gorilla", "-publish-url", pub}},
		{"-publish-wait", []string{"-scenario", "idle", "-publish-url", pub, "-publish-wait", "0s"}},
	}
	for _, c := range cases {
		var stderr bytes.Buffer
		code := run(c.args, nil, &bytes.Buffer{}, &stderr)
		out := stderr.String()
		if code != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, c.flag+":") {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line naming %s", c.args, code, out, c.flag)
		}
	}
}

func TestSpecsSpreadOverURLs(t *testing.T) {
	specs := idleSpecs(4, 3, "unique", []string{"a", "b"})
	got := ""
	for _, s := range specs {
		got += s.uid + "@" + s.url + " "
	}
	// Connection 3 is the 4th overall: b; a child's share continues the
	// parent-wide rotation rather than restarting it.
	if got != "i3@b i4@a i5@b i6@a " {
		t.Fatalf("idle specs %q", got)
	}
	specs = fanoutSpecs(fanoutConfig{Senders: 2, Receivers: 4}, []string{"a", "b", "c"}, []string{"x"})
	got = ""
	for _, s := range specs {
		got += s.uid + "@" + s.url + " "
	}
	if got != "s0@x s1@x r0@a r1@b r2@c r3@a " {
		t.Fatalf("fanout specs %q", got)
	}
}

// countingHandler counts WebSocket handshakes before passing them on, to
// see which endpoint a connection chose.
type countingHandler struct {
	next  http.Handler
	count atomic.Int64
}

func (c *countingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.count.Add(1)
	c.next.ServeHTTP(w, r)
}

// Two endpoints on one broadcast hub stand in for two cluster nodes:
// senders on one, receivers on the other, every message still arrives.
func TestFanoutSendersOnAnotherEndpoint(t *testing.T) {
	hub := &broadcastServer{clients: map[chan []byte]int{}}
	node1, node2 := &countingHandler{next: hub}, &countingHandler{next: hub}
	srv1, srv2 := httptest.NewServer(node1), httptest.NewServer(node2)
	defer srv1.Close()
	defer srv2.Close()
	ws := func(s *httptest.Server) string { return "ws" + strings.TrimPrefix(s.URL, "http") + "/ws" }

	env := testEnv(ws(srv2))
	env.senderURLs = []string{ws(srv1)}
	cfg := fanoutConfig{Receivers: 6, Senders: 2, Rate: 20, Duration: 500 * time.Millisecond, Drain: 2 * time.Second, Payload: 100}
	res, err := runFanout(context.Background(), env, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if n1, n2 := node1.count.Load(), node2.count.Load(); n1 != 2 || n2 != 6 {
		t.Fatalf("handshakes: node1 %d, node2 %d; want the 2 senders on node1, the 6 receivers on node2", n1, n2)
	}
	if res.Lost != 0 || res.Delivered != res.ExpectedDeliveries || res.Delivered == 0 {
		t.Fatalf("delivered %d of %d", res.Delivered, res.ExpectedDeliveries)
	}
}
