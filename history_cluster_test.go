package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// historyTexts asks a node's HTTP API for a room's history and returns its
// texts and seqs.
func historyTexts(t *testing.T, ts *testServer, room string) (texts []string, seqs []uint64) {
	t.Helper()
	var answer struct {
		Messages []map[string]any `json:"messages"`
	}
	ts.getJSON("/api/rooms/"+room+"/history", &answer)
	for _, m := range answer.Messages {
		texts = append(texts, fmt.Sprint(m["text"]))
		seqs = append(seqs, uint64(m["seq"].(float64)))
	}
	return texts, seqs
}

// In a cluster the history is the cluster's: every node answers alike,
// whichever node the messages came in on, also a node started afterwards,
// and a client recovers on another node than the one it left.
func TestClusterHistory(t *testing.T) {
	n, nodes := startCluster(t, 3)
	waitHealthy(t, nodes...)
	a, _ := nodes[0].connectJSON("a", "room")
	b, _ := nodes[1].connectJSON("b", "room")
	waitPresence(t, nodes, "room", "a,b")
	a.sendJSON(map[string]string{"type": "message", "text": "from n1"})
	b.sendJSON(map[string]string{"type": "message", "text": "from n2"})
	if status, _ := nodes[2].request("POST", "/api/rooms/room/messages", `{"text":"from n3"}`, nil); status != 200 {
		t.Fatal("publish failed")
	}
	seen := a.readEvents(3, "message", "publish")
	b.readEvents(3, "message", "publish")
	last := uint64(seqOf(t, seen[2]))
	want := []string{fmt.Sprint(seen[0]["text"]), fmt.Sprint(seen[1]["text"]), fmt.Sprint(seen[2]["text"])}
	for i, node := range nodes {
		eventually(t, fmt.Sprintf("node %d's history", i+1), func() bool {
			texts, _ := historyTexts(t, node, "room")
			return strings.Join(texts, "|") == strings.Join(want, "|")
		})
	}
	// A node that starts now fills its history from the stream before it
	// listens: its first answer is already the cluster's.
	late := startNode(t, n, "n4")
	if texts, seqs := historyTexts(t, late, "room"); strings.Join(texts, "|") != strings.Join(want, "|") || seqs[2] != last {
		t.Fatalf("new node's history = %v %v, want %v", texts, seqs, want)
	}
	// a leaves n1 and comes back on n4 after missing two messages.
	a.close()
	// b sees its own message come back from the stream before n3 publishes,
	// so the stream's order, which replay follows, is the order sent.
	b.sendJSON(map[string]string{"type": "message", "text": "missed 1"})
	if ev := b.readEvents(1, "message")[0]; ev["text"] != "missed 1" {
		t.Fatalf("b saw %v", ev)
	}
	nodes[2].request("POST", "/api/rooms/room/messages", `{"text":"missed 2"}`, nil)
	b.readEvents(1, "publish")
	back, welcome := late.recoverFrom("a", "room", last)
	if welcome["recovered"] != true {
		t.Fatalf("welcome on another node = %v", welcome)
	}
	got := back.readEvents(2, "message", "publish")
	if got[0]["text"] != "missed 1" || got[1]["text"] != "missed 2" || seqOf(t, got[0]) <= float64(last) || seqOf(t, got[1]) <= seqOf(t, got[0]) {
		t.Fatalf("replayed on another node: %v", got)
	}
	// The JSON and text history answers come from the same log.
	back.sendJSON(map[string]any{"type": "history", "limit": 2})
	h := back.readEvents(1, "history")[0]
	if msgs := h["messages"].([]any); len(msgs) != 2 || msgs[1].(map[string]any)["text"] != "missed 2" {
		t.Fatalf("history on n4 = %v", h)
	}
}

// The delivery promise across reconnects in a cluster: a receiver cut
// without a close frame again and again, landing on another node each
// time, while a sender keeps sending, has every message once, in order.
func TestClusterRecoveryUnderLoad(t *testing.T) {
	const total = 300
	_, nodes := startCluster(t, 3)
	waitHealthy(t, nodes...)
	receiver, _ := nodes[1].connectJSON("r", "busy")
	sender, _ := nodes[0].connectJSON("s", "busy")
	waitPresence(t, nodes, "busy", "r,s")
	go func() {
		for i := range total {
			sender.sendJSON(map[string]string{"type": "message", "text": fmt.Sprint("m", i)})
			time.Sleep(time.Millisecond)
		}
	}()
	go sender.discardAll()
	var got []string
	var last float64
	for cut := 1; len(got) < total; cut++ {
		for k := 0; k < 40 && len(got) < total; k++ {
			ev := receiver.readEvents(1, "message")[0]
			seq := seqOf(t, ev)
			if seq <= last {
				t.Fatalf("seq %v after %v", seq, last)
			}
			last = seq
			got = append(got, ev["text"].(string))
		}
		if len(got) >= total {
			break
		}
		receiver.conn.CloseNow()
		var welcome map[string]any
		receiver, welcome = nodes[cut%3].recoverFrom("r", "busy", uint64(last))
		if welcome["recovered"] != true {
			t.Fatalf("cut %d: %v", cut, welcome)
		}
	}
	for i, text := range got {
		if text != fmt.Sprint("m", i) {
			t.Fatalf("message %d is %q: lost, doubled or out of order", i, text)
		}
	}
}

// A since from before the stream was made anew is not recovered: the
// cluster does not claim events it may have lost.
func TestClusterHistoryAfterStreamRemade(t *testing.T) {
	n, nodes := startCluster(t, 2)
	waitHealthy(t, nodes...)
	s, _ := nodes[0].connectJSON("s", "room")
	seqs := sendAll(t, s, "m", 3)
	js := operatorJetStream(t, n)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := js.DeleteStream(ctx, streamName); err != nil {
		t.Fatal(err)
	}
	// Every node sees it, remakes or finds the stream, and starts afresh.
	for i, node := range nodes {
		eventually(t, fmt.Sprintf("node %d to forget the old history", i+1), func() bool {
			texts, _ := historyTexts(t, node, "room")
			return len(texts) == 0
		})
	}
	waitHealthy(t, nodes...)
	for i, node := range nodes {
		c, welcome := node.recoverFrom("late", "room", seqs[1])
		if welcome["recovered"] != false {
			t.Fatalf("node %d: welcome = %v, want recovered:false", i+1, welcome)
		}
		c.close()
	}
	// The new stream's history works as ever, on every node.
	s2, _ := nodes[1].connectJSON("s2", "room")
	fresh := sendAll(t, s2, "new", 3)
	if fresh[0] <= seqs[2] {
		t.Fatalf("seq %d on the new stream is not above %d", fresh[0], seqs[2])
	}
	for i, node := range nodes {
		eventually(t, fmt.Sprintf("node %d to recover on the new stream", i+1), func() bool {
			c, welcome := node.recoverFrom("again", "room", fresh[0])
			defer c.close()
			if welcome["recovered"] != true {
				return false
			}
			got := c.readEvents(2, "message")
			return got[0]["text"] == "new1" && got[1]["text"] == "new2"
		})
	}
}
