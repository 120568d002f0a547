package main

import (
	"testing"
	"time"
)

func TestSeqTrackerCountsLossExactly(t *testing.T) {
	tr := newSeqTracker(2)
	// Sender 0: 1,2,3,5 (4 lost), then 4 arrives late; sender 1: 1,1 (dup).
	// Unknown sender 7 and warm-up seq 0 are ignored.
	steps := []struct {
		sender int
		seq    uint64
		isNew  bool
	}{
		{0, 1, true}, {0, 2, true}, {1, 1, true}, {0, 3, true}, {0, 5, true},
		{0, 4, false}, {1, 1, false}, {7, 1, false}, {0, 0, false},
	}
	for _, s := range steps {
		if got := tr.observe(s.sender, s.seq); got != s.isNew {
			t.Fatalf("observe(%d,%d) = %v, want %v", s.sender, s.seq, got, s.isNew)
		}
	}
	tot := sumTrackers([]*seqTracker{tr})
	if tot.Received != 5 || tot.Gaps != 1 || tot.Reordered != 2 {
		t.Fatalf("totals = %+v", tot)
	}
	// Sender 0 sent 5, sender 1 sent 1; 3 receiving connections.
	sent := []int64{5, 1}
	if e := expectedDeliveries(sent, 3); e != 18 {
		t.Fatalf("expected = %d, want 18", e)
	}
	// This connection saw 5 of its 6: loss 1.
	if lost := expectedDeliveries(sent, 1) - tot.Received; lost != 1 {
		t.Fatalf("lost = %d, want 1", lost)
	}
}

func TestScheduleArithmetic(t *testing.T) {
	interval := 10 * time.Millisecond
	if n := scheduledCount(time.Second, 0, interval); n != 100 {
		t.Fatalf("scheduled = %d, want 100", n)
	}
	if n := scheduledCount(time.Second, 5*time.Millisecond, interval); n != 100 {
		t.Fatalf("scheduled with phase = %d, want 100", n)
	}
	if n := scheduledCount(time.Millisecond, 2*time.Millisecond, interval); n != 0 {
		t.Fatalf("scheduled past end = %d, want 0", n)
	}
	if p := senderPhase(interval, 1, 2); p != 5*time.Millisecond {
		t.Fatalf("phase = %v", p)
	}
}

func TestLatencyRecorderClampsAndMerges(t *testing.T) {
	r := newLatencyRecorder()
	r.record(0, []int64{int64(time.Millisecond), -5})
	r.record(1, []int64{int64(2 * time.Minute)}) // above the 60 s ceiling
	s := summarize(r.merged())
	if s.Count != 3 {
		t.Fatalf("count = %d", s.Count)
	}
	if s.MaxMs < 59_000 || s.MaxMs > 61_000 {
		t.Fatalf("max = %v ms, want ~60000", s.MaxMs)
	}
	if s.P50Ms < 0.99 || s.P50Ms > 1.01 {
		t.Fatalf("p50 = %v ms, want ~1", s.P50Ms)
	}
}
