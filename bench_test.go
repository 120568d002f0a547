package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// newBenchSession is a session as the hub sees it, without a socket.
func newBenchSession(h *WebSocketServer, uid string, mode clientMode) *UserSession {
	return &UserSession{
		id: uid, uid: uid, room: "bench", mode: mode,
		queue: newOutboundQueue(1 << 30),
	}
}

// BenchmarkBroadcast measures the hub's cost of one room message to N
// recipients (half text, half JSON): seq, encoding once per mode, a push
// onto every queue and the writers' drain, with the room's history off
// (-history-size 0) and on (the default 100). No sockets.
func BenchmarkBroadcast(b *testing.B) {
	for _, size := range []int{0, 100} {
		name := "history=off"
		if size > 0 {
			name = "history=on"
		}
		for _, recipients := range []int{10, 100, 1000} {
			b.Run(fmt.Sprintf("%s/recipients=%d", name, recipients), func(b *testing.B) {
				benchmarkBroadcast(b, newHistory(size, time.Hour, 64<<20), recipients)
			})
		}
	}
}

func benchmarkBroadcast(b *testing.B, hist *history, recipients int) {
	h := NewWebSocketServer(newMetrics(), hist)
	sessions := make([]*UserSession, recipients)
	for i := range sessions {
		sessions[i] = newBenchSession(h, fmt.Sprint(i), clientMode(i%2))
		UserConnect{Session: sessions[i]}.apply(h)
	}
	var batch []outboundFrame
	for _, s := range sessions {
		batch, _, _ = s.queue.drain(batch[:0])
	}
	msg := UserMessage{Session: sessions[0], Text: strings.Repeat("x", 100)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		msg.apply(h)
		for _, s := range sessions {
			batch, _, _ = s.queue.drain(batch[:0])
		}
	}
	b.ReportMetric(float64(b.N*recipients)/b.Elapsed().Seconds(), "deliveries/s")
}

// BenchmarkSocketBroadcast sends room messages through the real server over
// loopback sockets to R text-mode receivers and waits until every receiver
// has read every message.
func BenchmarkSocketBroadcast(b *testing.B) {
	for _, receivers := range []int{10, 100} {
		b.Run(fmt.Sprintf("receivers=%d", receivers), func(b *testing.B) {
			ts := startServer(b, func(c *Config) { c.MaxQueueBytes = 64 << 20 })
			readers := make([]*testClient, receivers)
			for i := range readers {
				readers[i] = ts.connect(fmt.Sprintf("r%d", i), "bench")
			}
			sender := ts.connect("sender", "bench")
			for _, r := range readers {
				for !strings.HasSuffix(r.readLine(), "UID sender joined bench") {
				}
			}
			payload := []byte(strings.Repeat("x", 100))
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			// The sender reads its own echoes too, as a real client must.
			for _, r := range append(readers, sender) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for got := 0; got < b.N; {
						_, data, err := r.conn.Read(context.Background())
						if err != nil {
							b.Errorf("read: %v", err)
							return
						}
						got += strings.Count(string(data), "[UID: sender]: ")
					}
				}()
			}
			for i := 0; i < b.N; i++ {
				if err := sender.conn.Write(context.Background(), websocket.MessageText, payload); err != nil {
					b.Fatal(err)
				}
			}
			wg.Wait()
			b.ReportMetric(float64(b.N*(receivers+1))/b.Elapsed().Seconds(), "deliveries/s")
		})
	}
}

// BenchmarkTokenVerify is what token mode adds to a handshake (and to a
// refresh): checking one HS256 token and reading its claims.
func BenchmarkTokenVerify(b *testing.B) {
	auth, err := newAuthenticator(Config{JWTSecret: testSecret, JWKS: defaultJWKSTiming()}, testLogger())
	if err != nil {
		b.Fatal(err)
	}
	token := hs256(b, "alice", nil)
	verifier := auth.(*tokenAuth)
	b.ReportAllocs()
	for b.Loop() {
		if _, problem := verifier.verify(token); problem != "" {
			b.Fatal(problem)
		}
	}
}

// BenchmarkSSEEvent is what an SSE stream adds per event on top of a JSON
// session: reading the encoded event's type and seq back and writing the
// event, id and data lines.
func BenchmarkSSEEvent(b *testing.B) {
	event := encodeEvent(&messageEvent{Type: "message", Room: "stats", From: "board", Text: strings.Repeat("x", 100),
		Seq: 1796127643144559, TS: timestamp(time.Now())}, modeJSON)
	var buf bytes.Buffer
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		appendSSEEvent(&buf, event)
	}
}
