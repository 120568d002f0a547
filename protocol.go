package main

// This file is the wire format of PROTOCOL.md: what a client may say (text
// lines or JSON objects) and how every server event looks in each mode.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// jsonSubprotocol selects JSON mode; a connection without it is in text mode.
const jsonSubprotocol = "switchboard.v1.json"

// clientMode is the format a session speaks. It indexes arrays, so text is 0.
type clientMode int

const (
	modeText clientMode = iota
	modeJSON
	modeCount
)

func (m clientMode) String() string {
	if m == modeJSON {
		return "json"
	}
	return "text"
}

// requestKind says what a client asked for.
type requestKind int

const (
	requestMessage requestKind = iota + 1
	requestDirect
	requestWho
	requestRefresh
	requestHistory
)

// clientRequest is one thing a client asked for, whichever mode it spoke.
type clientRequest struct {
	kind  requestKind
	to    string // requestDirect only
	text  string
	token string // requestRefresh only
	limit int    // requestHistory only; 0 = everything kept
}

// Error codes of JSON error objects.
const (
	codeNotOnline   = "not_online"
	codeBadRequest  = "bad_request"
	codeUnknownType = "unknown_type"
	codeUnavailable = "unavailable"
	codeBadToken    = "bad_token"
)

// requestError is a mistake of the client's. It is answered with an error
// line or object and the connection stays open.
type requestError struct {
	code    string
	message string
}

func (e *requestError) Error() string { return e.message }

// splitLines yields the non-empty lines of a text-mode client message; a line
// ends at "\n" or "\r\n".
func splitLines(msg string, yield func(line string)) {
	for msg != "" {
		line, rest, _ := strings.Cut(msg, "\n")
		msg = rest
		line = strings.TrimSuffix(line, "\r")
		if line != "" {
			yield(line)
		}
	}
}

// parseTextLine reads one line of text mode: a command when it starts with
// "/", a room message otherwise.
func parseTextLine(line string) (clientRequest, *requestError) {
	if !strings.HasPrefix(line, "/") {
		return clientRequest{kind: requestMessage, text: line}, nil
	}
	command, rest, _ := strings.Cut(line, " ")
	switch command {
	case "/dm":
		to, text, _ := strings.Cut(rest, " ")
		if to == "" || text == "" {
			return clientRequest{}, &requestError{codeBadRequest, "usage: /dm <uid> <text>"}
		}
		return clientRequest{kind: requestDirect, to: to, text: text}, nil
	case "/who":
		return clientRequest{kind: requestWho}, nil
	case "/history":
		limit, ok := parseLimit(strings.TrimSpace(rest), true)
		if !ok {
			return clientRequest{}, &requestError{codeBadRequest, "usage: /history [N]"}
		}
		return clientRequest{kind: requestHistory, limit: limit}, nil
	case "/refresh":
		// An empty token is the authenticator's to answer: "token is
		// missing" in token mode, "tokens are not enabled" outside it.
		return clientRequest{kind: requestRefresh, token: strings.TrimSpace(rest)}, nil
	}
	return clientRequest{}, &requestError{codeUnknownType, "unknown command " + command}
}

// jsonRequest is the shape of every JSON-mode client object. Pointers tell a
// missing field from an empty one.
type jsonRequest struct {
	Type  *string         `json:"type"`
	To    *string         `json:"to"`
	Text  *string         `json:"text"`
	Token *string         `json:"token"`
	Limit json.RawMessage `json:"limit"`
}

// parseJSONRequest reads one JSON-mode client message.
func parseJSONRequest(data []byte) (clientRequest, *requestError) {
	var in jsonRequest
	if err := json.Unmarshal(data, &in); err != nil {
		return clientRequest{}, &requestError{codeBadRequest, "invalid JSON: " + err.Error()}
	}
	if in.Type == nil {
		return clientRequest{}, &requestError{codeBadRequest, `"type" is missing`}
	}
	switch *in.Type {
	case "message":
		if in.Text == nil || *in.Text == "" {
			return clientRequest{}, &requestError{codeBadRequest, `"text" is missing or empty`}
		}
		return clientRequest{kind: requestMessage, text: *in.Text}, nil
	case "direct":
		if in.To == nil || *in.To == "" {
			return clientRequest{}, &requestError{codeBadRequest, `"to" is missing or empty`}
		}
		if in.Text == nil || *in.Text == "" {
			return clientRequest{}, &requestError{codeBadRequest, `"text" is missing or empty`}
		}
		return clientRequest{kind: requestDirect, to: *in.To, text: *in.Text}, nil
	case "who":
		return clientRequest{kind: requestWho}, nil
	case "history":
		limit, ok := parseLimit(string(in.Limit), true)
		if !ok {
			return clientRequest{}, &requestError{codeBadRequest, `"limit" must be a positive integer`}
		}
		return clientRequest{kind: requestHistory, limit: limit}, nil
	case "refresh":
		req := clientRequest{kind: requestRefresh}
		if in.Token != nil {
			req.token = *in.Token
		}
		return req, nil
	}
	return clientRequest{}, &requestError{codeUnknownType, fmt.Sprintf("unknown type %q", *in.Type)}
}

// parseLimit reads a history limit: a positive integer (digits only, as
// JSON or text gives it), or nothing at all when optional, which is 0:
// everything kept. Limits past any history's size are cut to it.
func parseLimit(s string, optional bool) (int, bool) {
	if s == "" || s == "null" {
		return 0, optional
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) {
		return maxHistorySize, true // digits, just many of them
	}
	if err != nil || n == 0 {
		return 0, false
	}
	return int(min(n, maxHistorySize)), true
}

// serverEvent is anything the server tells a client. Each event knows its
// text-mode lines; its JSON form is the struct itself.
type serverEvent interface {
	appendText(buf []byte) []byte
}

// encodeEvent renders an event for one mode. Broadcasts call it once per mode,
// not once per recipient.
func encodeEvent(ev serverEvent, mode clientMode) []byte {
	if mode == modeText {
		return ev.appendText(nil)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// People read these objects raw in wscat and Postman: keep "<3" as is
	// rather than "\u003c3".
	enc.SetEscapeHTML(false)
	if err := enc.Encode(ev); err != nil {
		// Every event is plain strings and numbers, and raw data is
		// compacted before it gets here; failing here is a bug.
		panic(fmt.Sprintf("encode %T: %v", ev, err))
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

// appendLines writes text as one line per line of it, each behind prefix, so
// a multi-line text never breaks the line framing of text mode.
func appendLines(buf []byte, prefix, text string) []byte {
	first := true
	for {
		line, rest, more := strings.Cut(text, "\n")
		if !first {
			buf = append(buf, '\n')
		}
		first = false
		buf = append(buf, prefix...)
		buf = append(buf, strings.TrimSuffix(line, "\r")...)
		if !more {
			return buf
		}
		text = rest
	}
}

type welcomeEvent struct {
	Type    string   `json:"type"`
	UID     string   `json:"uid"`
	Room    string   `json:"room"`
	Session string   `json:"session"`
	Online  []string `json:"online"`
	Expires string   `json:"expires,omitempty"` // token mode, when the token has exp
	// Recovered answers ?since= (History): whether every event after it
	// follows. Absent without since.
	Recovered *bool `json:"recovered,omitempty"`
}

func (e *welcomeEvent) appendText(buf []byte) []byte {
	return fmt.Appendf(buf, "[server]: welcome UID %s, room %s", e.UID, e.Room)
}

// presenceChange is a join or a leave; Type says which.
type presenceChange struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
	Room string `json:"room"`
}

func (e *presenceChange) appendText(buf []byte) []byte {
	return fmt.Appendf(buf, "[server]: UID %s %s %s", e.UID, e.Type, e.Room)
}

type messageEvent struct {
	Type string `json:"type"`
	Room string `json:"room"`
	From string `json:"from"`
	Text string `json:"text"`
	Seq  uint64 `json:"seq"`
	TS   string `json:"ts"`
}

func (e *messageEvent) appendText(buf []byte) []byte {
	return appendLines(buf, "[UID: "+e.From+"]: ", e.Text)
}

// directEvent is a DM; the recipient's copy and the sender's echo share the
// JSON form and differ in text mode.
type directEvent struct {
	Type string `json:"type"`
	From string `json:"from"`
	To   string `json:"to"`
	Text string `json:"text"`
	TS   string `json:"ts"`
	echo bool
}

func (e *directEvent) appendText(buf []byte) []byte {
	if e.echo {
		return appendLines(buf, "[DM to UID: "+e.To+"]: ", e.Text)
	}
	return appendLines(buf, "[DM from UID: "+e.From+"]: ", e.Text)
}

type presenceEvent struct {
	Type   string   `json:"type"`
	Room   string   `json:"room"`
	Online []string `json:"online"`
}

func (e *presenceEvent) appendText(buf []byte) []byte {
	return fmt.Appendf(buf, "[server]: online in %s: %s", e.Room, strings.Join(e.Online, ", "))
}

// publishEvent is a message from the HTTP API. It carries either Text or
// Data (compact JSON), never both.
type publishEvent struct {
	Type string          `json:"type"`
	Room string          `json:"room"`
	Text string          `json:"text,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
	Seq  uint64          `json:"seq"`
	TS   string          `json:"ts"`
}

func (e *publishEvent) appendText(buf []byte) []byte {
	if e.Data != nil {
		return append(append(buf, "[server]: "...), e.Data...)
	}
	return appendLines(buf, "[server]: ", e.Text)
}

// refreshedEvent answers a good refresh; Expires is empty when the new
// token has no exp.
type refreshedEvent struct {
	Type    string `json:"type"`
	Expires string `json:"expires,omitempty"`
}

func (e *refreshedEvent) appendText(buf []byte) []byte {
	if e.Expires == "" {
		return append(buf, "[server]: token refreshed, no expiry"...)
	}
	return append(append(buf, "[server]: token refreshed, expires "...), e.Expires...)
}

// historyHeader introduces a text-mode history answer; the kept events
// follow it as the lines they were first sent as.
type historyHeader struct {
	room  string
	count int
}

func (e *historyHeader) appendText(buf []byte) []byte {
	noun := "messages"
	if e.count == 1 {
		noun = "message"
	}
	return fmt.Appendf(buf, "[server]: history of %s: %d %s", e.room, e.count, noun)
}

// historyJSON is a JSON-mode history answer: the kept events' own JSON
// frames inside one object, written as is rather than re-encoded.
func historyJSON(room string, frames [][]byte) []byte {
	buf := make([]byte, 0, historySize(room, frames))
	buf = append(append(append(buf, `{"type":"history","room":"`...), room...), `",`...) // room names need no escaping
	return append(appendMessages(buf, frames), '}')
}

// appendMessages writes frames (JSON objects) as a "messages" array.
func appendMessages(buf []byte, frames [][]byte) []byte {
	buf = append(buf, `"messages":[`...)
	for i, f := range frames {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, f...)
	}
	return append(buf, ']')
}

// historySize is about what a history object of frames takes.
func historySize(room string, frames [][]byte) int {
	size := 64 + len(room)
	for _, f := range frames {
		size += len(f) + 1
	}
	return size
}

type errorEvent struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *errorEvent) appendText(buf []byte) []byte {
	return append(append(buf, "[server]: error: "...), e.Message...)
}

func newErrorEvent(err *requestError) *errorEvent {
	return &errorEvent{Type: "error", Code: err.code, Message: err.message}
}

func notOnline(uid string) *requestError {
	return &requestError{codeNotOnline, "UID " + uid + " is not online"}
}

// compactJSON checks raw is one JSON value and returns it without spaces, so
// text mode can show it on one line.
func compactJSON(raw []byte) (json.RawMessage, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// validName reports whether s is 1-64 characters of letters, digits and the
// given extra punctuation.
func validName(s, extra string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte(extra, c) >= 0:
		default:
			return false
		}
	}
	return true
}

func validUID(s string) bool  { return validName(s, "._-@") }
func validRoom(s string) bool { return validName(s, "._-") }
