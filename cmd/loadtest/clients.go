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
	target Target
	// urls are the receivers' and idle connections' endpoints, room
	// included; senderURLs are the fanout senders' (the same list unless
	// -sender-url was given). Several entries spread connections over the
	// nodes of a cluster.
	urls       []string
	senderURLs []string
	sources    []*http.Client // one per source address; connection i uses sources[i%len]
	probe      serverProbe    // server CPU/RSS readings (-pid)
	dialConc   int            // handshakes in flight at most
	// compression makes every connection offer permessage-deflate
	// (-compression), as browsers do.
	compression bool
	progress    *progressSink // where live progress lines go; nil for none
}

// sourceClients builds one HTTP client per source address 127.0.0.1 ..
// 127.0.0.n. The dialer binds the source address before connecting, so
// the kernel picks the port at bind time, where a port in use towards any
// server is taken: each source address has one ephemeral port range
// (~28,000 here) for all servers together, however many nodes are loaded.
// Spreading connections over n sources lets one run open far more.
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

// dial opens connection number index (which picks its source address) as
// spec says and checks that the server agreed to the target's subprotocol.
func (e *runEnv) dial(ctx context.Context, index int, spec dialSpec) (*websocket.Conn, error) {
	opts := e.target.DialOptions(spec.uid)
	opts.HTTPClient = e.sources[index%len(e.sources)]
	if e.compression {
		// Offer context takeover, the most a client can; the server
		// answers with what it does.
		opts.CompressionMode = websocket.CompressionContextTakeover
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, spec.url, opts)
	if err != nil {
		return nil, fmt.Errorf("dial %s as %q: %w", spec.url, spec.uid, err)
	}
	if len(opts.Subprotocols) > 0 && conn.Subprotocol() != opts.Subprotocols[0] {
		conn.CloseNow()
		return nil, fmt.Errorf("dial %s: server chose subprotocol %q, want %q", spec.url, conn.Subprotocol(), opts.Subprotocols[0])
	}
	// Batched server messages can be large; our own limit must never be
	// the reason a connection drops.
	conn.SetReadLimit(-1)
	if st, ok := e.target.(sessionTarget); ok {
		if err := st.join(dctx, conn); err != nil {
			conn.CloseNow()
			return nil, fmt.Errorf("join %s as %q: %w", spec.url, spec.uid, err)
		}
	}
	return conn, nil
}

// readerFor is the handler of connection conn: handle itself, or, for a
// target that answers server messages, handle behind answering.
func (e *runEnv) readerFor(conn *websocket.Conn, handle messageHandler) messageHandler {
	if st, ok := e.target.(sessionTarget); ok {
		return answering(conn, st, handle)
	}
	return handle
}

// answering reads every text message whole, writes back what st answers
// to each of its lines (pongs; the connection's writes are safe to make
// beside a sender's), and hands the message on to handle. One buffer is
// reused for the connection's life.
func answering(conn *websocket.Conn, st sessionTarget, handle messageHandler) messageHandler {
	var buf bytes.Buffer
	var rd bytes.Reader
	return func(typ websocket.MessageType, r io.Reader) error {
		if typ != websocket.MessageText {
			return handle(typ, r)
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return err
		}
		for msg := buf.Bytes(); len(msg) > 0; {
			var line []byte
			line, msg, _ = bytes.Cut(msg, []byte{'\n'})
			if a := st.answer(line); a != nil {
				ctx, cancel := context.WithTimeout(context.Background(), answerTimeout)
				err := conn.Write(ctx, websocket.MessageText, a)
				cancel()
				if err != nil {
					return fmt.Errorf("%w: %w", errNoAnswer, err)
				}
			}
		}
		rd.Reset(buf.Bytes())
		return handle(typ, &rd)
	}
}

// dialResult summarises one dialMany call.
type dialResult struct {
	conns    []*websocket.Conn // nil where the dial failed
	clients  []*client         // their readers, nil where the dial failed
	opened   int
	failed   int
	firstErr error
	elapsed  time.Duration
}

// dialMany opens one connection per spec, at most e.dialConc handshakes at
// a time, so the server sees a steady handshake stream rather than a
// thundering herd. firstIndex is the global number of specs[0] (it picks
// source addresses). Each connection's reader, reader(i) for specs[i],
// starts as soon as it is open: a dial phase can outlast the server's ping
// interval plus pong timeout (100,000 connections take over a minute), and
// a connection nobody reads answers no ping and is dropped. opened is
// bumped as each dial succeeds, for progress lines. It returns when every
// dial has finished.
//
// In token mode the target's tokens are minted first, before the clock
// starts: elapsed (and so handshakes/s) times handshakes, not our HMACs.
func (e *runEnv) dialMany(ctx context.Context, firstIndex int, specs []dialSpec, reader func(i int) messageHandler, opened *atomic.Int64) dialResult {
	res := dialResult{conns: make([]*websocket.Conn, len(specs)), clients: make([]*client, len(specs))}
	if m, ok := e.target.(tokenMinter); ok {
		uids := make([]string, len(specs))
		for i, s := range specs {
			uids[i] = s.uid
		}
		if err := m.mintTokens(uids); err != nil {
			res.failed, res.firstErr = len(specs), fmt.Errorf("mint tokens: %w", err)
			return res
		}
	}
	errs := make([]error, len(specs))
	work := make(chan int)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < min(e.dialConc, len(specs)); w++ {
		wg.Add(1)
		go func() { // worker: ends when work is closed
			defer wg.Done()
			for i := range work {
				res.conns[i], errs[i] = e.dial(ctx, firstIndex+i, specs[i])
				if errs[i] != nil {
					continue
				}
				res.clients[i] = startReader(res.conns[i], e.readerFor(res.conns[i], reader(i)))
				if opened != nil {
					opened.Add(1)
				}
			}
		}()
	}
	for i := range specs {
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

// messageHandler consumes one received message from r (to its end).
type messageHandler func(typ websocket.MessageType, r io.Reader) error

// startReader starts the reader goroutine of conn, which hands every
// message to handle; the goroutine ends when the connection closes, by us
// (close) or by the server (a drop).
func startReader(conn *websocket.Conn, handle messageHandler) *client {
	c := &client{conn: conn, done: make(chan struct{})}
	go c.readLoop(handle)
	return c
}

func (c *client) readLoop(handle messageHandler) {
	defer close(c.done)
	for {
		typ, r, err := c.conn.Reader(context.Background())
		if err == nil {
			err = handle(typ, r)
		}
		if err != nil {
			if !c.closing.Load() {
				c.dropErr = err
			}
			return
		}
	}
}

// discard reads a message to its end and forgets it.
func discard(_ websocket.MessageType, r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}

// bufferText hands every whole text message to onMessage through one
// buffer reused for the connection's life; nil discards everything.
func bufferText(onMessage func([]byte)) messageHandler {
	if onMessage == nil {
		return discard
	}
	var buf bytes.Buffer
	return func(typ websocket.MessageType, r io.Reader) error {
		if typ != websocket.MessageText {
			return discard(typ, r)
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return err
		}
		onMessage(buf.Bytes())
		return nil
	}
}

// ended reports whether the reader has returned (closed or dropped).
func (c *client) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
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

// dropReason is why the first dropped client in clients ended, or "".
// Only meaningful after their readers have returned.
func dropReason(clients []*client) string {
	for _, c := range clients {
		if c != nil && c.dropped() {
			return c.dropErr.Error()
		}
	}
	return ""
}

// liveDrops counts, without closing anything, the clients whose reader has
// already ended on its own.
func liveDrops(clients []*client) int {
	n := 0
	for _, c := range clients {
		if c != nil && c.ended() && c.dropped() {
			n++
		}
	}
	return n
}
