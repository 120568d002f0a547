package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"

	"github.com/coder/websocket"
)

// wsTransport is a WebSocket session's connection: coder/websocket's Conn
// over our heldWriter, which turns a whole batch into one system call.
type wsTransport struct {
	conn *websocket.Conn
	out  *heldWriter // under conn
}

// read reads one message, refusing one over the size limit without reading
// all of it. Closing the connection ends a read in progress.
func (t *wsTransport) read(limit int64) (websocket.MessageType, []byte, error) {
	kind, r, err := t.conn.Reader(context.Background())
	if err != nil {
		return 0, nil, err
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return 0, nil, err
	}
	if int64(len(data)) > limit {
		return 0, nil, errMessageTooBig
	}
	return kind, data, nil
}

// ping sends a ping and waits for its pong until ctx ends.
func (t *wsTransport) ping(ctx context.Context) error { return t.conn.Ping(ctx) }

// close sends a close frame with status and waits (briefly) for the
// client's, or drops the connection at once for code 0.
func (t *wsTransport) close(status closeStatus) {
	if status.code == 0 {
		_ = t.conn.CloseNow()
		return
	}
	_ = t.conn.Close(status.code, status.reason)
}

// batchBuffers recycles the buffers that join several text events into one
// message, so an idle session holds none.
var batchBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxBatchBytes caps a message of joined events, so that clients with a
// modest read limit (coder/websocket's default is 32 KiB) can take it. The
// cap costs no system calls: a whole flush is one write (heldWriter).
const maxBatchBytes = 16 << 10

// writeFrames renders frames as messages into the held buffer and sends them
// with one system call at release.
func (t *wsTransport) writeFrames(frames []outboundFrame) error {
	t.out.hold()
	var err error
	for start := 0; start < len(frames) && err == nil; {
		end := messageEnd(frames, start)
		err = t.write(frames[start:end])
		start = end
	}
	if releaseErr := t.out.release(); err == nil {
		err = releaseErr
	}
	return err
}

// messageEnd says where the message that starts at frames[start] ends: a
// binary frame alone, or a run of text events up to maxBatchBytes.
func messageEnd(frames []outboundFrame, start int) int {
	end := start + 1
	if frames[start].binary {
		return end
	}
	size := len(frames[start].data)
	for end < len(frames) && !frames[end].binary && size+1+len(frames[end].data) <= maxBatchBytes {
		size += 1 + len(frames[end].data)
		end++
	}
	return end
}

// write renders frames as one WebSocket message. It goes into the held
// buffer (see heldWriter); the socket write and its timeout come at release.
func (t *wsTransport) write(frames []outboundFrame) error {
	ctx := context.Background()
	if len(frames) == 1 {
		kind := websocket.MessageText
		if frames[0].binary {
			kind = websocket.MessageBinary
		}
		return t.conn.Write(ctx, kind, frames[0].data)
	}
	buf := batchBuffers.Get().(*bytes.Buffer)
	defer batchBuffers.Put(buf)
	buf.Reset()
	for i, f := range frames {
		if i > 0 {
			buf.WriteByte('\n')
		}
		buf.Write(f.data)
	}
	if err := t.conn.Write(ctx, websocket.MessageText, buf.Bytes()); err != nil {
		return fmt.Errorf("write batch of %d: %w", len(frames), err)
	}
	return nil
}
