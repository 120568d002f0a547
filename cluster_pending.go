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
// the broker may or may not have stored the message, so it is only marked
// lost and keeps waiting: a later pass of the stream keeper, which reads
// the stream's end after the loss, refuses it once the consumer has handed
// over everything up to that end without seeing it. A stream made anew has
// none of the lost messages. Time alone never settles a message: while the
// broker stays away, its sender waits.

// catchUpLimit bounds how long one stream keeper pass waits for the
// consumer to reach the stream's end; the next pass tries again.
const catchUpLimit = 10 * time.Second

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

// lostBefore reports whether some message's ack was lost before t.
func (p *pendingSet) lostBefore(t time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.msgs {
		if !m.lostAt.IsZero() && m.lostAt.Before(t) {
			return true
		}
	}
	return false
}

// takeLostBefore removes and returns the messages whose ack was lost
// before t.
func (p *pendingSet) takeLostBefore(t time.Time) []clusterOut {
	p.mu.Lock()
	defer p.mu.Unlock()
	var taken []clusterOut
	for id, m := range p.msgs {
		if !m.lostAt.IsZero() && m.lostAt.Before(t) {
			taken = append(taken, m.out)
			delete(p.msgs, id)
		}
	}
	return taken
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

// refuseLost answers the messages whose ack was lost before the keeper's
// pass started at passStart: once the consumer has handed over the stream
// up to its end as read in this pass, any of them not seen was not stored.
// A stream made anew has none of them. If the consumer does not get there
// within catchUpLimit, the next pass decides.
func (c *clusterLink) refuseLost(ctx context.Context, info *jetstream.StreamInfo, remade bool, passStart time.Time) {
	if !c.pending.lostBefore(passStart) {
		return
	}
	if !remade {
		deadline := time.Now().Add(catchUpLimit)
		for c.handedOver.Load() < info.State.LastSeq {
			if time.Now().After(deadline) || !sleepCtx(ctx, 10*time.Millisecond) {
				return
			}
		}
	}
	for _, out := range c.pending.takeLostBefore(passStart) {
		c.fail(ctx, out, errClusterUnavailable)
	}
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
