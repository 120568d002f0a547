package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// idleConfig holds the idle scenario's parameters.
type idleConfig struct {
	Conns int
	Hold  time.Duration
	Procs int
	// UIDs is "shared" (every connection is a session of uid "idle") or
	// "unique" (uid i<n> each). Shared is the default because with unique
	// uids a chat server announces every join to everyone already in the
	// room: N joins cost N² presence events, which measures presence
	// traffic, not what an idle connection costs.
	UIDs string
	// WorkerArgs are the flags that tell a child process which server to
	// load (target, url, room, sources); used when Procs > 1.
	WorkerArgs []string
	// PublishURL, when set, is switchboard's HTTP publish endpoint: once
	// every connection is open, the parent publishes Marker there once and
	// measures how long it takes to reach them all, waiting at most
	// PublishWait. The parent draws Marker and hands it to its children.
	PublishURL  string
	PublishWait time.Duration
	Marker      string
}

// IdleResult is every parameter and measure of one idle run.
type IdleResult struct {
	Conns            int     `json:"conns"`
	Procs            int     `json:"procs"`
	HoldS            float64 `json:"hold_s"`
	UIDs             string  `json:"uids"`
	Opened           int     `json:"opened"`
	FailedDials      int     `json:"failed_dials"`
	FirstDialError   string  `json:"first_dial_error,omitempty"`
	DialSeconds      float64 `json:"dial_s"`
	HandshakesPerSec float64 `json:"handshakes_per_s"`
	// Dropped counts connections the server closed before the hold ended;
	// DropReason is the first one's read error.
	Dropped    int    `json:"dropped"`
	DropReason string `json:"drop_reason,omitempty"`
	// The publish measure (-publish-url): recipients is the server's own
	// count, reached the connections that got the marker, missing those
	// opened that had not when the wait ended (dropped ones included), and
	// reach_ms the time from the POST's start to the last first receipt.
	// A publish the server refused is reported in publish_error.
	PublishURL           string   `json:"publish_url,omitempty"`
	PublishWaitS         float64  `json:"publish_wait_s,omitempty"`
	PublishError         string   `json:"publish_error,omitempty"`
	PublishRecipients    *int     `json:"publish_recipients,omitempty"`
	PublishReached       *int     `json:"publish_reached,omitempty"`
	PublishMissing       *int     `json:"publish_missing,omitempty"`
	PublishReachMs       *float64 `json:"publish_reach_ms,omitempty"`
	ServerRSSBeforeBytes *int64   `json:"server_rss_before_bytes,omitempty"`
	ServerRSSAfterBytes  *int64   `json:"server_rss_after_bytes,omitempty"`
	RSSPerConnBytes      *float64 `json:"rss_per_conn_bytes,omitempty"`
	ServerCPUSeconds     *float64 `json:"server_cpu_s,omitempty"`
	GeneratorCPUSeconds  float64  `json:"generator_cpu_s"`
}

// idleDialed is what one share (this process or a child) reports once its
// dials are done; children print it as a JSON line.
type idleDialed struct {
	Event       string  `json:"event"` // "dialed"
	Opened      int     `json:"opened"`
	Failed      int     `json:"failed"`
	FirstErr    string  `json:"first_err,omitempty"`
	DialSeconds float64 `json:"dial_s"`
}

// idleDone is a share's final report, after its connections are closed.
type idleDone struct {
	Event      string  `json:"event"` // "done"
	Dropped    int     `json:"dropped"`
	DropReason string  `json:"drop_reason,omitempty"`
	CPUSeconds float64 `json:"cpu_s"`
}

// closeShare closes a share's connections and reports its drops.
func closeShare(s *idleShare) idleDone {
	d := idleDone{Event: "done", Dropped: closeAll(s.clients)}
	d.DropReason = dropReason(s.clients)
	return d
}

// idleShare is the part of the idle connections held by one process.
type idleShare struct {
	clients []*client    // one per connection dialled; nil where it failed
	watch   *markerWatch // nil unless a publish is measured
}

// idleUIDs names connections offset .. offset+n-1.
func idleUIDs(n, offset int, mode string) []string {
	uids := make([]string, n)
	for i := range uids {
		if mode == "unique" {
			uids[i] = "i" + strconv.Itoa(offset+i)
		} else {
			uids[i] = "idle"
		}
	}
	return uids
}

// openIdleShare dials cfg.Conns connections, numbered from offset, each
// with a reader that discards everything (and so answers pings), or, when
// a publish is to be measured, watches for the marker. In that case it
// also waits for every connection's welcome, so that the publish cannot
// overtake a session the server has not put in the room yet.
func openIdleShare(ctx context.Context, env *runEnv, cfg idleConfig, offset int, opened *atomic.Int64) (*idleShare, idleDialed) {
	s := &idleShare{}
	reader := func(int) messageHandler { return discard }
	if cfg.Marker != "" {
		s.watch = newMarkerWatch(cfg.Marker, cfg.Conns)
		reader = s.watch.handler
	}
	dr := env.dialMany(ctx, offset, idleSpecs(cfg.Conns, offset, cfg.UIDs, env.urls), reader, opened)
	s.clients = dr.clients
	if s.watch != nil {
		s.awaitAll(ctx, time.Now().Add(greetTimeout), s.watch.greeted)
	}
	d := idleDialed{Event: "dialed", Opened: dr.opened, Failed: dr.failed, DialSeconds: dr.elapsed.Seconds()}
	if dr.firstErr != nil {
		d.FirstErr = dr.firstErr.Error()
	}
	return s, d
}

// runIdle opens cfg.Conns connections (in this process or spread over
// child processes), holds them, and measures what they cost the server.
func runIdle(ctx context.Context, env *runEnv, cfg idleConfig) (*IdleResult, error) {
	res := &IdleResult{Conns: cfg.Conns, Procs: cfg.Procs, HoldS: cfg.Hold.Seconds(), UIDs: cfg.UIDs}
	res.ServerRSSBeforeBytes = env.probe.rss()
	cpu0, gen0 := env.probe.cpu(), selfCPUSeconds()

	var h idleHolder
	var err error
	if cfg.Procs <= 1 {
		h, err = startLocalIdle(ctx, env, cfg)
	} else {
		h, err = startChildIdle(ctx, env, cfg)
	}
	if err != nil {
		return nil, err
	}
	dialed := h.dialed()
	res.Opened, res.FailedDials, res.FirstDialError = dialed.Opened, dialed.Failed, dialed.FirstErr
	res.DialSeconds = dialed.DialSeconds
	if dialed.DialSeconds > 0 {
		res.HandshakesPerSec = float64(dialed.Opened) / dialed.DialSeconds
	}

	var holdErr error
	if cfg.PublishURL != "" {
		holdErr = res.publish(ctx, env, h, cfg)
	}
	if holdErr == nil {
		prog := startProgress(env.progress, func() string {
			return fmt.Sprintf("holding %d connections", dialed.Opened)
		})
		holdErr = sleepCtx(ctx, cfg.Hold)
		prog.stop()
	}
	res.ServerRSSAfterBytes = env.probe.rss()
	res.ServerCPUSeconds = cpuDelta(cpu0, env.probe.cpu())

	done, err := h.finish()
	if err != nil {
		return nil, err
	}
	if holdErr != nil {
		return nil, holdErr
	}
	res.Dropped, res.DropReason = done.Dropped, done.DropReason
	res.GeneratorCPUSeconds = selfCPUSeconds() - gen0 + done.CPUSeconds
	if b, a := res.ServerRSSBeforeBytes, res.ServerRSSAfterBytes; b != nil && a != nil && res.Opened > 0 {
		per := float64(*a-*b) / float64(res.Opened)
		res.RSSPerConnBytes = &per
	}
	return res, nil
}

// idleHolder is a set of idle connections being held, in this process or
// in children; collect waits (until deadline at most) for the publish
// marker to reach them; finish closes them all and reports drops.
type idleHolder interface {
	dialed() idleDialed
	collect(ctx context.Context, deadline time.Time) (markerReport, error)
	finish() (idleDone, error)
}

// localIdle holds the connections in this process.
type localIdle struct {
	share *idleShare
	d     idleDialed
}

func startLocalIdle(ctx context.Context, env *runEnv, cfg idleConfig) (*localIdle, error) {
	var opened atomic.Int64
	prog := startProgress(env.progress, func() string {
		return fmt.Sprintf("dialing %d/%d", opened.Load(), cfg.Conns)
	})
	defer prog.stop()
	s, d := openIdleShare(ctx, env, cfg, 0, &opened)
	return &localIdle{share: s, d: d}, nil
}

func (l *localIdle) dialed() idleDialed { return l.d }

func (l *localIdle) collect(ctx context.Context, deadline time.Time) (markerReport, error) {
	return l.share.collect(ctx, deadline), nil
}

func (l *localIdle) finish() (idleDone, error) {
	return closeShare(l.share), nil
}

// childIdle holds the connections in child processes, each a re-exec of
// this binary in worker mode: one process can hold only ~20,000 file
// descriptors here. Each child prints an idleDialed line once dialed, then
// reads commands on stdin: "collect <deadline>" is answered with a
// markerReport line; any other line (or EOF) makes it close and print an
// idleDone line.
type childIdle struct {
	children []*idleChild
	d        idleDialed
}

// idleChild is one worker process; the parent owns it and waits for it in
// finish (or kills it on a failed start).
type idleChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
}

// idleWorkerFlag is the hidden flag that puts the binary in worker mode.
const idleWorkerFlag = "worker-idle"

func startChildIdle(ctx context.Context, env *runEnv, cfg idleConfig) (*childIdle, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("idle: find own binary for -procs: %w", err)
	}
	c := &childIdle{}
	conc := max(1, env.dialConc/cfg.Procs)
	offset := 0
	for k := range cfg.Procs {
		n := cfg.Conns / cfg.Procs
		if k < cfg.Conns%cfg.Procs {
			n++
		}
		args := append([]string{"-" + idleWorkerFlag,
			"-conns", strconv.Itoa(n), "-worker-offset", strconv.Itoa(offset),
			"-idle-uids", cfg.UIDs, "-dial-concurrency", strconv.Itoa(conc)}, cfg.WorkerArgs...)
		if cfg.Marker != "" {
			args = append(args, "-"+workerMarkerFlag, cfg.Marker)
		}
		offset += n
		child, err := startIdleChild(ctx, exe, args)
		if err != nil {
			c.kill()
			return nil, err
		}
		c.children = append(c.children, child)
	}
	// Children dial in parallel; reading their first lines in turn just
	// waits for the slowest.
	for i, child := range c.children {
		var d idleDialed
		if err := readJSONLine(child.out, &d); err != nil {
			c.kill()
			return nil, fmt.Errorf("idle: worker %d: %w", i, err)
		}
		c.d.Opened += d.Opened
		c.d.Failed += d.Failed
		c.d.DialSeconds = max(c.d.DialSeconds, d.DialSeconds)
		if c.d.FirstErr == "" {
			c.d.FirstErr = d.FirstErr
		}
	}
	c.d.Event = "dialed"
	return c, nil
}

func startIdleChild(ctx context.Context, exe string, args []string) (*idleChild, error) {
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("idle: worker stdin: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("idle: worker stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("idle: start worker: %w", err)
	}
	return &idleChild{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}, nil
}

// readJSONLine decodes the next line of a child's stdout into v.
func readJSONLine(sc *bufio.Scanner, v any) error {
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return fmt.Errorf("read report: %w", err)
		}
		return errors.New("exited without a report")
	}
	if err := json.Unmarshal(sc.Bytes(), v); err != nil {
		return fmt.Errorf("bad report %q: %w", sc.Text(), err)
	}
	return nil
}

func (c *childIdle) dialed() idleDialed { return c.d }

// collect asks every child at once, so they wait in parallel, then sums
// their answers.
func (c *childIdle) collect(_ context.Context, deadline time.Time) (markerReport, error) {
	for i, child := range c.children {
		if _, err := fmt.Fprintf(child.stdin, "%s %d\n", collectCommand, deadline.UnixNano()); err != nil {
			return markerReport{}, fmt.Errorf("idle: worker %d: send collect: %w", i, err)
		}
	}
	total := markerReport{Event: "reached"}
	for i, child := range c.children {
		var r markerReport
		if err := readJSONLine(child.out, &r); err != nil {
			return total, fmt.Errorf("idle: worker %d: %w", i, err)
		}
		total.Reached += r.Reached
		total.LastNano = max(total.LastNano, r.LastNano)
	}
	return total, nil
}

// finish tells every child to close, collects their reports and waits
// for them to exit.
func (c *childIdle) finish() (idleDone, error) {
	total := idleDone{Event: "done"}
	for _, child := range c.children {
		fmt.Fprintln(child.stdin, "stop")
		child.stdin.Close()
	}
	var firstErr error
	for i, child := range c.children {
		var d idleDone
		if err := readJSONLine(child.out, &d); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("idle: worker %d: %w", i, err)
		}
		if err := child.cmd.Wait(); err != nil && firstErr == nil {
			firstErr = fmt.Errorf("idle: worker %d: %w", i, err)
		}
		total.Dropped += d.Dropped
		if total.DropReason == "" {
			total.DropReason = d.DropReason
		}
		total.CPUSeconds += d.CPUSeconds
	}
	return total, firstErr
}

// kill ends children started so far (after a failure) and reaps them.
func (c *childIdle) kill() {
	for _, child := range c.children {
		child.stdin.Close()
		_ = child.cmd.Process.Kill()
		_ = child.cmd.Wait()
	}
}

// runIdleWorker is the child side: dial cfg.Conns connections, report,
// answer the parent's commands until told to stop (or stdin ends), close,
// report again.
func runIdleWorker(ctx context.Context, env *runEnv, cfg idleConfig, offset int, stdin io.Reader, stdout io.Writer) error {
	gen0 := selfCPUSeconds()
	share, d := openIdleShare(ctx, env, cfg, offset, nil)
	enc := json.NewEncoder(stdout)
	if err := enc.Encode(d); err != nil {
		closeAll(share.clients)
		return fmt.Errorf("worker: report dialed: %w", err)
	}
	if err := serveCommands(ctx, share, stdin, enc); err != nil {
		closeAll(share.clients)
		return err
	}
	done := closeShare(share)
	done.CPUSeconds = selfCPUSeconds() - gen0
	if err := enc.Encode(done); err != nil {
		return fmt.Errorf("worker: report done: %w", err)
	}
	return nil
}

// collectCommand asks a worker for a markerReport; its argument is the
// wall-clock deadline in unix nanoseconds (the same clock in every process
// of this machine).
const collectCommand = "collect"

// serveCommands answers "collect" lines until any other line, the end of
// stdin, or the end of ctx.
func serveCommands(ctx context.Context, share *idleShare, stdin io.Reader, enc *json.Encoder) error {
	lines := readLines(stdin)
	for {
		var line string
		select {
		case <-ctx.Done():
			return nil
		case l, ok := <-lines:
			if !ok {
				return nil
			}
			line = l
		}
		deadline, ok := parseCollect(line)
		if !ok {
			return nil
		}
		if err := enc.Encode(share.collect(ctx, deadline)); err != nil {
			return fmt.Errorf("worker: report reached: %w", err)
		}
	}
}

// parseCollect reads "collect <unix nanos>"; false for any other line.
func parseCollect(line string) (time.Time, bool) {
	arg, ok := strings.CutPrefix(line, collectCommand+" ")
	if !ok {
		return time.Time{}, false
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(arg), 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, ns), true
}

// readLines delivers r's lines on a channel that closes when r ends. The
// goroutine ends with r (the parent closes our stdin after its last
// command).
func readLines(r io.Reader) <-chan string {
	ch := make(chan string)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}
