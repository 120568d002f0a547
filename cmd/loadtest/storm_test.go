package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// historyServer is a tiny stand-in for switchboard's JSON mode with
// history (PROTOCOL.md, History), one node: a welcome on connect, every
// room message numbered with the room's next seq and kept (the last size
// per room), and ?since= answered with recovered true and the kept
// messages after it, or recovered false and nothing. Each session has its
// own queue and writer, which batches what is queued with "\n" as the real
// server may. With dropReplay it leaves out one message of every replay.
type historyServer struct {
	size       int
	dropReplay bool

	mu    sync.Mutex
	rooms map[string]*fakeRoom
}

type fakeRoom struct {
	seq     uint64   // the room's last seq
	kept    [][]byte // the last size messages, oldest first; the last has seq
	members map[chan []byte]bool
}

// fakeMessage is the server's message object, in the order it writes it.
type fakeMessage struct {
	Type string `json:"type"`
	Room string `json:"room"`
	From string `json:"from"`
	Text string `json:"text"`
	Seq  uint64 `json:"seq"`
	TS   string `json:"ts"`
}

type fakeWelcome struct {
	Type      string   `json:"type"`
	UID       string   `json:"uid"`
	Room      string   `json:"room"`
	Session   string   `json:"session"`
	Online    []string `json:"online"`
	Recovered *bool    `json:"recovered,omitempty"`
}

func (s *historyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{jsonSubprotocol}})
	if err != nil {
		return
	}
	defer conn.CloseNow()
	if conn.Subprotocol() != jsonSubprotocol {
		conn.Close(websocket.StatusPolicyViolation, "JSON mode only")
		return
	}
	uid, roomName := r.Header.Get("uid"), path.Base(r.URL.Path)
	var since *uint64
	if raw := r.URL.Query().Get("since"); r.URL.Query().Has("since") {
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			conn.Close(websocket.StatusPolicyViolation, "since is invalid")
			return
		}
		since = &n
	}
	out := make(chan []byte, 4096)
	s.join(roomName, uid, since, out)
	defer s.leave(roomName, out)

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	go func() { // writer: ends with the handler's context
		for {
			var msg []byte
			select {
			case <-ctx.Done():
				return
			case first := <-out:
				msg = append([]byte(nil), first...) // frames are shared: append to a copy
			}
			for more := true; more && len(msg) < 8192; {
				select {
				case next := <-out:
					msg = append(append(msg, '\n'), next...)
				default:
					more = false
				}
			}
			if conn.Write(ctx, websocket.MessageText, msg) != nil {
				cancel()
				return
			}
		}
	}()
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			return
		}
		var in struct{ Type, Text string }
		if json.Unmarshal(data, &in) == nil && in.Type == "message" {
			s.broadcast(roomName, uid, in.Text)
		}
	}
}

// join welcomes a session, replays what it asked for and puts it in the
// room, all under the lock, so nothing can come between.
func (s *historyServer) join(roomName, uid string, since *uint64, out chan []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[roomName]
	if r == nil {
		r = &fakeRoom{seq: uint64(time.Now().UnixMicro()), members: map[chan []byte]bool{}}
		s.rooms[roomName] = r
	}
	w := fakeWelcome{Type: "welcome", UID: uid, Room: roomName, Session: "s", Online: []string{uid}}
	var replay [][]byte
	if since != nil {
		floor := r.seq - uint64(len(r.kept)) // every seq above it is kept
		ok := *since >= floor && *since <= r.seq
		w.Recovered = &ok
		if ok {
			replay = r.kept[len(r.kept)-int(r.seq-*since):]
			if s.dropReplay && len(replay) > 0 {
				replay = append(append([][]byte{}, replay[:len(replay)/2]...), replay[len(replay)/2+1:]...)
			}
		}
	}
	frame, _ := json.Marshal(w)
	out <- frame
	for _, m := range replay {
		out <- m
	}
	r.members[out] = true
}

func (s *historyServer) leave(roomName string, out chan []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.rooms[roomName].members, out)
}

func (s *historyServer) broadcast(roomName, uid, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rooms[roomName]
	r.seq++
	frame, _ := json.Marshal(fakeMessage{Type: "message", Room: roomName, From: uid, Text: text, Seq: r.seq,
		TS: time.Now().UTC().Format(time.RFC3339Nano)})
	r.kept = append(r.kept, frame)
	if len(r.kept) > s.size {
		r.kept = r.kept[len(r.kept)-s.size:]
	}
	for m := range r.members {
		select {
		case m <- frame:
		default: // a test server this slow is a test failure, shown as loss
		}
	}
}

// startHistoryServer returns the ws:// base URL (the target appends the
// room) of a fake keeping size messages per room.
func startHistoryServer(t *testing.T, size int, dropReplay bool) string {
	t.Helper()
	srv := httptest.NewServer(&historyServer{size: size, dropReplay: dropReplay, rooms: map[string]*fakeRoom{}})
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
}

func stormEnv(base string) *runEnv {
	t := targets["switchboard-json"]
	urls := roomURLs(t, []string{base}, "storm")
	return &runEnv{target: t, urls: urls, senderURLs: urls, sources: sourceClients(2), dialConc: 16}
}

func smallStorm() stormConfig {
	return stormConfig{Clients: 40, Stayers: 4, Rate: 100, Missed: 20, Baseline: 300 * time.Millisecond,
		Timeout: 5 * time.Second, Drain: time.Second, Payload: 64}
}

func TestStormRecoversEveryClient(t *testing.T) {
	env := stormEnv(startHistoryServer(t, 100, false))
	cfg := smallStorm()
	res, err := runStorm(context.Background(), env, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.OK || res.StormClients != 40 || res.RecoveredTrue != 40 || res.Complete != 40 ||
		res.RecoveredFalse != 0 || res.Incomplete != 0 || res.NoWelcome != 0 || res.ReconnectFailed != 0 {
		t.Fatalf("outcomes %+v", res)
	}
	if res.TimeToAllRecoveredMs == nil || *res.TimeToAllRecoveredMs <= 0 || res.Recovery.Count != 40 {
		t.Fatalf("time to all recovered %v, recovery %+v", res.TimeToAllRecoveredMs, res.Recovery)
	}
	if res.MissedMin < uint64(cfg.Missed) || res.MissedMax > 100 {
		t.Fatalf("missed %d..%d, want at least %d and within the history", res.MissedMin, res.MissedMax, cfg.Missed)
	}
	if res.QuietLatency.Count == 0 || res.StormLatency.Count == 0 || res.StayerLost != 0 || res.StayerReordered != 0 {
		t.Fatalf("stayers: quiet %+v storm %+v lost %d reordered %d", res.QuietLatency, res.StormLatency, res.StayerLost, res.StayerReordered)
	}
	if res.StormWindowS < stormTail.Seconds() {
		t.Fatalf("storm window %v s, want at least the %v tail", res.StormWindowS, stormTail)
	}
}

// stormArgs is a small storm through the command line.
func stormArgs(url string, extra ...string) []string {
	return append([]string{"-scenario", "storm", "-url", url, "-room", "storm", "-quiet",
		"-conns", "30", "-receivers", "3", "-rate", "100", "-missed", "20",
		"-baseline", "200ms", "-recover-timeout", "3s", "-drain", "500ms", "-payload", "64"}, extra...)
}

// runStormCommand runs the command and decodes its result line.
func runStormCommand(t *testing.T, args []string) (int, *StormResult, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(args, nil, &stdout, &stderr)
	var rec Record
	if err := json.Unmarshal(stdout.Bytes(), &rec); err != nil || rec.Storm == nil {
		t.Fatalf("exit %d, no storm result line (%v): stdout %q stderr %q", code, err, stdout.String(), stderr.String())
	}
	return code, rec.Storm, stderr.String()
}

func TestStormCommandExitsZeroWhenAllRecover(t *testing.T) {
	code, res, stderr := runStormCommand(t, stormArgs(startHistoryServer(t, 100, false)))
	if code != 0 || res.RecoveredTrue != 30 || res.Incomplete != 0 || !res.OK {
		t.Fatalf("exit %d, %+v, stderr %q", code, res, stderr)
	}
}

// A server that loses one replayed message must fail the run: every
// client has a gap.
func TestStormDroppedReplayIsIncomplete(t *testing.T) {
	code, res, stderr := runStormCommand(t, stormArgs(startHistoryServer(t, 100, true)))
	if code == 0 || res.OK {
		t.Fatalf("exit %d, ok %v for a server that drops replayed messages", code, res.OK)
	}
	if res.RecoveredTrue != 30 || res.Incomplete != 30 || res.Complete != 0 || res.TimeToAllRecoveredMs != nil {
		t.Fatalf("outcomes %+v", res)
	}
	if !strings.Contains(res.IncompleteReason, "gap") || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "incomplete") {
		t.Fatalf("reason %q, stderr %q", res.IncompleteReason, stderr)
	}
}

// Missing more than the history holds is recovered:false, not incomplete,
// and still no successful storm.
func TestStormBeyondHistoryIsRecoveredFalse(t *testing.T) {
	code, res, stderr := runStormCommand(t, stormArgs(startHistoryServer(t, 10, false)))
	if code == 0 || res.RecoveredFalse != 30 || res.RecoveredTrue != 0 || res.Incomplete != 0 {
		t.Fatalf("exit %d, %+v, stderr %q", code, res, stderr)
	}
}

func TestStormInterruptedIsNoResult(t *testing.T) {
	env := stormEnv(startHistoryServer(t, 100, false))
	cfg := smallStorm()
	cfg.Baseline = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if res, err := runStorm(ctx, env, cfg); err == nil {
		t.Fatalf("an interrupted run returned a result: %+v", res)
	}
}

func TestStormFlags(t *testing.T) {
	o, err := parseFlags([]string{"-scenario", "storm"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	want := stormConfig{Clients: 5000, Stayers: 100, Rate: 50, Missed: 50, Baseline: 2 * time.Second,
		Timeout: time.Minute, Drain: 2 * time.Second, Payload: 128}
	if o.storm != want || o.target.Name() != "switchboard-json" {
		t.Fatalf("storm defaults %+v on %s, want %+v on switchboard-json", o.storm, o.target.Name(), want)
	}
	if o, err := parseFlags([]string{"-scenario", "fanout"}, &bytes.Buffer{}); err != nil || o.fanout.Receivers != 500 || o.idle.Conns != 1000 {
		t.Fatalf("storm defaults leaked into fanout: %v %+v", err, o)
	}
	cases := map[string][]string{
		"-procs":           {"-scenario", "storm", "-procs", "2"},
		"-target":          {"-scenario", "storm", "-target", "switchboard-text"},
		"-url":             {"-scenario", "storm", "-url", "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws"},
		"-sender-url":      {"-scenario", "storm", "-sender-url", "ws://127.0.0.1:2/ws"},
		"-missed":          {"-scenario", "storm", "-missed", "-1"},
		"-baseline":        {"-scenario", "storm", "-baseline", "0s"},
		"-recover-timeout": {"-scenario", "storm", "-recover-timeout", "0s"},
	}
	for flagName, args := range cases {
		var stderr bytes.Buffer
		code := run(args, nil, &bytes.Buffer{}, &stderr)
		out := stderr.String()
		if code != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, flagName) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line naming %s", args, code, out, flagName)
		}
	}
}

func TestParseStormLine(t *testing.T) {
	cases := []struct {
		line string
		want stormLine
	}{
		{`{"type":"message","room":"r","from":"a","text":"LT x","seq":17,"ts":"t"}`, stormLine{kind: numberedLine, seq: 17, text: []byte("LT x")}},
		{`{"seq":18,"type":"message","text":"q\"uote"}`, stormLine{kind: numberedLine, seq: 18, text: []byte(`q"uote`)}},
		{`{"type":"publish","room":"r","data":{"a":1},"seq":19}`, stormLine{kind: numberedLine, seq: 19, text: []byte{}}},
		{`{"type":"welcome","uid":"u","recovered":true}`, stormLine{kind: welcomeLine, recovered: true}},
		{`{"type":"welcome","uid":"u","recovered":false}`, stormLine{kind: welcomeLine}},
		{`{"type":"welcome","uid":"u"}`, stormLine{kind: welcomeLine}},
		{`{"type":"joined","uid":"u","room":"r"}`, stormLine{}},
		{`[server]: hello`, stormLine{}},
	}
	for _, c := range cases {
		got := parseStormLine([]byte(c.line))
		if got.kind != c.want.kind || got.seq != c.want.seq || got.recovered != c.want.recovered || !bytes.Equal(got.text, c.want.text) {
			t.Errorf("%s: got %+v, want %+v", c.line, got, c.want)
		}
	}
}

// The checker wants a recovered:true welcome, then since+1, since+2, ...
// through target and beyond, across batched messages.
func TestRecoveryCheck(t *testing.T) {
	welcome := `{"type":"welcome","uid":"u","recovered":true}`
	msg := func(seq int) string {
		return `{"type":"message","room":"r","from":"a","text":"x","seq":` + strconv.Itoa(seq) + `}`
	}
	cases := []struct {
		name     string
		messages []string
		reached  bool
		problem  string // a part of it; "" for none
	}{
		{"in order", []string{welcome + "\n" + msg(11) + "\n" + msg(12), msg(13) + "\n" + msg(14)}, true, ""},
		{"not yet", []string{welcome, msg(11), msg(12)}, false, ""},
		{"gap", []string{welcome, msg(11), msg(13)}, false, "gap"},
		{"duplicate", []string{welcome, msg(11), msg(12), msg(12), msg(13)}, false, "duplicate"},
		{"duplicate after reaching", []string{welcome, msg(11), msg(12), msg(13), msg(13)}, true, "duplicate"},
		{"stale", []string{welcome, msg(9)}, false, "below since"},
		{"before welcome", []string{msg(11), welcome}, false, "before the welcome"},
	}
	for _, c := range cases {
		run := newStormRun(targets["switchboard-json"], stormConfig{Clients: 1})
		chk := &recoveryCheck{run: run, since: 10, next: 11, target: 13, start: time.Now()}
		for _, m := range c.messages {
			chk.handle([]byte(m))
		}
		if (chk.reachedNano != 0) != c.reached || !strings.Contains(chk.problem, c.problem) || (c.problem == "") != (chk.problem == "") {
			t.Errorf("%s: reached %v problem %q; want reached %v problem ~%q", c.name, chk.reachedNano != 0, chk.problem, c.reached, c.problem)
		}
	}
	run := newStormRun(targets["switchboard-json"], stormConfig{Clients: 1})
	chk := &recoveryCheck{run: run, since: 10, next: 11, target: 13}
	chk.handle([]byte(`{"type":"welcome","recovered":false}` + "\n" + msg(50)))
	if !chk.welcomed || chk.recovered || chk.problem != "" || !chk.settled.Load() {
		t.Errorf("recovered:false: %+v", chk)
	}
}

func TestStormMarkdown(t *testing.T) {
	ms := 1234.5
	md := runMarkdown(&Record{Scenario: "storm", Target: "switchboard-json", Storm: &StormResult{StormClients: 5000, RecoveredTrue: 5000,
		Complete: 5000, TimeToAllRecoveredMs: &ms, StormLatency: LatencySummary{P50Ms: 1, P99Ms: 2, MaxMs: 3}}})
	if !strings.Contains(md, "| storm clients |") || !strings.Contains(md, "| 5000 |") || !strings.Contains(md, "1234.5") || !strings.Contains(md, "1.00 / 2.00 / 3.00") {
		t.Fatalf("markdown:\n%s", md)
	}
}
