package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/coder/websocket"
)

// TestMain lets the test binary stand in for the loadtest binary when
// -procs re-executes itself: a child started with the worker flag runs the
// worker instead of the tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-"+idleWorkerFlag {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// publishHub is a small stand-in for a switchboard cluster in text mode:
// every endpoint serving it is a "node" of one room. A session gets a
// welcome line; POST /api/rooms/bench/messages sends "[server]: <text>" to
// the sessions deliver admits (all when nil) and answers with the room's
// session count.
type publishHub struct {
	mu       sync.Mutex
	sessions []chan []byte
	deliver  func(session int) bool
}

func (h *publishHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		h.publish(w, r)
		return
	}
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer conn.CloseNow()
	out := make(chan []byte, 16)
	out <- []byte("[server]: welcome UID " + r.Header.Get("uid") + " 1, room bench")
	h.mu.Lock()
	h.sessions = append(h.sessions, out)
	h.mu.Unlock()
	ctx := conn.CloseRead(r.Context())
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
}

func (h *publishHub) publish(w http.ResponseWriter, r *http.Request) {
	var body struct{ Text string }
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		http.Error(w, `{"error":"bad body"}`, http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	n := len(h.sessions)
	for i, out := range h.sessions {
		if h.deliver == nil || h.deliver(i) {
			out <- []byte("[server]: " + body.Text)
		}
	}
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"room": "bench", "recipients": n})
}

// startHub serves hub on n endpoints and returns their ws:// bases and
// the publish URL of the first.
func startHub(t *testing.T, hub http.Handler, n int) ([]string, string) {
	t.Helper()
	var urls []string
	var pub string
	for i := range n {
		srv := httptest.NewServer(hub)
		t.Cleanup(srv.Close)
		urls = append(urls, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws")
		if i == 0 {
			pub = srv.URL + "/api/rooms/bench/messages"
		}
	}
	return urls, pub
}

func publishEnv(urls []string) *runEnv {
	t := targets["switchboard-text"]
	rooms := roomURLs(t, urls, "bench")
	return &runEnv{target: t, urls: rooms, senderURLs: rooms, sources: sourceClients(2), dialConc: 8}
}

func TestIdlePublishReachesEveryConnection(t *testing.T) {
	urls, pub := startHub(t, &publishHub{}, 3)
	cfg := idleConfig{Conns: 30, Hold: 0, Procs: 1, UIDs: "shared",
		PublishURL: pub, PublishWait: 5 * time.Second, Marker: newPublishMarker()}
	res, err := runIdle(context.Background(), publishEnv(urls), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.PublishRecipients == nil || *res.PublishRecipients != 30 || *res.PublishReached != 30 || *res.PublishMissing != 0 {
		t.Fatalf("publish result %+v", res)
	}
	if ms := *res.PublishReachMs; ms < 0 || ms > 5000 {
		t.Fatalf("reach %v ms", ms)
	}
}

// Children of -procs report their receipts over their JSON-line channel;
// the parent adds them up.
func TestIdlePublishAcrossWorkerProcesses(t *testing.T) {
	urls, pub := startHub(t, &publishHub{}, 2)
	cfg := idleConfig{Conns: 40, Hold: 0, Procs: 2, UIDs: "shared",
		PublishURL: pub, PublishWait: 5 * time.Second, Marker: newPublishMarker(),
		WorkerArgs: []string{"-target", "switchboard-text", "-url", strings.Join(urls, ","), "-room", "bench", "-sources", "2"}}
	res, err := runIdle(context.Background(), publishEnv(urls), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Opened != 40 || *res.PublishRecipients != 40 || *res.PublishReached != 40 || *res.PublishMissing != 0 || res.PublishReachMs == nil {
		t.Fatalf("publish result %+v", res)
	}
}

// A publish that never reaches some connections is reported after the
// wait, not waited for forever.
func TestIdlePublishWaitIsBounded(t *testing.T) {
	hub := &publishHub{deliver: func(i int) bool { return i%2 == 0 }}
	urls, pub := startHub(t, hub, 1)
	cfg := idleConfig{Conns: 10, Hold: 0, Procs: 1, UIDs: "shared",
		PublishURL: pub, PublishWait: 300 * time.Millisecond, Marker: newPublishMarker()}
	start := time.Now()
	res, err := runIdle(context.Background(), publishEnv(urls), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if *res.PublishReached != 5 || *res.PublishMissing != 5 || *res.PublishRecipients != 10 {
		t.Fatalf("publish result %+v", res)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("took %v despite a 300 ms wait", took)
	}
}

func TestIdlePublishRefusedIsReported(t *testing.T) {
	refuse := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			http.Error(w, `{"error":"cluster unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		(&publishHub{}).ServeHTTP(w, r)
	})
	urls, pub := startHub(t, refuse, 1)
	cfg := idleConfig{Conns: 3, Hold: 0, Procs: 1, UIDs: "shared",
		PublishURL: pub, PublishWait: time.Second, Marker: newPublishMarker()}
	res, err := runIdle(context.Background(), publishEnv(urls), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(res.PublishError, "503") || res.PublishReached != nil || res.Opened != 3 {
		t.Fatalf("publish result %+v", res)
	}
}

func TestReadContains(t *testing.T) {
	marker := []byte("loadtest-publish-abcd1234")
	long := strings.Repeat("x", 5000)
	cases := []struct {
		text string
		want bool
	}{
		{"[server]: loadtest-publish-abcd1234", true},
		{long + "loadtest-publish-abcd1234" + long, true}, // past the first buffer
		{"[server]: loadtest-publish-abcd123", false},
		{"[server]: welcome UID idle 1, room bench", false},
		{"", false},
	}
	for _, c := range cases {
		for name, r := range map[string]io.Reader{
			"whole":    strings.NewReader(c.text),
			"one byte": iotest.OneByteReader(strings.NewReader(c.text)), // split everywhere
		} {
			got, err := readContains(r, marker)
			if err != nil || got != c.want {
				t.Errorf("%s, %.40q...: %v, %v; want %v", name, c.text, got, err, c.want)
			}
			if rest, _ := io.ReadAll(r); len(rest) != 0 {
				t.Errorf("%s: %d bytes left unread", name, len(rest))
			}
		}
	}
	if _, err := readContains(iotest.ErrReader(io.ErrUnexpectedEOF), marker); err == nil {
		t.Error("read error not returned")
	}
}

func TestParseCollect(t *testing.T) {
	if d, ok := parseCollect("collect 1700000000000000000"); !ok || d.UnixNano() != 1_700_000_000_000_000_000 {
		t.Fatalf("parseCollect = %v %v", d, ok)
	}
	for _, line := range []string{"stop", "collect", "collect soon", ""} {
		if _, ok := parseCollect(line); ok {
			t.Errorf("parseCollect(%q) accepted", line)
		}
	}
}

func TestRunMarkdownShowsPublish(t *testing.T) {
	n, reached, missing, ms := 100, 98, 2, 12.5
	rec := &Record{Scenario: "idle", Target: "switchboard-text", URL: "ws://127.0.0.1:1/ws/bench,ws://127.0.0.1:2/ws/bench",
		Idle: &IdleResult{Conns: 100, Opened: 100, PublishURL: "http://127.0.0.1:1/api/rooms/bench/messages", PublishWaitS: 60,
			PublishRecipients: &n, PublishReached: &reached, PublishMissing: &missing, PublishReachMs: &ms}}
	md := runMarkdown(rec)
	if !strings.Contains(md, "| 100 | 98 | 2 | 12.5 | 60 |  |") {
		t.Fatalf("no publish row in\n%s", md)
	}
	rec.Idle.PublishURL = ""
	if strings.Contains(runMarkdown(rec), "publish") {
		t.Fatal("publish table without a publish")
	}
}
