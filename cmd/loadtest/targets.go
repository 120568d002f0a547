package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Target adapts the load generator to one server's wire format. The
// scenarios only ever talk to a Target, so supporting another chat server
// means writing one more small adapter and registering it in targets.
type Target interface {
	// Name is the -target value and the label used in reports.
	Name() string
	// URL turns the -url base and -room into the address to dial.
	URL(base, room string) string
	// DialOptions says how a client with this uid connects (headers,
	// subprotocol). The caller fills in the HTTP client.
	DialOptions(uid string) *websocket.DialOptions
	// Encode wraps our payload text into the client message the server
	// expects.
	Encode(text []byte) []byte
	// Extract returns the chat text carried by one received line, or false
	// for lines that are not room messages (presence, errors, ...).
	Extract(line []byte) ([]byte, bool)
	// MaxPayload is the largest payload text the server accepts without
	// closing the connection, or 0 for "no limit we know of".
	MaxPayload() int
}

// targets lists every adapter by its -target name.
var targets = map[string]Target{
	"switchboard-text": switchboardText{},
	"switchboard-json": switchboardJSON{},
	"gorilla":          gorillaChat{},
	"centrifugo":       centrifugo{},
}

// targetNames returns the registered adapter names, sorted, for usage text.
func targetNames() []string {
	names := make([]string, 0, len(targets))
	for n := range targets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// switchboardURL appends the room to the /ws path, as PROTOCOL.md
// (Connecting) expects.
func switchboardURL(base, room string) string {
	return strings.TrimRight(base, "/") + "/" + room
}

// switchboardText speaks switchboard's text mode: every line we send is a
// room message and comes back as "[UID: <uid>]: <text>". With tokens (token
// mode) a uid is proved by a bearer token instead of the uid header.
type switchboardText struct{ tokens *bearerTokens }

func (switchboardText) Name() string                 { return "switchboard-text" }
func (switchboardText) URL(base, room string) string { return switchboardURL(base, room) }
func (switchboardText) MaxPayload() int              { return 65536 }
func (switchboardText) Encode(text []byte) []byte    { return text }

func (t switchboardText) DialOptions(uid string) *websocket.DialOptions {
	return &websocket.DialOptions{
		HTTPHeader:      t.tokens.identify(uid),
		CompressionMode: websocket.CompressionDisabled,
	}
}

func (t switchboardText) withTokens(b *bearerTokens) Target { t.tokens = b; return t }
func (t switchboardText) mintTokens(uids []string) error    { return t.tokens.prepare(uids) }

var (
	textRoomPrefix = []byte("[UID: ")
	textRoomSep    = []byte("]: ")
)

func (switchboardText) Extract(line []byte) ([]byte, bool) {
	rest, ok := bytes.CutPrefix(line, textRoomPrefix)
	if !ok {
		return nil, false // server lines, direct messages
	}
	_, text, ok := bytes.Cut(rest, textRoomSep)
	return text, ok
}

// jsonSubprotocol selects switchboard's JSON mode.
const jsonSubprotocol = "switchboard.v1.json"

// switchboardJSON speaks switchboard's JSON mode; tokens as in
// switchboardText.
type switchboardJSON struct{ tokens *bearerTokens }

func (switchboardJSON) Name() string                 { return "switchboard-json" }
func (switchboardJSON) URL(base, room string) string { return switchboardURL(base, room) }
func (switchboardJSON) MaxPayload() int              { return 60000 } // room for the JSON envelope

func (t switchboardJSON) DialOptions(uid string) *websocket.DialOptions {
	return &websocket.DialOptions{
		HTTPHeader:      t.tokens.identify(uid),
		Subprotocols:    []string{jsonSubprotocol},
		CompressionMode: websocket.CompressionDisabled,
	}
}

func (t switchboardJSON) withTokens(b *bearerTokens) Target { t.tokens = b; return t }
func (t switchboardJSON) mintTokens(uids []string) error    { return t.tokens.prepare(uids) }

func (switchboardJSON) Encode(text []byte) []byte {
	// Our payload is plain ASCII without quotes or backslashes (see
	// encodePayload), so it needs no escaping.
	out := make([]byte, 0, len(text)+32)
	out = append(out, `{"type":"message","text":"`...)
	out = append(out, text...)
	return append(out, `"}`...)
}

var (
	jsonMessagePrefix = []byte(`{"type":"message",`)
	jsonTextKey       = []byte(`"text":"`)
)

// Extract has a fast path for the compact form the server writes (type
// first, no escapes in our text), because a busy receiver parses hundreds
// of thousands of lines per second; anything else goes through
// encoding/json so a differently ordered object is still understood.
func (switchboardJSON) Extract(line []byte) ([]byte, bool) {
	if bytes.HasPrefix(line, jsonMessagePrefix) {
		if _, after, ok := bytes.Cut(line, jsonTextKey); ok {
			if end := bytes.IndexByte(after, '"'); end >= 0 && bytes.IndexByte(after[:end], '\\') < 0 {
				return after[:end], true
			}
		}
	}
	if len(line) == 0 || line[0] != '{' {
		return nil, false
	}
	var ev struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(line, &ev); err != nil || ev.Type != "message" {
		return nil, false
	}
	return []byte(ev.Text), true
}

// gorillaChat speaks the gorilla/websocket chat example: one /ws endpoint,
// no identity, every text message broadcast verbatim to every client.
type gorillaChat struct{}

func (gorillaChat) Name() string                    { return "gorilla" }
func (gorillaChat) URL(base, _ string) string       { return base }
func (gorillaChat) MaxPayload() int                 { return 512 } // its read limit
func (gorillaChat) Encode(text []byte) []byte       { return text }
func (gorillaChat) Extract(l []byte) ([]byte, bool) { return l, true }

func (gorillaChat) DialOptions(string) *websocket.DialOptions {
	return &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled}
}

// sessionTarget is a Target whose server wants more than the WebSocket
// handshake. join runs on every new connection before its reader starts
// (log in, subscribe) and fails the dial if the server refuses; answer
// returns what the client must send back for one received line (a pong to
// an application-level ping), or nil.
type sessionTarget interface {
	join(ctx context.Context, conn *websocket.Conn) error
	answer(line []byte) []byte
}

// centrifugoChannel is the channel every centrifugo connection joins (the
// -room value does not apply: Centrifugo has no room in its URL).
const centrifugoChannel = "bench"

// centrifugoCommandIDs numbers the publish commands of every connection.
// The server only echoes the id in its reply, so ids need not be unique per
// connection, only non-zero: a command without one is taken for a pong
// (centrifuge client.go isPong) and anything else id-less is a bad request.
// 1 and 2 are the connect and subscribe of join.
var centrifugoCommandIDs atomic.Uint64

func init() { centrifugoCommandIDs.Store(2) }

// centrifugo speaks Centrifugo's JSON client protocol (v6; the JSON shapes
// of github.com/centrifugal/protocol's client.proto): the default protocol
// of /connection/websocket when no "centrifuge-protobuf" subprotocol is
// asked for. join sends {"id":1,"connect":{}} and then
// {"id":2,"subscribe":{"channel":"bench"}} and waits for each reply; our
// text goes out as {"id":N,"publish":{"channel":"bench","data":{"text":...}}}
// and comes back to every subscriber, the publisher included, as
// {"push":{"channel":"bench","pub":{"data":{"text":...},...}}}. The server
// batches several replies and pushes per frame, one per line, and sends an
// empty object {} as its ping, which must be answered with {} within its
// pong timeout (8 s by default) or it disconnects.
type centrifugo struct{}

func (centrifugo) Name() string              { return "centrifugo" }
func (centrifugo) URL(base, _ string) string { return base }

// MaxPayload leaves room for the publish envelope below Centrifugo's
// default websocket message_size_limit of 65536 bytes.
func (centrifugo) MaxPayload() int { return 65000 }

func (centrifugo) DialOptions(string) *websocket.DialOptions {
	return &websocket.DialOptions{CompressionMode: websocket.CompressionDisabled}
}

func (centrifugo) Encode(text []byte) []byte {
	// Our payload needs no JSON escaping (see encodePayload).
	out := make([]byte, 0, len(text)+96)
	out = append(out, `{"id":`...)
	out = strconv.AppendUint(out, centrifugoCommandIDs.Add(1), 10)
	out = append(out, `,"publish":{"channel":"`+centrifugoChannel+`","data":{"text":"`...)
	out = append(out, text...)
	return append(out, `"}}}`...)
}

var (
	centrifugoPushPrefix = []byte(`{"push":`)
	centrifugoDataText   = []byte(`"data":{"text":"`)
	centrifugoPing       = []byte(`{}`)
)

// centrifugoPush is the part of a server message Extract looks at.
type centrifugoPush struct {
	Push *struct {
		Channel string `json:"channel"`
		Pub     *struct {
			Data json.RawMessage `json:"data"`
		} `json:"pub"`
	} `json:"push"`
}

// Extract has a fast path for the compact form the server writes (the
// publication data is passed through byte for byte, so our {"text":...}
// keeps its form); anything else goes through encoding/json.
func (centrifugo) Extract(line []byte) ([]byte, bool) {
	if !bytes.HasPrefix(line, centrifugoPushPrefix) {
		return nil, false // replies, pings, errors
	}
	if _, after, ok := bytes.Cut(line, centrifugoDataText); ok {
		if end := bytes.IndexByte(after, '"'); end >= 0 && bytes.IndexByte(after[:end], '\\') < 0 {
			return after[:end], true
		}
	}
	var m centrifugoPush
	if err := json.Unmarshal(line, &m); err != nil || m.Push == nil || m.Push.Pub == nil {
		return nil, false // join/leave/unsubscribe pushes
	}
	var data struct {
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Push.Pub.Data, &data); err != nil {
		return nil, false
	}
	return []byte(data.Text), true
}

func (centrifugo) answer(line []byte) []byte {
	if bytes.Equal(bytes.TrimSpace(line), centrifugoPing) {
		return centrifugoPing
	}
	return nil
}

// centrifugoReply is a command reply: its id and, if refused, the error.
type centrifugoReply struct {
	ID    uint64 `json:"id"`
	Error *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func (c centrifugo) join(ctx context.Context, conn *websocket.Conn) error {
	steps := []struct {
		id  uint64
		cmd string
	}{
		{1, `{"id":1,"connect":{}}`},
		{2, `{"id":2,"subscribe":{"channel":"` + centrifugoChannel + `"}}`},
	}
	for _, st := range steps {
		if err := conn.Write(ctx, websocket.MessageText, []byte(st.cmd)); err != nil {
			return fmt.Errorf("centrifugo: send %s: %w", st.cmd, err)
		}
		if err := c.awaitReply(ctx, conn, st.id); err != nil {
			return err
		}
	}
	return nil
}

// awaitReply reads until the reply to command id, answering pings on the
// way. Anything else before it (a push) is dropped: nothing is published
// to the channel before every connection has joined.
func (c centrifugo) awaitReply(ctx context.Context, conn *websocket.Conn, id uint64) error {
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			return fmt.Errorf("centrifugo: awaiting reply %d: %w", id, err)
		}
		for len(msg) > 0 {
			var line []byte
			line, msg, _ = bytes.Cut(msg, []byte{'\n'})
			if a := c.answer(line); a != nil {
				if err := conn.Write(ctx, websocket.MessageText, a); err != nil {
					return fmt.Errorf("centrifugo: pong: %w", err)
				}
				continue
			}
			var r centrifugoReply
			if json.Unmarshal(line, &r) != nil || r.ID != id {
				continue
			}
			if r.Error != nil {
				return fmt.Errorf("centrifugo: command %d refused: %d %s", id, r.Error.Code, r.Error.Message)
			}
			return nil
		}
	}
}

// answerTimeout bounds one reply written by a reader (a pong).
const answerTimeout = 5 * time.Second

// errNoAnswer marks a reply a reader could not write.
var errNoAnswer = errors.New("answer to server")

// Stamp is what every load payload carries: who sent it, its per-sender
// sequence number (from 1; 0 marks warm-up messages) and when it was meant
// to be sent.
type Stamp struct {
	Sender   int
	Seq      uint64
	SentNano int64
}

// payloadMagic starts every payload so foreign chat text is skipped quickly.
const payloadMagic = "LT"

// encodePayload builds "LT <run> <sender> <seq> <sent-unix-nanos>" padded
// with '.' to size bytes (never cut: a size below the header is a minimum).
// The run token keeps messages of another run or ladder step apart; only
// ASCII letters, digits, spaces and dots are used so no target needs
// escaping.
func encodePayload(run string, s Stamp, size int) []byte {
	buf := make([]byte, 0, max(size, 64))
	buf = append(buf, payloadMagic...)
	buf = append(buf, ' ')
	buf = append(buf, run...)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, int64(s.Sender), 10)
	buf = append(buf, ' ')
	buf = strconv.AppendUint(buf, s.Seq, 10)
	buf = append(buf, ' ')
	buf = strconv.AppendInt(buf, s.SentNano, 10)
	if len(buf) < size {
		buf = append(buf, ' ')
		for len(buf) < size {
			buf = append(buf, '.')
		}
	}
	return buf
}

// decodePayload is the inverse of encodePayload; it reports false for text
// that is not one of this run's payloads.
func decodePayload(run string, text []byte) (Stamp, bool) {
	rest, ok := bytes.CutPrefix(text, []byte(payloadMagic+" "))
	if !ok {
		return Stamp{}, false
	}
	tok, rest, _ := bytes.Cut(rest, []byte{' '})
	if string(tok) != run {
		return Stamp{}, false
	}
	var nums [3]uint64
	for i := range nums {
		var field []byte
		field, rest, _ = bytes.Cut(rest, []byte{' '})
		n, err := strconv.ParseUint(string(field), 10, 64)
		if err != nil {
			return Stamp{}, false
		}
		nums[i] = n
	}
	return Stamp{Sender: int(nums[0]), Seq: nums[1], SentNano: int64(nums[2])}, true
}

// parseMessage splits one received WebSocket text message into lines (a
// server may batch several events with "\n") and calls fn for every line
// that carries one of this run's payloads.
func parseMessage(t Target, run string, msg []byte, fn func(Stamp)) {
	for len(msg) > 0 {
		line, rest, _ := bytes.Cut(msg, []byte{'\n'})
		msg = rest
		line = bytes.TrimSuffix(line, []byte{'\r'})
		text, ok := t.Extract(line)
		if !ok {
			continue
		}
		if s, ok := decodePayload(run, text); ok {
			fn(s)
		}
	}
}

// checkPayloadSize refuses a payload the target would close us for.
func checkPayloadSize(t Target, size int) error {
	if limit := t.MaxPayload(); limit > 0 && size > limit {
		return fmt.Errorf("%s accepts at most %d bytes per message", t.Name(), limit)
	}
	return nil
}
