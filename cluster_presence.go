package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Presence between nodes travels on one core NATS subject. Every node
// publishes, in order, numbered messages about its own sessions: deltas
// (the new session count of a room and uid), whole snapshots (in parts),
// heartbeats carrying its last number, and a goodbye. A receiver that sees
// a number missing, or a node it does not know, asks that node for a
// snapshot; everything the node sent before the snapshot is in it, so the
// receiver ignores that node's deltas until the snapshot comes. A node
// that stays silent past the expiry is taken to be dead: its uids leave.

// presenceEntry says how many sessions a uid has in a room on one node; 0
// means none any more.
type presenceEntry struct {
	Room     string `json:"r"`
	UID      string `json:"u"`
	Sessions int    `json:"n"`
}

// presenceMsg is one message on presenceSubject.
type presenceMsg struct {
	Type    string          `json:"t"` // presence* below
	Node    string          `json:"node"`
	Run     string          `json:"run"` // random per start: a restarted node is a new peer
	Seq     uint64          `json:"seq,omitempty"`
	Part    int             `json:"part,omitempty"`
	Last    bool            `json:"last,omitempty"`
	Target  string          `json:"target,omitempty"` // sync requests: whose snapshot, "*" = everyone's
	Entries []presenceEntry `json:"e,omitempty"`
}

const (
	presenceDelta     = "delta"
	presenceSnapshot  = "snapshot"
	presenceHeartbeat = "heartbeat"
	presenceBye       = "bye"
	presenceSync      = "sync"

	// snapshotPartEntries keeps each part far below NATS's 1 MB payload.
	snapshotPartEntries = 2000
	// snapshotGap is the least time between two snapshots of this node.
	snapshotGap = 200 * time.Millisecond
	// syncRetry is how long a receiver waits for a snapshot it asked for
	// before asking again.
	syncRetry = time.Second
	// presenceInboundCapacity is how many presence messages may wait for
	// the loop; NATS drops past it, and the gaps lead to snapshots.
	presenceInboundCapacity = 8192
)

// arrival is a presence message and when NATS handed it over. Liveness is
// judged by arrival, so a loop that was busy does not mistake the queue it
// has not read yet for silence.
type arrival struct {
	msg *nats.Msg
	at  time.Time
}

// presenceMailbox carries the hub's presence changes to the presence loop
// without the hub ever waiting. It is unbounded, but holds at most one
// entry per session connect or disconnect since the loop last looked.
type presenceMailbox struct {
	mu      sync.Mutex
	pending []presenceEntry
	signal  chan struct{} // holds one token while pending is non-empty
}

func (m *presenceMailbox) push(e presenceEntry) {
	m.mu.Lock()
	wasEmpty := len(m.pending) == 0
	m.pending = append(m.pending, e)
	m.mu.Unlock()
	if wasEmpty {
		select {
		case m.signal <- struct{}{}:
		default:
		}
	}
}

func (m *presenceMailbox) take() []presenceEntry {
	m.mu.Lock()
	defer m.mu.Unlock()
	taken := m.pending
	m.pending = nil
	return taken
}

// peerState is what this node knows about another node's presence stream.
type peerState struct {
	run      string    // the node's current start
	seq      uint64    // number of the last message applied
	synced   bool      // false until a snapshot arrives, and after a gap
	lastSeen time.Time // any message from it
	askedAt  time.Time // when we last asked it for a snapshot

	partsSeq uint64 // the snapshot being assembled
	nextPart int
	parts    []presenceEntry
}

// presenceLoop is the one goroutine that publishes this node's presence
// and follows everyone else's. It owns peers and seq.
type presenceLoop struct {
	link      *clusterLink
	heartbeat time.Duration
	expiry    time.Duration

	changes   presenceMailbox
	inbound   chan arrival
	farewell  chan chan struct{}
	reconnect chan struct{} // one pending signal per NATS reconnect
	stopped   chan struct{} // closed when run returns

	seq            uint64
	published      atomic.Uint64 // seq of the last delta or whole snapshot sent, for heartbeats
	selfSeen       time.Time     // when this node's own heartbeat last came back
	snapshotWanted bool
	lastSnapshot   time.Time
	peers          map[string]*peerState
}

func newPresenceLoop(c *clusterLink) *presenceLoop {
	return &presenceLoop{
		link:      c,
		heartbeat: c.cfg.PresenceHeartbeat,
		expiry:    c.cfg.PresenceExpiry,
		changes:   presenceMailbox{signal: make(chan struct{}, 1)},
		inbound:   make(chan arrival, presenceInboundCapacity),
		farewell:  make(chan chan struct{}),
		reconnect: make(chan struct{}, 1),
		stopped:   make(chan struct{}),
		peers:     map[string]*peerState{},
	}
}

// run publishes and follows presence until ctx ends or goodbye is said.
func (p *presenceLoop) run(ctx context.Context) error {
	defer close(p.stopped)
	sub, err := p.link.nc.Subscribe(presenceSubject, func(m *nats.Msg) {
		select {
		case p.inbound <- arrival{msg: m, at: time.Now()}:
		default: // the gap shows in the numbers, and a snapshot follows
		}
	})
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", presenceSubject, err)
	}
	defer sub.Unsubscribe()
	beatCtx, stopBeats := context.WithCancel(ctx)
	beats := make(chan struct{})
	go func() {
		defer close(beats)
		p.beat(beatCtx)
	}()
	defer func() {
		stopBeats()
		<-beats
	}()
	ticker := time.NewTicker(p.heartbeat / 2)
	defer ticker.Stop()
	// Ask everyone for their sessions; they learn ours from our heartbeat.
	p.publish(presenceMsg{Type: presenceSync, Target: "*"})
	p.selfSeen = time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case done := <-p.farewell:
			stopBeats()
			<-beats
			p.publish(presenceMsg{Type: presenceBye})
			_ = p.link.nc.FlushTimeout(time.Second)
			close(done)
			return nil
		case <-p.changes.signal:
			p.publishDeltas()
		case <-p.reconnect:
			p.reconnected()
		case a := <-p.inbound:
			p.receive(ctx, a)
		case <-ticker.C:
			p.receiveQueued(ctx)
			p.expire(ctx)
			p.askMissing()
		}
		if p.snapshotWanted && time.Since(p.lastSnapshot) >= snapshotGap {
			p.publishSnapshot(ctx)
		}
	}
}

// beat publishes a heartbeat every interval, from its own goroutine so
// that a loop waiting on a busy hub does not fall silent. It carries the
// number of the last message the loop has finished sending.
func (p *presenceLoop) beat(ctx context.Context) {
	ticker := time.NewTicker(p.heartbeat)
	defer ticker.Stop()
	for {
		p.publish(presenceMsg{Type: presenceHeartbeat, Seq: p.published.Load()})
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// receiveQueued handles every presence message already waiting.
func (p *presenceLoop) receiveQueued(ctx context.Context) {
	for {
		select {
		case a := <-p.inbound:
			p.receive(ctx, a)
		default:
			return
		}
	}
}

// goodbye asks the loop to say bye and stop, and waits up to timeout.
func (p *presenceLoop) goodbye(timeout time.Duration) {
	done := make(chan struct{})
	select {
	case p.farewell <- done:
	case <-p.stopped:
		return
	case <-time.After(timeout):
		return
	}
	select {
	case <-done:
	case <-time.After(timeout):
	}
}

// reconnected runs on the loop after NATS came back: peers
// get a fresh grace period, everyone is asked for a snapshot, and ours
// goes out, since others may have expired this node meanwhile.
func (p *presenceLoop) reconnected() {
	now := time.Now()
	for _, peer := range p.peers {
		peer.lastSeen = now
	}
	p.publish(presenceMsg{Type: presenceSync, Target: "*"})
	p.snapshotWanted = true
}

func (p *presenceLoop) publish(m presenceMsg) {
	m.Node, m.Run = p.link.nodeID, p.link.runID
	data, err := json.Marshal(m)
	if err != nil {
		p.link.log.Error("encode presence", "err", err)
		return
	}
	if err := p.link.nc.Publish(presenceSubject, data); err != nil {
		p.link.log.Debug("publish presence", "type", m.Type, "err", err)
	}
}

// publishDeltas sends the hub's latest changes, keeping only the newest
// count per room and uid: a join storm becomes a few messages.
func (p *presenceLoop) publishDeltas() {
	changes := p.changes.take()
	if len(changes) == 0 {
		return
	}
	type key struct{ room, uid string }
	latest := make(map[key]int, len(changes))
	order := make([]key, 0, len(changes))
	for _, c := range changes {
		k := key{c.Room, c.UID}
		if _, seen := latest[k]; !seen {
			order = append(order, k)
		}
		latest[k] = c.Sessions
	}
	entries := make([]presenceEntry, 0, len(order))
	for _, k := range order {
		entries = append(entries, presenceEntry{Room: k.room, UID: k.uid, Sessions: latest[k]})
	}
	for part := range chunk(entries, snapshotPartEntries) {
		p.seq++
		p.publish(presenceMsg{Type: presenceDelta, Seq: p.seq, Entries: part})
	}
	p.published.Store(p.seq)
}

// publishSnapshot sends every session of this node, in parts. The hub
// drops the changes still waiting in the mailbox when it takes the
// snapshot, since the snapshot already holds them.
func (p *presenceLoop) publishSnapshot(ctx context.Context) {
	reply := make(chan []presenceEntry, 1)
	entries, err := ask(ctx, p.link.hub, PresenceSnapshot{Reply: reply, Pending: &p.changes}, reply)
	if err != nil {
		return
	}
	p.snapshotWanted = false
	p.lastSnapshot = time.Now()
	p.seq++
	parts := 0
	for range chunk(entries, snapshotPartEntries) {
		parts++
	}
	defer p.published.Store(p.seq)
	if parts == 0 {
		p.publish(presenceMsg{Type: presenceSnapshot, Seq: p.seq, Last: true})
		return
	}
	i := 0
	for part := range chunk(entries, snapshotPartEntries) {
		p.publish(presenceMsg{Type: presenceSnapshot, Seq: p.seq, Part: i, Last: i == parts-1, Entries: part})
		i++
	}
}

// chunk yields entries in slices of at most size.
func chunk(entries []presenceEntry, size int) func(func([]presenceEntry) bool) {
	return func(yield func([]presenceEntry) bool) {
		for len(entries) > 0 {
			n := min(size, len(entries))
			if !yield(entries[:n]) {
				return
			}
			entries = entries[n:]
		}
	}
}

// receive applies one presence message from the subject.
func (p *presenceLoop) receive(ctx context.Context, a arrival) {
	var m presenceMsg
	if err := json.Unmarshal(a.msg.Data, &m); err != nil {
		p.link.log.Warn("bad presence message", "err", err)
		return
	}
	if m.Type == presenceSync {
		if m.Target == p.link.nodeID || m.Target == "*" {
			p.snapshotWanted = true
		}
		return
	}
	if m.Node == p.link.nodeID {
		if m.Type == presenceHeartbeat {
			p.selfSeen = a.at
		}
		return
	}
	if !validNodeID(m.Node) {
		return
	}
	if m.Type == presenceBye {
		// A late bye from an earlier run must not drop the current one.
		if peer, known := p.peers[m.Node]; known && peer.run == m.Run {
			delete(p.peers, m.Node)
			p.link.log.Info("node left the cluster", "peer", m.Node)
			_ = p.link.hub.submit(ctx, RemoteGone{Node: m.Node})
		}
		return
	}
	peer := p.peers[m.Node]
	if peer == nil || peer.run != m.Run {
		if peer == nil {
			p.link.log.Info("node joined the cluster", "peer", m.Node)
		} else {
			p.link.log.Info("node restarted", "peer", m.Node)
		}
		// Whatever we knew stays until the snapshot replaces it.
		peer = &peerState{run: m.Run}
		p.peers[m.Node] = peer
	}
	peer.lastSeen = a.at
	switch m.Type {
	case presenceHeartbeat:
		// A heartbeat may overtake the loop's last delta (it comes from
		// another goroutine), so only a number ahead of ours means loss.
		if peer.synced && m.Seq > peer.seq {
			peer.synced = false
		}
	case presenceDelta:
		if peer.synced && m.Seq == peer.seq+1 {
			peer.seq = m.Seq
			_ = p.link.hub.submit(ctx, RemoteDelta{Node: m.Node, Entries: m.Entries})
		} else {
			peer.synced = false
		}
	case presenceSnapshot:
		p.receiveSnapshotPart(ctx, m.Node, peer, m)
	}
	if !peer.synced && time.Since(peer.askedAt) >= syncRetry {
		p.ask(m.Node, peer)
	}
}

func (p *presenceLoop) receiveSnapshotPart(ctx context.Context, node string, peer *peerState, m presenceMsg) {
	if m.Part == 0 {
		peer.partsSeq, peer.nextPart, peer.parts = m.Seq, 0, nil
	}
	if m.Seq != peer.partsSeq || m.Part != peer.nextPart {
		peer.synced = false // a part went missing; ask again
		return
	}
	peer.parts = append(peer.parts, m.Entries...)
	peer.nextPart++
	if !m.Last {
		return
	}
	entries := peer.parts
	peer.parts = nil
	peer.seq, peer.synced = m.Seq, true
	_ = p.link.hub.submit(ctx, RemoteSnapshot{Node: node, Entries: entries})
}

func (p *presenceLoop) ask(node string, peer *peerState) {
	peer.askedAt = time.Now()
	p.publish(presenceMsg{Type: presenceSync, Target: node})
}

// askMissing asks again any node whose snapshot has not come.
func (p *presenceLoop) askMissing() {
	for node, peer := range p.peers {
		if !peer.synced && time.Since(peer.askedAt) >= syncRetry {
			p.ask(node, peer)
		}
	}
}

// expire forgets nodes silent for longer than the expiry. It does nothing
// unless this node's own heartbeats are coming back: otherwise the silence
// may be ours (a broker outage, a cut network not yet noticed), and /who
// answers from the last view until the broker is back.
func (p *presenceLoop) expire(ctx context.Context) {
	if !p.link.connected.Load() || time.Since(p.selfSeen) > 2*p.heartbeat {
		return
	}
	for node, peer := range p.peers {
		if time.Since(peer.lastSeen) > p.expiry {
			delete(p.peers, node)
			p.link.log.Warn("node gone without goodbye; its uids leave", "peer", node, "silent_for", time.Since(peer.lastSeen).Round(time.Millisecond))
			_ = p.link.hub.submit(ctx, RemoteGone{Node: node})
		}
	}
}
