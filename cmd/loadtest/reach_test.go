package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// checkReached fails the test unless every one of conns got the message
// and the times are consistent.
func checkReached(t *testing.T, res *ReachResult, conns int) {
	t.Helper()
	if !res.OK() || res.Conns != conns || res.Opened != conns || res.Ready != conns || res.Reached != conns || res.Missing != 0 {
		t.Fatalf("reach result %+v", res)
	}
	if res.ReachMs == nil || res.P50Ms == nil || res.P99Ms == nil {
		t.Fatalf("no times in %+v", res)
	}
	if p50, p99, last := *res.P50Ms, *res.P99Ms, *res.ReachMs; p50 < 0 || p50 > p99 || p99 > last {
		t.Fatalf("p50 %v p99 %v reach %v ms", p50, p99, last)
	}
}

func TestReachGorillaClientMessage(t *testing.T) {
	env := testEnv(startBroadcastServer(t))
	res, err := runReach(context.Background(), env, reachConfig{Conns: 20, UIDs: "shared", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Via != "client" {
		t.Fatalf("via %q", res.Via)
	}
	checkReached(t, res, 20)
}

func TestReachSwitchboardClientMessage(t *testing.T) {
	base := startBroadcastServer(t)
	env := publishEnv([]string{base}) // switchboard-text, room bench
	res, err := runReach(context.Background(), env, reachConfig{Conns: 15, UIDs: "unique", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	checkReached(t, res, 15)
}

func TestReachCentrifugoClientMessage(t *testing.T) {
	_, url := startFakeCentrifugo(t, time.Minute, time.Minute)
	res, err := runReach(context.Background(), centrifugoEnv(url), reachConfig{Conns: 12, UIDs: "shared", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	checkReached(t, res, 12)
}

func TestReachPublishEveryConnection(t *testing.T) {
	urls, pub := startHub(t, &publishHub{}, 3)
	res, err := runReach(context.Background(), publishEnv(urls),
		reachConfig{Conns: 30, UIDs: "shared", PublishURL: pub, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Via != "publish" || res.Recipients == nil || *res.Recipients != 30 {
		t.Fatalf("reach result %+v", res)
	}
	checkReached(t, res, 30)
}

// runReachCommand runs the command line and decodes its result line.
func runReachCommand(t *testing.T, args ...string) (int, *ReachResult, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"-scenario", "reach", "-quiet", "-reach-timeout", "500ms"}, args...), strings.NewReader(""), &stdout, &stderr)
	var rec Record
	if stdout.Len() > 0 {
		if err := json.Unmarshal(stdout.Bytes(), &rec); err != nil {
			t.Fatalf("result line %q: %v", stdout.String(), err)
		}
	}
	return code, rec.Reach, stderr.String()
}

func TestReachCommandSucceeds(t *testing.T) {
	url := startBroadcastServer(t)
	code, res, stderr := runReachCommand(t, "-target", "gorilla", "-url", url, "-conns", "10")
	if code != 0 || res == nil || res.Reached != 10 || res.Missing != 0 {
		t.Fatalf("exit %d, result %+v, stderr %q", code, res, stderr)
	}
}

func TestReachFailsWhenOneConnectionMissesClientMessage(t *testing.T) {
	// Connection 3 (in accept order) never gets the reach message.
	srv := httptest.NewServer(&broadcastServer{clients: map[chan []byte]int{}, skip: func(client int, msg []byte) bool {
		return client == 3 && bytes.Contains(msg, []byte("loadtest-publish-"))
	}})
	t.Cleanup(srv.Close)
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/ws"
	code, res, stderr := runReachCommand(t, "-target", "gorilla", "-url", url, "-conns", "10")
	if code == 0 || res == nil || res.Reached != 9 || res.Missing != 1 || res.OK() {
		t.Fatalf("exit %d, result %+v, stderr %q", code, res, stderr)
	}
	if !strings.Contains(stderr, "1 of 10 connections") {
		t.Fatalf("stderr %q", stderr)
	}
}

func TestReachFailsWhenOneConnectionMissesPublish(t *testing.T) {
	urls, pub := startHub(t, &publishHub{deliver: func(i int) bool { return i != 5 }}, 1)
	code, res, stderr := runReachCommand(t, "-target", "switchboard-text", "-url", urls[0], "-room", "bench",
		"-publish-url", pub, "-conns", "10")
	if code == 0 || res == nil || res.Via != "publish" || res.Reached != 9 || res.Missing != 1 {
		t.Fatalf("exit %d, result %+v, stderr %q", code, res, stderr)
	}
}

func TestReachFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-target", "gorilla", "-publish-url", "http://127.0.0.1:1/api/rooms/bench/messages"},
		{"-procs", "2"},
		{"-reach-timeout", "0s"},
	} {
		code, _, stderr := runReachCommand(t, append(args, "-url", "ws://127.0.0.1:1/ws")...)
		if code != 2 || strings.Count(stderr, "\n") != 1 {
			t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
}

func TestReachMarkdown(t *testing.T) {
	ms := 12.5
	rec := Record{Scenario: "reach", Target: "gorilla", Reach: &ReachResult{Via: "client", Conns: 3, Reached: 3, ReachMs: &ms, P50Ms: &ms, P99Ms: &ms}}
	report := renderReport([]Record{rec}, chartRefs{})
	if !strings.Contains(report, "## reach") || !strings.Contains(report, "| gorilla | client | 3 | 3 | 0 | 12.5 |") {
		t.Fatalf("report:\n%s", report)
	}
	if run := runMarkdown(&rec); !strings.Contains(run, "| client | 3 | 3 | 0 | 12.5 |") {
		t.Fatalf("run markdown:\n%s", run)
	}
}

// A target's publish and client runs both get a row, and each run's time
// is divided by the floor's at the same connection count.
func TestReachMarkdownAgainstFloor(t *testing.T) {
	run := func(target, via string, conns int, ms float64) Record {
		return Record{Scenario: "reach", Target: target, Reach: &ReachResult{Via: via, Conns: conns, Reached: conns, ReachMs: &ms, P50Ms: &ms, P99Ms: &ms}}
	}
	report := renderReport([]Record{
		run("floor", "publish", 100, 50),
		run("switchboard-text", "publish", 100, 75),
		run("switchboard-text", "client", 100, 100),
		run("gorilla", "client", 200, 10),
	}, chartRefs{})
	for _, row := range []string{
		"| floor | publish | 100 | 100 | 0 | 50.0 | 50.0 | 50.0 | 1.00 |",
		"| switchboard-text | publish | 100 | 100 | 0 | 75.0 | 75.0 | 75.0 | 1.50 |",
		"| switchboard-text | client | 100 | 100 | 0 | 100.0 | 100.0 | 100.0 | 2.00 |",
		"| gorilla | client | 200 | 200 | 0 | 10.0 | 10.0 | 10.0 | - |",
	} {
		if !strings.Contains(report, row) {
			t.Fatalf("no row %q in:\n%s", row, report)
		}
	}
}
