package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// dialTimeout bounds one WebSocket handshake.
const dialTimeout = 10 * time.Second

// runEnv is what every scenario needs to reach and observe the server.
type runEnv struct {
	target   Target
	url      string         // address to dial, room included
	sources  []*http.Client // one per source address; connection i uses sources[i%len]
	probe    serverProbe    // server CPU/RSS readings (-pid)
	dialConc int            // handshakes in flight at most
	progress *progressSink  // where live progress lines go; nil for none
}

// sourceClients builds one HTTP client per source address 127.0.0.1 ..
// 127.0.0.n. Each (source, server) pair has its own ephemeral port range,
// so spreading connections over n sources lets one run open far more than
// the ~28,000 connections a single source address allows.
func sourceClients(n int) []*http.Client {
	clients := make([]*http.Client, n)
	for i := range clients {
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+1))}
		d := &net.Dialer{LocalAddr: local, Timeout: dialTimeout}
		clients[i] = &http.Client{Transport: &http.Transport{
			DialContext: d.DialContext,
			// Handshakes never reuse a connection: each becomes a WebSocket.
			DisableKeepAlives: true,
		}}
	}
	return clients
}

// dial opens connection number index (which picks its source address) for
// uid and checks that the server agreed to the target's subprotocol.
func (e *runEnv) dial(ctx context.Context, index int, uid string) (*websocket.Conn, error) {
	opts := e.target.DialOptions(uid)
	opts.HTTPClient = e.sources[index%len(e.sources)]
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, e.url, opts)
	if err != nil {
		return nil, fmt.Errorf("dial %s as %q: %w", e.url, uid, err)
	}
	if len(opts.Subprotocols) > 0 && conn.Subprotocol() != opts.Subprotocols[0] {
		conn.CloseNow()
		return nil, fmt.Errorf("dial %s: server chose subprotocol %q, want %q", e.url, conn.Subprotocol(), opts.Subprotocols[0])
	}
	// Batched server messages can be large; our own limit must never be
	// the reason a connection drops.
	conn.SetReadLimit(-1)
	return conn, nil
}

// dialResult summarises one dialMany call.
type dialResult struct {
	conns    []*websocket.Conn // nil where the dial failed
	opened   int
	failed   int
	firstErr error
	elapsed  time.Duration
}

// dialMany opens one connection per uid, at most e.dialConc handshakes at
// a time, so the server sees a steady handshake stream rather than a
// thundering herd. firstIndex is the global number of uids[0] (it picks
// source addresses). opened is bumped as each dial succeeds, for progress
// lines. It returns when every dial has finished.
func (e *runEnv) dialMany(ctx context.Context, firstIndex int, uids []string, opened *atomic.Int64) dialResult {
	res := dialResult{conns: make([]*websocket.Conn, len(uids))}
	errs := make([]error, len(uids))
	work := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < min(e.dialConc, len(uids)); w++ {
		wg.Add(1)
		go func() { // worker: ends when work is closed
			defer wg.Done()
			for i := range work {
				res.conns[i], errs[i] = e.dial(ctx, firstIndex+i, uids[i])
				if errs[i] == nil && opened != nil {
					opened.Add(1)
				}
			}
		}()
	}
	for i := range uids {
		if ctx.Err() != nil {
			errs[i] = ctx.Err()
			continue
		}
		work <- i
	}
	close(work)
	wg.Wait()
	res.elapsed = time.Since(start)
	for _, err := range errs {
		switch {
		case err == nil:
			res.opened++
		case res.firstErr == nil:
			res.firstErr = err
			res.failed++
		default:
			res.failed++
		}
	}
	return res
}

// client is one open connection plus the goroutine that reads it. Reading
// all the time matters even when we ignore the data: coder/websocket
// answers the server's pings only while a read is in progress.
type client struct {
	conn    *websocket.Conn
	closing atomic.Bool   // set before we close, so the read error is not a drop
	done    chan struct{} // closed when the reader goroutine returns
	dropErr error         // why the server side ended it; valid after done
}

// startClient starts the reader goroutine of conn. onMessage, if not nil,
// gets every text message (the slice is reused afterwards); the goroutine
// ends when the connection closes, by us (close) or by the server (a drop).
func startClient(conn *websocket.Conn, onMessage func([]byte)) *client {
	c := &client{conn: conn, done: make(chan struct{})}
	go c.readLoop(onMessage)
	return c
}

func (c *client) readLoop(onMessage func([]byte)) {
	defer close(c.done)
	var buf bytes.Buffer
	for {
		typ, r, err := c.conn.Reader(context.Background())
		if err == nil {
			if onMessage == nil || typ != websocket.MessageText {
				_, err = io.Copy(io.Discard, r)
			} else {
				buf.Reset()
				if _, err = buf.ReadFrom(r); err == nil {
					onMessage(buf.Bytes())
				}
			}
		}
		if err != nil {
			if !c.closing.Load() {
				c.dropErr = err
			}
			return
		}
	}
}

// dropped reports whether the connection ended without us closing it.
// Only meaningful after the reader has returned.
func (c *client) dropped() bool { return c.dropErr != nil }

// close ends the connection at once (no close handshake: at thousands of
// connections the handshake wait would dominate) and waits for the reader.
func (c *client) close() {
	c.closing.Store(true)
	c.conn.CloseNow()
	<-c.done
}

// closeAll closes every client and returns how many the server had
// dropped before that.
func closeAll(clients []*client) int {
	dropped := 0
	for _, c := range clients {
		if c == nil {
			continue
		}
		c.close()
		if c.dropped() {
			dropped++
		}
	}
	return dropped
}

// liveDrops counts, without closing anything, the clients whose reader has
// already ended on its own.
func liveDrops(clients []*client) int {
	n := 0
	for _, c := range clients {
		if c == nil {
			continue
		}
		select {
		case <-c.done:
			if c.dropped() {
				n++
			}
		default:
		}
	}
	return n
}
