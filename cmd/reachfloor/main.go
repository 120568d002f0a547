// Command reachfloor is the floor of the load tool's reach scenario: a
// WebSocket server that does nothing but hold connections and, on a
// publish, write the one frame to each of them from a fixed number of
// goroutines. No rooms, no queues, no per-connection sender: what it takes
// to reach every connection is what the writes themselves cost on this
// machine, so a real server's reach time can be read as a multiple of it.
//
// It speaks just enough of switchboard's surface for the load tool's
// switchboard-text target: a text line on connect (the load tool's
// readiness signal), and POST /api/rooms/{room}/messages with {"text":…}
// answered {"recipients":N,"write_ms":…}. write_ms is the server's own
// time from the first write to the last one returned: the writes alone,
// without the generator's reads.
//
//	go run ./cmd/reachfloor -addr 127.0.0.1:5106 -writers 1
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// run parses the flags and serves until SIGINT or SIGTERM.
func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("reachfloor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:5106", "listen address (loopback)")
	writers := fs.Int("writers", 0, "goroutines that share the writes of one publish (0: one per core)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *writers < 0 {
		fmt.Fprintln(stderr, "reachfloor: -writers must be 0 or more")
		return 2
	}
	if *writers == 0 {
		*writers = runtime.GOMAXPROCS(0)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: *addr, Handler: newFloor(*writers).routes()}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	slog.Info("reachfloor listening", "addr", *addr, "writers", *writers)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(stderr, "reachfloor:", err)
		return 1
	}
	return 0
}

// floor holds the open connections. A mutex is fine here: it is taken
// once per connect, disconnect and publish, never per write.
type floor struct {
	writers int
	mu      sync.Mutex
	conns   map[*websocket.Conn]struct{}
}

func newFloor(writers int) *floor {
	return &floor{writers: writers, conns: make(map[*websocket.Conn]struct{})}
}

// routes are the WebSocket endpoint (with or without a room in the path,
// as switchboard's) and the publish endpoint.
func (f *floor) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ws", f.serveWS)
	mux.HandleFunc("GET /ws/{room}", f.serveWS) // the room is ignored: all are one
	mux.HandleFunc("POST /api/rooms/{room}/messages", f.servePublish)
	return mux
}

// serveWS holds one connection: a greeting, then reads (which answer the
// client's pings and close) until it ends.
func (f *floor) serveWS(w http.ResponseWriter, r *http.Request) {
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept has answered the client
	}
	conn.SetReadLimit(4096)
	ctx := r.Context()
	if err := conn.Write(ctx, websocket.MessageText, []byte("[floor]: connected")); err != nil {
		conn.CloseNow()
		return
	}
	f.mu.Lock()
	f.conns[conn] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.conns, conn)
		f.mu.Unlock()
		conn.CloseNow()
	}()
	for {
		if _, _, err := conn.Read(ctx); err != nil {
			return
		}
	}
}

// servePublish writes the text to every connection and answers how many
// took it and how long the writes took.
func (f *floor) servePublish(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Text string `json:"text"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil || body.Text == "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintln(w, `{"error":"body must be {\"text\":\"...\"}"}`)
		return
	}
	start := time.Now()
	n := f.writeAll([]byte(body.Text))
	writeMs := float64(time.Since(start).Microseconds()) / 1000
	slog.Info("published", "recipients", n, "write_ms", writeMs)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"recipients": n, "write_ms": writeMs})
}

// writeAll splits the connections into f.writers equal parts, writes the
// frame to each part's connections one after another in its own
// goroutine, and returns how many writes succeeded.
//
// The writes carry no deadline: a context that can end makes the library
// arm a timer per write (context.AfterFunc), which is not the cost of the
// write. One small frame never fills a loopback socket's buffer, so a
// write cannot stall here.
func (f *floor) writeAll(frame []byte) int {
	ctx := context.Background()
	f.mu.Lock()
	conns := make([]*websocket.Conn, 0, len(f.conns))
	for c := range f.conns {
		conns = append(conns, c)
	}
	f.mu.Unlock()
	parts := min(f.writers, max(len(conns), 1))
	counts := make([]int, parts)
	var wg sync.WaitGroup
	for p := range parts {
		wg.Go(func() {
			for i := p; i < len(conns); i += parts {
				if conns[i].Write(ctx, websocket.MessageText, frame) == nil {
					counts[p]++
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for _, n := range counts {
		total += n
	}
	return total
}
