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
	out *heldWriter
}

// Hijack takes the connection from net/http and swaps its buffers, keeping
// any bytes the client already sent.
func (w *smallBufferWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.out = &heldWriter{conn: conn}
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
	mu      sync.Mutex // serialises socket writes and guards held
	holding bool
	held    *[]byte // from heldBuffers while holding
}

var heldBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (h *heldWriter) Write(p []byte) (int, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.holding {
		*h.held = append(*h.held, p...)
		return len(p), nil
	}
	return h.conn.Write(p)
}

// hold starts gathering writes.
func (h *heldWriter) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holding = true
	h.held = heldBuffers.Get().(*[]byte)
}

// release writes what was gathered in one call, within timeout, and goes
// back to passing writes through.
func (h *heldWriter) release(timeout time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.holding = false
	held := h.held
	h.held = nil
	defer func() {
		*held = (*held)[:0]
		heldBuffers.Put(held)
	}()
	if len(*held) == 0 {
		return nil
	}
	if err := h.conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err := h.conn.Write(*held)
	if clearErr := h.conn.SetWriteDeadline(time.Time{}); err == nil {
		err = clearErr
	}
	return err
}
