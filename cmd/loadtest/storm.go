package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// The storm scenario measures a reconnect storm with history recovery
// (PROTOCOL.md, History): N storm clients and K stayers sit in one room
// while one sender talks at a steady rate; the storm clients are cut all at
// once (no close frame), miss -missed messages, and reconnect all at once
// with ?since=<the last seq each saw>. It times how long until every storm
// client has a recovered:true welcome and every missed message, in order,
// without gap or duplicate up to the live stream, and what the storm does
// to the stayers' live latency compared with a quiet window before it.
//
// Every storm client shares the uid "storm" and every stayer "stayer", as
// idle's shared uids do: with a uid each, every join and leave of the storm
// would be announced to the whole room (N² presence events), and every
// welcome would list N uids, which measures presence, not recovery.

// stormConfig holds the storm scenario's parameters.
type stormConfig struct {
	Clients  int           // -conns: storm clients, cut and reconnected
	Stayers  int           // -receivers: connections that stay throughout
	Rate     int           // -rate: the sender's messages per second
	Missed   int           // -missed: messages sent while the storm clients are away
	Baseline time.Duration // -baseline: the quiet window before the cut
	Timeout  time.Duration // -recover-timeout: longest wait for every storm client to recover
	Drain    time.Duration // -drain: longest wait for the stayers' late deliveries
	Payload  int           // -payload: bytes of payload text per message
	// ReconnectConc bounds the reconnect's handshakes in flight
	// (-reconnect-concurrency); 0: all at once.
	ReconnectConc int
}

// Storm defaults, for the flags shared with other scenarios that the
// command line leaves unset (see applyScenarioDefaults).
const (
	stormDefaultClients = 5000
	stormDefaultStayers = 100
	stormDefaultRate    = 50
)

const (
	// stormTail is how long the storm window lasts past the moment every
	// storm client has recovered (or the wait for them ended).
	stormTail = time.Second
	// stormWriteTimeout bounds one write of the sender: a server that stops
	// reading fails the run instead of holding it.
	stormWriteTimeout = 10 * time.Second
	// stormMissedSlack is added to the time the missed messages take at
	// -rate when waiting for them to come back to the sender.
	stormMissedSlack = 10 * time.Second
)

// StormResult is every parameter and measure of one storm run.
type StormResult struct {
	StormClients    int     `json:"storm_clients"`
	Stayers         int     `json:"stayers"`
	Rate            int     `json:"rate"`
	Missed          int     `json:"missed"`
	PayloadBytes    int     `json:"payload_bytes"`
	BaselineS       float64 `json:"baseline_s"`
	RecoverTimeoutS float64 `json:"recover_timeout_s"`
	// ReconnectConc is the reconnect's handshakes in flight at most; 0 for
	// all at once.
	ReconnectConc int     `json:"reconnect_concurrency"`
	DialSeconds   float64 `json:"dial_s"`
	// TargetSeq is the room's seq when the reconnect started (the highest
	// the sender had seen once its last missed message came back): every
	// storm client must get every seq from its since+1 through it.
	// MissedMin/Max are TargetSeq - since over the storm clients.
	TargetSeq uint64 `json:"target_seq"`
	MissedMin uint64 `json:"missed_min"`
	MissedMax uint64 `json:"missed_max"`
	// Reconnect outcomes; they add up to storm_clients. Incomplete counts
	// the recovered:true clients that had a gap, a duplicate or a seq out
	// of order, or had not reached TargetSeq when the wait ended; complete
	// the others.
	ReconnectFailed  int     `json:"reconnect_failed"`
	ReconnectError   string  `json:"reconnect_error,omitempty"`
	NoWelcome        int     `json:"no_welcome"`
	RecoveredTrue    int     `json:"recovered_true"`
	RecoveredFalse   int     `json:"recovered_false"`
	Incomplete       int     `json:"incomplete"`
	IncompleteReason string  `json:"incomplete_reason,omitempty"`
	Complete         int     `json:"complete"`
	ReconnectDialS   float64 `json:"reconnect_dial_s"`
	// TimeToAllRecoveredMs runs from the start of the reconnect to the last
	// storm client's completion; null unless every one completed.
	// Recovery is the distribution of that time over the complete clients.
	TimeToAllRecoveredMs *float64       `json:"time_to_all_recovered_ms"`
	Recovery             LatencySummary `json:"recovery"`
	// Live delivery latency (sender's due time to receipt) at the stayers,
	// for messages sent in the quiet window before the cut and in the storm
	// window (cut until all recovered plus stormTail).
	QuietWindowS float64        `json:"quiet_window_s"`
	StormWindowS float64        `json:"storm_window_s"`
	QuietLatency LatencySummary `json:"quiet_latency"`
	StormLatency LatencySummary `json:"storm_latency"`
	// StayerLost is the stayers' deliveries of window messages that never
	// came; StayerReordered the ones that came after a later one.
	StayerLost      int64  `json:"stayer_lost"`
	StayerReordered int64  `json:"stayer_reordered"`
	MessagesSent    int64  `json:"messages_sent"`
	DroppedClients  int    `json:"dropped_clients"`
	DropReason      string `json:"drop_reason,omitempty"`
	// ServerCPUSeconds covers the storm window.
	ServerCPUSeconds    *float64 `json:"server_cpu_s,omitempty"`
	ServerRSSBytes      *int64   `json:"server_rss_bytes,omitempty"`
	GeneratorCPUSeconds float64  `json:"generator_cpu_s"`
	// OK: every storm client completed its recovery.
	OK bool `json:"ok"`
}

// failures describes what kept a run from being OK, for the exit line.
func (r *StormResult) failures() string {
	var parts []string
	add := func(n int, what string) {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(r.ReconnectFailed, "reconnects failed")
	add(r.NoWelcome, "without a welcome")
	add(r.RecoveredFalse, "recovered:false")
	add(r.Incomplete, "incomplete")
	s := fmt.Sprintf("%d of %d storm clients did not recover completely: %s", r.StormClients-r.Complete, r.StormClients, strings.Join(parts, ", "))
	if r.IncompleteReason != "" {
		s += " (first: " + r.IncompleteReason + ")"
	}
	return s
}

// Storm phases, for the progress line.
const (
	stormWarming = iota
	stormQuiet
	stormCut
	stormReconnect
	stormTailing
)

// stormRun is the state of one storm run. Connection 0 is the sender,
// 1..K the stayers, K+1..K+N the storm clients.
type stormRun struct {
	cfg    stormConfig
	target Target
	token  string
	phase  atomic.Int32
	ready  atomic.Int64 // connections that have seen a room message
	// The sender: sendStart is its schedule's origin; sent is the highest
	// payload seq it has written, echo the highest that came back to it,
	// roomSeq the highest room seq its connection saw.
	sendStart  time.Time
	sent       atomic.Int64
	echo       atomic.Int64
	roomSeq    atomic.Uint64
	senderDone chan struct{} // closed when the send loop returns
	senderErr  error         // why it returned; valid after senderDone
	// Windows by send time, unix nanos (0: not yet): quiet is
	// [quietFrom, cutAt), storm [cutAt, stormEnd).
	quietFrom, cutAt, stormEnd atomic.Int64
	quiet, storm               *latencyRecorder
	stayerSeen                 []atomic.Int64 // highest payload seq per stayer
	stayerReordered            atomic.Int64
	// lastSeq is each storm client's last room seq before the cut, owned by
	// its first reader until the cut.
	lastSeq []uint64
	// checks follow the storm clients' second lives; recovery holds the
	// time each took to complete.
	checks     []*recoveryCheck
	recovery   *latencyRecorder
	reopened   atomic.Int64 // storm clients reconnected
	recovered  atomic.Int64 // completed recoveries
	incomplete atomic.Int64 // recovered:true clients already known incomplete
	lastReach  atomic.Int64 // unix nanos of the latest completion
	measured   atomic.Bool  // set at the end: teardown is not measured
}

func newStormRun(t Target, cfg stormConfig) *stormRun {
	return &stormRun{
		cfg:        cfg,
		target:     t,
		token:      newRunToken(),
		senderDone: make(chan struct{}),
		quiet:      newLatencyRecorder(),
		storm:      newLatencyRecorder(),
		stayerSeen: make([]atomic.Int64, cfg.Stayers),
		lastSeq:    make([]uint64, cfg.Clients),
		recovery:   newLatencyRecorder(),
	}
}

// stormSpecs puts the sender first, then the stayers, then the storm
// clients, all on one endpoint (storm checks a single node's seqs).
func stormSpecs(cfg stormConfig, url, senderURL string) []dialSpec {
	specs := make([]dialSpec, 0, 1+cfg.Stayers+cfg.Clients)
	specs = append(specs, dialSpec{uid: "storm-sender", url: senderURL})
	for range cfg.Stayers {
		specs = append(specs, dialSpec{uid: "stayer", url: url})
	}
	for range cfg.Clients {
		specs = append(specs, dialSpec{uid: "storm", url: url})
	}
	return specs
}

// sinceURL asks url's server to recover the room after seq.
func sinceURL(url string, seq uint64) string {
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "since=" + strconv.FormatUint(seq, 10)
}

// runStorm dials everyone, measures a quiet window, cuts the storm
// clients, lets them miss cfg.Missed messages, reconnects them all at once
// and measures their recovery and the stayers' latency meanwhile.
func runStorm(ctx context.Context, env *runEnv, cfg stormConfig) (*StormResult, error) {
	s := newStormRun(env.target, cfg)
	specs := stormSpecs(cfg, env.urls[0], env.senderURLs[0])
	firstStorm := 1 + cfg.Stayers

	var opened atomic.Int64
	prog := startProgress(env.progress, func() string {
		return fmt.Sprintf("dialing %d/%d", opened.Load(), len(specs))
	})
	dr := env.dialMany(ctx, 0, specs, func(i int) messageHandler { return bufferText(s.firstLife(i)) }, &opened)
	prog.stop()
	stayers := dr.clients[:firstStorm] // the sender is a stayer too, for closing
	var second []*client               // the storm clients' second lives
	defer func() {                     // no-ops for what is closed already
		closeAll(dr.clients)
		closeAll(second)
	}()
	if dr.failed > 0 {
		return nil, fmt.Errorf("storm: %d of %d dials failed: %w", dr.failed, len(specs), dr.firstErr)
	}

	sendCtx, stopSending := context.WithCancel(ctx)
	defer func() { stopSending(); <-s.senderDone }()
	s.sendStart = time.Now()
	go func() { // the sender: ends with sendCtx or a failed write
		defer close(s.senderDone)
		s.senderErr = s.sendLoop(sendCtx, dr.conns[0])
	}()
	prog = startProgress(env.progress, s.progressLine)
	defer prog.stop()

	// Everyone in the room, then the quiet window.
	if err := s.waitUntil(ctx, time.Now().Add(warmUpTimeout), func() bool { return s.ready.Load() == int64(len(specs)) }); err != nil {
		return nil, fmt.Errorf("storm warm-up: %d of %d connections received a message: %w", s.ready.Load(), len(specs), err)
	}
	gen0 := selfCPUSeconds()
	s.phase.Store(stormQuiet)
	s.quietFrom.Store(time.Now().UnixNano())
	if err := sleepCtx(ctx, cfg.Baseline); err != nil {
		return nil, fmt.Errorf("storm interrupted: %w", err)
	}

	// The cut: every storm client at once, no close frame.
	s.phase.Store(stormCut)
	cutAt := time.Now()
	s.cutAt.Store(cutAt.UnixNano())
	cpu0 := env.probe.cpu()
	firstLives := dr.clients[firstStorm:]
	for _, c := range firstLives {
		c.closing.Store(true)
		c.conn.CloseNow()
	}
	for _, c := range firstLives {
		<-c.done // after this, lastSeq is ours
	}
	droppedBeforeCut := 0
	for _, c := range firstLives {
		if c.dropped() {
			droppedBeforeCut++
		}
	}
	cutDropReason := dropReason(firstLives)

	// The missed messages: written after the cut, so no storm client can
	// have seen them, and back at the sender, so the server numbered them.
	want := s.sent.Load() + int64(cfg.Missed)
	missWait := time.Duration(cfg.Missed)*time.Second/time.Duration(cfg.Rate) + stormMissedSlack
	if err := s.waitUntil(ctx, time.Now().Add(missWait), func() bool { return s.echo.Load() >= want }); err != nil {
		return nil, fmt.Errorf("storm: waiting for %d missed messages to come back to the sender: %w", cfg.Missed, err)
	}
	target := s.roomSeq.Load()

	// The reconnect: all at once, each with its own since.
	rspecs := make([]dialSpec, cfg.Clients)
	s.checks = make([]*recoveryCheck, cfg.Clients)
	recStart := time.Now()
	for i := range rspecs {
		rspecs[i] = dialSpec{uid: specs[firstStorm+i].uid, url: sinceURL(specs[firstStorm+i].url, s.lastSeq[i])}
		s.checks[i] = &recoveryCheck{run: s, index: i, since: s.lastSeq[i], next: s.lastSeq[i] + 1, target: target, start: recStart}
	}
	s.phase.Store(stormReconnect)
	storming := *env
	storming.dialConc = cfg.Clients
	if cfg.ReconnectConc > 0 {
		storming.dialConc = cfg.ReconnectConc
	}
	rdr := storming.dialMany(ctx, firstStorm, rspecs, func(i int) messageHandler { return bufferText(s.checks[i].handle) }, &s.reopened)
	second = rdr.clients
	deadline := recStart.Add(cfg.Timeout)
	err := s.waitUntil(ctx, deadline, func() bool { return s.recoveryOver(second) })
	if err != nil && !errors.Is(err, errWaitTimeout) {
		return nil, fmt.Errorf("storm: waiting for recovery: %w", err)
	}

	// The storm window ends stormTail after the last recovery (or the
	// wait's end); then the stayers get -drain to receive its messages.
	s.phase.Store(stormTailing)
	if err := sleepCtx(ctx, stormTail); err != nil {
		return nil, fmt.Errorf("storm interrupted: %w", err)
	}
	stormEnd := time.Now()
	s.stormEnd.Store(stormEnd.UnixNano())
	cpu1 := env.probe.cpu()
	last := s.lastDueBefore(stormEnd)
	err = s.waitUntil(ctx, time.Now().Add(cfg.Drain), func() bool { return s.stayersReached(stayers[1:], last) })
	if err != nil && !errors.Is(err, errWaitTimeout) {
		return nil, fmt.Errorf("storm: draining: %w", err)
	}
	s.measured.Store(true)
	stopSending()
	<-s.senderDone
	if err := ctx.Err(); err != nil {
		// An interrupted run is no result: never report it as one.
		return nil, fmt.Errorf("storm interrupted: %w", err)
	}
	rss := env.probe.rss()
	dropped := closeAll(stayers[1:])
	if cutDropReason == "" {
		cutDropReason = dropReason(stayers[1:])
	}
	closeAll(stayers[:1])
	closeAll(second)

	res := &StormResult{
		StormClients:        cfg.Clients,
		Stayers:             cfg.Stayers,
		Rate:                cfg.Rate,
		Missed:              cfg.Missed,
		PayloadBytes:        cfg.Payload,
		BaselineS:           cfg.Baseline.Seconds(),
		RecoverTimeoutS:     cfg.Timeout.Seconds(),
		ReconnectConc:       cfg.ReconnectConc,
		DialSeconds:         dr.elapsed.Seconds(),
		TargetSeq:           target,
		ReconnectFailed:     rdr.failed,
		ReconnectDialS:      rdr.elapsed.Seconds(),
		QuietWindowS:        cutAt.Sub(time.Unix(0, s.quietFrom.Load())).Seconds(),
		StormWindowS:        stormEnd.Sub(cutAt).Seconds(),
		QuietLatency:        summarize(s.quiet.merged()),
		StormLatency:        summarize(s.storm.merged()),
		Recovery:            summarize(s.recovery.merged()),
		StayerReordered:     s.stayerReordered.Load(),
		MessagesSent:        s.sent.Load(),
		DroppedClients:      droppedBeforeCut + dropped,
		DropReason:          cutDropReason,
		ServerCPUSeconds:    cpuDelta(cpu0, cpu1),
		ServerRSSBytes:      rss,
		GeneratorCPUSeconds: selfCPUSeconds() - gen0,
	}
	if rdr.firstErr != nil {
		res.ReconnectError = rdr.firstErr.Error()
	}
	windowSent := s.dueBetween(s.quietFrom.Load(), stormEnd.UnixNano())
	res.StayerLost = windowSent*int64(cfg.Stayers) - res.QuietLatency.Count - res.StormLatency.Count
	s.tally(res, second)
	if res.Complete == cfg.Clients && cfg.Clients > 0 {
		ms := float64(s.lastReach.Load()-recStart.UnixNano()) / 1e6
		res.TimeToAllRecoveredMs = &ms
	}
	res.OK = res.Complete == cfg.Clients
	return res, nil
}

// tally sorts the storm clients' second lives into the result's outcomes;
// their readers have ended.
func (s *stormRun) tally(res *StormResult, second []*client) {
	res.MissedMin = ^uint64(0)
	for i, chk := range s.checks {
		missed := chk.target - chk.since
		res.MissedMin = min(res.MissedMin, missed)
		res.MissedMax = max(res.MissedMax, missed)
		c := second[i]
		switch {
		case c == nil: // counted in ReconnectFailed
		case !chk.welcomed:
			res.NoWelcome++
			if res.IncompleteReason == "" && c.dropped() {
				res.IncompleteReason = "no welcome: " + c.dropErr.Error()
			}
		case !chk.recovered:
			res.RecoveredFalse++
		default:
			res.RecoveredTrue++
			why := chk.problem
			if why == "" && chk.reachedNano == 0 {
				why = fmt.Sprintf("since %d: reached seq %d of %d", chk.since, chk.next-1, chk.target)
				if c.dropped() {
					why += ", then the connection ended: " + c.dropErr.Error()
				} else {
					why += " when the wait ended"
				}
			}
			if why != "" {
				res.Incomplete++
				if res.IncompleteReason == "" {
					res.IncompleteReason = why
				}
				continue
			}
			res.Complete++
		}
	}
	if len(s.checks) == 0 {
		res.MissedMin = 0
	}
}

// errWaitTimeout is waitUntil's deadline passing.
var errWaitTimeout = errors.New("timed out")

// waitUntil polls cond until it holds (nil), ctx ends, the sender fails,
// or deadline passes (errWaitTimeout).
func (s *stormRun) waitUntil(ctx context.Context, deadline time.Time, cond func() bool) error {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if !time.Now().Before(deadline) {
			return errWaitTimeout
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.senderDone:
			if s.senderErr != nil {
				return s.senderErr
			}
			return errors.New("the sender stopped")
		case <-tick.C:
		}
	}
	return nil
}

// recoveryOver reports whether every storm client's recovery is settled:
// complete, known to have failed, or its connection gone.
func (s *stormRun) recoveryOver(second []*client) bool {
	for i, c := range second {
		if c != nil && !s.checks[i].settled.Load() && !c.ended() {
			return false
		}
	}
	return true
}

// sendLoop is open loop like fanout's: message k is due at
// sendStart+(k-1)/rate and carries its due time, whatever happened to the
// earlier ones. It runs until ctx ends (nil) or a write fails.
func (s *stormRun) sendLoop(ctx context.Context, conn *websocket.Conn) error {
	interval := time.Second / time.Duration(s.cfg.Rate)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for seq := uint64(1); ; seq++ {
		due := s.sendStart.Add(time.Duration(seq-1) * interval)
		if d := time.Until(due); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return nil
			case <-timer.C:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		msg := s.target.Encode(encodePayload(s.token, Stamp{Sender: 0, Seq: seq, SentNano: due.UnixNano()}, s.cfg.Payload))
		wctx, cancel := context.WithTimeout(ctx, stormWriteTimeout)
		err := conn.Write(wctx, websocket.MessageText, msg)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("storm sender: write: %w", err)
		}
		s.sent.Store(int64(seq))
	}
}

// lastDueBefore is the seq of the sender's last message due before t.
func (s *stormRun) lastDueBefore(t time.Time) int64 {
	d := t.Sub(s.sendStart)
	if d <= 0 {
		return 0
	}
	interval := time.Second / time.Duration(s.cfg.Rate)
	return int64((d-1)/interval) + 1
}

// dueBetween counts the messages written whose due time is in [from, to).
func (s *stormRun) dueBetween(from, to int64) int64 {
	sent := s.sent.Load()
	a := min(s.lastDueBefore(time.Unix(0, from)), sent)
	b := min(s.lastDueBefore(time.Unix(0, to)), sent)
	return b - a
}

// stayersReached reports whether every stayer still connected has seen
// the sender's message seq.
func (s *stormRun) stayersReached(stayers []*client, seq int64) bool {
	for i, c := range stayers {
		if !c.ended() && s.stayerSeen[i].Load() < seq {
			return false
		}
	}
	return true
}

// window is the recorder for a message due at sent, or nil outside both.
func (s *stormRun) window(sent int64) *latencyRecorder {
	q := s.quietFrom.Load()
	if q == 0 || sent < q {
		return nil
	}
	cut := s.cutAt.Load()
	if cut == 0 || sent < cut {
		return s.quiet
	}
	if end := s.stormEnd.Load(); end != 0 && sent >= end {
		return nil
	}
	return s.storm
}

// firstLife is connection i's handler until the cut (and, for the sender
// and the stayers, for the whole run). It runs only on that connection's
// reader goroutine.
func (s *stormRun) firstLife(i int) func([]byte) {
	warm := false
	markReady := func() {
		if !warm {
			warm = true
			s.ready.Add(1)
		}
	}
	switch {
	case i == 0: // the sender: its own messages come back numbered
		return func(msg []byte) {
			eachLine(msg, func(line []byte) {
				ev := parseStormLine(line)
				if ev.kind != numberedLine {
					return
				}
				markReady()
				if ev.seq > s.roomSeq.Load() {
					s.roomSeq.Store(ev.seq) // only this goroutine writes it
				}
				if st, ok := decodePayload(s.token, ev.text); ok {
					storeMax(&s.echo, int64(st.Seq))
				}
			})
		}
	case i <= s.cfg.Stayers:
		return s.stayer(i-1, markReady)
	default:
		k := i - 1 - s.cfg.Stayers
		return func(msg []byte) {
			eachLine(msg, func(line []byte) {
				if ev := parseStormLine(line); ev.kind == numberedLine {
					markReady()
					s.lastSeq[k] = ev.seq
				}
			})
		}
	}
}

// stayer is stayer k's handler: live latency by window.
func (s *stormRun) stayer(k int, markReady func()) func([]byte) {
	var quiet, storm []int64
	return func(msg []byte) {
		if s.measured.Load() {
			return
		}
		now := time.Now().UnixNano()
		quiet, storm = quiet[:0], storm[:0]
		eachLine(msg, func(line []byte) {
			ev := parseStormLine(line)
			if ev.kind != numberedLine {
				return
			}
			markReady()
			st, ok := decodePayload(s.token, ev.text)
			if !ok {
				return
			}
			if int64(st.Seq) <= s.stayerSeen[k].Load() {
				s.stayerReordered.Add(1)
				return
			}
			s.stayerSeen[k].Store(int64(st.Seq)) // only this goroutine writes it
			switch s.window(st.SentNano) {
			case s.quiet:
				quiet = append(quiet, now-st.SentNano)
			case s.storm:
				storm = append(storm, now-st.SentNano)
			}
		})
		if len(quiet) > 0 {
			s.quiet.record(k, quiet)
		}
		if len(storm) > 0 {
			s.storm.record(k, storm)
		}
	}
}

// recoveryCheck follows one storm client's second life: a welcome saying
// recovered:true, then room seqs since+1, since+2, ... with no gap,
// duplicate or step back, through target and on into the live stream. Its
// fields are owned by the connection's reader goroutine and read by others
// only after it has ended; settled is the exception.
type recoveryCheck struct {
	run           *stormRun
	index         int // the storm client's number
	since, target uint64
	start         time.Time // the reconnect's start
	next          uint64    // the seq that must come next
	welcomed      bool
	recovered     bool   // the welcome said recovered:true
	problem       string // the first thing wrong; "" while all is well
	reachedNano   int64  // when next passed target; 0 until then
	settled       atomic.Bool
}

// settle marks the outcome known (complete, recovered:false or failed).
func (c *recoveryCheck) settle() { c.settled.Store(true) }

// fail records the first problem; the client is incomplete.
func (c *recoveryCheck) fail(format string, args ...any) {
	if c.problem != "" {
		return
	}
	c.problem = fmt.Sprintf("since %d: ", c.since) + fmt.Sprintf(format, args...)
	if c.recovered {
		c.run.incomplete.Add(1)
	}
	c.settle()
}

func (c *recoveryCheck) handle(msg []byte) {
	if c.run.measured.Load() {
		return
	}
	now := time.Now().UnixNano()
	eachLine(msg, func(line []byte) { c.line(line, now) })
}

func (c *recoveryCheck) line(line []byte, now int64) {
	if c.problem != "" {
		return
	}
	ev := parseStormLine(line)
	switch ev.kind {
	case welcomeLine:
		if c.welcomed {
			c.fail("a second welcome")
			return
		}
		c.welcomed, c.recovered = true, ev.recovered
		if !c.recovered {
			c.settle() // nothing is replayed; what follows is not checked
			return
		}
		c.reached(now)
	case numberedLine:
		switch {
		case !c.welcomed:
			c.fail("seq %d before the welcome", ev.seq)
		case !c.recovered:
		case ev.seq == c.next:
			c.next++
			c.reached(now)
		case ev.seq > c.next:
			c.fail("gap: seq %d where %d was due (%d missing)", ev.seq, c.next, ev.seq-c.next)
		case ev.seq <= c.since:
			c.fail("seq %d, at or below since, where %d was due", ev.seq, c.next)
		default:
			c.fail("duplicate: seq %d again where %d was due", ev.seq, c.next)
		}
	}
}

// reached notes the moment the client has everything through target.
func (c *recoveryCheck) reached(now int64) {
	if c.reachedNano != 0 || c.next <= c.target {
		return
	}
	c.reachedNano = now
	c.run.recovery.record(c.index, []int64{now - c.start.UnixNano()})
	c.run.recovered.Add(1)
	storeMax(&c.run.lastReach, now)
	c.settle()
}

// eachLine calls fn for every line of a received text message (the server
// may batch several JSON objects with "\n").
func eachLine(msg []byte, fn func(line []byte)) {
	for len(msg) > 0 {
		line, rest, _ := bytes.Cut(msg, []byte{'\n'})
		msg = rest
		if line = bytes.TrimSuffix(line, []byte{'\r'}); len(line) > 0 {
			fn(line)
		}
	}
}

// lineKind sorts the JSON events storm cares about.
type lineKind int

const (
	otherLine    lineKind = iota
	welcomeLine           // a welcome
	numberedLine          // a room message or publish, which carries a seq
)

// stormLine is one JSON event as storm reads it.
type stormLine struct {
	kind      lineKind
	seq       uint64 // numberedLine
	text      []byte // numberedLine: the text, which may alias the line
	recovered bool   // welcomeLine: "recovered":true
}

var jsonSeqKey = []byte(`"seq":`)

// parseStormLine has a fast path for the room messages the server writes
// compactly (type first, text without escapes, seq after it): at 5,000
// connections and tens of messages per second that is most of the
// generator's work. Anything else goes through encoding/json.
func parseStormLine(line []byte) stormLine {
	if bytes.HasPrefix(line, jsonMessagePrefix) {
		if _, after, ok := bytes.Cut(line, jsonTextKey); ok {
			if end := bytes.IndexByte(after, '"'); end >= 0 && bytes.IndexByte(after[:end], '\\') < 0 {
				if _, num, ok := bytes.Cut(after[end:], jsonSeqKey); ok {
					if seq, ok := leadingUint(num); ok && seq > 0 {
						return stormLine{kind: numberedLine, seq: seq, text: after[:end]}
					}
				}
			}
		}
	}
	if len(line) == 0 || line[0] != '{' {
		return stormLine{}
	}
	var ev struct {
		Type      string `json:"type"`
		Seq       uint64 `json:"seq"`
		Text      string `json:"text"`
		Recovered *bool  `json:"recovered"`
	}
	if err := json.Unmarshal(line, &ev); err != nil {
		return stormLine{}
	}
	switch {
	case ev.Type == "welcome":
		return stormLine{kind: welcomeLine, recovered: ev.Recovered != nil && *ev.Recovered}
	case (ev.Type == "message" || ev.Type == "publish") && ev.Seq > 0:
		return stormLine{kind: numberedLine, seq: ev.Seq, text: []byte(ev.Text)}
	}
	return stormLine{}
}

// leadingUint reads the decimal number b starts with (up to 19 digits,
// so it cannot overflow).
func leadingUint(b []byte) (uint64, bool) {
	var n uint64
	i := 0
	for ; i < len(b) && i < 19 && b[i] >= '0' && b[i] <= '9'; i++ {
		n = n*10 + uint64(b[i]-'0')
	}
	return n, i > 0 && (i == len(b) || b[i] < '0' || b[i] > '9')
}

// progressLine is the live status, by phase.
func (s *stormRun) progressLine() string {
	switch s.phase.Load() {
	case stormWarming:
		return fmt.Sprintf("warming up: %d/%d connections in the room", s.ready.Load(), 1+s.cfg.Stayers+s.cfg.Clients)
	case stormQuiet:
		return fmt.Sprintf("quiet window: sent %d  stayers p99 %.2f ms", s.sent.Load(), summarize(s.quiet.merged()).P99Ms)
	case stormCut:
		return fmt.Sprintf("cut %d storm clients: sent %d, waiting for %d missed", s.cfg.Clients, s.sent.Load(), s.cfg.Missed)
	}
	return fmt.Sprintf("storm: reconnected %d/%d  recovered %d  incomplete %d  stayers p99 %.2f ms",
		s.reopened.Load(), s.cfg.Clients, s.recovered.Load(), s.incomplete.Load(), summarize(s.storm.merged()).P99Ms)
}
