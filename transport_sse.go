package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// sseTransport is a listen-only session over Server-Sent Events: every
// event is the JSON mode's object, written as
//
//	event: <type>
//	id: <seq>          (when the event has one)
//	data: <the object>
//
// followed by a blank line. The session's end is a last "event: close"
// with the WebSocket close code and reason as data. The handler that owns
// the stream runs the session and returns when it ends.
type sseTransport struct {
	mu           sync.Mutex // one writer at a time: batches and pings
	w            http.ResponseWriter
	rc           *http.ResponseController
	writeTimeout time.Duration
	ended        bool // under mu: the last event is out, nothing follows

	gone   <-chan struct{} // the request's context: the client left
	closed chan struct{}   // closed by close
	once   sync.Once
}

// errStreamEnded is what read returns once the stream is over.
var errStreamEnded = errors.New("event stream ended")

func newSSETransport(w http.ResponseWriter, r *http.Request, writeTimeout time.Duration) *sseTransport {
	return &sseTransport{
		w: w, rc: http.NewResponseController(w), writeTimeout: writeTimeout,
		gone: r.Context().Done(), closed: make(chan struct{}),
	}
}

// read never returns a message: a stream cannot send. It returns when the
// client goes away or the session closes the stream.
func (t *sseTransport) read(int64) (websocket.MessageType, []byte, error) {
	select {
	case <-t.gone:
	case <-t.closed:
	}
	return 0, nil, errStreamEnded
}

// sseEventHead is what an event's header lines are made of, when they are
// read with encoding/json (see sseHead).
type sseEventHead struct {
	Type string      `json:"type"`
	Seq  json.Number `json:"seq"`
}

var (
	sseTypePrefix = []byte(`{"type":"`)
	sseSeqKey     = []byte(`,"seq":`)
)

// sseHead reads an encoded event's type and seq without decoding it: this
// runs for every event on every stream. Every event the server encodes
// starts with its type (the first field of each event), and the numbered
// ones (message, publish) carry seq at the top level after anything a user
// wrote (a publish's data comes before it, and text is escaped), so the
// last ,"seq": is theirs. An event of another shape is read with
// encoding/json.
func sseHead(event []byte) (typ, seq []byte) {
	rest, found := bytes.CutPrefix(event, sseTypePrefix)
	end := bytes.IndexByte(rest, '"')
	if !found || end <= 0 {
		var head sseEventHead
		if json.Unmarshal(event, &head) != nil {
			return nil, nil
		}
		return []byte(head.Type), []byte(head.Seq)
	}
	typ = rest[:end]
	if string(typ) != "message" && string(typ) != "publish" {
		return typ, nil
	}
	i := bytes.LastIndex(event, sseSeqKey)
	if i < 0 {
		return typ, nil
	}
	digits := event[i+len(sseSeqKey):]
	n := 0
	for n < len(digits) && digits[n] >= '0' && digits[n] <= '9' {
		n++
	}
	return typ, digits[:n]
}

// writeFrames writes the batch as events, in one write and one flush.
// Binary frames (relayed binary client messages) have no JSON form and
// are not sent on a stream.
func (t *sseTransport) writeFrames(frames []outboundFrame) error {
	buf := batchBuffers.Get().(*bytes.Buffer)
	defer batchBuffers.Put(buf)
	buf.Reset()
	for _, f := range frames {
		if !f.binary {
			appendSSEEvent(buf, f.data)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.send(buf.Bytes())
}

// appendSSEEvent writes one JSON event as an SSE event. The object is
// compact JSON, so it is one line: one data line carries it. Every event
// the server encodes has a type; one that could not be read would be
// skipped rather than end the stream.
func appendSSEEvent(b *bytes.Buffer, event []byte) {
	typ, seq := sseHead(event)
	if len(typ) == 0 {
		return
	}
	b.WriteString("event: ")
	b.Write(typ)
	b.WriteByte('\n')
	if len(seq) > 0 {
		b.WriteString("id: ")
		b.Write(seq)
		b.WriteByte('\n')
	}
	b.WriteString("data: ")
	b.Write(event)
	b.WriteString("\n\n")
}

// send writes data and flushes it within the write timeout; after the
// last event it writes nothing. The caller holds mu.
func (t *sseTransport) send(data []byte) error {
	if t.ended {
		return errStreamEnded
	}
	if len(data) == 0 {
		return nil
	}
	_ = t.rc.SetWriteDeadline(time.Now().Add(t.writeTimeout))
	defer t.rc.SetWriteDeadline(time.Time{})
	if _, err := t.w.Write(data); err != nil {
		return fmt.Errorf("sse write: %w", err)
	}
	if err := t.rc.Flush(); err != nil {
		return fmt.Errorf("sse flush: %w", err)
	}
	return nil
}

// ping writes a comment line, which EventSource ignores and which keeps
// proxies from closing a quiet stream.
func (t *sseTransport) ping(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.send(ssePing)
}

var ssePing = []byte(": ping\n\n")

// close ends the stream: with a status, after a last "event: close"
// carrying its code and reason.
func (t *sseTransport) close(status closeStatus) {
	t.once.Do(func() {
		t.mu.Lock()
		if status.code != 0 {
			reason, _ := json.Marshal(status.reason)
			last := fmt.Appendf(nil, "event: close\ndata: {\"code\":%d,\"reason\":%s}\n\n", int(status.code), reason)
			_ = t.send(last)
		}
		t.ended = true
		t.mu.Unlock()
		close(t.closed)
	})
}
