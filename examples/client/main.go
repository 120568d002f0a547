// Command client is a minimal switchboard client in text mode.
//
// It connects with a uid header, prints every line the server sends, and
// sends what you type, one line per message (so "/dm 2 psst" and "/who" work
// as in wscat):
//
//	go run ./examples/client -uid 1 -room lobby
//	go run ./examples/client -uid 2 -send "hello" -wait 2s
//
// With -send it sends that message, prints what arrives for -wait and
// exits; otherwise it reads stdin until end of file or Ctrl-C. It exits 1
// when it cannot connect or the server closes the connection abnormally (for
// example "closed 1008: uid is invalid").
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", "ws://localhost:5000/ws", "server WebSocket URL")
	uid := fs.String("uid", "", "your uid, sent as the uid header (required)")
	room := fs.String("room", "", "room to join; replaces the path of -url with /ws/<room> (empty: as -url says, else lobby)")
	send := fs.String("send", "", "send this message instead of reading stdin, then exit after -wait")
	wait := fs.Duration("wait", time.Second, "with -send: how long to print what arrives before exiting")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *uid == "" {
		fmt.Fprintln(stderr, "client: -uid is required")
		return 2
	}
	target, err := url.Parse(*rawURL)
	if err != nil || (target.Scheme != "ws" && target.Scheme != "wss") {
		fmt.Fprintf(stderr, "client: -url %q is not a ws:// or wss:// URL\n", *rawURL)
		return 2
	}
	if *room != "" {
		target.Path = "/ws/" + *room
		target.RawPath = "/ws/" + url.PathEscape(*room)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dialCtx, cancelDial := context.WithTimeout(ctx, 10*time.Second)
	conn, _, err := websocket.Dial(dialCtx, target.String(), &websocket.DialOptions{
		HTTPHeader: http.Header{"uid": {*uid}},
	})
	cancelDial()
	if err != nil {
		fmt.Fprintln(stderr, "client: connect:", err)
		return 1
	}
	defer conn.CloseNow()
	// Joined batches are at most 16 KiB, but one large publish can be bigger.
	conn.SetReadLimit(4 << 20)

	// The reader prints every line until the connection ends. It does not
	// stop on Ctrl-C: the polite close below ends it.
	readDone := make(chan error, 1)
	go func() { readDone <- printMessages(context.Background(), conn, stdout) }()

	// The writer sends stdin lines (or -send) and then closes politely.
	writeDone := make(chan error, 1)
	go func() {
		if *send != "" {
			err := conn.Write(ctx, websocket.MessageText, []byte(*send))
			if err == nil {
				select {
				case <-time.After(*wait):
				case <-ctx.Done():
				}
			}
			writeDone <- err
			return
		}
		lines := bufio.NewScanner(stdin)
		lines.Buffer(make([]byte, 64<<10), 1<<20)
		for lines.Scan() {
			if err := conn.Write(ctx, websocket.MessageText, lines.Bytes()); err != nil {
				writeDone <- err
				return
			}
		}
		writeDone <- lines.Err()
	}()

	select {
	case err := <-readDone:
		// The server ended the session (or the connection broke).
		return report(err, stderr)
	case err := <-writeDone:
		if err != nil && ctx.Err() == nil {
			fmt.Fprintln(stderr, "client: send:", err)
		}
	case <-ctx.Done():
	}
	// Close politely; Close waits for the server's answer while the reader
	// keeps printing what was still in flight.
	_ = conn.Close(websocket.StatusNormalClosure, "bye")
	return report(<-readDone, stderr)
}

// printMessages prints the server's messages line by line: the server may
// join several events into one message, separated by "\n".
func printMessages(ctx context.Context, conn *websocket.Conn, out io.Writer) error {
	for {
		kind, data, err := conn.Read(ctx)
		if err != nil {
			return err
		}
		if kind == websocket.MessageBinary {
			fmt.Fprintf(out, "[binary message, %d bytes]\n", len(data))
			continue
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			fmt.Fprintln(out, line)
		}
	}
}

// report turns the end of the connection into an exit code.
func report(err error, stderr io.Writer) int {
	var ce websocket.CloseError
	switch {
	case errors.As(err, &ce) && (ce.Code == websocket.StatusNormalClosure || ce.Code == websocket.StatusGoingAway):
		if ce.Code == websocket.StatusGoingAway {
			fmt.Fprintf(stderr, "closed %d: %s\n", ce.Code, ce.Reason)
		}
		return 0
	case errors.As(err, &ce):
		fmt.Fprintf(stderr, "closed %d: %s\n", ce.Code, ce.Reason)
		return 1
	case errors.Is(err, context.Canceled):
		return 0
	default:
		fmt.Fprintln(stderr, "client: connection lost:", err)
		return 1
	}
}
