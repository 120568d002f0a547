package main

import (
	"encoding/json"
	"slices"
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
type PresenceSnapshot struct{ Reply chan []presenceEntry }

func (c PresenceSnapshot) apply(h *WebSocketServer) {
	var entries []presenceEntry
	for _, r := range h.rooms {
		for uid, n := range r.uids {
			entries = append(entries, presenceEntry{Room: r.name, UID: uid, Sessions: n})
		}
	}
	if h.cluster != nil {
		h.cluster.presence.changes.take()
	}
	c.Reply <- entries
}

// ClusterDelivery is one message from the stream, to be delivered to this
// node's sessions. Seq is the stream's sequence: the same on every node.
type ClusterDelivery struct {
	Kind, Room, From, To, TS, Node, SessionID string
	Seq                                       uint64
	Body                                      []byte
	IsData                                    bool // a publish whose Body is JSON data
}

func (c ClusterDelivery) apply(h *WebSocketServer) {
	switch c.Kind {
	case kindDirect:
		h.deliverDirect(c)
		return
	case kindDisconnect:
		h.disconnect(c.To)
		return
	}
	r := h.rooms[c.Room]
	if r == nil {
		return
	}
	var e encodedEvent
	switch c.Kind {
	case kindMessage:
		e.ev = &messageEvent{Type: "message", Room: c.Room, From: c.From, Text: string(c.Body), Seq: c.Seq, TS: c.TS}
	case kindPublish:
		ev := &publishEvent{Type: "publish", Room: c.Room, Seq: c.Seq, TS: c.TS}
		if c.IsData {
			ev.Data = json.RawMessage(c.Body)
		} else {
			ev.Text = string(c.Body)
		}
		e.ev = ev
	case kindBinary:
		frame := outboundFrame{data: c.Body, binary: true}
		e.frames = [modeCount]outboundFrame{frame, frame}
	default:
		return
	}
	h.deliver(r.members, &e, nil)
}

// deliverDirect hands a DM to every local session of its recipient, and
// the echo to the sending session if it is here.
func (h *WebSocketServer) deliverDirect(c ClusterDelivery) {
	dm := &directEvent{Type: "direct", From: c.From, To: c.To, Text: string(c.Body), TS: c.TS}
	if targets := h.byUID[c.To]; len(targets) > 0 {
		h.deliver(targets, &encodedEvent{ev: dm}, nil)
	}
	if h.cluster == nil || c.Node != h.cluster.node {
		return
	}
	i := slices.IndexFunc(h.byUID[c.From], func(s *UserSession) bool { return s.id == c.SessionID })
	if i >= 0 {
		echo := *dm
		echo.echo = true
		h.send(h.byUID[c.From][i], &echo)
	}
}

// forward passes a session's message to the cluster, or tells the session
// it was not sent.
func (h *WebSocketServer) forward(out clusterOut) {
	out.ts = h.timestamp()
	if !h.cluster.forward(out) {
		h.send(out.session, newErrorEvent(clusterUnavailable))
	}
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
	if h.cluster != nil {
		h.cluster.presence.changes.push(presenceEntry{Room: r.name, UID: uid, Sessions: r.uids[uid]})
	}
}

// publishToCluster sends an API publish through the broker; the link
// answers c.Reply once the stream has it. Recipients are the room's
// sessions on every node, as this node knows them now.
func (h *WebSocketServer) publishToCluster(c Publish) {
	recipients := h.remoteSessions(c.Room)
	if r := h.rooms[c.Room]; r != nil {
		recipients += len(r.members)
	}
	// Published even when this node knows of nobody in the room: its view
	// may be a moment old, and the nodes that have the room deliver it.
	out := clusterOut{kind: kindPublish, room: c.Room, text: c.Text, data: c.Data, ts: h.timestamp(), reply: c.Reply, recipient: recipients}
	if !h.cluster.forward(out) {
		c.Reply <- PublishResult{Err: errClusterUnavailable}
	}
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
