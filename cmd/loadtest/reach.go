package main

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// The reach scenario: -conns idle connections in one room, then ONE
// message, and the time until the last connection has it. The message is
// switchboard's HTTP publish (-publish-url, as in the idle scenario's
// publish measure, whose marker watch it reuses) or, for every target, a
// client message written by one extra sender connection through the
// target's adapter.

const (
	// reachSenderUID names the extra sending connection.
	reachSenderUID = "reach-sender"
	// warmUpEvery is how often the sender repeats its warm-up message while
	// some connection has had no message yet (a target without a welcome
	// line, or a server that puts a session in the room a bit after the
	// handshake).
	warmUpEvery = 100 * time.Millisecond
	// reachWriteTimeout bounds the sender's writes.
	reachWriteTimeout = 10 * time.Second
)

// reachConfig holds the reach scenario's parameters.
type reachConfig struct {
	Conns      int
	UIDs       string        // as idleConfig.UIDs
	PublishURL string        // switchboard publish endpoint; empty: a client message
	Timeout    time.Duration // longest wait, from the send, for every connection
}

// ReachResult is every parameter and measure of one reach run. Ready is
// how many connections had some message (a welcome, a warm-up) before the
// send, reached how many got the message, missing conns - reached (failed
// dials and drops included); reach_ms is the time from the send's start to
// the last receipt, p50/p99 those of the per-connection receipt times.
type ReachResult struct {
	Conns          int      `json:"conns"`
	Via            string   `json:"via"` // "publish" or "client"
	PublishURL     string   `json:"publish_url,omitempty"`
	TimeoutS       float64  `json:"timeout_s"`
	Opened         int      `json:"opened"`
	FailedDials    int      `json:"failed_dials"`
	FirstDialError string   `json:"first_dial_error,omitempty"`
	Ready          int      `json:"ready"`
	Recipients     *int     `json:"publish_recipients,omitempty"`
	SendError      string   `json:"send_error,omitempty"`
	Reached        int      `json:"reached"`
	Missing        int      `json:"missing"`
	Dropped        int      `json:"dropped"`
	ReachMs        *float64 `json:"reach_ms,omitempty"`
	P50Ms          *float64 `json:"p50_ms,omitempty"`
	P99Ms          *float64 `json:"p99_ms,omitempty"`
}

// OK reports whether every connection got the message.
func (r *ReachResult) OK() bool { return r.SendError == "" && r.Missing == 0 }

// failure says why a run is not OK.
func (r *ReachResult) failure() string {
	if r.SendError != "" {
		return "send: " + r.SendError
	}
	return fmt.Sprintf("%d of %d connections did not get the message within %gs", r.Missing, r.Conns, r.TimeoutS)
}

// runReach dials the sender (for a client message) and the connections,
// waits until every one has had a message, sends once and waits up to
// cfg.Timeout for the message to reach them all. A failed send or a
// missing connection is part of the result (see OK); the error is for an
// interrupted run, which is no result.
func runReach(ctx context.Context, env *runEnv, cfg reachConfig) (*ReachResult, error) {
	res := &ReachResult{Conns: cfg.Conns, Via: "client", PublishURL: cfg.PublishURL, TimeoutS: cfg.Timeout.Seconds()}
	if cfg.PublishURL != "" {
		res.Via = "publish"
	}
	marker := newPublishMarker()
	watch := newMarkerWatch(marker, cfg.Conns)
	watch.at = make([]atomic.Int64, cfg.Conns)

	// The sender joins first: a server that announces joins to the room
	// then has announced it before the measured message, not while it
	// is on its way.
	var sender *websocket.Conn
	var all []*client
	defer func() { closeAll(all) }()
	if cfg.PublishURL == "" {
		sr := env.dialMany(ctx, cfg.Conns, []dialSpec{{uid: reachSenderUID, url: env.senderURLs[0]}},
			func(int) messageHandler { return discard }, nil)
		if sr.firstErr != nil {
			res.SendError = "sender: " + sr.firstErr.Error()
		} else {
			sender = sr.conns[0]
			all = append(all, sr.clients[0])
		}
	}

	var opened atomic.Int64
	prog := startProgress(env.progress, func() string {
		return fmt.Sprintf("dialing %d/%d", opened.Load(), cfg.Conns)
	})
	dr := env.dialMany(ctx, 0, idleSpecs(cfg.Conns, 0, cfg.UIDs, env.urls), watch.handler, &opened)
	prog.stop()
	share := &idleShare{clients: dr.clients, watch: watch}
	all = append(all, share.clients...)
	res.Opened, res.FailedDials = dr.opened, dr.failed
	if dr.firstErr != nil {
		res.FirstDialError = dr.firstErr.Error()
	}
	if res.SendError == "" {
		res.Ready = awaitReady(ctx, env.target, share, sender)
		start := time.Now()
		if err := sendReach(ctx, env, cfg, sender, marker, res); err != nil {
			res.SendError = err.Error()
		} else {
			prog := startProgress(env.progress, func() string {
				return fmt.Sprintf("waiting for the message to reach %d connections", res.Opened)
			})
			share.awaitAll(ctx, start.Add(cfg.Timeout), watch.hit)
			prog.stop()
		}
		res.measure(watch, start)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reach interrupted: %w", err)
	}
	res.Missing = res.Conns - res.Reached
	res.Dropped = liveDrops(share.clients)
	return res, nil
}

// awaitReady waits, up to greetTimeout, until every open connection has
// had a text message: switchboard's welcome, or else one of the sender's
// warm-up messages, repeated every warmUpEvery while some are missing.
// It returns how many have.
func awaitReady(ctx context.Context, t Target, s *idleShare, sender *websocket.Conn) int {
	warm := []byte("loadtest-warmup-" + newRunToken())
	deadline := time.Now().Add(greetTimeout)
	next := time.Now().Add(warmUpEvery)
	tick := time.NewTicker(awaitTick)
	defer tick.Stop()
	for s.pending(s.watch.greeted) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		if sender != nil && !time.Now().Before(next) {
			wctx, cancel := context.WithTimeout(ctx, reachWriteTimeout)
			err := sender.Write(wctx, websocket.MessageText, t.Encode(warm))
			cancel()
			if err != nil {
				break // the measured send will fail and say why
			}
			next = time.Now().Add(warmUpEvery)
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	n := 0
	for i := range s.watch.greeted {
		if s.watch.greeted[i].Load() {
			n++
		}
	}
	return n
}

// sendReach sends the one message: the HTTP publish, or the sender's
// client message in the target's wire format.
func sendReach(ctx context.Context, env *runEnv, cfg reachConfig, sender *websocket.Conn, marker string, res *ReachResult) error {
	if cfg.PublishURL != "" {
		n, err := postPublish(ctx, env.sources[0], cfg.PublishURL, marker)
		if err == nil {
			res.Recipients = &n
		}
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, reachWriteTimeout)
	defer cancel()
	if err := sender.Write(wctx, websocket.MessageText, env.target.Encode([]byte(marker))); err != nil {
		return fmt.Errorf("sender: %w", err)
	}
	return nil
}

// measure fills reached, reach_ms and the receipt-time percentiles.
func (r *ReachResult) measure(w *markerWatch, start time.Time) {
	var ms []float64
	for i := range w.hit {
		if w.hit[i].Load() {
			ms = append(ms, float64(w.at[i].Load()-start.UnixNano())/1e6)
		}
	}
	r.Reached = len(ms)
	if len(ms) == 0 {
		return
	}
	sort.Float64s(ms)
	last, p50, p99 := ms[len(ms)-1], quantile(ms, 0.50), quantile(ms, 0.99)
	r.ReachMs, r.P50Ms, r.P99Ms = &last, &p50, &p99
}

// quantile is the nearest-rank q-quantile of sorted, which is not empty.
func quantile(sorted []float64, q float64) float64 {
	k := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(k, 0), len(sorted)-1)]
}
