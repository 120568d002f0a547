package main

import (
	"context"

	"github.com/coder/websocket"
)

// transport is the one connection a session serves: a WebSocket
// (transport_ws.go) or a Server-Sent Events stream (transport_sse.go).
// The session loop, the hub and the queue never ask which one it is.
type transport interface {
	// read returns the client's next message, refusing one over limit
	// bytes with errMessageTooBig. It is called by the session's reader
	// goroutine only, and returns an error once the connection has ended
	// or close was called. A stream that cannot send never returns a
	// message.
	read(limit int64) (websocket.MessageType, []byte, error)
	// writeFrames sends a drained batch, in one system call where the
	// transport can, within the write timeout.
	writeFrames(frames []outboundFrame) error
	// ping checks that the client is still there: a WebSocket ping that
	// must be answered by a pong before ctx ends, or a comment line on a
	// stream. It may run beside writeFrames.
	ping(ctx context.Context) error
	// close ends the connection with status (code 0: at once, without a
	// word to the client).
	close(status closeStatus)
}
