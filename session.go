package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"golang.org/x/time/rate"
)

// sessionLimits are the per-connection bounds from the configuration.
type sessionLimits struct {
	pingInterval    time.Duration
	pongTimeout     time.Duration
	writeTimeout    time.Duration
	maxMessageBytes int64
	batchWindow     time.Duration // least time between two writes to one client
}

// UserSession is one connection's life (a WebSocket, or an SSE stream, see
// transport.go): from the hub's welcome to its unregistration, which happens
// exactly once whichever way it ends.
//
// Two goroutines serve it. The reader only reads the connection and hands
// each message over (a stream has none; its read ends with the stream). The session loop (Run) owns everything else: it selects over
// the client's messages, its outbound queue, the heartbeat and shutdown, so
// a client's messages are handled one at a time, in order.
type UserSession struct {
	id   string
	uid  string
	room string
	mode clientMode

	client  transport // the WebSocket, or an SSE stream
	queue   *outboundQueue
	hub     *WebSocketServer
	auth    authenticator // checks the tokens of refreshes
	limits  sessionLimits
	limiter *rate.Limiter // nil when unlimited
	metrics *metrics
	baseLog *slog.Logger // the server's; see logger

	goroutines sync.WaitGroup // the reader and any heartbeat in flight

	// expiry ends the session when its token's exp passes; nil for a
	// session without one. Only the session loop touches it.
	expiry *sessionExpiry

	memberIndex int // position in its room's members; the hub's alone to touch
	uidIndex    int // position in its uid's sessions; the hub's alone to touch
}

// sessionExpiry is when a session's token expires and the timer that fires
// then. A timer is a few dozen bytes and no goroutine; sessions whose token
// has no exp (and every session outside token mode) have none.
type sessionExpiry struct {
	at    time.Time
	timer *time.Timer
}

// setExpiry makes the session end at t, or never when t is zero.
func (s *UserSession) setExpiry(t time.Time) {
	switch {
	case t.IsZero() && s.expiry != nil:
		s.expiry.timer.Stop()
		s.expiry = nil
	case t.IsZero():
	case s.expiry == nil:
		s.expiry = &sessionExpiry{at: t, timer: time.NewTimer(time.Until(t))}
	default:
		s.expiry.at = t
		s.expiry.timer.Reset(time.Until(t))
	}
}

// expiresAt is the session's expiry, zero for none.
func (s *UserSession) expiresAt() time.Time {
	if s.expiry == nil {
		return time.Time{}
	}
	return s.expiry.at
}

// inbound is one read from the client: a message or the error that ended
// reading.
type inbound struct {
	kind websocket.MessageType
	data []byte
	err  error
}

// closeStatus is how a session ends. A zero code means the connection is
// dropped without a close frame (the peer is gone or unresponsive).
type closeStatus struct {
	code   websocket.StatusCode
	reason string
}

var errMessageTooBig = errors.New("message too big")

// Close reasons of PROTOCOL.md, word for word.
var (
	closeTooBig       = closeStatus{websocket.StatusMessageTooBig, "message too big"}
	closeInvalidUTF8  = closeStatus{websocket.StatusInvalidFramePayloadData, "invalid UTF-8"}
	closeSlowConsumer = closeStatus{websocket.StatusPolicyViolation, "slow consumer"}
	closeRateLimited  = closeStatus{websocket.StatusPolicyViolation, "rate limit exceeded"}
	closeShutdown     = closeStatus{websocket.StatusGoingAway, "server shutting down"}
	closeTokenExpired = closeStatus{websocket.StatusPolicyViolation, reasonTokenExpired}
	closeDisconnected = closeStatus{websocket.StatusPolicyViolation, "disconnected by the server"}
	// closeMissedMessages ends sessions of a cluster node that found
	// stream messages it can no longer get: the delivery promise is all of
	// them or a close with a reason. Clients reconnect and resync.
	closeMissedMessages = closeStatus{websocket.StatusServiceRestart, "missed cluster messages"}
	closeDrop           = closeStatus{}
)

// Run serves the session until it ends and then unregisters it. shutdown is
// cancelled when the server stops: the session flushes its queue and closes
// with 1001. recover is the client's ?since=, if it asked.
func (s *UserSession) Run(shutdown context.Context, recover recovery) {
	defer s.setExpiry(time.Time{})
	if recover.asked {
		s.hub.broker.reach(shutdown, recover.since)
	}
	if err := s.hub.submit(shutdown, UserConnect{Session: s, Expires: formatExpiry(s.expiresAt()), Recover: recover}); err != nil {
		s.close(closeShutdown)
		return
	}
	// The reader needs no context of its own: closing the connection ends
	// its read, and stopReading ends its wait to hand a message over.
	stopReading := make(chan struct{})
	incoming := make(chan inbound)
	s.goroutines.Add(1)
	go s.readLoop(stopReading, incoming)

	status := s.loop(shutdown, incoming)
	if status == closeShutdown {
		// Whatever the hub accepted for this session goes out before the
		// 1001, however the loop noticed the shutdown.
		if _, flushStatus, end := s.flush(nil); end {
			status = flushStatus
		}
	}

	// Unregister first so nobody queues to a session that is closing.
	_ = s.hub.submit(context.Background(), UserDisconnect{Session: s})
	s.queue.discard()
	s.close(status)
	close(stopReading)
	s.goroutines.Wait()
	s.debug("session ended", "reason", status.reason, "code", int(status.code))
}

// logger tags the server's logger with the session's identity. It is built
// per log call, which is rare, rather than held by every idle session.
func (s *UserSession) logger() *slog.Logger {
	return s.baseLog.With("uid", s.uid, "room", s.room, "session", s.id, "mode", s.mode.String())
}

// debug logs at debug level, building the tagged logger only when that level
// is on: sessions start and end at a high rate.
func (s *UserSession) debug(msg string, args ...any) {
	if s.baseLog.Enabled(context.Background(), slog.LevelDebug) {
		s.logger().Debug(msg, args...)
	}
}

func (s *UserSession) close(status closeStatus) { s.client.close(status) }

// readLoop reads client messages until the connection fails or stop is
// closed. It is the only reader of the connection; on a WebSocket the
// read also answers the client's pings and delivers its pongs.
func (s *UserSession) readLoop(stop <-chan struct{}, out chan<- inbound) {
	defer s.goroutines.Done()
	for {
		kind, data, err := s.client.read(s.limits.maxMessageBytes)
		select {
		case out <- inbound{kind: kind, data: data, err: err}:
		case <-stop:
			return
		}
		if err != nil {
			return
		}
	}
}

// loop is the session's select loop; it returns how the session must end.
func (s *UserSession) loop(shutdown context.Context, incoming <-chan inbound) closeStatus {
	heartbeat := time.NewTicker(s.limits.pingInterval)
	defer heartbeat.Stop()
	var pongs chan error // made at the first ping: idle sessions are many
	pinging := false
	var batch []outboundFrame
	var lastWrite time.Time
	var batchTimer *time.Timer    // made when first needed
	var batchDue <-chan time.Time // set while events gather for one write
	defer func() {
		if batchTimer != nil {
			batchTimer.Stop()
		}
	}()
	flushNow := func() (status closeStatus, end bool) {
		batch, status, end = s.flush(batch)
		lastWrite = time.Now()
		return status, end
	}

	for {
		var expired <-chan time.Time // nil, so never ready, without an expiry
		if s.expiry != nil {
			expired = s.expiry.timer.C
		}
		select {
		case in := <-incoming:
			if in.err != nil {
				return s.readFailed(in.err)
			}
			if status, end := s.handle(shutdown, in); end {
				return status
			}
		case <-s.queue.ready:
			if batchDue != nil {
				continue // a flush is already due
			}
			if wait := s.limits.batchWindow - time.Since(lastWrite); wait > 0 {
				// We wrote a moment ago: let what arrives meanwhile go
				// out together in one write when the window ends.
				if batchTimer == nil {
					batchTimer = time.NewTimer(wait)
				} else {
					batchTimer.Reset(wait)
				}
				batchDue = batchTimer.C
				continue
			}
			if status, end := flushNow(); end {
				return status
			}
		case <-batchDue:
			batchDue = nil
			if status, end := flushNow(); end {
				return status
			}
		case <-heartbeat.C:
			if !pinging {
				pinging = true
				if pongs == nil {
					pongs = make(chan error, 1)
				}
				s.goroutines.Add(1)
				go s.ping(pongs)
			}
		case err := <-pongs:
			pinging = false
			if err != nil {
				s.metrics.closes.WithLabelValues("heartbeat").Inc()
				s.logger().Info("no pong, dropping connection", "err", err)
				return closeDrop
			}
		case <-expired:
			s.metrics.closes.WithLabelValues("token_expired").Inc()
			return closeTokenExpired
		case <-shutdown.Done():
			return closeShutdown // Run flushes the queue first
		}
	}
}

// ping sends one ping and reports whether its pong came within the timeout.
func (s *UserSession) ping(result chan<- error) {
	defer s.goroutines.Done()
	ctx, cancel := context.WithTimeout(context.Background(), s.limits.pongTimeout)
	defer cancel()
	result <- s.client.ping(ctx)
}

func (s *UserSession) readFailed(err error) closeStatus {
	if errors.Is(err, errMessageTooBig) {
		return closeTooBig
	}
	if websocket.CloseStatus(err) == -1 && !errors.Is(err, errStreamEnded) {
		s.debug("read failed", "err", err)
	}
	return closeDrop // the peer closed or vanished; the library answered its close frame
}

// handle acts on one client message. It reports end=true when the message
// ends the session.
func (s *UserSession) handle(ctx context.Context, in inbound) (closeStatus, bool) {
	s.metrics.received.Inc()
	if s.limiter != nil && !s.limiter.Allow() {
		s.metrics.closes.WithLabelValues("rate_limit").Inc()
		return closeRateLimited, true
	}
	if in.kind == websocket.MessageBinary {
		return s.submit(ctx, BinaryMessage{Session: s, Data: in.data})
	}
	if !utf8.Valid(in.data) {
		return closeInvalidUTF8, true
	}
	if s.mode == modeJSON {
		req, reqErr := parseJSONRequest(in.data)
		return s.dispatch(ctx, req, reqErr)
	}
	var status closeStatus
	end := false
	splitLines(string(in.data), func(line string) {
		if !end {
			req, reqErr := parseTextLine(line)
			status, end = s.dispatch(ctx, req, reqErr)
		}
	})
	return status, end
}

// dispatch turns a parsed request, or the mistake in it, into a hub command.
func (s *UserSession) dispatch(ctx context.Context, req clientRequest, reqErr *requestError) (closeStatus, bool) {
	if reqErr != nil {
		return s.submit(ctx, RequestError{Session: s, Err: reqErr})
	}
	switch req.kind {
	case requestMessage:
		return s.submit(ctx, UserMessage{Session: s, Text: req.text})
	case requestDirect:
		return s.submit(ctx, DirectMessage{From: s, To: req.to, Text: req.text})
	case requestRefresh:
		return s.submit(ctx, s.refresh(req.token))
	case requestHistory:
		return s.submit(ctx, HistoryQuery{Session: s, Limit: req.limit})
	default:
		return s.submit(ctx, WhoQuery{Session: s})
	}
}

// refresh checks a fresher token and, when it is good, moves the session's
// expiry. The answer goes through the hub like every other, so it keeps its
// place among the session's answers. A bad token leaves the old expiry.
func (s *UserSession) refresh(token string) command {
	id, problem := s.auth.refresh(token)
	switch {
	case problem != "":
	case id.uid != s.uid:
		problem = reasonOtherUID
	case !id.mayJoin(s.room):
		problem = reasonRoomForbidden
	}
	if problem != "" {
		return RequestError{Session: s, Err: &requestError{codeBadToken, problem}}
	}
	s.setExpiry(id.expires)
	return Refreshed{Session: s, Expires: formatExpiry(id.expires)}
}

func (s *UserSession) submit(ctx context.Context, cmd command) (closeStatus, bool) {
	if err := s.hub.submit(ctx, cmd); err != nil {
		return closeShutdown, true
	}
	return closeStatus{}, false
}

// flush writes everything queued in one go through the transport (on a
// WebSocket one system call, text events joined by "\n" as PROTOCOL.md's
// Framing says; see transport_ws.go). It returns the emptied batch slice
// for reuse.
func (s *UserSession) flush(batch []outboundFrame) ([]outboundFrame, closeStatus, bool) {
	batch, overflowed, end := s.queue.drain(batch[:0])
	if overflowed {
		s.metrics.closes.WithLabelValues("slow_consumer").Inc()
		s.logger().Info("slow consumer, closing")
		return batch[:0], closeSlowConsumer, true
	}
	err := s.client.writeFrames(batch)
	clear(batch) // drop references to frames shared with other sessions
	if err != nil {
		s.debug("write failed", "err", err)
		return batch[:0], closeDrop, true
	}
	if end != nil {
		return batch[:0], *end, true
	}
	return batch[:0], closeStatus{}, false
}
