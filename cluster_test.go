package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testNATS is an embedded NATS server with JetStream, on a fixed loopback
// port so that it can be stopped and started again at the same URL.
type testNATS struct {
	t      testing.TB
	port   int
	dir    string
	server *natsserver.Server
}

func startNATS(t testing.TB) *testNATS {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	n := &testNATS{t: t, port: port, dir: t.TempDir()}
	n.start()
	t.Cleanup(n.stop)
	return n
}

func (n *testNATS) start() {
	n.t.Helper()
	s, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: n.port, JetStream: true, StoreDir: n.dir,
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		n.t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(waitTimeout) {
		n.t.Fatal("NATS server not ready")
	}
	n.server = s
}

func (n *testNATS) stop() {
	if n.server != nil {
		n.server.Shutdown()
		n.server.WaitForShutdown()
		n.server = nil
	}
}

func (n *testNATS) url() string { return "nats://127.0.0.1:" + strconv.Itoa(n.port) }

// startNode runs one cluster node on n, with presence timings short enough
// for tests, and configure's changes (may be nil).
func startNode(t testing.TB, n *testNATS, id string, configure ...func(*Config)) *testServer {
	t.Helper()
	return startServer(t, func(cfg *Config) {
		cfg.NATSURL = n.url()
		cfg.NodeID = id
		cfg.PresenceHeartbeat = 100 * time.Millisecond
		cfg.PresenceExpiry = time.Second
		// Often, so that every test checks the stream under its traffic:
		// the check must never mistake a moving stream for a lost one.
		cfg.StreamCheckInterval = 10 * time.Millisecond
		for _, change := range configure {
			change(cfg)
		}
	})
}

// startCluster runs a NATS server and count nodes on it.
func startCluster(t testing.TB, count int) (*testNATS, []*testServer) {
	t.Helper()
	n := startNATS(t)
	nodes := make([]*testServer, count)
	for i := range nodes {
		nodes[i] = startNode(t, n, fmt.Sprintf("n%d", i+1))
	}
	return n, nodes
}

// waitHealth waits until the node's /healthcheck answers want.
func waitHealth(t testing.TB, node *testServer, want int) {
	t.Helper()
	eventually(t, fmt.Sprintf("/healthcheck to answer %d", want), func() bool {
		status, _ := node.request("GET", "/healthcheck", "", nil)
		return status == want
	})
}

// waitHealthy waits until every node answers /healthcheck with 200.
func waitHealthy(t testing.TB, nodes ...*testServer) {
	t.Helper()
	for _, node := range nodes {
		waitHealth(t, node, http.StatusOK)
	}
}

// operatorJetStream is a JetStream client of its own on n, for tests that
// act on the stream as an operator would.
func operatorJetStream(t testing.TB, n *testNATS) jetstream.JetStream {
	t.Helper()
	operator, err := nats.Connect(n.url())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(operator.Close)
	js, err := jetstream.New(operator)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// presence asks a node for a room's online uids.
func (ts *testServer) presence(room string) string {
	ts.t.Helper()
	var answer presenceAnswer
	ts.getJSON("/api/rooms/"+room+"/presence", &answer)
	return strings.Join(answer.Online, ",")
}

// waitPresence waits until every node sees want online in room. Tests
// call it before connecting the next client when they expect exact lines:
// a client that connects before its node has heard of an earlier one gets
// a welcome without it and then a "joined" for it, which is right but
// harder to assert.
func waitPresence(t testing.TB, nodes []*testServer, room, want string) {
	t.Helper()
	for i, node := range nodes {
		eventually(t, fmt.Sprintf("node %d to see %q online in %s", i+1, want, room), func() bool {
			return node.presence(room) == want
		})
	}
}

// readEvents reads JSON events until it has count of the given types,
// skipping others (joins of later clients, for instance).
func (c *testClient) readEvents(count int, types ...string) []map[string]any {
	c.t.Helper()
	var events []map[string]any
	for len(events) < count {
		ev := c.readJSON()
		if slices.Contains(types, fmt.Sprint(ev["type"])) {
			events = append(events, ev)
		}
	}
	return events
}

// discardAll reads and drops everything until the connection ends.
func (c *testClient) discardAll() {
	go func() {
		for {
			if _, _, err := c.conn.Read(context.Background()); err != nil {
				return
			}
		}
	}()
}

// Several senders on several nodes: every session on every node sees all
// messages and publishes in one identical order, and seq increases.
func TestClusterOneOrderOnEveryNode(t *testing.T) {
	_, nodes := startCluster(t, 3)
	clients := make([]*testClient, 3)
	for i, node := range nodes {
		clients[i], _ = node.connectJSON(fmt.Sprint("u", i+1), "race")
	}
	waitPresence(t, nodes, "race", "u1,u2,u3")

	const perSender = 30
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			for j := range perSender {
				c.sendJSON(map[string]string{"type": "message", "text": fmt.Sprintf("m%d-%d", i+1, j)})
			}
		})
	}
	status, body := nodes[1].request("POST", "/api/rooms/race/messages", `{"text":"from the API"}`, nil)
	if status != http.StatusOK || body != `{"room":"race","recipients":3}` {
		t.Fatalf("publish = %d %s", status, body)
	}
	wg.Wait()

	total := 3*perSender + 1
	var orders [3][]string
	for i, c := range clients {
		var lastSeq float64
		for _, ev := range c.readEvents(total, "message", "publish") {
			seq := ev["seq"].(float64)
			if seq <= lastSeq {
				t.Fatalf("client %d: seq %v after %v", i+1, seq, lastSeq)
			}
			lastSeq = seq
			orders[i] = append(orders[i], fmt.Sprintf("%v/%v/%v", seq, ev["from"], ev["text"]))
		}
	}
	for i := 1; i < 3; i++ {
		if !slices.Equal(orders[0], orders[i]) {
			t.Fatalf("client %d saw another order than client 1:\n%v\n%v", i+1, orders[i], orders[0])
		}
	}
	// Each sender's own messages keep the order it sent them in.
	for sender := 1; sender <= 3; sender++ {
		next := 0
		for _, entry := range orders[0] {
			if strings.Contains(entry, fmt.Sprintf("/u%d/m%d-", sender, sender)) {
				if !strings.HasSuffix(entry, fmt.Sprintf("/m%d-%d", sender, next)) {
					t.Fatalf("sender %d out of order at %s", sender, entry)
				}
				next++
			}
		}
		if next != perSender {
			t.Fatalf("sender %d: %d messages seen, want %d", sender, next, perSender)
		}
	}
}

// Text mode and binary relay work across nodes too.
func TestClusterTextAndBinaryAcrossNodes(t *testing.T) {
	_, nodes := startCluster(t, 2)
	alice := nodes[0].connect("1", "lobby")
	waitPresence(t, nodes, "lobby", "1")
	bob := nodes[1].connect("2", "lobby")
	alice.expect("[server]: UID 2 joined lobby")
	bob.send("hello from node 2")
	alice.expect("[UID: 2]: hello from node 2")
	bob.expect("[UID: 2]: hello from node 2")

	alice.write(websocket.MessageBinary, []byte{0, 1, 2, 255})
	for _, c := range []*testClient{alice, bob} {
		kind, data, err := c.readMessage()
		if err != nil || kind != websocket.MessageBinary || string(data) != "\x00\x01\x02\xff" {
			t.Fatalf("binary relay: %v %q %v", kind, data, err)
		}
	}
	status, body := nodes[1].request("POST", "/api/rooms/lobby/messages", `{"data":{"n":1}}`, nil)
	if status != http.StatusOK || body != `{"room":"lobby","recipients":2}` {
		t.Fatalf("publish = %d %s", status, body)
	}
	alice.expect(`[server]: {"n":1}`)
	bob.expect(`[server]: {"n":1}`)
}

// A DM reaches every session of its uid on every node, the echo goes to
// the sending session only, and not_online means online nowhere.
func TestClusterDirectMessageToEverySession(t *testing.T) {
	_, nodes := startCluster(t, 3)
	alice := nodes[0].connect("alice", "a")
	bobPhone := nodes[1].connect("bob", "b")
	bobLaptop := nodes[2].connect("bob", "c")
	waitPresence(t, nodes, "a", "alice")
	waitPresence(t, nodes, "b", "bob")
	waitPresence(t, nodes, "c", "bob")

	alice.send("/dm bob are you there?")
	alice.expect("[DM to UID: bob]: are you there?")
	bobPhone.expect("[DM from UID: alice]: are you there?")
	bobLaptop.expect("[DM from UID: alice]: are you there?")

	bobLaptop.send("/dm alice yes")
	bobLaptop.expect("[DM to UID: alice]: yes")
	alice.expect("[DM from UID: bob]: yes")

	alice.send("/dm carol hi")
	alice.expect("[server]: error: UID carol is not online")
	// bob's phone got no echo of the laptop's DM: its next line is this.
	bobPhone.send("/who")
	bobPhone.expect("[server]: online in b: bob")
}

// A uid joins once for the whole cluster and leaves once, when its last
// session anywhere ends; /who, welcome and /api answer for every node.
func TestClusterPresence(t *testing.T) {
	_, nodes := startCluster(t, 3)
	alice := nodes[0].connect("1", "lobby")
	waitPresence(t, nodes, "lobby", "1")
	bob1 := nodes[1].connect("2", "lobby")
	alice.expect("[server]: UID 2 joined lobby")
	waitPresence(t, nodes, "lobby", "1,2")

	bob2, welcome := nodes[2].connectJSON("2", "lobby")
	if fmt.Sprint(welcome["online"]) != "[1 2]" {
		t.Fatalf("welcome on node 3 = %v", welcome)
	}
	var rooms []RoomSummary
	eventually(t, "node 1 to count bob's second session", func() bool {
		nodes[0].getJSON("/api/rooms", &rooms)
		return len(rooms) == 1 && rooms[0] == RoomSummary{Room: "lobby", Users: 2, Sessions: 3}
	})
	alice.send("/who")
	alice.expect("[server]: online in lobby: 1, 2") // and no second "joined" before it

	bob1.close()
	eventually(t, "node 1 to count bob's first session gone", func() bool {
		nodes[0].getJSON("/api/rooms", &rooms)
		return len(rooms) == 1 && rooms[0].Sessions == 2
	})
	alice.send("/who")
	alice.expect("[server]: online in lobby: 1, 2") // bob is still on node 3: no "left"
	bob2.close()
	alice.expect("[server]: UID 2 left lobby")
	waitPresence(t, nodes, "lobby", "1")
}

// A node stopped with SIGTERM says goodbye and its uids leave at once; a
// node that dies silently has them leave once its heartbeats are missed.
func TestClusterNodeGoneLeaves(t *testing.T) {
	_, nodes := startCluster(t, 3)
	alice := nodes[0].connect("1", "lobby")
	waitPresence(t, nodes, "lobby", "1")
	// bob and carol read what comes, so closing their nodes is not held
	// up waiting for their close replies.
	nodes[1].connect("2", "lobby").discardAll()
	alice.expect("[server]: UID 2 joined lobby")
	nodes[2].connect("3", "lobby").discardAll()
	alice.expect("[server]: UID 3 joined lobby")

	nodes[1].stop()
	alice.expect("[server]: UID 2 left lobby")

	// Node 3 falls silent without a goodbye, as after kill -9: its link
	// stops before anything else does.
	nodes[2].stopLink()
	<-nodes[2].linkDone
	killed := time.Now()
	alice.expect("[server]: UID 3 left lobby")
	t.Logf("uid of a killed node left after %v (expiry %v)", time.Since(killed).Round(time.Millisecond), time.Second)
	alice.send("/who")
	alice.expect("[server]: online in lobby: 1")
}

// While NATS is down: /healthcheck says so, messages, DMs and publishes are
// refused with a reason, sessions stay connected and /who answers from the
// last view. When it is back, the nodes recover by themselves.
func TestClusterBrokerOutage(t *testing.T) {
	n, nodes := startCluster(t, 2)
	alice, _ := nodes[0].connectJSON("1", "lobby")
	waitPresence(t, nodes, "lobby", "1")
	bob := nodes[1].connect("2", "lobby")
	waitPresence(t, nodes, "lobby", "1,2")
	alice.sendJSON(map[string]string{"type": "message", "text": "before"})
	before := alice.readEvents(1, "message")[0]["seq"].(float64)
	bob.expect("[UID: 1]: before")

	n.stop()
	eventually(t, "healthcheck to report the outage", func() bool {
		status, body := nodes[0].request("GET", "/healthcheck", "", nil)
		return status == http.StatusServiceUnavailable && body == "cluster unavailable"
	})
	alice.sendJSON(map[string]string{"type": "message", "text": "lost?"})
	if ev := alice.readEvents(1, "error")[0]; ev["code"] != "unavailable" || ev["message"] != "cluster unavailable, message not sent" {
		t.Fatalf("error = %v", ev)
	}
	bob.send("/dm 1 psst")
	bob.expect("[server]: error: cluster unavailable, message not sent")
	status, body := nodes[1].request("POST", "/api/rooms/lobby/messages", `{"text":"x"}`, nil)
	if status != http.StatusServiceUnavailable || body != `{"error":"cluster unavailable"}` {
		t.Fatalf("publish during outage = %d %s", status, body)
	}
	bob.send("/who")
	bob.expect("[server]: online in lobby: 1, 2")

	n.start()
	waitHealthy(t, nodes...)
	// The first message after recovery crosses nodes, with a higher seq.
	bob.send("after")
	after := alice.readEvents(1, "message")[0]
	if after["text"] != "after" || after["seq"].(float64) <= before {
		t.Fatalf("after the outage alice got %v, want bob's message with seq above %v", after, before)
	}
}

// Every message sent around a broker outage is answered exactly once:
// delivered, or refused with "cluster unavailable". A message whose ack was
// lost when the connection dropped waits until the node knows whether the
// stream has it (file storage keeps the stream over the restart).
func TestClusterOutageAnswersEveryMessageOnce(t *testing.T) {
	n := startNATS(t)
	node := startNode(t, n, "n1", func(cfg *Config) { cfg.StreamStorage = "file" })
	alice, _ := node.connectJSON("1", "lobby")
	const total = 2000
	// The messages stream in from another goroutine while the broker
	// stops, so some are waiting for their ack when the connection drops.
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range total {
			data := fmt.Sprintf(`{"type":"message","text":"m%d"}`, i)
			if alice.conn.Write(context.Background(), websocket.MessageText, []byte(data)) != nil {
				return
			}
		}
	}()
	delivered, refused := map[string]bool{}, 0
	count := func(ev map[string]any) {
		switch {
		case ev["type"] == "message" && !delivered[ev["text"].(string)]:
			delivered[ev["text"].(string)] = true
		case ev["type"] == "error" && ev["code"] == "unavailable":
			refused++
		default:
			t.Fatalf("unexpected event %v (%d delivered, %d refused so far)", ev, len(delivered), refused)
		}
	}
	for len(delivered) < 50 {
		count(alice.readJSON())
	}
	n.stop()
	<-sent
	n.start()
	waitHealthy(t, node)
	for len(delivered)+refused < total {
		count(alice.readJSON())
	}
	// Nothing more may come for the outage: the next event is the marker.
	alice.sendJSON(map[string]string{"type": "message", "text": "end"})
	if ev := alice.readJSON(); ev["text"] != "end" {
		t.Fatalf("after %d delivered and %d refused, got %v before the end marker", len(delivered), refused, ev)
	}
	_, metrics := node.request("GET", "/metrics", "", nil)
	lost := regexp.MustCompile(`switchboard_cluster_acks_lost_total (\d+)`).FindStringSubmatch(metrics)
	t.Logf("%d delivered, %d refused; acks lost and settled later: %v", len(delivered), refused, lost)
}

// A cluster that had no traffic at all before the broker restarted still
// delivers the first message afterwards on every node: a consumer with
// nothing delivered yet must not restart from "new messages only".
func TestClusterQuietBrokerRestart(t *testing.T) {
	n, nodes := startCluster(t, 2)
	alice := nodes[0].connect("1", "lobby")
	waitPresence(t, nodes, "lobby", "1")
	bob := nodes[1].connect("2", "lobby")
	alice.expect("[server]: UID 2 joined lobby")

	n.stop()
	waitHealth(t, nodes[0], http.StatusServiceUnavailable)
	n.start()
	waitHealthy(t, nodes...)
	alice.send("first after the restart")
	alice.expect("[UID: 1]: first after the restart")
	bob.expect("[UID: 1]: first after the restart")
}

// A node that finds stream messages gone before it got them (stream limits
// while it lagged) closes its sessions with a reason instead of skipping
// them silently. The lag is made by stopping the node's consumer while
// messages arrive and are removed, as the limits would remove them.
func TestClusterMissedMessagesCloseSessions(t *testing.T) {
	n, nodes := startCluster(t, 1)
	alice, _ := nodes[0].connectJSON("1", "lobby")
	alice.sendJSON(map[string]string{"type": "message", "text": "kept"})
	seq := uint64(alice.readEvents(1, "message")[0]["seq"].(float64))

	link := nodes[0].sb.cluster
	link.consumerMu.Lock()
	link.stopConsumer()
	link.consumerMu.Unlock()
	js := operatorJetStream(t, n)
	stream, err := js.Stream(t.Context(), streamName)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		m := nats.NewMsg(roomSubject)
		m.Header.Set(headerKind, kindMessage)
		m.Header.Set(headerRoom, "lobby")
		m.Header.Set(headerFrom, "2")
		m.Data = []byte(fmt.Sprint("lost ", i))
		ack, err := js.PublishMsg(t.Context(), m)
		if err != nil {
			t.Fatal(err)
		}
		if i < 5 { // the sixth stays: the node finds it after a gap
			if err := stream.DeleteMsg(t.Context(), ack.Sequence); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := link.restartConsumer(t.Context(), seq); err != nil {
		t.Fatal(err)
	}
	alice.expectClose(websocket.StatusServiceRestart, "missed cluster messages")

	again, _ := nodes[0].connectJSON("1", "lobby")
	again.sendJSON(map[string]string{"type": "message", "text": "fresh start"})
	if ev := again.readEvents(1, "message")[0]; ev["text"] != "fresh start" {
		t.Fatalf("after reconnecting: %v", ev)
	}
}

// A stream deleted and made again numbered below what a node has read (by
// an operator, or a node whose clock is behind) would make the node's
// consumer skip every new message below its position: the node closes its
// sessions with a reason instead, follows the stream's end, and a client
// that reconnects is served again.
func TestClusterStreamBackBelowNodePosition(t *testing.T) {
	n, nodes := startCluster(t, 1)
	alice, _ := nodes[0].connectJSON("1", "lobby")
	alice.sendJSON(map[string]string{"type": "message", "text": "one"})
	seq := uint64(alice.readEvents(1, "message")[0]["seq"].(float64))

	js := operatorJetStream(t, n)
	// The node may make the stream again itself between the delete and
	// the create (its consumer notices the loss); then try again.
	for attempt := 0; ; attempt++ {
		if err := js.DeleteStream(t.Context(), streamName); err != nil {
			t.Fatal(err)
		}
		_, err := js.CreateStream(t.Context(), nodes[0].sb.cluster.streamConfig(seq-3))
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) || attempt == 10 {
			t.Fatal(err)
		}
	}
	alice.expectClose(websocket.StatusServiceRestart, "missed cluster messages")

	eventually(t, "a reconnected client to be served", func() bool {
		again, _ := nodes[0].connectJSON("1", "lobby")
		defer again.conn.CloseNow()
		again.sendJSON(map[string]string{"type": "message", "text": "two"})
		for {
			ev := again.readJSON()
			switch {
			case ev["type"] == "message":
				return ev["text"] == "two"
			case ev["type"] == "error":
				return false // the stream keeper is not done yet
			}
		}
	})
}

// An API publish goes through even when the node it reaches knows of no
// session in the room yet; a room empty everywhere answers 0 recipients.
func TestClusterPublishReachesRoomsThisNodeDoesNotKnow(t *testing.T) {
	_, nodes := startCluster(t, 2)
	alice := nodes[0].connect("1", "news")
	status, body := nodes[1].request("POST", "/api/rooms/news/messages", `{"text":"extra"}`, nil)
	if status != http.StatusOK {
		t.Fatalf("publish = %d %s", status, body)
	}
	alice.expect("[server]: extra")
	status, body = nodes[1].request("POST", "/api/rooms/empty/messages", `{"text":"nobody"}`, nil)
	if status != http.StatusOK || body != `{"room":"empty","recipients":0}` {
		t.Fatalf("publish to an empty room = %d %s", status, body)
	}
}

// A second node with a live node's id refuses to start.
func TestClusterNodeIDTaken(t *testing.T) {
	n, _ := startCluster(t, 1)
	cfg := testConfig()
	cfg.NATSURL = n.url()
	cfg.NodeID = "n1"
	_, err := newSwitchboard(t.Context(), cfg, testLogger())
	if err == nil || !strings.Contains(err.Error(), `node id "n1" is already live in the cluster`) {
		t.Fatalf("err = %v", err)
	}
}

// The broker's metrics appear on /metrics in cluster mode.
func TestClusterMetrics(t *testing.T) {
	_, nodes := startCluster(t, 2)
	alice := nodes[0].connect("1", "lobby")
	alice.send("counted")
	alice.expect("[UID: 1]: counted")
	var body string
	eventually(t, "the ack to be counted", func() bool {
		_, body = nodes[0].request("GET", "/metrics", "", nil)
		return strings.Contains(body, "switchboard_cluster_publish_seconds_count 1\n")
	})
	for _, want := range []string{
		"switchboard_cluster_up 1",
		"switchboard_cluster_publish_seconds_count 1",
		"switchboard_cluster_publish_errors_total 0",
		"switchboard_cluster_consumer_pending 0",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
