package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// When the connection drops while a message waits for the stream's ack,
// the broker may or may not have stored it. Telling the sender "not sent"
// at once would be wrong half the time: the message may still be delivered
// after the reconnect. So such a message stays unsettled until the node
// knows: it is settled as sent when it comes back through this node's own
// consumer (each message carries an id), and as not sent once the consumer
// has caught up with the stream after the reconnect without seeing it, or
// when the stream was made anew (the broker lost it), or after
// unsettledLimit without a connection.
const (
	// unsettledLimit bounds how long a sender waits for an answer while
	// the broker stays away.
	unsettledLimit = 15 * time.Second
	// catchUpLimit bounds the wait for the consumer to reach the stream's
	// end after a reconnect.
	catchUpLimit = 10 * time.Second
)

// unsettledMsg is a message whose ack was lost, and the connection
// generation it was lost in.
type unsettledMsg struct {
	out   clusterOut
	gen   uint64
	since time.Time
}

// unsettledSet is shared by the ack loop (adds), the consumer (settles as
// sent) and the stream keeper (settles as not sent), hence the mutex.
type unsettledSet struct {
	mu   sync.Mutex
	msgs map[string]unsettledMsg // by message id
}

func (u *unsettledSet) add(m unsettledMsg) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.msgs == nil {
		u.msgs = map[string]unsettledMsg{}
	}
	u.msgs[m.out.id] = m
}

func (u *unsettledSet) empty() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.msgs) == 0
}

// take removes and returns the message with this id, if it is unsettled.
func (u *unsettledSet) take(id string) (unsettledMsg, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	m, ok := u.msgs[id]
	if ok {
		delete(u.msgs, id)
	}
	return m, ok
}

// takeIf removes and returns every message for which drop is true.
func (u *unsettledSet) takeIf(drop func(unsettledMsg) bool) []unsettledMsg {
	u.mu.Lock()
	defer u.mu.Unlock()
	var taken []unsettledMsg
	for id, m := range u.msgs {
		if drop(m) {
			taken = append(taken, m)
			delete(u.msgs, id)
		}
	}
	return taken
}

// ackLost reports whether a publish error leaves the message's fate open:
// the connection went away, or the ack never came.
func ackLost(err error) bool {
	return errors.Is(err, nats.ErrDisconnected) || errors.Is(err, jetstream.ErrAsyncPublishTimeout)
}

// unsettle parks a message whose ack was lost.
func (c *clusterLink) unsettle(out clusterOut) {
	c.metrics.acksLost.Inc()
	c.log.Debug("ack lost; waiting to see whether the stream has the message", "kind", out.kind, "room", out.room)
	c.unsettled.add(unsettledMsg{out: out, gen: c.generation.Load(), since: time.Now()})
}

// settleSeen is called for every message of this node that the consumer
// delivers: if its ack was lost, it was sent after all. It reports whether
// the message was unsettled; the caller then counts it out of inFlight
// once it has handed the message to the hub.
func (c *clusterLink) settleSeen(id string, seq uint64) bool {
	m, ok := c.unsettled.take(id)
	if !ok {
		return false
	}
	c.raiseAcked(seq)
	if m.out.reply != nil {
		m.out.reply <- PublishResult{Recipients: m.out.recipient}
	}
	return true
}

// settleAfterReconnect answers the messages whose ack was lost before the
// reconnect: once the consumer has read the stream up to its last message
// as of now, any of them not seen was not stored. A stream made anew has
// none of them.
func (c *clusterLink) settleAfterReconnect(ctx context.Context, info *jetstream.StreamInfo, remade bool) {
	if c.unsettled.empty() {
		return
	}
	gen := c.generation.Load()
	if !remade {
		deadline := time.Now().Add(catchUpLimit)
		for c.handedOver.Load() < info.State.LastSeq && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	for _, m := range c.unsettled.takeIf(func(m unsettledMsg) bool { return m.gen < gen }) {
		c.fail(ctx, m.out, errClusterUnavailable)
	}
}

// settleStale answers the messages that have waited longer than
// unsettledLimit: the broker stayed away, or the ack timed out on a live
// connection and the message never came back.
func (c *clusterLink) settleStale(ctx context.Context) {
	for _, m := range c.unsettled.takeIf(func(m unsettledMsg) bool { return time.Since(m.since) > unsettledLimit }) {
		c.fail(ctx, m.out, errClusterUnavailable)
	}
}
