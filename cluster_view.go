package main

import (
	"slices"
	"time"
)

// remoteView is the hub's picture of the sessions on other nodes, built
// from their presence messages. Like every hub map, only the hub
// goroutine touches it.
type remoteView struct {
	nodes map[string]map[presenceKey]int // node → (room, uid) → its sessions there
	rooms map[string]*remoteRoom         // room → totals over all other nodes
	uids  map[string]int                 // uid → sessions on all other nodes, any room
}

type presenceKey struct{ room, uid string }

// remoteRoom is one room's sessions on all other nodes together.
type remoteRoom struct {
	uids     map[string]int // uid → sessions
	sessions int
}

func newRemoteView() remoteView {
	return remoteView{nodes: map[string]map[presenceKey]int{}, rooms: map[string]*remoteRoom{}, uids: map[string]int{}}
}

// sessions is how many sessions uid has in room on other nodes.
func (v *remoteView) sessions(room, uid string) int {
	if r := v.rooms[room]; r != nil {
		return r.uids[uid]
	}
	return 0
}

// set records node's session count for (room, uid) and returns the other
// nodes' total for it before and after.
func (v *remoteView) set(node string, k presenceKey, n int) (before, after int) {
	counts := v.nodes[node]
	if counts == nil {
		if n == 0 {
			return v.sessions(k.room, k.uid), v.sessions(k.room, k.uid)
		}
		counts = map[presenceKey]int{}
		v.nodes[node] = counts
	}
	diff := n - counts[k]
	if n == 0 {
		delete(counts, k)
	} else {
		counts[k] = n
	}
	r := v.rooms[k.room]
	if r == nil {
		r = &remoteRoom{uids: map[string]int{}}
		v.rooms[k.room] = r
	}
	before = r.uids[k.uid]
	after = before + diff
	r.sessions += diff
	v.uids[k.uid] += diff
	if after == 0 {
		delete(r.uids, k.uid)
	} else {
		r.uids[k.uid] = after
	}
	if v.uids[k.uid] == 0 {
		delete(v.uids, k.uid)
	}
	if len(r.uids) == 0 {
		delete(v.rooms, k.room)
	}
	return before, after
}

// setRemote applies one node's new count for (room, uid) and tells the
// room's local sessions when the uid came online or went offline in the
// room for the whole cluster.
func (h *WebSocketServer) setRemote(node string, k presenceKey, n int) {
	before, after := h.remote.set(node, k, n)
	r := h.rooms[k.room]
	if r == nil || r.uids[k.uid] > 0 || (before > 0) == (after > 0) {
		return // nobody here to tell, or the uid is here anyway, or no change
	}
	kind := "joined"
	if after == 0 {
		kind = "left"
	}
	h.deliver(r.members, &encodedEvent{ev: &presenceChange{Type: kind, UID: k.uid, Room: k.room}}, nil)
}

// RemoteDelta applies another node's presence changes.
type RemoteDelta struct {
	Node    string
	Entries []presenceEntry
}

func (c RemoteDelta) apply(h *WebSocketServer) {
	for _, e := range c.Entries {
		h.setRemote(c.Node, presenceKey{e.Room, e.UID}, max(e.Sessions, 0))
	}
}

// RemoteSnapshot replaces what the hub knows of another node's sessions,
// announcing the joins and leaves that the difference makes.
type RemoteSnapshot struct {
	Node    string
	Entries []presenceEntry
}

func (c RemoteSnapshot) apply(h *WebSocketServer) {
	fresh := make(map[presenceKey]int, len(c.Entries))
	for _, e := range c.Entries {
		if e.Sessions > 0 {
			fresh[presenceKey{e.Room, e.UID}] = e.Sessions
		}
	}
	for k := range h.remote.nodes[c.Node] {
		if fresh[k] == 0 {
			h.setRemote(c.Node, k, 0)
		}
	}
	for k, n := range fresh {
		h.setRemote(c.Node, k, n)
	}
	if len(h.remote.nodes[c.Node]) == 0 {
		delete(h.remote.nodes, c.Node)
	}
}

// RemoteGone forgets every session of a node that said goodbye or went
// silent.
type RemoteGone struct{ Node string }

func (c RemoteGone) apply(h *WebSocketServer) {
	RemoteSnapshot{Node: c.Node}.apply(h)
}

// PresenceSnapshot answers with this node's sessions per room and uid, for
// the other nodes. The changes still waiting in the presence mailbox are
// dropped: the snapshot is newer than all of them.
type PresenceSnapshot struct {
	Reply   chan []presenceEntry
	Pending *presenceMailbox // the changes the snapshot makes old
}

func (c PresenceSnapshot) apply(h *WebSocketServer) {
	var entries []presenceEntry
	for _, r := range h.rooms {
		for uid, n := range r.uids {
			entries = append(entries, presenceEntry{Room: r.name, UID: uid, Sessions: n})
		}
	}
	c.Pending.take()
	c.Reply <- entries
}

// Delivery is one message back from the broker, to be delivered to this
// node's sessions: from the stream in a cluster, where Seq is the stream's
// sequence (the same on every node), or straight from the hub on a single
// node (memoryBroker), where Seq is 0 and the room numbers it.
type Delivery struct {
	Kind, Room, From, To, TS, Node, SessionID string
	Seq                                       uint64
	Text                                      string
	Data                                      []byte    // a publish's JSON data, or a binary payload
	At                                        time.Time // when the stream (or, on one node, the hub) took it
}

func (d Delivery) apply(h *WebSocketServer) { h.receive(d) }

// receive delivers d and returns how many sessions took it.
func (h *WebSocketServer) receive(d Delivery) int {
	switch d.Kind {
	case kindDirect:
		return h.deliverDirect(d)
	case kindDisconnect:
		return h.disconnect(d.To)
	}
	r := h.rooms[d.Room]
	if d.Kind == kindMessage || d.Kind == kindPublish {
		return h.receiveNumbered(r, d)
	}
	if r == nil || d.Kind != kindBinary {
		return 0
	}
	// Binary data goes out unchanged, the same in every mode, unnumbered
	// and not kept.
	frame := outboundFrame{data: d.Data, binary: true}
	return h.deliver(r.members, &encodedEvent{frames: [modeCount]outboundFrame{frame, frame}}, nil)
}

// receiveNumbered numbers a room message or publish, delivers it to the
// room's sessions here (if any) and keeps it in the room's history.
func (h *WebSocketServer) receiveNumbered(r *room, d Delivery) int {
	entry := h.history.newEntry(d.Room, d.Seq, d.At)
	if d.Kind == kindMessage {
		entry.event.ev = &messageEvent{Type: "message", Room: d.Room, From: d.From, Text: d.Text, Seq: entry.seq, TS: d.TS}
	} else {
		entry.event.ev = &publishEvent{Type: "publish", Room: d.Room, Text: d.Text, Data: d.Data, Seq: entry.seq, TS: d.TS}
	}
	queued := 0
	if r != nil {
		queued = h.deliver(r.members, &entry.event, nil)
	}
	h.history.keep(entry, len(d.Text)+len(d.Data)+len(d.From)+len(d.TS))
	if r == nil {
		h.history.forget(d.Room) // kept nothing (history off): nobody needs the log
	}
	if len(h.history.emptied) > 0 {
		h.history.forgetEmptied(h.occupied)
	}
	return queued
}

// deliverDirect hands a DM to every local session of its recipient, and
// the echo to the sending session if it is on this node.
func (h *WebSocketServer) deliverDirect(d Delivery) int {
	dm := &directEvent{Type: "direct", From: d.From, To: d.To, Text: d.Text, TS: d.TS}
	queued := 0
	if targets := h.byUID[d.To]; len(targets) > 0 {
		queued = h.deliver(targets, &encodedEvent{ev: dm}, nil)
	}
	if d.Node != h.broker.node() {
		return queued
	}
	i := slices.IndexFunc(h.byUID[d.From], func(s *UserSession) bool { return s.id == d.SessionID })
	if i >= 0 {
		echo := *dm
		echo.echo = true
		h.send(h.byUID[d.From][i], &echo)
	}
	return queued
}

// online is a room's uids on every node, sorted.
func (h *WebSocketServer) online(roomName string) []string {
	uids := []string{}
	if r := h.rooms[roomName]; r != nil {
		for uid := range r.uids {
			uids = append(uids, uid)
		}
	}
	if rr := h.remote.rooms[roomName]; rr != nil {
		for uid := range rr.uids {
			if r := h.rooms[roomName]; r == nil || r.uids[uid] == 0 {
				uids = append(uids, uid)
			}
		}
	}
	slices.Sort(uids)
	return uids
}

// remoteSessions is how many sessions are in a room on other nodes.
func (h *WebSocketServer) remoteSessions(roomName string) int {
	if rr := h.remote.rooms[roomName]; rr != nil {
		return rr.sessions
	}
	return 0
}

// presenceChanged tells the other nodes a uid's session count in a room.
func (h *WebSocketServer) presenceChanged(r *room, uid string) {
	h.broker.presenceChanged(presenceEntry{Room: r.name, UID: uid, Sessions: r.uids[uid]})
}

// CloseEverySession closes every session of this node with Status once
// each has written what is already queued for it.
type CloseEverySession struct{ Status closeStatus }

func (c CloseEverySession) apply(h *WebSocketServer) {
	for _, sessions := range h.byUID {
		for _, s := range sessions {
			s.queue.endAfterQueued(c.Status)
		}
	}
	h.metrics.closes.WithLabelValues("missed_messages").Add(float64(h.sessionCount))
}
