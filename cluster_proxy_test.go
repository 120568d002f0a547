package main

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
)

// ackDropper relays NATS connections to a server. While dropping is set it
// swallows the server's replies to asynchronous JetStream publishes (their
// subject is _INBOX.<6 characters>.<id>), so a node sees its message come
// back through its consumer while the ack never arrives. With holdNext set,
// it keeps back the next room publish a client sends until release, so the
// broker stores it late. Everything else passes. cut closes every relayed
// connection, and the clients reconnect.
type ackDropper struct {
	ln       net.Listener
	dropping atomic.Bool
	holdNext atomic.Bool
	mu       sync.Mutex
	conns    []net.Conn
	held     []byte        // the publish kept back
	heldTo   net.Conn      // the server connection it was meant for
	holding  chan struct{} // closed once a publish is kept back
	relays   sync.WaitGroup
}

func startAckDropper(t *testing.T, server string) *ackDropper {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &ackDropper{ln: ln, holding: make(chan struct{})}
	d.relays.Go(func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			upstream, err := net.Dial("tcp", server)
			if err != nil {
				client.Close()
				continue
			}
			d.mu.Lock()
			d.conns = append(d.conns, client, upstream)
			d.mu.Unlock()
			d.relays.Go(func() { d.relayFromClient(client, upstream); upstream.Close() })
			d.relays.Go(func() { d.relayFromServer(upstream, client); client.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		d.cut()
		d.relays.Wait()
	})
	return d
}

func (d *ackDropper) url() string { return "nats://" + d.ln.Addr().String() }

func (d *ackDropper) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

// relayFromClient copies the client's protocol lines and payloads, keeping
// back one room publish when holdNext is set.
func (d *ackDropper) relayFromClient(client, server net.Conn) {
	in := bufio.NewReader(client)
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return
		}
		command := []byte(line)
		fields := strings.Fields(line)
		if len(fields) >= 3 && (fields[0] == "PUB" || fields[0] == "HPUB") {
			size, _ := strconv.Atoi(fields[len(fields)-1])
			payload := make([]byte, size+2)
			if _, err := io.ReadFull(in, payload); err != nil {
				return
			}
			command = append(command, payload...)
			if fields[1] == roomSubject && d.holdNext.CompareAndSwap(true, false) {
				d.mu.Lock()
				d.held, d.heldTo = command, server
				d.mu.Unlock()
				close(d.holding)
				continue
			}
		}
		d.mu.Lock()
		_, err = server.Write(command)
		d.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// release sends the publish kept back.
func (d *ackDropper) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.heldTo != nil {
		d.heldTo.Write(d.held)
	}
}

// relayFromServer copies the server's protocol lines and message bodies,
// leaving out publish acks while dropping.
func (d *ackDropper) relayFromServer(server, client net.Conn) {
	in := bufio.NewReader(server)
	out := bufio.NewWriter(client)
	for {
		line, err := in.ReadString('\n')
		if err != nil {
			return
		}
		var body []byte
		fields := strings.Fields(line)
		if len(fields) >= 3 && (fields[0] == "MSG" || fields[0] == "HMSG") {
			size, _ := strconv.Atoi(fields[len(fields)-1])
			body = make([]byte, size+2) // and its CRLF
			if _, err := io.ReadFull(in, body); err != nil {
				return
			}
			tokens := strings.Split(fields[1], ".")
			if d.dropping.Load() && len(tokens) == 3 && tokens[0] == "_INBOX" && len(tokens[1]) == 6 {
				continue
			}
		}
		out.WriteString(line)
		out.Write(body)
		if in.Buffered() == 0 && out.Flush() != nil {
			return
		}
	}
}

// startNodeBehindRelay runs NATS and one node ("n1") that reaches it
// through an ackDropper, with the test timings of startNode.
func startNodeBehindRelay(t *testing.T) (*ackDropper, *testServer) {
	t.Helper()
	n := startNATS(t)
	proxy := startAckDropper(t, strings.TrimPrefix(n.url(), "nats://"))
	node := startNode(t, n, "n1", func(cfg *Config) { cfg.NATSURL = proxy.url() })
	return proxy, node
}

// A message that came back through the node's consumer was sent, even if
// its ack is lost afterwards: its sender must not also be told it was not.
func TestClusterAckLostAfterDeliveryIsNotRefused(t *testing.T) {
	proxy, node := startNodeBehindRelay(t)
	alice, _ := node.connectJSON("1", "lobby")
	alice.sendJSON(map[string]string{"type": "message", "text": "one"})
	alice.readEvents(1, "message")

	proxy.dropping.Store(true)
	alice.sendJSON(map[string]string{"type": "message", "text": "two"})
	if ev := alice.readJSON(); ev["text"] != "two" {
		t.Fatalf("got %v, want alice's message back", ev)
	}
	proxy.cut() // the ack that never came is now lost for good
	proxy.dropping.Store(false)
	// The ack is counted lost when the node notices the cut; only then
	// does a healthy answer mean it has reconnected.
	eventually(t, "the lost ack to be counted", func() bool {
		_, metrics := node.request("GET", "/metrics", "", nil)
		return strings.Contains(metrics, "switchboard_cluster_acks_lost_total 1\n")
	})
	waitHealthy(t, node) // reconnected
	alice.sendJSON(map[string]string{"type": "message", "text": "end"})
	if ev := alice.readJSON(); ev["text"] != "end" {
		t.Fatalf("got %v before the end marker: a message answered twice", ev)
	}
}

// A message whose ack timed out and that the broker only gets later is
// answered once: the node asks the stream with a marker under the
// message's id, is refused, and the late copy is then a duplicate the
// stream drops, so the sender never sees it delivered after the refusal.
func TestClusterLateStoredMessageStaysRefused(t *testing.T) {
	proxy, node := startNodeBehindRelay(t)
	alice, _ := node.connectJSON("1", "lobby")
	alice.sendJSON(map[string]string{"type": "message", "text": "one"})
	alice.readEvents(1, "message")

	proxy.holdNext.Store(true)
	alice.sendJSON(map[string]string{"type": "message", "text": "two"})
	// The ack times out (5 s), the node asks the stream, and refuses.
	if ev := alice.readJSON(); ev["type"] != "error" || ev["code"] != "unavailable" {
		t.Fatalf("got %v, want the refusal of the held message", ev)
	}
	proxy.release() // the broker now gets "two", with an id it has seen
	alice.sendJSON(map[string]string{"type": "message", "text": "end"})
	if ev := alice.readJSON(); ev["text"] != "end" {
		t.Fatalf("got %v after the refusal: the refused message was delivered", ev)
	}
}

// A node stopping gracefully lets its senders' messages that are still on
// their way through the broker come back before it closes their sessions.
// The relay keeps alice's message from the broker until the shutdown has
// begun, so it is surely in flight then.
func TestClusterShutdownSettlesOwnMessages(t *testing.T) {
	proxy, node := startNodeBehindRelay(t)
	alice := node.connect("1", "lobby")
	proxy.holdNext.Store(true)
	alice.send("last words")
	<-proxy.holding // the hub took it and the publisher sent it
	go node.stop()  // alice must read while the node closes her session
	// Let the broker have it once the goodbye is said, just before the
	// hub stops taking messages and the node settles its own.
	<-node.sb.cluster.presence.stopped
	proxy.release()
	alice.expect("[UID: 1]: last words")
	alice.expectClose(websocket.StatusGoingAway, "server shutting down")
}
