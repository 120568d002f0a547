package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// ackDropper relays NATS connections to a server. While dropping is set it
// swallows the server's replies to asynchronous JetStream publishes (their
// subject is _INBOX.<6 characters>.<id>), so a node sees its message come
// back through its consumer while the ack never arrives; everything else
// passes. cut closes every relayed connection, and the clients reconnect.
type ackDropper struct {
	ln       net.Listener
	dropping atomic.Bool
	mu       sync.Mutex
	conns    []net.Conn
	relays   sync.WaitGroup
}

func startAckDropper(t *testing.T, server string) *ackDropper {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &ackDropper{ln: ln}
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
			d.relays.Go(func() { io.Copy(upstream, client); upstream.Close() })
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

// A message that came back through the node's consumer was sent, even if
// its ack is lost afterwards: its sender must not also be told it was not.
func TestClusterAckLostAfterDeliveryIsNotRefused(t *testing.T) {
	n := startNATS(t)
	proxy := startAckDropper(t, strings.TrimPrefix(n.url(), "nats://"))
	node := startServer(t, func(cfg *Config) {
		cfg.NATSURL = proxy.url()
		cfg.NodeID = "n1"
	})
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
	eventually(t, "the node to reconnect", func() bool {
		status, _ := node.request("GET", "/healthcheck", "", nil)
		return status == http.StatusOK
	})
	eventually(t, "the lost ack to be counted", func() bool {
		_, metrics := node.request("GET", "/metrics", "", nil)
		return strings.Contains(metrics, "switchboard_cluster_acks_lost_total 1\n")
	})
	alice.sendJSON(map[string]string{"type": "message", "text": "end"})
	if ev := alice.readJSON(); ev["text"] != "end" {
		t.Fatalf("got %v before the end marker: a message answered twice", ev)
	}
}
