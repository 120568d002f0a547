package main

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
)

// Per-connection buffer sizes. net/http hands a hijacked connection over
// with 4 KiB read and write buffers, which coder/websocket keeps for the
// connection's whole life; for chat-sized messages they mostly sit empty, and
// on a server holding many idle connections they are most of the heap. A
// larger message or batch simply takes more than one system call.
const (
	connReadBufferSize  = 1024
	connWriteBufferSize = 1024
)

// smallBufferWriter is the ResponseWriter handed to websocket.Accept so that
// the hijacked connection gets our smaller buffers instead of net/http's.
type smallBufferWriter struct {
	http.ResponseWriter
}

// Hijack takes the connection from net/http and swaps its buffers for
// smaller ones, keeping any bytes the client already sent.
func (w smallBufferWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	pending := brw.Reader.Buffered()
	if pending > connReadBufferSize {
		return conn, brw, nil // rare: keep net/http's buffer rather than lose bytes
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
			return conn, brw, nil
		}
	}
	return conn, bufio.NewReadWriter(reader, bufio.NewWriterSize(conn, connWriteBufferSize)), nil
}
