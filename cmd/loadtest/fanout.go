package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// warmUpTimeout bounds how long we wait for every connection to be part of
// the room before measuring.
const warmUpTimeout = 10 * time.Second

// fanoutConfig holds the fanout scenario's parameters.
type fanoutConfig struct {
	Receivers int
	Senders   int
	Rate      int // messages per second per sender
	Duration  time.Duration
	Drain     time.Duration
	Payload   int // bytes of payload text per message
}

// FanoutResult is every parameter and measure of one fanout run, as
// written to the JSON line.
type FanoutResult struct {
	Receivers     int     `json:"receivers"`
	Senders       int     `json:"senders"`
	RatePerSender int     `json:"rate_per_sender"`
	DurationS     float64 `json:"duration_s"`
	DrainS        float64 `json:"drain_s"`
	PayloadBytes  int     `json:"payload_bytes"`
	// Connections is the number of receiving connections: receivers plus
	// senders, who get their own messages back.
	Connections        int            `json:"connections"`
	MessagesScheduled  int64          `json:"messages_scheduled"`
	MessagesSent       int64          `json:"messages_sent"`
	SendErrors         int64          `json:"send_errors"`
	ExpectedDeliveries int64          `json:"expected_deliveries"`
	Delivered          int64          `json:"delivered"`
	Lost               int64          `json:"lost"`
	Reordered          int64          `json:"reordered"`
	DroppedClients     int            `json:"dropped_clients"`
	DropReason         string         `json:"drop_reason,omitempty"`
	OfferedPerSec      float64        `json:"offered_deliveries_per_s"`
	DeliveredPerSec    float64        `json:"delivered_deliveries_per_s"`
	Latency            LatencySummary `json:"latency"`
	ServerCPUSeconds   *float64       `json:"server_cpu_s,omitempty"`
	// ServerCPUPerMillion is server CPU seconds per million deliveries:
	// the cost of delivery, comparable across rates and targets.
	ServerCPUPerMillion *float64 `json:"server_cpu_s_per_million,omitempty"`
	// ServerWrittenBytes is what the server wrote (wchar) during the run;
	// per delivery, it shows what compression saves on the wire.
	ServerWrittenBytes  *int64   `json:"server_written_bytes,omitempty"`
	ServerBytesPerDeliv *float64 `json:"server_bytes_per_delivery,omitempty"`
	ServerRSSBytes      *int64   `json:"server_rss_bytes,omitempty"`
	GeneratorCPUSeconds float64  `json:"generator_cpu_s"`
}

// fanoutRun is the state of one fanout run. Each reader goroutine owns
// trackers[i]; the counters are atomics so the progress line can read them.
type fanoutRun struct {
	cfg      fanoutConfig
	target   Target
	token    string // run token in every payload
	trackers []*seqTracker
	lat      *latencyRecorder
	sent     []atomic.Int64 // highest seq written, per sender
	sendErrs atomic.Int64
	ready    atomic.Int64 // connections that have seen a warm-up message
	// delivered counts deliveries as they arrive, for progress and to end
	// the drain early; lastDelivery is the unix nanos of the latest one.
	delivered    atomic.Int64
	lastDelivery atomic.Int64
	// measured is set when the drain ends: what arrives during teardown is
	// not counted, so loss is loss "after a drain" and the CPU sample
	// covers every delivery that is counted.
	measured atomic.Bool
	clients  []*client
}

func newFanoutRun(t Target, cfg fanoutConfig) *fanoutRun {
	conns := cfg.Receivers + cfg.Senders
	f := &fanoutRun{
		cfg:      cfg,
		target:   t,
		token:    newRunToken(),
		trackers: make([]*seqTracker, conns),
		lat:      newLatencyRecorder(),
		sent:     make([]atomic.Int64, cfg.Senders),
	}
	for i := range f.trackers {
		f.trackers[i] = newSeqTracker(cfg.Senders)
	}
	return f
}

// newRunToken returns 8 random hex digits that mark this run's payloads.
func newRunToken() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}

// fanoutUIDs names senders s0.. first (connection i < Senders is sender i)
// and receivers r0.. after them.
func fanoutUIDs(cfg fanoutConfig) []string {
	uids := make([]string, 0, cfg.Senders+cfg.Receivers)
	for i := range cfg.Senders {
		uids = append(uids, fmt.Sprintf("s%d", i))
	}
	for i := range cfg.Receivers {
		uids = append(uids, fmt.Sprintf("r%d", i))
	}
	return uids
}

// runFanout dials every connection, waits until all are in the room, sends
// open loop for cfg.Duration, drains, and measures.
func runFanout(ctx context.Context, env *runEnv, cfg fanoutConfig) (*FanoutResult, error) {
	f := newFanoutRun(env.target, cfg)
	specs := fanoutSpecs(cfg, env.urls, env.senderURLs)

	var opened atomic.Int64
	prog := startProgress(env.progress, func() string {
		return fmt.Sprintf("dialing %d/%d", opened.Load(), len(specs))
	})
	dr := env.dialMany(ctx, 0, specs, func(i int) messageHandler { return bufferText(f.receiver(i)) }, &opened)
	prog.stop()
	f.clients = dr.clients
	closed := false
	defer func() {
		if !closed {
			closeAll(f.clients)
		}
	}()
	if dr.failed > 0 {
		return nil, fmt.Errorf("fanout: %d of %d dials failed: %w", dr.failed, len(specs), dr.firstErr)
	}
	senders := dr.conns[:cfg.Senders]
	if err := f.warmUp(ctx, senders[0]); err != nil {
		return nil, err
	}

	cpu0, gen0, written0 := env.probe.cpu(), selfCPUSeconds(), env.probe.written()
	start := time.Now()
	prog = startProgress(env.progress, f.progressLine)
	f.sendAll(ctx, senders, start)
	f.drain(ctx, time.Now().Add(cfg.Drain))
	f.measured.Store(true)
	prog.stop()
	if err := ctx.Err(); err != nil {
		// An interrupted run is no result: never report it as one.
		return nil, fmt.Errorf("fanout interrupted: %w", err)
	}
	cpu1, gen1, rss, written1 := env.probe.cpu(), selfCPUSeconds(), env.probe.rss(), env.probe.written()

	dropped := closeAll(f.clients)
	closed = true
	res := f.result(start, dropped)
	res.ServerCPUSeconds = cpuDelta(cpu0, cpu1)
	res.ServerRSSBytes = rss
	res.GeneratorCPUSeconds = gen1 - gen0
	if res.ServerCPUSeconds != nil && res.Delivered > 0 {
		per := *res.ServerCPUSeconds / (float64(res.Delivered) / 1e6)
		res.ServerCPUPerMillion = &per
	}
	if written0 != nil && written1 != nil {
		w := *written1 - *written0
		res.ServerWrittenBytes = &w
		if res.Delivered > 0 {
			per := float64(w) / float64(res.Delivered)
			res.ServerBytesPerDeliv = &per
		}
	}
	return res, nil
}

// receiver returns connection i's message handler. It runs only on that
// connection's reader goroutine, so lats and warm need no locking.
func (f *fanoutRun) receiver(i int) func([]byte) {
	tr := f.trackers[i]
	var lats []int64
	warm := false
	return func(msg []byte) {
		if f.measured.Load() {
			return
		}
		now := time.Now().UnixNano()
		lats = lats[:0]
		parseMessage(f.target, f.token, msg, func(s Stamp) {
			if s.Seq == 0 {
				if !warm {
					warm = true
					f.ready.Add(1)
				}
				return
			}
			if tr.observe(s.Sender, s.Seq) {
				lats = append(lats, now-s.SentNano)
			}
		})
		if len(lats) > 0 {
			f.lat.record(i, lats)
			f.delivered.Add(int64(len(lats)))
			storeMax(&f.lastDelivery, now)
		}
	}
}

// warmUp sends seq-0 messages from the first sender until every connection
// has received one. A server may register a connection in its room a bit
// after the handshake completes; without this barrier the first messages
// could miss late joiners and show up as loss that is not the server's.
func (f *fanoutRun) warmUp(ctx context.Context, conn *websocket.Conn) error {
	want := int64(len(f.clients))
	deadline := time.Now().Add(warmUpTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for f.ready.Load() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("fanout warm-up: only %d of %d connections received a message within %v", f.ready.Load(), want, warmUpTimeout)
		}
		msg := f.target.Encode(encodePayload(f.token, Stamp{Sender: 0, Seq: 0, SentNano: time.Now().UnixNano()}, f.cfg.Payload))
		if err := conn.Write(ctx, websocket.MessageText, msg); err != nil {
			return fmt.Errorf("fanout warm-up: send: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// sendAll runs one sending goroutine per sender connection and returns
// when all have finished their schedule.
func (f *fanoutRun) sendAll(ctx context.Context, senders []*websocket.Conn, start time.Time) {
	var wg sync.WaitGroup
	for i, conn := range senders {
		wg.Add(1)
		go func() { // ends after its last scheduled message or a write error
			defer wg.Done()
			f.sendLoop(ctx, i, conn, start)
		}()
	}
	wg.Wait()
}

// senderPhase staggers the senders' schedules evenly within one interval,
// so S senders at rate M look like one steady stream of S*M msgs/s.
func senderPhase(interval time.Duration, sender, senders int) time.Duration {
	return interval * time.Duration(sender) / time.Duration(senders)
}

// scheduledCount is how many sends fall in [phase, duration) every interval.
func scheduledCount(duration, phase, interval time.Duration) int64 {
	if phase >= duration {
		return 0
	}
	return int64((duration-phase-1)/interval) + 1
}

// sendLoop is open loop: message k is due at start+phase+k*interval
// whatever happened to earlier ones, and carries its due time as the send
// timestamp. A late sender catches up at once and the lateness shows in the
// latency (no coordinated omission).
func (f *fanoutRun) sendLoop(ctx context.Context, i int, conn *websocket.Conn, start time.Time) {
	interval := time.Second / time.Duration(f.cfg.Rate)
	phase := senderPhase(interval, i, f.cfg.Senders)
	end := start.Add(f.cfg.Duration)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for seq := uint64(1); ; seq++ {
		due := start.Add(phase + time.Duration(seq-1)*interval)
		if !due.Before(end) {
			return
		}
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		msg := f.target.Encode(encodePayload(f.token, Stamp{Sender: i, Seq: seq, SentNano: due.UnixNano()}, f.cfg.Payload))
		// A server that stops reading must not hold the sender forever.
		wctx, cancel := context.WithDeadline(ctx, end.Add(f.cfg.Drain))
		err := conn.Write(wctx, websocket.MessageText, msg)
		cancel()
		if err != nil {
			f.sendErrs.Add(1)
			return
		}
		f.sent[i].Store(int64(seq))
	}
}

// sentCounts snapshots messages written per sender.
func (f *fanoutRun) sentCounts() []int64 {
	out := make([]int64, len(f.sent))
	for i := range f.sent {
		out[i] = f.sent[i].Load()
	}
	return out
}

// drain waits until every expected delivery has arrived or deadline passes.
func (f *fanoutRun) drain(ctx context.Context, deadline time.Time) {
	want := expectedDeliveries(f.sentCounts(), len(f.clients))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for f.delivered.Load() < want && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// progressLine is the live status shown while sending and draining.
func (f *fanoutRun) progressLine() string {
	var sent int64
	for _, n := range f.sentCounts() {
		sent += n
	}
	p99 := summarize(f.lat.merged()).P99Ms
	return fmt.Sprintf("conns %d (dropped %d)  sent %d  delivered %d/%d  p99 %.2f ms",
		len(f.clients), liveDrops(f.clients), sent, f.delivered.Load(),
		sent*int64(len(f.clients)), p99)
}

// result computes the measures once every reader has ended.
func (f *fanoutRun) result(start time.Time, dropped int) *FanoutResult {
	cfg := f.cfg
	sent := f.sentCounts()
	interval := time.Second / time.Duration(cfg.Rate)
	res := &FanoutResult{
		Receivers:      cfg.Receivers,
		Senders:        cfg.Senders,
		RatePerSender:  cfg.Rate,
		DurationS:      cfg.Duration.Seconds(),
		DrainS:         cfg.Drain.Seconds(),
		PayloadBytes:   cfg.Payload,
		Connections:    len(f.clients),
		SendErrors:     f.sendErrs.Load(),
		DroppedClients: dropped,
		Latency:        summarize(f.lat.merged()),
	}
	for i, n := range sent {
		res.MessagesSent += n
		res.MessagesScheduled += scheduledCount(cfg.Duration, senderPhase(interval, i, cfg.Senders), interval)
	}
	res.DropReason = dropReason(f.clients)
	totals := sumTrackers(f.trackers)
	res.ExpectedDeliveries = expectedDeliveries(sent, len(f.clients))
	res.Delivered = totals.Received
	res.Lost = res.ExpectedDeliveries - res.Delivered
	res.Reordered = totals.Reordered
	// Offered is what the schedule asked for, whether or not every send
	// went out, so a sender that fails or falls behind does not lower it.
	res.OfferedPerSec = float64(res.MessagesScheduled*int64(len(f.clients))) / cfg.Duration.Seconds()
	// Deliveries that trail in during the drain stretch the window, so a
	// server that only keeps up by queueing does not look as fast as one
	// that delivers on time.
	window := cfg.Duration
	if last := f.lastDelivery.Load(); last > 0 {
		window = max(window, time.Duration(last-start.UnixNano()))
	}
	res.DeliveredPerSec = float64(res.Delivered) / window.Seconds()
	return res
}
