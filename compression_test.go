package main

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
)

// countingConn counts the bytes a client reads off its socket: what the
// server put on the wire for it.
type countingConn struct {
	net.Conn
	read *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// dialCounting opens a text-mode session as uid, offering
// permessage-deflate when offer is set, and returns it with the server's
// Sec-WebSocket-Extensions answer and the byte counter of its socket.
func dialCounting(t *testing.T, ts *testServer, uid string, offer bool) (*testClient, string, *atomic.Int64) {
	t.Helper()
	read := new(atomic.Int64)
	dialer := &net.Dialer{}
	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return countingConn{Conn: conn, read: read}, nil
		},
	}}
	mode := websocket.CompressionDisabled
	if offer {
		// What browsers offer: permessage-deflate, the server's choice
		// of context takeover.
		mode = websocket.CompressionContextTakeover
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, resp, err := websocket.Dial(ctx, ts.wsURL("/ws/big"), &websocket.DialOptions{
		HTTPHeader:      http.Header{"uid": {uid}},
		HTTPClient:      client,
		CompressionMode: mode,
	})
	if err != nil {
		t.Fatalf("dial %s: %v", uid, err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	conn.SetReadLimit(64 << 20)
	c := &testClient{t: t, conn: conn}
	c.expect("[server]: welcome UID " + uid + ", room big")
	return c, resp.Header.Get("Sec-WebSocket-Extensions"), read
}

// With -compression a client that offers permessage-deflate gets it and
// one that does not is served as before; a large compressible message
// reaches both intact, and the compressing one reads far fewer bytes.
func TestCompressionNegotiated(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Compression = true })
	plain, plainExt, plainRead := dialCounting(t, ts, "plain", false)
	deflated, deflatedExt, deflatedRead := dialCounting(t, ts, "deflated", true)
	if plainExt != "" {
		t.Fatalf("a client that offered nothing got extensions %q", plainExt)
	}
	if !strings.HasPrefix(deflatedExt, "permessage-deflate") || !strings.Contains(deflatedExt, "server_no_context_takeover") {
		t.Fatalf("extensions %q, want permessage-deflate without context takeover", deflatedExt)
	}
	plain.expect("[server]: UID deflated joined big")

	text := strings.Repeat("all work and no play makes a dull chat. ", 1200) // 48,000 bytes
	plainBefore, deflatedBefore := plainRead.Load(), deflatedRead.Load()
	plain.send(text)
	for _, c := range []*testClient{plain, deflated} {
		c.expect("[UID: plain]: " + text)
	}
	plainBytes, deflatedBytes := plainRead.Load()-plainBefore, deflatedRead.Load()-deflatedBefore
	if plainBytes < int64(len(text)) || deflatedBytes*10 > plainBytes {
		t.Fatalf("bytes read: plain %d, deflated %d for a %d-byte message", plainBytes, deflatedBytes, len(text))
	}
	// Small messages (under the library's threshold) pass as they are.
	deflated.send("hi")
	for _, c := range []*testClient{plain, deflated} {
		c.expect("[UID: deflated]: hi")
	}
}

// Without -compression nobody gets it, even a client that offers it.
func TestCompressionOffByDefault(t *testing.T) {
	ts := startServer(t, nil)
	c, ext, _ := dialCounting(t, ts, "offering", true)
	if ext != "" {
		t.Fatalf("extensions %q without -compression", ext)
	}
	c.send("still fine")
	c.expect("[UID: offering]: still fine")
}
