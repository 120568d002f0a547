package main

import (
	"encoding/json"
	"strings"
	"testing"
)

const testRun = "abcd1234"

// collect runs parseMessage and returns the stamps found.
func collect(t Target, msg string) []Stamp {
	var got []Stamp
	parseMessage(t, testRun, []byte(msg), func(s Stamp) { got = append(got, s) })
	return got
}

func TestPayloadRoundTripAndPadding(t *testing.T) {
	s := Stamp{Sender: 3, Seq: 42, SentNano: 1_700_000_000_123_456_789}
	p := encodePayload(testRun, s, 200)
	if len(p) != 200 {
		t.Fatalf("len = %d, want 200", len(p))
	}
	if strings.ContainsAny(string(p), "\"\\\n") {
		t.Fatalf("payload needs escaping: %q", p)
	}
	got, ok := decodePayload(testRun, p)
	if !ok || got != s {
		t.Fatalf("decode = %+v %v, want %+v", got, ok, s)
	}
	// A size below the header is a minimum, not a cut.
	short := encodePayload(testRun, s, 5)
	if got, ok := decodePayload(testRun, short); !ok || got != s {
		t.Fatalf("short payload %q decoded to %+v %v", short, got, ok)
	}
	if _, ok := decodePayload("otherrun", p); ok {
		t.Fatal("payload of another run accepted")
	}
	for _, bad := range []string{"", "hello", "LT abcd1234 x 1 2", "LT abcd1234 1 2"} {
		if _, ok := decodePayload(testRun, []byte(bad)); ok {
			t.Errorf("decodePayload(%q) accepted", bad)
		}
	}
}

func TestSwitchboardTextParse(t *testing.T) {
	tg := targets["switchboard-text"]
	p1 := string(encodePayload(testRun, Stamp{0, 1, 100}, 64))
	p2 := string(encodePayload(testRun, Stamp{1, 7, 200}, 64))
	if string(tg.Encode([]byte(p1))) != p1 {
		t.Fatal("text mode must send the payload as is")
	}
	// One batched server message: presence lines, our messages, a DM, a
	// foreign chat line and CRLF endings.
	msg := strings.Join([]string{
		"[server]: welcome UID r1, room bench",
		"[UID: s0]: " + p1 + "\r",
		"[server]: UID s1 joined bench",
		"[DM from UID: s1]: " + p2,
		"[UID: bob]: hello there",
		"[UID: s1]: " + p2,
		"[server]: UID s1 left bench",
		"",
	}, "\n")
	got := collect(tg, msg)
	want := []Stamp{{0, 1, 100}, {1, 7, 200}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if u := tg.URL("ws://127.0.0.1:5000/ws/", "bench"); u != "ws://127.0.0.1:5000/ws/bench" {
		t.Fatalf("URL = %q", u)
	}
	if h := tg.DialOptions("s0").HTTPHeader.Get("uid"); h != "s0" {
		t.Fatalf("uid header = %q", h)
	}
}

func TestSwitchboardJSONParse(t *testing.T) {
	tg := targets["switchboard-json"]
	p := encodePayload(testRun, Stamp{2, 9, 300}, 80)
	var out struct{ Type, Text string }
	if err := json.Unmarshal(tg.Encode(p), &out); err != nil || out.Type != "message" || out.Text != string(p) {
		t.Fatalf("Encode gave %s (%v)", tg.Encode(p), err)
	}
	msg := strings.Join([]string{
		`{"type":"welcome","uid":"r1","room":"bench","session":"x","online":["r1"]}`,
		`{"type":"message","room":"bench","from":"s2","text":"` + string(p) + `","seq":5,"ts":"2026-01-01T00:00:00Z"}`,
		`{"type":"joined","uid":"s3","room":"bench"}`,
		// Same event with another key order: handled by the slow path.
		`{"room":"bench","type":"message","text":"` + string(encodePayload(testRun, Stamp{2, 10, 400}, 10)) + `","seq":6}`,
		`{"type":"direct","from":"s1","to":"r1","text":"` + string(p) + `"}`,
		`{"type":"error","code":"bad_request","message":"nope"}`,
		`{"type":"message","from":"x","text":"say \"hi\""}`,
		`not json`,
	}, "\n")
	got := collect(tg, msg)
	want := []Stamp{{2, 9, 300}, {2, 10, 400}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	opts := tg.DialOptions("s0")
	if len(opts.Subprotocols) != 1 || opts.Subprotocols[0] != jsonSubprotocol {
		t.Fatalf("subprotocols = %v", opts.Subprotocols)
	}
}

func TestGorillaParse(t *testing.T) {
	tg := targets["gorilla"]
	p1 := string(encodePayload(testRun, Stamp{0, 1, 1}, 100))
	p2 := string(encodePayload(testRun, Stamp{4, 2, 2}, 100))
	other := string(encodePayload("zzzz0000", Stamp{0, 1, 1}, 100))
	got := collect(tg, p1+"\nsomeone chatting\n"+other+"\n"+p2)
	if len(got) != 2 || got[0].Sender != 0 || got[1].Sender != 4 {
		t.Fatalf("got %+v", got)
	}
	if u := tg.URL("ws://127.0.0.1:8080/ws", "ignored"); u != "ws://127.0.0.1:8080/ws" {
		t.Fatalf("URL = %q", u)
	}
	if err := checkPayloadSize(tg, 513); err == nil {
		t.Fatal("gorilla must refuse payloads over 512 bytes")
	}
	if err := checkPayloadSize(tg, 512); err != nil {
		t.Fatal(err)
	}
}
