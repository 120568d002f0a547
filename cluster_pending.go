package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Every message a node publishes waits in its pendingSet until one answer
// is settled: the stream's ack, its id coming back through the node's own
// consumer (whichever comes first: a message is answered once), or a
// refusal. When the ack is lost (the connection dropped, or it timed out)
// the broker may or may not have stored the message, or may store it
// later, so it is only marked lost. The stream keeper then asks the stream
// itself: it publishes a void marker under the lost message's id. The
// stream keeps one message per id within its duplicate window, so a
// "duplicate" answer means the message is there (it was sent), and a
// stored marker means it is not and can no longer arrive late (it is
// refused). While the broker stays away, the sender waits.

// pendingMsg is a published message without an answer yet.
type pendingMsg struct {
	out    clusterOut
	lostAt time.Time // when its ack was lost; zero while one may come
}

// pendingSet is shared by the publisher (adds), the ack loop, the
// consumer and the stream keeper (each takes), hence the mutex.
type pendingSet struct {
	mu   sync.Mutex
	msgs map[string]*pendingMsg // by message id
}

func (p *pendingSet) add(out clusterOut) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.msgs == nil {
		p.msgs = map[string]*pendingMsg{}
	}
	p.msgs[out.id] = &pendingMsg{out: out}
}

// take removes the message with this id; false means another path has
// answered it already.
func (p *pendingSet) take(id string) (clusterOut, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.msgs[id]
	if !ok {
		return clusterOut{}, false
	}
	delete(p.msgs, id)
	return m.out, true
}

// markLost records that the message's ack will not come; false means it
// was answered already.
func (p *pendingSet) markLost(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.msgs[id]
	if ok {
		m.lostAt = time.Now()
	}
	return ok
}

// lostBefore lists the messages whose ack was lost before t.
func (p *pendingSet) lostBefore(t time.Time) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ids []string
	for id, m := range p.msgs {
		if !m.lostAt.IsZero() && m.lostAt.Before(t) {
			ids = append(ids, id)
		}
	}
	return ids
}

// ackLost reports whether a publish error leaves the message's fate open:
// the connection went away, or the ack never came.
func ackLost(err error) bool {
	return errors.Is(err, nats.ErrDisconnected) || errors.Is(err, jetstream.ErrAsyncPublishTimeout)
}

// answerSent settles a message as stored at seq: an API publish gets its
// answer (a session's message answers itself by coming back). The caller
// counts it out of inFlight once it may (see settle).
func (c *clusterLink) answerSent(out clusterOut, seq uint64) {
	c.raiseAcked(seq)
	if out.reply != nil {
		out.reply <- PublishResult{Recipients: out.recipient}
	}
}

// settleLost answers the messages whose ack was lost before the keeper's
// pass started at passStart, by asking the stream with a void marker under
// each one's id. If the stream cannot be asked now, the next pass does.
func (c *clusterLink) settleLost(ctx context.Context, passStart time.Time) {
	for _, id := range c.pending.lostBefore(passStart) {
		marker := nats.NewMsg(roomSubject)
		marker.Header.Set(headerKind, kindVoid)
		marker.Header.Set(headerNode, c.nodeID)
		marker.Header.Set(jetstream.MsgIDHeader, id)
		ask, cancel := context.WithTimeout(ctx, 2*time.Second)
		ack, err := c.js.PublishMsg(ask, marker)
		cancel()
		if err != nil {
			c.log.Debug("could not ask the stream about a lost ack", "err", err)
			return
		}
		out, ok := c.pending.take(id)
		if !ok {
			continue // it came back through the consumer meanwhile
		}
		if ack.Duplicate {
			c.answerSent(out, ack.Sequence)
			c.inFlight.Add(-1)
		} else {
			c.fail(ctx, out, errClusterUnavailable)
		}
	}
}
