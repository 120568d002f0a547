package main

import (
	"slices"
	"time"
)

// history keeps each room's last numbered events (room messages and
// publishes) for recovery and for newcomers (PROTOCOL.md, History). It is
// the hub's, like every hub map: only the hub goroutine touches it.
//
// Every event is kept once, with its frames as they were encoded for the
// broadcast, and is bounded three ways: -history-size per room,
// -history-ttl of age, and -history-max-bytes over all rooms, the oldest
// going first. A room's log outlives its sessions until its last event
// goes.
type history struct {
	size     int
	ttl      time.Duration
	maxBytes int64

	logs map[string]*roomLog
	// order is every kept event, oldest first, over all rooms: the byte
	// cap and the age limit take from its front. Events a room's size
	// limit removed stay in it, marked gone, until compact drops them.
	order []*historyEntry
	gone  int // entries of order that are gone
	kept  int // entries kept (not gone)
	bytes int64
	// emptied names the rooms whose logs ran out of events, for the hub
	// to forget those nobody is in (forgetEmptied).
	emptied []string

	// coverFloor: this node has seen every event numbered above it (in a
	// cluster, where it started reading the stream; 0 on a single node).
	// forgotten is the highest seq of any log it forgot. A log made anew
	// for broker-numbered events starts above both, so it never claims
	// events it could have missed or dropped.
	coverFloor uint64
	forgotten  uint64
	// brokerSeq is the highest seq a broker gave, so a reset's floor is
	// never below what the hub has already numbered.
	brokerSeq uint64
}

// roomLog is one room's numbered events.
type roomLog struct {
	name    string
	entries []*historyEntry // oldest first
	lastSeq uint64          // the room's last seq, kept or not
	// floor: the log holds every event of the room whose seq is above
	// it. It rises as events go, and starts at the log's beginning.
	floor uint64
}

// historyEntry is one kept event.
type historyEntry struct {
	log *roomLog
	seq uint64
	at  time.Time // when the broker took it, for -history-ttl
	// event is the event as the broadcast encoded it, held here rather
	// than beside: one allocation per message, history on or off.
	event encodedEvent
	bytes int64
	gone  bool
}

// entryOverhead is what an entry costs besides its frames and text: the
// entry, the event struct and their slots in two slices.
const entryOverhead = 256

func newHistory(size int, ttl time.Duration, maxBytes int64) *history {
	return &history{size: size, ttl: ttl, maxBytes: maxBytes, logs: map[string]*roomLog{}}
}

// newEntry numbers a room event (see number) and returns the entry that
// carries it to its recipients and then into the room's log (keep).
func (h *history) newEntry(room string, brokerSeq uint64, at time.Time) *historyEntry {
	log, seq := h.number(room, brokerSeq, at)
	return &historyEntry{log: log, seq: seq, at: at}
}

// number gives a room event its seq: the broker's when it has one (the
// stream's sequence in a cluster), else the room's next. A room without a
// log starts one: on a single node at the clock in microseconds, so its
// seqs are above any it handed out in an earlier life (before a restart,
// or before its history ran out).
func (h *history) number(room string, brokerSeq uint64, now time.Time) (*roomLog, uint64) {
	log := h.logs[room]
	if log == nil {
		var floor uint64
		if brokerSeq == 0 {
			// Above anything forgotten even if the clock went back.
			floor = max(uint64(now.UnixMicro()), h.forgotten+1) - 1
		} else {
			floor = min(max(h.coverFloor, h.forgotten), brokerSeq-1)
		}
		log = &roomLog{name: room, lastSeq: floor, floor: floor}
		h.logs[room] = log
	}
	seq := brokerSeq
	if seq == 0 {
		seq = log.lastSeq + 1
	}
	h.brokerSeq = max(h.brokerSeq, brokerSeq)
	log.lastSeq = max(log.lastSeq, seq)
	return log, seq
}

// keep adds an entry that was just numbered and delivered (so its frames
// are encoded) to its room's log, then trims to the limits. textBytes is
// what its strings hold besides the frames.
func (h *history) keep(entry *historyEntry, textBytes int) {
	log := entry.log
	if h.size == 0 {
		log.floor = max(log.floor, entry.seq) // nothing kept: the log starts after it
		return
	}
	if n := len(log.entries); n > 0 && log.entries[n-1].seq >= entry.seq {
		return // a number the broker gave before (a stream that went back): not kept out of order
	}
	// Both modes are encoded now, once, whoever is in the room: the
	// count is then exact (a text of many lines, or JSON escapes, can
	// grow far beyond the text) and the same on every node of a cluster,
	// which then evicts alike.
	entry.bytes = entryOverhead + int64(textBytes)
	for mode := range modeCount {
		entry.bytes += int64(len(entry.event.frame(mode).data))
	}
	log.entries = append(log.entries, entry)
	h.order = append(h.order, entry)
	h.kept++
	h.bytes += entry.bytes
	for len(log.entries) > h.size {
		h.dropOldest(log)
	}
	for h.bytes > h.maxBytes && h.kept > 0 {
		h.dropFront()
	}
	h.compact()
}

// expire drops the events older than -history-ttl.
func (h *history) expire(now time.Time) {
	for h.kept > 0 {
		front := h.front()
		if front == nil || now.Sub(front.at) <= h.ttl {
			break
		}
		h.dropFront()
	}
	h.compact()
}

// front is the oldest kept event, skipping gone ones.
func (h *history) front() *historyEntry {
	for len(h.order) > 0 && h.order[0].gone {
		h.order[0] = nil
		h.order = h.order[1:]
		h.gone--
	}
	if len(h.order) == 0 {
		return nil
	}
	return h.order[0]
}

// dropFront drops the oldest kept event of all rooms, which is also the
// oldest of its room.
func (h *history) dropFront() {
	front := h.front()
	h.order[0] = nil
	h.order = h.order[1:]
	h.remove(front.log)
}

// dropOldest drops a room's oldest event; its place in order stays, gone.
func (h *history) dropOldest(log *roomLog) {
	h.remove(log)
	h.gone++
}

// remove takes the oldest event out of a room's log, which then starts
// after it.
func (h *history) remove(log *roomLog) {
	e := log.entries[0]
	log.entries[0] = nil
	log.entries = log.entries[1:]
	log.floor = e.seq
	if len(log.entries) == 0 {
		h.emptied = append(h.emptied, log.name)
	}
	e.gone = true
	e.event = encodedEvent{} // its frames may be large; the entry may linger in order
	h.kept--
	h.bytes -= e.bytes
}

// compact rebuilds order when gone entries outnumber kept ones, so a busy
// room trimmed by its size limit cannot grow order without bound.
func (h *history) compact() {
	if h.gone <= h.kept || h.gone < 64 {
		return
	}
	h.order = slices.DeleteFunc(h.order, func(e *historyEntry) bool { return e.gone })
	h.gone = 0
}

// forget drops a room's log if it holds nothing, for a room nobody is in:
// memory then goes only to rooms that have events or sessions.
func (h *history) forget(room string) {
	if log := h.logs[room]; log != nil && len(log.entries) == 0 {
		h.forgotten = max(h.forgotten, log.lastSeq)
		delete(h.logs, room)
	}
}

// reset forgets everything and starts afresh above floor: in a cluster
// when the stream was made anew or lost messages this node never read,
// so that no node claims events from before it.
func (h *history) reset(floor uint64) {
	h.logs = map[string]*roomLog{}
	clear(h.order)
	h.order, h.emptied = h.order[:0], h.emptied[:0]
	h.gone, h.kept, h.bytes = 0, 0, 0
	h.coverFloor = max(h.coverFloor, floor, h.brokerSeq)
}

// forgetEmptied forgets the logs that ran out of events in rooms for which
// inUse says no.
func (h *history) forgetEmptied(inUse func(room string) bool) {
	for _, room := range h.emptied {
		if !inUse(room) {
			h.forget(room)
		}
	}
	clear(h.emptied)
	h.emptied = h.emptied[:0]
}

// since answers a recovery: the room's kept events after seq, and whether
// they are everything the room had after it.
func (h *history) since(room string, seq uint64) ([]*historyEntry, bool) {
	log := h.logs[room]
	if log == nil || seq < log.floor || seq > log.lastSeq {
		return nil, false
	}
	if log.floor < h.coverFloor && seq <= h.coverFloor {
		// A log begun on numbers a stream reused after a reset: a since
		// from before the reset may name either life.
		return nil, false
	}
	return h.after(room, seq), true
}

// after is the room's kept events whose seq is above seq.
func (h *history) after(room string, seq uint64) []*historyEntry {
	log := h.logs[room]
	if log == nil {
		return nil
	}
	i, _ := slices.BinarySearchFunc(log.entries, seq+1, func(e *historyEntry, target uint64) int {
		return compareUint(e.seq, target)
	})
	return log.entries[i:]
}

// last answers the room's last limit kept events (all of them for 0).
func (h *history) last(room string, limit int) []*historyEntry {
	log := h.logs[room]
	if log == nil {
		return nil
	}
	if limit > 0 && limit < len(log.entries) {
		return log.entries[len(log.entries)-limit:]
	}
	return log.entries
}

func compareUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
