package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// SessionFactory turns an upgrade request on /ws or /ws/{room} into a running
// UserSession: it enforces -max-conns, reads and checks uid, room and mode,
// and keeps count of live sessions so shutdown can wait for them.
type SessionFactory struct {
	hub     *WebSocketServer
	auth    authenticator
	cfg     Config
	metrics *metrics
	log     *slog.Logger

	// settle, in cluster mode, waits for the node's own messages still on
	// their way through the broker, between the hub's closing and the
	// sessions' flush, so their senders see them (or an error).
	settle func(context.Context)

	// shutdown is cancelled to tell every session to flush and close.
	shutdown     context.Context
	stopSessions context.CancelFunc

	mu       sync.Mutex
	closing  bool
	running  int64         // connections admitted, counted before the upgrade
	finished chan struct{} // closed when closing and running reaches 0
}

// NewSessionFactory makes a factory whose sessions talk to hub.
func NewSessionFactory(hub *WebSocketServer, auth authenticator, cfg Config, m *metrics, log *slog.Logger) *SessionFactory {
	ctx, cancel := context.WithCancel(context.Background())
	return &SessionFactory{
		hub: hub, auth: auth, cfg: cfg, metrics: m, log: log,
		shutdown: ctx, stopSessions: cancel,
		finished: make(chan struct{}),
	}
}

// ServeHTTP admits and upgrades one connection and starts its session. It
// returns as soon as the session runs: the session's own goroutine starts
// with a small stack, while the handler's has grown through net/http, and an
// idle connection's memory is mostly goroutine stacks.
func (f *SessionFactory) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if refusal := f.enter(); refusal != "" {
		writeJSONError(w, http.StatusServiceUnavailable, refusal)
		return
	}
	started := false
	defer func() {
		if !started {
			f.leave()
		}
	}()

	upgrade := &smallBufferWriter{ResponseWriter: w, writeTimeout: f.cfg.WriteTimeout}
	conn, err := websocket.Accept(upgrade, r, &websocket.AcceptOptions{
		Subprotocols:    []string{jsonSubprotocol},
		OriginPatterns:  f.cfg.AllowedOrigins,
		CompressionMode: compressionMode(f.cfg.Compression),
	})
	if err != nil {
		// Accept has answered the request already (400, 403, 426...).
		f.log.Debug("upgrade refused", "remote", r.RemoteAddr, "err", err)
		return
	}
	// After Accept, so a request it refuses (a foreign Origin) costs no
	// token check.
	id, room, recover, problem := f.identify(r, conn.Subprotocol() == jsonSubprotocol, false)
	if problem != "" {
		_ = conn.Close(websocket.StatusPolicyViolation, problem)
		return
	}
	s := f.newWebSocketSession(conn, upgrade.out, id, room)
	s.debug("session started")
	started = true
	go func() {
		defer f.leave()
		s.Run(f.shutdown, recover)
	}()
}

// identify reads who is connecting to which room. problem is the close
// reason of PROTOCOL.md when something is wrong: who it is comes first,
// then the room's name, then whether the identity may join it, then (JSON
// mode only; text mode ignores it) ?since=. An empty header or query value
// counts as absent. On an event stream the Last-Event-ID header, which
// EventSource sends by itself when it reconnects, is newer than any
// ?since= in the URL it reconnects to, so it wins.
func (f *SessionFactory) identify(r *http.Request, jsonMode, stream bool) (id identity, room string, recover recovery, problem string) {
	query := r.URL.Query() // parsed once: handshakes come at a high rate
	id, problem = f.auth.identify(r.Header, query)
	if problem != "" {
		return id, "", recover, problem
	}
	room = firstNonEmpty(r.PathValue("room"), query.Get("room"), r.Header.Get("room"), "lobby")
	switch {
	case !validRoom(room):
		return id, room, recover, reasonRoomInvalid
	case !id.mayJoin(room):
		return id, room, recover, reasonRoomForbidden
	case stream:
		recover, problem = readSince(firstNonEmpty(r.Header.Get("Last-Event-ID"), query.Get("since")))
	case jsonMode:
		recover, problem = readSince(query.Get("since"))
	}
	return id, room, recover, problem
}

// readSince reads ?since=: absent or empty asks for nothing; otherwise it
// must be a non-negative integer.
func readSince(value string) (recovery, string) {
	if value == "" {
		return recovery{}, ""
	}
	since, err := strconv.ParseUint(value, 10, 64)
	if err != nil {
		return recovery{}, reasonSinceInvalid
	}
	return recovery{asked: true, since: since}, ""
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// newWebSocketSession builds the session of an upgraded connection.
func (f *SessionFactory) newWebSocketSession(conn *websocket.Conn, out *heldWriter, id identity, room string) *UserSession {
	// The size limit is enforced by wsTransport.read with our own close
	// reason, so the library's own limit is off.
	conn.SetReadLimit(-1)
	mode := modeText
	if conn.Subprotocol() == jsonSubprotocol {
		mode = modeJSON
	}
	return f.newSession(&wsTransport{conn: conn, out: out}, mode, id, room)
}

// newSession builds a session on any transport.
func (f *SessionFactory) newSession(client transport, mode clientMode, id identity, room string) *UserSession {
	s := &UserSession{
		id: newSessionID(), uid: id.uid, room: room, mode: mode,
		auth:   f.auth,
		client: client,
		queue:  newOutboundQueue(f.cfg.MaxQueueBytes),
		hub:    f.hub,
		limits: sessionLimits{
			pingInterval:    f.cfg.PingInterval,
			pongTimeout:     f.cfg.PongTimeout,
			writeTimeout:    f.cfg.WriteTimeout,
			maxMessageBytes: f.cfg.MaxMessageBytes,
			batchWindow:     f.cfg.BatchWindow,
		},
		metrics: f.metrics,
		baseLog: f.log,
	}
	if f.cfg.Rate > 0 {
		burst := int(2*f.cfg.Rate + 0.5)
		s.limiter = rate.NewLimiter(rate.Limit(f.cfg.Rate), max(burst, 1))
	}
	s.setExpiry(id.expires)
	return s
}

func newSessionID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}

// enter admits one more connection, or says why not.
func (f *SessionFactory) enter() (refusal string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closing:
		return "server shutting down"
	case f.running >= f.cfg.MaxConns:
		return "too many connections"
	}
	f.running++
	return ""
}

func (f *SessionFactory) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running--
	if f.closing && f.running == 0 {
		close(f.finished)
	}
}

// Shutdown refuses new upgrades, puts the hub in closing mode (no new
// traffic), then tells every session to flush its queue and close with 1001,
// and waits for them until ctx ends.
func (f *SessionFactory) Shutdown(ctx context.Context) error {
	f.mu.Lock()
	if !f.closing {
		f.closing = true
		if f.running == 0 {
			close(f.finished)
		}
	}
	f.mu.Unlock()
	reply := make(chan struct{}, 1)
	if _, err := ask(ctx, f.hub, BeginShutdown{Reply: reply}, reply); err != nil {
		f.log.Warn("hub did not confirm shutdown", "err", err)
	}
	if f.settle != nil {
		f.settle(ctx)
	}
	f.stopSessions()
	select {
	case <-f.finished:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sessions still open at shutdown deadline: %w", ctx.Err())
	}
}
