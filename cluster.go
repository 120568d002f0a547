package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
)

// Cluster mode: nodes share one JetStream stream for room traffic and DMs
// (the stream's sequence is the one order every node delivers in) and core
// NATS subjects for presence. The hub never calls NATS itself: it hands
// outgoing traffic to clusterLink's publisher through a bounded channel and
// gets stream messages back as Delivery commands (broker.go).
const (
	streamName      = "SWITCHBOARD"
	roomSubject     = "switchboard.room"
	directSubject   = "switchboard.dm"
	presenceSubject = "switchboard.presence"
	// nodeSubjectPrefix + node id answers "is this node id live?", so a
	// second node with the same id refuses to start.
	nodeSubjectPrefix = "switchboard.node."

	// outgoingCapacity bounds the traffic waiting for the publisher; past
	// it a node refuses new messages rather than queueing without limit.
	outgoingCapacity = 8192
	// consumerStopWait bounds how long a stopping node waits for its
	// stream consumer to stop.
	consumerStopWait = 2 * time.Second
	// publishAckTimeout bounds how long a message may wait for the
	// stream's ack before the ack counts as lost (see cluster_pending.go).
	publishAckTimeout = 5 * time.Second
)

// Headers of a stream message. The body is the text, the publish data or
// the binary payload, unchanged.
const (
	headerKind    = "Sb-Kind" // one of the kind* values
	headerRoom    = "Sb-Room"
	headerFrom    = "Sb-From"
	headerTo      = "Sb-To"
	headerTS      = "Sb-Ts"
	headerNode    = "Sb-Node"    // the node that published it
	headerSession = "Sb-Session" // the sending session, for a DM's echo
	headerData    = "Sb-Data"    // "1" when a publish carries JSON data
)

const (
	kindMessage = "message"
	kindPublish = "publish"
	kindBinary  = "binary"
	kindDirect  = "direct"
	// kindDisconnect puts a uid out on every node (POST
	// /api/users/{uid}/disconnect); it travels like a DM.
	kindDisconnect = "disconnect"
	// kindVoid marks a stream message that only settles a lost ack (see
	// cluster_pending.go); consumers skip it.
	kindVoid = "void"
)

var (
	// errClusterUnavailable refuses traffic the broker cannot take now.
	errClusterUnavailable = errors.New("cluster unavailable")
	clusterUnavailable    = &requestError{codeUnavailable, "cluster unavailable, message not sent"}
)

// clusterOut is one message on its way from the hub to the stream, with
// whoever must hear about it if it does not get there.
type clusterOut struct {
	id        string // set by the publisher
	kind      string
	room      string
	from      string
	to        string
	text      string
	data      []byte // publish data (JSON) or binary payload
	ts        string
	at        time.Time          // when the hub accepted it; ts is its text
	session   *UserSession       // the sender, told on failure; nil for API publishes
	reply     chan PublishResult // API publishes: answered once the stream has it
	recipient int                // API publishes: the recipients counted at enqueue
}

// pendingAck is a published message waiting for the stream's ack.
type pendingAck struct {
	out     clusterOut
	future  jetstream.PubAckFuture
	started time.Time
}

// clusterLink is one node's connection to the broker. Its goroutines are
// started by Run and end when Run's context ends.
type clusterLink struct {
	cfg     Config
	nodeID  string
	runID   string // random per start, in message ids and presence
	log     *slog.Logger
	metrics *metrics
	hub     *WebSocketServer

	nc *nats.Conn
	js jetstream.JetStream

	connected   atomic.Bool   // the NATS connection is up
	closing     atomic.Bool   // Run is closing the connection on purpose
	streamReady atomic.Bool   // the stream was found or made since the last (re)connect
	lastSeq     atomic.Uint64 // last stream sequence delivered here
	reconnected chan struct{} // one pending signal per reconnect or consumer loss, for the stream keeper
	outgoing    chan clusterOut
	acks        chan pendingAck
	presence    *presenceLoop

	// inFlight counts messages handed to the publisher and not yet acked
	// or failed; highestAcked is the largest stream sequence acked to this
	// node. Shutdown waits for both to be settled (see settle).
	inFlight     atomic.Int64
	highestAcked atomic.Uint64
	// handedOver is the last stream sequence submitted to the hub; lastSeq
	// moves first, when a message arrives.
	handedOver atomic.Uint64
	// streamFirst is the first sequence of the stream as last found or made.
	streamFirst atomic.Uint64
	// fillTo is the stream's last sequence at start: the node listens once
	// its hub has everything up to it (filled).
	fillTo uint64

	// pending holds every published message until it is answered
	// (cluster_pending.go).
	pending pendingSet
	// streamCreated is when the stream we follow was made; a different
	// time after a reconnect means the broker lost it and it was made anew.
	// Set before Run, then only the stream keeper touches it.
	streamCreated time.Time

	// consumer follows the stream from before the node listens; its
	// deliveries wait on the hub until stopConsume. consumerMu guards both,
	// since the stream keeper may restart the consumer.
	consumerMu  sync.Mutex
	consumer    jetstream.ConsumeContext
	stopConsume context.CancelFunc
	// consumerRun numbers the consumers; a late callback of a stopped one
	// must not move the node's position after a restart reset it.
	consumerRun atomic.Uint64
}

// connectCluster dials NATS, refuses a node id that is already live, and
// makes sure the stream exists. The broker must be reachable at start;
// afterwards the link reconnects by itself.
func connectCluster(ctx context.Context, cfg Config, hub *WebSocketServer, m *metrics, log *slog.Logger) (*clusterLink, error) {
	c := &clusterLink{
		cfg: cfg, nodeID: cfg.NodeID, runID: newSessionID()[:8], log: log.With("node", cfg.NodeID), metrics: m, hub: hub,
		reconnected: make(chan struct{}, 1),
		outgoing:    make(chan clusterOut, outgoingCapacity),
		acks:        make(chan pendingAck, outgoingCapacity),
	}
	c.presence = newPresenceLoop(c)
	nc, err := nats.Connect(cfg.NATSURL,
		nats.Name("switchboard "+cfg.NodeID),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		// A silent network failure shows within about 5 s, not minutes.
		nats.PingInterval(2*time.Second),
		nats.MaxPingsOutstanding(2),
		// No buffering while disconnected: a message that cannot reach the
		// broker is refused at once, never sent late.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(c.onDisconnect),
		nats.ReconnectHandler(c.onReconnect),
	)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", cfg.NATSURL, err)
	}
	c.nc = nc
	c.connected.Store(true)
	if err := c.claimNodeID(); err != nil {
		nc.Close()
		return nil, err
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(outgoingCapacity),
		jetstream.WithPublishAsyncTimeout(publishAckTimeout))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	c.js = js
	info, err := c.ensureStream(ctx, true)
	if err != nil {
		nc.Close()
		return nil, err
	}
	c.streamCreated = info.Created
	// The consumer reads the whole stream from its first message, so the
	// hub's history is filled from it before the node listens (filled).
	startAfter := info.State.LastSeq
	if info.State.Msgs > 0 {
		startAfter = info.State.FirstSeq - 1
	}
	c.fillTo = info.State.LastSeq
	hub.history.coverFloor = startAfter // the hub does not run yet
	if err := c.startConsumer(ctx, startAfter); err != nil {
		nc.Close()
		return nil, err
	}
	c.metrics.watchCluster(c)
	return c, nil
}

// claimNodeID fails when another live node answers for this node id, and
// otherwise answers for it from now on, until the connection closes.
func (c *clusterLink) claimNodeID() error {
	subject := nodeSubjectPrefix + c.nodeID
	_, err := c.nc.Request(subject, nil, time.Second)
	switch {
	case err == nil:
		return fmt.Errorf("node id %q is already live in the cluster (see -node-id)", c.nodeID)
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout):
	default:
		return fmt.Errorf("check node id %q: %w", c.nodeID, err)
	}
	if _, err := c.nc.Subscribe(subject, func(m *nats.Msg) { _ = m.Respond([]byte(c.nodeID)) }); err != nil {
		return fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return nil
}

func (c *clusterLink) onDisconnect(_ *nats.Conn, err error) {
	if c.connected.Swap(false) && !c.closing.Load() {
		c.streamReady.Store(false)
		c.metrics.clusterUp.Set(0)
		c.log.Warn("cluster unavailable: lost the NATS connection", "err", err)
	}
}

func (c *clusterLink) onReconnect(nc *nats.Conn) {
	c.connected.Store(true)
	c.log.Info("NATS connection back", "url", nc.ConnectedUrlRedacted())
	c.recheckStream()
	select {
	case c.presence.reconnect <- struct{}{}:
	default:
	}
}

// recheckStream asks the stream keeper to find or make the stream again
// and check where it ends.
func (c *clusterLink) recheckStream() {
	select {
	case c.reconnected <- struct{}{}:
	default:
	}
}

// available reports whether traffic can go through the broker now. The
// hub asks it for every message, so it reads two atomics and nothing else.
func (c *clusterLink) available() bool {
	return c.connected.Load() && c.streamReady.Load()
}

// publish hands a message to the publisher without waiting (broker); it
// comes back through the stream as a Delivery.
func (c *clusterLink) publish(_ *WebSocketServer, out clusterOut) bool { return c.forward(out) }

// presenceChanged queues a change for the presence loop (broker).
func (c *clusterLink) presenceChanged(e presenceEntry) { c.presence.changes.push(e) }

// node is this node's id, as its messages carry it (broker).
func (c *clusterLink) node() string { return c.nodeID }

// reachWait bounds how long a recovery waits for the consumer to reach its
// since; past it the hub answers with what it has.
const reachWait = 2 * time.Second

// reach waits until the consumer has handed seq to the hub (broker).
func (c *clusterLink) reach(ctx context.Context, seq uint64) {
	ctx, cancel := context.WithTimeout(ctx, reachWait)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for c.handedOver.Load() < seq {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// filled waits, at most until ctx ends, until the consumer has handed the
// hub everything the stream held at start (fillTo): the node's history is
// then the cluster's, and it may listen.
func (c *clusterLink) filled(ctx context.Context) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for c.handedOver.Load() < c.fillTo {
		select {
		case <-ctx.Done():
			return fmt.Errorf("history fill stopped at %d of %d: %w", c.handedOver.Load(), c.fillTo, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// forward hands a message to the publisher without waiting; false means
// it was not taken and the sender must be told.
func (c *clusterLink) forward(out clusterOut) bool {
	if !c.available() {
		return false
	}
	c.inFlight.Add(1)
	select {
	case c.outgoing <- out:
		return true
	default:
		c.inFlight.Add(-1)
		return false
	}
}

// raiseAcked makes highestAcked at least seq.
func (c *clusterLink) raiseAcked(seq uint64) {
	for {
		highest := c.highestAcked.Load()
		if seq <= highest || c.highestAcked.CompareAndSwap(highest, seq) {
			return
		}
	}
}

// settle waits, at most until ctx ends, until every message this node
// published has been acked or refused and has come back through the
// consumer, so that at shutdown the senders on this node get their own
// messages (or an error) before their sessions close.
func (c *clusterLink) settle(ctx context.Context) {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for c.inFlight.Load() > 0 || c.handedOver.Load() < c.highestAcked.Load() {
		select {
		case <-ctx.Done():
			c.log.Warn("shutdown: stopped waiting for this node's messages to come back", "in_flight", c.inFlight.Load())
			return
		case <-tick.C:
		}
	}
	// The hub applies commands in order: once it answers this one, every
	// delivery and refusal handed to it before is in the sessions' queues.
	reply := make(chan struct{}, 1)
	_, _ = ask(ctx, c.hub, HealthPing{Reply: reply}, reply)
}

// Run runs the link's goroutines until ctx ends, then closes the NATS
// connection.
func (c *clusterLink) Run(ctx context.Context) error {
	defer func() {
		c.closing.Store(true)
		c.nc.Close()
	}()
	defer func() {
		c.consumerMu.Lock()
		defer c.consumerMu.Unlock()
		c.stopConsumer()
	}()
	c.metrics.clusterUp.Set(1)
	c.log.Info("joined the cluster", "nats", c.nc.ConnectedUrlRedacted(), "stream", streamName)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.publishLoop(gctx) })
	g.Go(func() error { return c.ackLoop(gctx) })
	g.Go(func() error { return c.keepStream(gctx) })
	g.Go(func() error { return c.presence.run(gctx) })
	return g.Wait()
}

// deliver turns one stream message into a hub command. It may wait for
// the hub; that only slows this node's consumer, never the hub.
func (c *clusterLink) deliver(ctx context.Context, m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		c.log.Warn("stream message without metadata", "err", err)
		return
	}
	seq := meta.Sequence.Stream
	last := c.lastSeq.Swap(seq)
	if seq > last+1 && !c.streamStartsAt(ctx, seq) {
		// The consumer has no filter, so it sees every sequence: a jump
		// ahead means messages were removed before this node got them
		// (stream limits while it lagged, or a broker that lost them).
		c.log.Error("missed stream messages; closing this node's sessions so their clients reconnect",
			"last", last, "next", seq)
		_ = c.hub.submit(ctx, CloseEverySession{Status: closeMissedMessages})
	}
	if seq > last+1 {
		// Messages this node never read (lost, or before a stream made
		// anew): its history must not claim anything from before.
		_ = c.hub.submit(ctx, HistoryReset{Floor: seq - 1})
	}
	h := m.Headers()
	answered := false
	// A void marker carries a lost message's id but is not that message:
	// only settleLost answers for it.
	if h.Get(headerNode) == c.nodeID && h.Get(headerKind) != kindVoid {
		if out, ok := c.pending.take(h.Get(jetstream.MsgIDHeader)); ok { // back before its ack
			c.answerSent(out, seq)
			answered = true
		}
	}
	c.metrics.consumerPending.Set(float64(meta.NumPending))
	d := Delivery{
		Kind: h.Get(headerKind), Room: h.Get(headerRoom), From: h.Get(headerFrom), To: h.Get(headerTo),
		TS: h.Get(headerTS), Node: h.Get(headerNode), SessionID: h.Get(headerSession),
		Seq: meta.Sequence.Stream, At: meta.Timestamp,
	}
	switch {
	case d.Kind == kindBinary, h.Get(headerData) == "1":
		d.Data = m.Data()
	default:
		d.Text = string(m.Data())
	}
	_ = c.hub.submit(ctx, d)
	c.handedOver.Store(seq)
	if answered {
		c.inFlight.Add(-1) // only now: settle waits for the message to be with the hub
	}
}

// message is out as the stream stores it.
func (out clusterOut) message(node string) *nats.Msg {
	m := nats.NewMsg(roomSubject)
	if out.kind == kindDirect || out.kind == kindDisconnect {
		m.Subject = directSubject
	}
	m.Header.Set(headerKind, out.kind)
	m.Header.Set(headerNode, node)
	// The stream's duplicate detection keys on this id: see settleLost.
	m.Header.Set(jetstream.MsgIDHeader, out.id)
	m.Header.Set(headerTS, out.ts)
	if out.room != "" {
		m.Header.Set(headerRoom, out.room)
	}
	if out.from != "" {
		m.Header.Set(headerFrom, out.from)
	}
	if out.to != "" {
		m.Header.Set(headerTo, out.to)
	}
	if out.session != nil {
		m.Header.Set(headerSession, out.session.id)
	}
	if out.kind == kindPublish && out.data != nil {
		m.Header.Set(headerData, "1")
	}
	if out.data != nil {
		m.Data = out.data
	} else {
		m.Data = []byte(out.text)
	}
	return m
}

// publishOptions: no retries, since a retried message could land after a
// later one; and a bounded wait when too many acks are outstanding.
var publishOptions = []jetstream.PublishOpt{jetstream.WithRetryAttempts(0), jetstream.WithStallWait(time.Second)}

// publishLoop publishes in the order the hub accepted, without waiting for
// each ack: the stream keeps one connection's order, so a node's messages
// reach it in the order their senders sent them.
func (c *clusterLink) publishLoop(ctx context.Context) error {
	var published uint64
	for {
		select {
		case <-ctx.Done():
			return nil
		case out := <-c.outgoing:
			started := time.Now()
			published++
			out.id = c.runID + "-" + strconv.FormatUint(published, 36)
			c.pending.add(out)
			future, err := c.js.PublishMsgAsync(out.message(c.nodeID), publishOptions...)
			if err != nil {
				if out, ok := c.pending.take(out.id); ok {
					c.fail(ctx, out, err)
				}
				continue
			}
			select {
			case c.acks <- pendingAck{out: out, future: future, started: started}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// ackLoop waits for acks in publish order and answers whoever waits,
// unless the consumer has already (see cluster_pending.go). A message
// whose ack was lost is marked, and answered once the node knows its fate.
func (c *clusterLink) ackLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case p := <-c.acks:
			select {
			case ack := <-p.future.Ok():
				c.metrics.publishSeconds.Observe(time.Since(p.started).Seconds())
				if out, ok := c.pending.take(p.out.id); ok {
					c.answerSent(out, ack.Sequence)
					c.inFlight.Add(-1)
				}
			case err := <-p.future.Err():
				switch {
				case ackLost(err):
					c.metrics.acksLost.Inc()
					if c.pending.markLost(p.out.id) {
						c.log.Debug("ack lost; the stream keeper will find out whether the message was stored", "kind", p.out.kind, "err", err)
					}
				default:
					if out, ok := c.pending.take(p.out.id); ok {
						c.fail(ctx, out, err)
					}
				}
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// fail tells a message's sender that it was not sent.
func (c *clusterLink) fail(ctx context.Context, out clusterOut, err error) {
	defer c.inFlight.Add(-1) // after the refusal is with the hub, for settle
	c.metrics.publishErrors.Inc()
	c.log.Debug("publish failed", "kind", out.kind, "room", out.room, "err", err)
	if out.reply != nil {
		out.reply <- PublishResult{Err: errClusterUnavailable}
		return
	}
	if out.session != nil {
		_ = c.hub.submit(ctx, RequestError{Session: out.session, Err: clusterUnavailable})
	}
}

// goodbye tells the other nodes this node's uids are leaving now, so they
// need not wait for its heartbeats to stop. It returns once the message is
// on the wire or the timeout passed.
func (c *clusterLink) goodbye(timeout time.Duration) {
	c.presence.goodbye(timeout)
}

// defaultNodeID is the host name (made safe for a NATS subject) and a
// random suffix, so two nodes on one host differ.
func defaultNodeID(hostname string) string {
	clean := strings.Map(func(r rune) rune {
		if validNodeIDRune(r) {
			return r
		}
		return '-'
	}, hostname)
	if clean == "" {
		clean = "node"
	}
	if len(clean) > 50 {
		clean = clean[:50]
	}
	return clean + "-" + newSessionID()[:6]
}

func validNodeIDRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_'
}

// validNodeID keeps node ids usable in a NATS subject token.
func validNodeID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !validNodeIDRune(r) {
			return false
		}
	}
	return true
}

// sleepCtx waits d, or less if ctx ends; it reports whether ctx is still
// live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
