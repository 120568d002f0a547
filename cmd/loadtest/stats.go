package main

import (
	"sync"
	"sync/atomic"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histogram bounds: 1 µs to 60 s at 3 significant digits, the
// range asked for; values outside are clamped rather than lost.
const (
	latencyMinMicros = 1
	latencyMaxMicros = 60_000_000
	latencySigFigs   = 3
)

// seqTracker follows, for one receiving connection, the next sequence
// number expected from each sender. Servers under test deliver a sender's
// messages in order, so a jump forward means messages were lost and a step
// back means a duplicate or a reordering. It is owned by the connection's
// reader goroutine and read only after that goroutine has ended.
type seqTracker struct {
	next      []uint64 // next expected seq per sender; seqs start at 1
	received  int64    // distinct in-order deliveries, after gaps too
	gaps      int64    // seqs jumped over when a later one arrived
	reordered int64    // seqs at or below one already seen
}

func newSeqTracker(senders int) *seqTracker {
	t := &seqTracker{next: make([]uint64, senders)}
	for i := range t.next {
		t.next[i] = 1
	}
	return t
}

// observe records the arrival of (sender, seq) and reports whether it was
// a new delivery that should count and have its latency recorded.
// Unknown senders and seq 0 (warm-up) are ignored.
func (t *seqTracker) observe(sender int, seq uint64) bool {
	if sender < 0 || sender >= len(t.next) || seq == 0 {
		return false
	}
	want := t.next[sender]
	switch {
	case seq == want:
	case seq > want:
		t.gaps += int64(seq - want)
	default:
		t.reordered++
		return false
	}
	t.next[sender] = seq + 1
	t.received++
	return true
}

// deliveryTotals adds up the trackers of all connections.
type deliveryTotals struct {
	Received  int64
	Gaps      int64
	Reordered int64
}

func sumTrackers(ts []*seqTracker) deliveryTotals {
	var d deliveryTotals
	for _, t := range ts {
		d.Received += t.received
		d.Gaps += t.gaps
		d.Reordered += t.reordered
	}
	return d
}

// expectedDeliveries is how many deliveries a perfect server makes: every
// message sent reaches every receiving connection (senders included).
func expectedDeliveries(sentPerSender []int64, receivingConns int) int64 {
	var sent int64
	for _, n := range sentPerSender {
		sent += n
	}
	return sent * int64(receivingConns)
}

// latencyShards is how many histograms the readers spread over. One
// histogram per connection would cost ~100 KiB each; one for all would
// make every reader wait on one lock.
const latencyShards = 16

// latencyRecorder is a set of mutex-guarded HdrHistograms (which are not
// safe for concurrent use), merged when a summary is needed.
type latencyRecorder struct {
	shards [latencyShards]struct {
		mu sync.Mutex
		h  *hdrhistogram.Histogram
	}
}

func newLatencyRecorder() *latencyRecorder {
	r := &latencyRecorder{}
	for i := range r.shards {
		r.shards[i].h = newLatencyHistogram()
	}
	return r
}

func newLatencyHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(latencyMinMicros, latencyMaxMicros, latencySigFigs)
}

// record adds latencies given in nanoseconds to the shard picked by key
// (the connection number), under one lock acquisition.
func (r *latencyRecorder) record(key int, nanos []int64) {
	s := &r.shards[key%latencyShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ns := range nanos {
		us := min(max(ns/1000, latencyMinMicros), latencyMaxMicros)
		_ = s.h.RecordValue(us) // in range by construction
	}
}

// merged returns a fresh histogram holding every shard's values.
func (r *latencyRecorder) merged() *hdrhistogram.Histogram {
	all := newLatencyHistogram()
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		all.Merge(s.h)
		s.mu.Unlock()
	}
	return all
}

// LatencySummary is the latency part of a result, in milliseconds.
type LatencySummary struct {
	Count  int64   `json:"count"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
	MaxMs  float64 `json:"max_ms"`
}

func summarize(h *hdrhistogram.Histogram) LatencySummary {
	if h.TotalCount() == 0 {
		return LatencySummary{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return LatencySummary{
		Count:  h.TotalCount(),
		P50Ms:  ms(h.ValueAtQuantile(50)),
		P99Ms:  ms(h.ValueAtQuantile(99)),
		P999Ms: ms(h.ValueAtQuantile(99.9)),
		MaxMs:  ms(h.Max()),
	}
}

// storeMax raises a to v if v is larger; readers race to note the time of
// the last delivery.
func storeMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}
