package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// A connection's memory and its write cost pull apart: an idle connection
// should hold next to nothing, while a busy one should hand each batch to the
// kernel in a single system call, however large the batch (on this kind of
// server the system calls are most of the CPU time).
//
// net/http hands a hijacked connection over with 4 KiB read and write
// buffers, which coder/websocket keeps for the connection's whole life. We
// swap them on the way (smallBufferWriter): a 1 KiB read buffer, and a tiny
// write buffer in front of a heldWriter, which gathers a whole batch in a
// pooled buffer and writes it at once.
const (
	connReadBufferSize  = 1024
	connWriteBufferSize = 256 // frame headers and control frames fit
)

// smallBufferWriter is the ResponseWriter handed to websocket.Accept so that
// the hijacked connection gets our buffers instead of net/http's. After the
// upgrade, out is the connection's heldWriter.
type smallBufferWriter struct {
	http.ResponseWriter
	writeTimeout time.Duration // for the heldWriter's socket writes
	out          *heldWriter
}

// Hijack takes the connection from net/http and swaps its buffers, keeping
// any bytes the client already sent.
func (w *smallBufferWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.out = &heldWriter{conn: conn, timeout: w.writeTimeout}
	conn = heldConn{Conn: conn, out: w.out}
	writer := bufio.NewWriterSize(w.out, connWriteBufferSize)
	pending := brw.Reader.Buffered()
	if pending > connReadBufferSize {
		// Rare: keep net/http's read buffer rather than lose bytes.
		return conn, bufio.NewReadWriter(brw.Reader, writer), nil
	}
	var source io.Reader = conn
	if pending > 0 {
		early, _ := brw.Reader.Peek(pending)
		source = io.MultiReader(bytes.NewReader(bytes.Clone(early)), conn)
	}
	reader := bufio.NewReaderSize(source, connReadBufferSize)
	if pending > 0 {
		// Load the early bytes into the new buffer now, where the
		// WebSocket library looks for them; this reads no further.
		if _, err := reader.Peek(pending); err != nil {
			return conn, bufio.NewReadWriter(brw.Reader, writer), nil
		}
	}
	return conn, bufio.NewReadWriter(reader, writer), nil
}

// heldWriter sits between the WebSocket library's write buffer and the
// socket. While the session writes a batch (between hold and release) it
// keeps every byte in a pooled buffer and then writes them with one system
// call; the rest of the time (pongs, pings, close frames, written by other
// goroutines) it passes writes straight through.
type heldWriter struct {
	conn    net.Conn
	timeout time.Duration // bounds every socket write of a held batch
	mu      sync.Mutex    // serialises socket writes and guards held
	holding bool
	held    *[]byte // from heldBuffers while holding
}

const (
	// heldFlushBytes bounds what one session holds: past it the held
	// bytes go out at once, so a long backlog is not copied whole.
	heldFlushBytes = 64 << 10
	// heldPoolBytes: larger buffers are left to the garbage collector
	// rather than kept in the pool.
	heldPoolBytes = 2 * heldFlushBytes
	// closeFlushTimeout bounds sending held bytes (a close reply) when
	// the library closes the connection in the middle of a batch.
	closeFlushTimeout = time.Second
)

var heldBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (h *heldWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.holding {
		return h.conn.Write(p)
	}
	*h.held = append(*h.held, p...)
	if len(*h.held) >= heldFlushBytes {
		if err := h.writeHeld(h.timeout); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// writeHeld sends the held bytes within timeout and empties the buffer.
// The caller holds mu.
func (h *heldWriter) writeHeld(timeout time.Duration) error {
	if len(*h.held) == 0 {
		return nil
	}
	if err := h.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err := h.conn.Write(*h.held)
	*h.held = (*h.held)[:0]
	if clearErr := h.conn.SetWriteDeadline(time.Time{}); err == nil {
		err = clearErr
	}
	return err
}

// hold starts gathering writes.
func (h *heldWriter) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holding = true
	h.held = heldBuffers.Get().(*[]byte)
}

// release writes what was gathered in one call and goes back to passing
// writes through.
func (h *heldWriter) release() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	err := h.writeHeld(h.timeout)
	h.holding = false
	if cap(*h.held) <= heldPoolBytes {
		heldBuffers.Put(h.held)
	}
	h.held = nil
	return err
}

// flushBeforeClose sends what is held when the library closes the
// connection in the middle of a batch: typically its reply to the client's
// close frame, which must not be lost. It only tries the lock: a release
// stuck in a write must not keep a timed-out connection open.
func (h *heldWriter) flushBeforeClose() {
	if !h.mu.TryLock() {
		return
	}
	defer h.mu.Unlock()
	if h.holding {
		_ = h.writeHeld(closeFlushTimeout)
	}
}

// heldConn is the connection as the WebSocket library sees it: closing it
// first sends anything held.
type heldConn struct {
	net.Conn
	out *heldWriter
}

func (c heldConn) Close() error {
	c.out.flushBeforeClose()
	return c.Conn.Close()
}
