package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// The idle scenario's publish measure (-publish-url): one HTTP publish to a
// room of idle connections, and the time until the last of them has it.

const (
	// greetTimeout bounds the wait for every connection's welcome before
	// the publish.
	greetTimeout = 10 * time.Second
	// publishTimeout bounds the publish request itself.
	publishTimeout = 30 * time.Second
	// awaitTick is how often a wait looks at its connections; receipt
	// times are taken by the readers, so it does not limit precision.
	awaitTick = 10 * time.Millisecond
)

// newPublishMarker returns the text to publish: random per run, so a
// message of another run can never count, and plain ASCII, so it appears
// verbatim in both text-mode lines and JSON events.
func newPublishMarker() string { return "loadtest-publish-" + newRunToken() }

// markerWatch is the publish state of one share's connections. Connection
// i's flags are written only by its reader and read by the waits.
type markerWatch struct {
	marker  []byte
	greeted []atomic.Bool // has had a text message (switchboard's welcome)
	hit     []atomic.Bool // has had the marker
	reached atomic.Int64
	last    atomic.Int64 // unix nanos of the latest first receipt
	// at, when not nil, keeps each connection's receipt time (unix nanos)
	// for the reach scenario's percentiles.
	at []atomic.Int64
}

func newMarkerWatch(marker string, conns int) *markerWatch {
	return &markerWatch{
		marker:  []byte(marker),
		greeted: make([]atomic.Bool, conns),
		hit:     make([]atomic.Bool, conns),
	}
}

// handler returns connection i's reader. Until the marker has arrived it
// scans every text message as it streams in; an idle connection gets only
// its welcome before that, so the scan costs next to nothing, and nothing
// message-sized is kept per connection. Afterwards it only discards.
func (w *markerWatch) handler(i int) messageHandler {
	return func(typ websocket.MessageType, r io.Reader) error {
		if typ != websocket.MessageText || w.hit[i].Load() {
			return discard(typ, r)
		}
		found, err := readContains(r, w.marker)
		if err != nil {
			return err
		}
		w.greeted[i].Store(true)
		if found {
			now := time.Now().UnixNano()
			if w.at != nil {
				w.at[i].Store(now)
			}
			storeMax(&w.last, now)
			w.hit[i].Store(true)
			w.reached.Add(1)
		}
		return nil
	}
}

// scanBufs are readContains's buffers, shared by all readers: at 100,000
// connections a buffer each would cost more than the connections.
var scanBufs = sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}

// readContains reads r to its end and reports whether marker occurs in
// it, also across two reads: the last len(marker)-1 bytes of each read are
// kept in front of the next.
func readContains(r io.Reader, marker []byte) (bool, error) {
	bp := scanBufs.Get().(*[]byte)
	defer scanBufs.Put(bp)
	buf := *bp
	keep := max(len(marker)-1, 0)
	carried, found := 0, false
	for {
		n, err := r.Read(buf[carried:])
		if !found && n > 0 {
			window := buf[:carried+n]
			found = bytes.Contains(window, marker)
			carried = min(keep, len(window))
			copy(buf, window[len(window)-carried:])
		}
		if found {
			carried = 0
		}
		if errors.Is(err, io.EOF) {
			return found, nil
		}
		if err != nil {
			return found, err
		}
	}
}

// markerReport is what a share reports after a collect; children print it
// as a JSON line.
type markerReport struct {
	Event    string `json:"event"` // "reached"
	Reached  int    `json:"reached"`
	LastNano int64  `json:"last_unix_nano"`
}

// collect waits until every connection still open has the marker, or
// deadline, and reports how many have it.
func (s *idleShare) collect(ctx context.Context, deadline time.Time) markerReport {
	rep := markerReport{Event: "reached"}
	if s.watch == nil {
		return rep
	}
	s.awaitAll(ctx, deadline, s.watch.hit)
	rep.Reached = int(s.watch.reached.Load())
	rep.LastNano = s.watch.last.Load()
	return rep
}

// awaitAll returns once every connection has its flag set or has ended,
// or at deadline, or when ctx ends.
func (s *idleShare) awaitAll(ctx context.Context, deadline time.Time, flags []atomic.Bool) {
	tick := time.NewTicker(awaitTick)
	defer tick.Stop()
	for s.pending(flags) > 0 && time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// pending counts open connections whose flag is not set yet.
func (s *idleShare) pending(flags []atomic.Bool) int {
	n := 0
	for i, c := range s.clients {
		if c != nil && !flags[i].Load() && !c.ended() {
			n++
		}
	}
	return n
}

// publish posts the marker once and waits, up to cfg.PublishWait from the
// POST's start, for every held connection to receive it. A refused or
// failed POST is part of the result (publish_error), not a failed run:
// the dial figures still stand. The error is for a broken worker channel.
func (res *IdleResult) publish(ctx context.Context, env *runEnv, h idleHolder, cfg idleConfig) error {
	res.PublishURL, res.PublishWaitS = cfg.PublishURL, cfg.PublishWait.Seconds()
	start := time.Now()
	recipients, err := postPublish(ctx, env.sources[0], cfg.PublishURL, cfg.Marker)
	if err != nil {
		res.PublishError = err.Error()
		return nil
	}
	prog := startProgress(env.progress, func() string {
		return fmt.Sprintf("waiting for the publish to reach %d connections", res.Opened)
	})
	rep, err := h.collect(ctx, start.Add(cfg.PublishWait))
	prog.stop()
	if err != nil {
		return err
	}
	missing := res.Opened - rep.Reached
	res.PublishRecipients, res.PublishReached, res.PublishMissing = &recipients, &rep.Reached, &missing
	if rep.Reached > 0 {
		ms := float64(rep.LastNano-start.UnixNano()) / 1e6
		res.PublishReachMs = &ms
	}
	return ctx.Err()
}

// postPublish sends {"text": text} to switchboard's publish endpoint and
// returns the recipients count of its answer.
func postPublish(ctx context.Context, hc *http.Client, url, text string) (int, error) {
	body, err := json.Marshal(map[string]string{"text": text})
	if err != nil {
		return 0, fmt.Errorf("publish: encode body: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("publish: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, fmt.Errorf("publish: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("publish: %s: %s", resp.Status, bytes.TrimSpace(raw))
	}
	var ans struct {
		Recipients *int `json:"recipients"`
	}
	if err := json.Unmarshal(raw, &ans); err != nil || ans.Recipients == nil {
		return 0, fmt.Errorf("publish: answer %q has no recipients count", bytes.TrimSpace(raw))
	}
	return *ans.Recipients, nil
}
