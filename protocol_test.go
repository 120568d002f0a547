package main

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

var textLineCases = []struct {
	line string
	want clientRequest
	err  string
}{
	{"hello", clientRequest{kind: requestMessage, text: "hello"}, ""},
	{" /not a command", clientRequest{kind: requestMessage, text: " /not a command"}, ""},
	{"/dm 2 psst", clientRequest{kind: requestDirect, to: "2", text: "psst"}, ""},
	{"/dm 2 two  spaces ", clientRequest{kind: requestDirect, to: "2", text: "two  spaces "}, ""},
	{"/who", clientRequest{kind: requestWho}, ""},
	{"/who is there", clientRequest{kind: requestWho}, ""},
	{"/dm", clientRequest{}, "usage: /dm <uid> <text>"},
	{"/dm 2", clientRequest{}, "usage: /dm <uid> <text>"},
	{"/dm 2 ", clientRequest{}, "usage: /dm <uid> <text>"},
	{"/dm  2 x", clientRequest{}, "usage: /dm <uid> <text>"},
	{"/", clientRequest{}, "unknown command /"},
	{"/foo bar", clientRequest{}, "unknown command /foo"},
	{"/DM 2 x", clientRequest{}, "unknown command /DM"},
}

func TestParseTextLine(t *testing.T) {
	for _, tc := range textLineCases {
		got, err := parseTextLine(tc.line)
		if tc.err != "" {
			if err == nil || err.message != tc.err {
				t.Errorf("%q: error %v, want %q", tc.line, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: got %+v %v, want %+v", tc.line, got, err, tc.want)
		}
	}
}

func TestSplitLines(t *testing.T) {
	var got []string
	splitLines("a\r\n\nb\n\r\nc\r", func(line string) { got = append(got, line) })
	if strings.Join(got, "|") != "a|b|c" {
		t.Fatalf("lines %q", got)
	}
}

var jsonRequestCases = []struct {
	in   string
	want clientRequest
	code string
}{
	{`{"type":"message","text":"hi"}`, clientRequest{kind: requestMessage, text: "hi"}, ""},
	{`{"type":"direct","to":"2","text":"psst"}`, clientRequest{kind: requestDirect, to: "2", text: "psst"}, ""},
	{`{"type":"who"}`, clientRequest{kind: requestWho}, ""},
	{`{"type":"who","extra":1}`, clientRequest{kind: requestWho}, ""},
	{`{"type":"message"}`, clientRequest{}, codeBadRequest},
	{`{"type":"direct","text":"x"}`, clientRequest{}, codeBadRequest},
	{`{"type":7}`, clientRequest{}, codeBadRequest},
	{`{}`, clientRequest{}, codeBadRequest},
	{`null`, clientRequest{}, codeBadRequest},
	{`{"type":"shout","text":"x"}`, clientRequest{}, codeUnknownType},
	{`{"type":"message","text":"hi"`, clientRequest{}, codeBadRequest},
}

func TestParseJSONRequest(t *testing.T) {
	for _, tc := range jsonRequestCases {
		got, err := parseJSONRequest([]byte(tc.in))
		if tc.code != "" {
			if err == nil || err.code != tc.code || err.message == "" {
				t.Errorf("%s: error %+v, want code %s", tc.in, err, tc.code)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v %v, want %+v", tc.in, got, err, tc.want)
		}
	}
}

// Every server event, in every mode, is exactly one frame: text events
// contain no stray newline beyond their own lines, JSON events none at all.
func TestEncodedEventsKeepFraming(t *testing.T) {
	events := []serverEvent{
		&messageEvent{Type: "message", Room: "r", From: "1", Text: "a\nb\r\nc"},
		&publishEvent{Type: "publish", Room: "r", Text: "x\ny"},
		&publishEvent{Type: "publish", Room: "r", Data: json.RawMessage(`[1,2]`)},
		&directEvent{Type: "direct", From: "1", To: "2", Text: "p\nq", echo: true},
	}
	for _, ev := range events {
		js := encodeEvent(ev, modeJSON)
		if strings.Contains(string(js), "\n") || !json.Valid(js) {
			t.Errorf("%T: JSON form %q breaks framing", ev, js)
		}
		for _, line := range strings.Split(string(encodeEvent(ev, modeText)), "\n") {
			if !strings.HasPrefix(line, "[") || strings.HasSuffix(line, "\r") {
				t.Errorf("%T: text line %q lacks its prefix", ev, line)
			}
		}
	}
}

func FuzzParseTextLine(f *testing.F) {
	for _, tc := range textLineCases {
		f.Add(tc.line)
	}
	f.Fuzz(func(t *testing.T, line string) {
		req, err := parseTextLine(line)
		if err != nil {
			if err.message == "" {
				t.Fatalf("%q: an error without a message", line)
			}
			return
		}
		switch req.kind {
		case requestMessage:
			if req.text != line {
				t.Fatalf("%q: message text changed to %q", line, req.text)
			}
		case requestDirect:
			if req.to == "" || req.text == "" || strings.Contains(req.to, " ") {
				t.Fatalf("%q: bad direct %+v", line, req)
			}
		case requestWho:
		default:
			t.Fatalf("%q: no kind", line)
		}
		// Whatever was parsed must render as text lines without panicking.
		ev := &messageEvent{Type: "message", From: "u", Text: req.text}
		if out := encodeEvent(ev, modeText); utf8.ValidString(line) && !utf8.Valid(out) {
			t.Fatalf("%q: valid UTF-8 in, invalid out", line)
		}
	})
}

func FuzzParseJSONRequest(f *testing.F) {
	for _, tc := range jsonRequestCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := parseJSONRequest(data)
		if err != nil {
			if err.message == "" || (err.code != codeBadRequest && err.code != codeUnknownType) {
				t.Fatalf("%q: error %+v", data, err)
			}
			return
		}
		if req.kind == 0 || (req.kind != requestWho && req.text == "") {
			t.Fatalf("%q: accepted an incomplete request %+v", data, req)
		}
		// The text travels back out in JSON; it must still encode.
		encodeEvent(&messageEvent{Type: "message", Text: req.text}, modeJSON)
	})
}
