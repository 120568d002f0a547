package main

import (
	"sync"
)

// outboundFrame is one encoded event waiting for a session's writer. Its
// bytes may be shared by every recipient of a broadcast and are never
// modified.
type outboundFrame struct {
	data   []byte
	binary bool
}

// outboundQueue is a session's mailbox. The hub pushes without ever waiting;
// the session drains everything that is waiting in one go, so a busy room
// costs one write per session rather than one per event.
//
// It is capped in bytes: the push that would pass the cap marks the queue
// overflowed, drops what it held, and refuses everything after, and the
// session then closes with "slow consumer". Nothing is dropped silently.
type outboundQueue struct {
	mu         sync.Mutex
	frames     []outboundFrame
	bytes      int64
	limit      int64
	overflowed bool
	closed     bool // the session has ended
	// endWith, once set, closes the session with this status after what
	// is queued has been written; nothing more is taken.
	endWith *closeStatus

	// ready holds a token while there is something for the writer to do
	// (frames, or an overflow to act on). Only the push that finds the queue
	// empty sets it: while frames wait, the writer is already due to drain
	// them, so a busy broadcast costs no channel operation per recipient.
	ready chan struct{}
}

func newOutboundQueue(limit int64) *outboundQueue {
	return &outboundQueue{limit: limit, ready: make(chan struct{}, 1)}
}

// push queues a frame and reports whether it was accepted. A frame larger
// than the whole cap is still taken by an empty queue, so one big event
// cannot make a session unusable.
func (q *outboundQueue) push(f outboundFrame) bool {
	size := int64(len(f.data))
	q.mu.Lock()
	if q.overflowed || q.closed || q.endWith != nil {
		q.mu.Unlock()
		return false
	}
	if q.bytes > 0 && q.bytes+size > q.limit {
		q.overflowed = true
		clear(q.frames)
		q.frames = q.frames[:0]
		q.bytes = 0
		q.mu.Unlock()
		q.signal()
		return false
	}
	wasEmpty := len(q.frames) == 0
	q.frames = append(q.frames, f)
	q.bytes += size
	q.mu.Unlock()
	if wasEmpty {
		q.signal()
	}
	return true
}

// pushShared queues a frame whose bytes the history already holds (a
// recovery's replay) without counting it against the cap: it costs the
// queue a slice slot, not a copy, and a replay of up to -history-size
// events must not close a session that has just come back as a slow
// consumer. Live events pushed after it are capped as ever.
func (q *outboundQueue) pushShared(f outboundFrame) bool {
	q.mu.Lock()
	if q.overflowed || q.closed || q.endWith != nil {
		q.mu.Unlock()
		return false
	}
	wasEmpty := len(q.frames) == 0
	q.frames = append(q.frames, f)
	q.mu.Unlock()
	if wasEmpty {
		q.signal()
	}
	return true
}

func (q *outboundQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// endAfterQueued makes the session close with status once it has written
// what is already queued.
func (q *outboundQueue) endAfterQueued(status closeStatus) {
	q.mu.Lock()
	if q.endWith == nil {
		q.endWith = &status
	}
	q.mu.Unlock()
	q.signal()
}

// drain appends everything queued to dst and empties the queue. overflowed
// tells the writer to stop and close the session instead; a non-nil end
// tells it to close with that status after writing the frames.
func (q *outboundQueue) drain(dst []outboundFrame) (frames []outboundFrame, overflowed bool, end *closeStatus) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.overflowed {
		return dst, true, nil
	}
	dst = append(dst, q.frames...)
	clear(q.frames)
	q.frames = q.frames[:0]
	q.bytes = 0
	return dst, false, q.endWith
}

// size is the number of bytes waiting, for /metrics.
func (q *outboundQueue) size() int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.bytes
}

// discard empties the queue for good when its session ends.
func (q *outboundQueue) discard() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.frames = nil
	q.bytes = 0
}
