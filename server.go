package main

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"
)

// WebSocketServer is the hub: one goroutine that owns every room, every
// session index and every per-room sequence number. Sessions and HTTP
// handlers reach it only through its command channel, so none of its maps
// needs a lock. It never waits on a client: delivering means pushing onto a
// session's outboundQueue, which never blocks.
type WebSocketServer struct {
	commands chan command
	done     chan struct{} // closed when Run returns

	rooms        map[string]*room
	byUID        map[string][]*UserSession // every session of a uid, any room; usually one
	sessionCount int

	// closing is set by BeginShutdown: from then on the hub accepts no new
	// traffic, so what sessions flush on their way out is everything it
	// ever accepted for them.
	closing bool

	// broker numbers and brings back every accepted message (broker.go);
	// remote holds the other nodes' sessions (empty on a single node).
	broker broker
	remote remoteView

	// history is every room's kept events and seq (history.go).
	history *history

	metrics *metrics
	now     func() time.Time
}

// room is the hub's view of one room.
type room struct {
	name    string
	members []*UserSession // a slice, not a map: broadcasts walk it for every event
	uids    map[string]int // sessions per uid, for join/leave and presence
}

var (
	// errHubStopped is returned to callers whose command came after the hub ended.
	errHubStopped = errors.New("hub stopped")
	// errShuttingDown refuses new traffic once shutdown has begun.
	errShuttingDown = errors.New("server shutting down")
)

// command is one request to the hub. apply runs on the hub goroutine and may
// touch its maps freely; it must not block.
type command interface {
	apply(h *WebSocketServer)
}

// NewWebSocketServer makes a hub that keeps history as hist says; Run must
// be started for it to answer.
func NewWebSocketServer(m *metrics, hist *history) *WebSocketServer {
	h := &WebSocketServer{
		history:  hist,
		commands: make(chan command, 1024),
		done:     make(chan struct{}),
		rooms:    make(map[string]*room),
		byUID:    make(map[string][]*UserSession),
		broker:   memoryBroker{},
		remote:   newRemoteView(),
		metrics:  m,
		now:      time.Now,
	}
	m.watchQueueBytes(h.queuedBytes)
	m.watchHistory(h.historyStats)
	return h
}

// historySweep is how often the hub drops events past -history-ttl even
// when nobody asks (answers drop them first anyway).
const historySweep = time.Second

// Run is the hub loop. It returns when ctx ends; commands sent after that
// fail with errHubStopped instead of blocking their senders.
func (h *WebSocketServer) Run(ctx context.Context) error {
	defer close(h.done)
	sweep := time.NewTicker(historySweep)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case cmd := <-h.commands:
			cmd.apply(h)
		case <-sweep.C:
			h.expireHistory()
		}
	}
}

// expireHistory drops kept events past -history-ttl.
func (h *WebSocketServer) expireHistory() {
	h.history.expire(h.now())
	h.history.forgetEmptied(h.occupied)
}

// occupied reports whether a room has sessions on this node.
func (h *WebSocketServer) occupied(room string) bool { return h.rooms[room] != nil }

// submit hands a command to the hub, waiting while its channel is full,
// until ctx ends or the hub stops.
func (h *WebSocketServer) submit(ctx context.Context, cmd command) error {
	select {
	case h.commands <- cmd:
		return nil
	case <-h.done:
		return errHubStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ask submits a command that answers on reply and waits for the answer.
func ask[T any](ctx context.Context, h *WebSocketServer, cmd command, reply <-chan T) (T, error) {
	var zero T
	if err := h.submit(ctx, cmd); err != nil {
		return zero, err
	}
	select {
	case v := <-reply:
		return v, nil
	case <-h.done:
		return zero, errHubStopped
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// timestamp is how an event's ts is written: RFC 3339 in UTC, to the
// nanosecond.
func timestamp(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}

// send encodes ev for the session's mode and queues it.
func (h *WebSocketServer) send(s *UserSession, ev serverEvent) {
	if s.queue.push(outboundFrame{data: encodeEvent(ev, s.mode)}) {
		h.metrics.delivered.Inc()
	}
}

// encodedEvent is one event on its way to many sessions: it is encoded at
// most once per mode, on first need, and the bytes are shared.
type encodedEvent struct {
	ev     serverEvent
	frames [modeCount]outboundFrame
}

func (e *encodedEvent) frame(mode clientMode) outboundFrame {
	if e.frames[mode].data == nil {
		e.frames[mode].data = encodeEvent(e.ev, mode)
	}
	return e.frames[mode]
}

// deliver queues e to every session in sessions except skip and returns how
// many sessions accepted it.
func (h *WebSocketServer) deliver(sessions []*UserSession, e *encodedEvent, skip *UserSession) int {
	delivered := 0
	for _, s := range sessions {
		if s != skip && s.queue.push(e.frame(s.mode)) {
			delivered++
		}
	}
	h.metrics.delivered.Add(float64(delivered))
	return delivered
}

func (r *room) add(s *UserSession) {
	s.memberIndex = len(r.members)
	r.members = append(r.members, s)
}

// remove takes s out of the room by moving the last member into its place,
// and reports whether s was there.
func (r *room) remove(s *UserSession) bool {
	i := s.memberIndex
	if i >= len(r.members) || r.members[i] != s {
		return false
	}
	last := len(r.members) - 1
	r.members[i] = r.members[last]
	r.members[i].memberIndex = i
	r.members[last] = nil
	r.members = r.members[:last]
	return true
}

func (h *WebSocketServer) updateGauges() {
	h.metrics.sessions.Set(float64(h.sessionCount))
	h.metrics.rooms.Set(float64(len(h.rooms)))
}

// UserConnect registers a new session, welcomes it, and tells the room when
// its uid arrives there for the first time.
type UserConnect struct {
	Session *UserSession
	Expires string // the token's expiry for the JSON welcome; empty for none
	// Recover asks for the room's events after a seq (JSON mode's
	// ?since=); the welcome then says whether they are all there.
	Recover recovery
}

// recovery is a session's ?since=, when it gave one.
type recovery struct {
	asked bool
	since uint64
}

func (c UserConnect) apply(h *WebSocketServer) {
	s := c.Session
	r := h.rooms[s.room]
	if r == nil {
		r = &room{name: s.room, uids: map[string]int{}}
		h.rooms[s.room] = r
	}
	r.add(s)
	r.uids[s.uid]++
	s.uidIndex = len(h.byUID[s.uid])
	h.byUID[s.uid] = append(h.byUID[s.uid], s)
	h.sessionCount++
	h.updateGauges()
	h.presenceChanged(r, s.uid)

	welcome := &welcomeEvent{Type: "welcome", UID: s.uid, Room: s.room, Session: s.id, Online: h.online(s.room), Expires: c.Expires}
	var replay []*historyEntry
	if c.Recover.asked {
		h.expireHistory()
		var recovered bool
		replay, recovered = h.history.since(s.room, c.Recover.since)
		welcome.Recovered = &recovered
		h.metrics.recovered(recovered)
	}
	h.send(s, welcome)
	// The events after since, as first sent, then whatever comes next:
	// nothing can come between, since the hub does one thing at a time.
	for _, e := range replay {
		h.sendShared(s, e.event.frames[s.mode])
	}
	if r.uids[s.uid] == 1 && h.remote.sessions(s.room, s.uid) == 0 {
		h.deliver(r.members, &encodedEvent{ev: &presenceChange{Type: "joined", UID: s.uid, Room: r.name}}, s)
	}
}

// UserDisconnect forgets a session, telling the room when it was its uid's
// last one there. It is safe to apply twice.
type UserDisconnect struct{ Session *UserSession }

func (c UserDisconnect) apply(h *WebSocketServer) {
	s := c.Session
	r := h.rooms[s.room]
	if r == nil {
		return
	}
	if !r.remove(s) {
		return
	}
	h.removeFromUID(s)
	h.sessionCount--
	r.uids[s.uid]--
	if r.uids[s.uid] == 0 {
		delete(r.uids, s.uid)
	}
	h.presenceChanged(r, s.uid)
	if r.uids[s.uid] == 0 && h.remote.sessions(r.name, s.uid) == 0 {
		if !h.closing { // at shutdown everyone leaves; nobody needs telling
			h.deliver(r.members, &encodedEvent{ev: &presenceChange{Type: "left", UID: s.uid, Room: r.name}}, nil)
		}
	}
	if len(r.members) == 0 {
		delete(h.rooms, r.name)
		h.history.forget(r.name) // only if it kept nothing
	}
	h.updateGauges()
}

// removeFromUID takes s out of its uid's sessions by moving the last one
// into its place: constant time, also for a uid with thousands of
// sessions (a load test's shared uid, a storm of reconnects).
func (h *WebSocketServer) removeFromUID(s *UserSession) {
	sessions := h.byUID[s.uid]
	last := len(sessions) - 1
	sessions[s.uidIndex] = sessions[last]
	sessions[s.uidIndex].uidIndex = s.uidIndex
	sessions[last] = nil
	if last == 0 {
		delete(h.byUID, s.uid)
		return
	}
	h.byUID[s.uid] = sessions[:last]
}

// UserMessage is a room message from a session; it takes the room's next seq.
type UserMessage struct {
	Session *UserSession
	Text    string
}

func (c UserMessage) apply(h *WebSocketServer) {
	r := h.rooms[c.Session.room]
	if r == nil || h.refuse(c.Session) {
		return
	}
	h.publish(clusterOut{kind: kindMessage, room: r.name, from: c.Session.uid, text: c.Text, session: c.Session})
}

// BinaryMessage is relayed unchanged to the sender's room.
type BinaryMessage struct {
	Session *UserSession
	Data    []byte
}

func (c BinaryMessage) apply(h *WebSocketServer) {
	r := h.rooms[c.Session.room]
	if r == nil || h.refuse(c.Session) {
		return
	}
	h.publish(clusterOut{kind: kindBinary, room: r.name, from: c.Session.uid, data: c.Data, session: c.Session})
}

// DirectMessage goes to every session of a uid, in any room, with an echo to
// the sending session.
type DirectMessage struct {
	From *UserSession
	To   string
	Text string
}

func (c DirectMessage) apply(h *WebSocketServer) {
	if h.refuse(c.From) {
		return
	}
	if len(h.byUID[c.To]) == 0 && h.remote.uids[c.To] == 0 {
		h.send(c.From, newErrorEvent(notOnline(c.To)))
		return
	}
	h.publish(clusterOut{kind: kindDirect, from: c.From.uid, to: c.To, text: c.Text, session: c.From})
}

// WhoQuery answers a session with its room's online uids.
type WhoQuery struct{ Session *UserSession }

func (c WhoQuery) apply(h *WebSocketServer) {
	r := h.rooms[c.Session.room]
	if r == nil {
		return
	}
	h.send(c.Session, &presenceEvent{Type: "presence", Room: r.name, Online: h.online(r.name)})
}

// Publish is a message from the HTTP API to a room. Exactly one of Text and
// Data is set.
type Publish struct {
	Room  string
	Text  string
	Data  json.RawMessage
	Reply chan PublishResult
}

// PublishResult says how many sessions a publish was queued to, or why it
// was refused.
type PublishResult struct {
	Recipients int
	Err        error
}

func (c Publish) apply(h *WebSocketServer) {
	if h.closing {
		c.Reply <- PublishResult{Err: errShuttingDown}
		return
	}
	// Published even when this node knows of nobody in the room: in a
	// cluster its view may be a moment old, and the nodes that have the
	// room deliver it.
	h.publish(clusterOut{kind: kindPublish, room: c.Room, text: c.Text, data: c.Data, reply: c.Reply, recipient: h.roomSessions(c.Room)})
}

// RoomSummary is one row of GET /api/rooms.
type RoomSummary struct {
	Room     string `json:"room"`
	Users    int    `json:"users"`
	Sessions int    `json:"sessions"`
}

// ListRooms answers with every room that has a session, sorted by name.
type ListRooms struct{ Reply chan []RoomSummary }

func (c ListRooms) apply(h *WebSocketServer) {
	list := make([]RoomSummary, 0, len(h.rooms))
	for _, r := range h.rooms {
		list = append(list, RoomSummary{Room: r.name, Users: len(h.online(r.name)), Sessions: len(r.members) + h.remoteSessions(r.name)})
	}
	for name, rr := range h.remote.rooms {
		if h.rooms[name] == nil {
			list = append(list, RoomSummary{Room: name, Users: len(rr.uids), Sessions: rr.sessions})
		}
	}
	slices.SortFunc(list, func(a, b RoomSummary) int { return strings.Compare(a.Room, b.Room) })
	c.Reply <- list
}

// RoomPresence answers with a room's online uids, sorted; empty for a room
// nobody is in.
type RoomPresence struct {
	Room  string
	Reply chan []string
}

func (c RoomPresence) apply(h *WebSocketServer) {
	c.Reply <- h.online(c.Room)
}

// RequestError answers a session's mistake. It goes through the hub like
// every other answer, so answers reach the client in the order it asked.
type RequestError struct {
	Session *UserSession
	Err     *requestError
}

func (c RequestError) apply(h *WebSocketServer) { h.send(c.Session, newErrorEvent(c.Err)) }

// BeginShutdown puts the hub in closing mode and answers once it is in it:
// every event it accepted before is in the sessions' queues by then.
type BeginShutdown struct{ Reply chan struct{} }

func (c BeginShutdown) apply(h *WebSocketServer) {
	h.closing = true
	c.Reply <- struct{}{}
}

// refuse tells a session that its message was not accepted because the
// server is shutting down, and reports whether it did.
func (h *WebSocketServer) refuse(s *UserSession) bool {
	if h.closing {
		h.send(s, newErrorEvent(&requestError{codeUnavailable, errShuttingDown.Error() + ", message not sent"}))
	}
	return h.closing
}

// QueuedBytes answers with the bytes waiting in every session's queue.
type QueuedBytes struct{ Reply chan int64 }

func (c QueuedBytes) apply(h *WebSocketServer) {
	var total int64
	for _, r := range h.rooms {
		for _, s := range r.members {
			total += s.queue.size()
		}
	}
	c.Reply <- total
}

// queuedBytes asks the hub for QueuedBytes, for a metrics scrape; it answers
// 0 when the hub is stopped or busy for over a second.
func (h *WebSocketServer) queuedBytes() float64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	reply := make(chan int64, 1)
	total, _ := ask(ctx, h, QueuedBytes{Reply: reply}, reply)
	return float64(total)
}

// Refreshed answers a session whose refresh was accepted.
type Refreshed struct {
	Session *UserSession
	Expires string
}

func (c Refreshed) apply(h *WebSocketServer) {
	h.send(c.Session, &refreshedEvent{Type: "refreshed", Expires: c.Expires})
}

// DisconnectUser closes every session of a uid with 1008 "disconnected by
// the server" (in cluster mode on every node, through the broker) and
// answers with how many sessions that is (Recipients).
type DisconnectUser struct {
	UID   string
	Reply chan PublishResult
}

func (c DisconnectUser) apply(h *WebSocketServer) {
	if h.closing {
		c.Reply <- PublishResult{Err: errShuttingDown}
		return
	}
	// Through the broker like a DM, so every node puts the uid out.
	h.publish(clusterOut{kind: kindDisconnect, to: c.UID, reply: c.Reply, recipient: len(h.byUID[c.UID]) + h.remote.uids[c.UID]})
}

// publish stamps an accepted message and hands it to the broker, telling
// its sender when the broker refuses it.
func (h *WebSocketServer) publish(out clusterOut) {
	out.at = h.now()
	out.ts = timestamp(out.at)
	if h.broker.publish(h, out) {
		return
	}
	switch {
	case out.reply != nil:
		out.reply <- PublishResult{Err: errClusterUnavailable}
	case out.session != nil:
		h.send(out.session, newErrorEvent(clusterUnavailable))
	}
}

// roomSessions is how many sessions a room has on every node, as this node
// knows them now.
func (h *WebSocketServer) roomSessions(roomName string) int {
	n := h.remoteSessions(roomName)
	if r := h.rooms[roomName]; r != nil {
		n += len(r.members)
	}
	return n
}

// disconnect closes this node's sessions of uid, each once it has written
// what was already queued for it, and says how many.
func (h *WebSocketServer) disconnect(uid string) int {
	for _, s := range h.byUID[uid] {
		s.queue.endAfterQueued(closeDisconnected)
	}
	h.metrics.closes.WithLabelValues("disconnected").Add(float64(len(h.byUID[uid])))
	return len(h.byUID[uid])
}

// HistoryQuery answers a session with its room's last Limit kept events
// (all of them for 0), in its mode.
type HistoryQuery struct {
	Session *UserSession
	Limit   int
}

func (c HistoryQuery) apply(h *WebSocketServer) {
	h.expireHistory()
	s := c.Session
	entries := h.history.last(s.room, c.Limit)
	if s.mode == modeJSON {
		h.sendFrame(s, outboundFrame{data: historyJSON(s.room, h.historyFrames(entries, modeJSON))})
		return
	}
	h.send(s, &historyHeader{room: s.room, count: len(entries)})
	for _, e := range entries {
		h.sendShared(s, e.event.frames[modeText])
	}
}

// historyFrames is the entries encoded for mode.
func (h *WebSocketServer) historyFrames(entries []*historyEntry, mode clientMode) [][]byte {
	frames := make([][]byte, len(entries))
	for i, e := range entries {
		frames[i] = e.event.frames[mode].data
	}
	return frames
}

// sendFrame queues an encoded frame to one session.
func (h *WebSocketServer) sendFrame(s *UserSession, f outboundFrame) {
	if s.queue.push(f) {
		h.metrics.delivered.Inc()
	}
}

// sendShared queues a frame the history holds (a replay, a text history
// answer), outside the session's byte cap (see pushShared).
func (h *WebSocketServer) sendShared(s *UserSession, f outboundFrame) {
	if s.queue.pushShared(f) {
		h.metrics.delivered.Inc()
	}
}

// RoomHistory answers GET /api/rooms/{room}/history: the last Limit kept
// events, or with Recover the first Limit after its seq and whether they
// are all there. The frames are JSON mode's, shared and never modified.
type RoomHistory struct {
	Room    string
	Limit   int
	Recover recovery
	Reply   chan RoomHistoryAnswer
}

// RoomHistoryAnswer is a RoomHistory's answer.
type RoomHistoryAnswer struct {
	Frames    [][]byte
	Recovered bool
}

func (c RoomHistory) apply(h *WebSocketServer) {
	h.expireHistory()
	if !c.Recover.asked {
		c.Reply <- RoomHistoryAnswer{Frames: h.historyFrames(h.history.last(c.Room, c.Limit), modeJSON)}
		return
	}
	entries, recovered := h.history.since(c.Room, c.Recover.since)
	if !recovered {
		// Given either way (PROTOCOL.md): what is kept after since.
		entries = h.history.after(c.Room, c.Recover.since)
	}
	if c.Limit > 0 && c.Limit < len(entries) {
		entries = entries[:c.Limit]
	}
	c.Reply <- RoomHistoryAnswer{Frames: h.historyFrames(entries, modeJSON), Recovered: recovered}
}

// HistoryReset forgets every kept event and starts above Floor (see
// history.reset).
type HistoryReset struct{ Floor uint64 }

func (c HistoryReset) apply(h *WebSocketServer) { h.history.reset(c.Floor) }

// HistoryStats answers with what the history keeps, for /metrics.
type HistoryStats struct{ Reply chan [2]int64 }

func (c HistoryStats) apply(h *WebSocketServer) {
	c.Reply <- [2]int64{int64(h.history.kept), h.history.bytes}
}

// historyStats asks the hub for HistoryStats; zeros when it does not answer
// within a second.
func (h *WebSocketServer) historyStats() (events, bytes float64) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	reply := make(chan [2]int64, 1)
	stats, _ := ask(ctx, h, HistoryStats{Reply: reply}, reply)
	return float64(stats[0]), float64(stats[1])
}

// HealthPing proves the hub loop is turning.
type HealthPing struct{ Reply chan struct{} }

func (c HealthPing) apply(*WebSocketServer) { c.Reply <- struct{}{} }
