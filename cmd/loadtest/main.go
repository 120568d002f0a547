// Command loadtest is a load generator for WebSocket chat servers:
// switchboard (text and JSON mode) and, for comparison, the
// gorilla/websocket chat example. It measures idle connection cost
// (idle), broadcast throughput and latency (fanout), the highest
// sustainable rate (ladder), and a reconnect storm with history recovery
// (storm), the time one message takes to reach every connection of a room
// (reach), prints one JSON line per run, and turns
// collected JSON lines into a markdown report with a chart (report).
//
// Targets must be on the loopback network: this tool is for benchmarking
// servers on the same machine.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// Record is the JSON line printed at the end of a run: where and what was
// run, with every parameter and measure in the scenario's result. URL is
// the dialled endpoints comma-separated (one for a single server); URLs
// lists them and SenderURLs the fanout senders' (a cluster run may put the
// senders on other nodes than the receivers). Auth is "token" for a run in
// token mode (-token-secret) and empty for uid headers.
type Record struct {
	Tool            string        `json:"tool"`
	Time            string        `json:"time"`
	Target          string        `json:"target"`
	Scenario        string        `json:"scenario"`
	URL             string        `json:"url"`
	URLs            []string      `json:"urls"`
	SenderURLs      []string      `json:"sender_urls,omitempty"`
	Room            string        `json:"room,omitempty"`
	Sources         int           `json:"sources"`
	DialConcurrency int           `json:"dial_concurrency"`
	Auth            string        `json:"auth,omitempty"`
	Compression     bool          `json:"compression,omitempty"` // clients offered permessage-deflate
	PID             int           `json:"pid,omitempty"`
	Idle            *IdleResult   `json:"idle,omitempty"`
	Fanout          *FanoutResult `json:"fanout,omitempty"`
	Ladder          *LadderResult `json:"ladder,omitempty"`
	Storm           *StormResult  `json:"storm,omitempty"`
	Reach           *ReachResult  `json:"reach,omitempty"`
}

// options is the parsed and validated command line.
type options struct {
	target       Target
	rawURLs      string // -url as given, for the children of -procs
	baseURLs     []string
	senderURLs   []string
	room         string
	scenario     string
	pid          int
	sources      int
	dialConc     int
	quiet        bool
	md           string
	idle         idleConfig
	fanout       fanoutConfig
	storm        stormConfig
	reach        reachConfig
	rates        []int
	stepDuration time.Duration
	compression  bool          // clients offer permessage-deflate
	tokenSecret  string        // token mode when set
	tokenTTL     time.Duration // token mode: exp = mint time + tokenTTL; 0 = no exp
	// Worker mode (hidden): this process is a child of an idle run.
	workerIdle   bool
	workerOffset int
}

// run is main without os.Exit, so tests can call it.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "report" {
		return runReportCommand(args[1:], stderr)
	}
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return 2
	}
	if err := raiseFileLimit(); err != nil {
		fmt.Fprintln(stderr, "loadtest: warning:", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	env := opts.env()
	if opts.workerIdle {
		err := runIdleWorker(ctx, env, opts.idle, opts.workerOffset, stdin, stdout)
		if err != nil {
			fmt.Fprintln(stderr, "loadtest worker:", err)
			return 1
		}
		return 0
	}
	rec, err := runScenario(ctx, env, opts)
	if err != nil {
		fmt.Fprintln(stderr, "loadtest:", err)
		return 1
	}
	line, err := json.Marshal(rec)
	if err != nil {
		fmt.Fprintln(stderr, "loadtest: encode result:", err)
		return 1
	}
	fmt.Fprintln(stdout, string(line))
	if opts.md != "" {
		if err := appendRunMarkdown(opts.md, rec); err != nil {
			fmt.Fprintln(stderr, "loadtest:", err)
			return 1
		}
	}
	if rec.Storm != nil && !rec.Storm.OK {
		// The line is printed, for the record, but the run failed.
		fmt.Fprintln(stderr, "loadtest: storm:", rec.Storm.failures())
		return 1
	}
	if rec.Reach != nil && !rec.Reach.OK() {
		fmt.Fprintln(stderr, "loadtest: reach:", rec.Reach.failure())
		return 1
	}
	return 0
}

// env builds the connection environment the scenarios share.
func (o *options) env() *runEnv {
	e := &runEnv{
		target:      o.target,
		urls:        roomURLs(o.target, o.baseURLs, o.room),
		senderURLs:  roomURLs(o.target, o.senderURLs, o.room),
		sources:     sourceClients(o.sources),
		probe:       serverProbe{pid: o.pid},
		dialConc:    o.dialConc,
		compression: o.compression,
	}
	if !o.quiet && !o.workerIdle {
		e.progress = newProgressSink(os.Stderr)
	}
	return e
}

// runScenario runs the chosen scenario and wraps its result in a Record.
func runScenario(ctx context.Context, env *runEnv, o *options) (*Record, error) {
	rec := &Record{
		Tool:            "switchboard-loadtest",
		Time:            time.Now().UTC().Format(time.RFC3339),
		Target:          o.target.Name(),
		Scenario:        o.scenario,
		URL:             strings.Join(env.urls, ","),
		URLs:            env.urls,
		Sources:         o.sources,
		DialConcurrency: o.dialConc,
		PID:             o.pid,
	}
	switch o.target.Name() {
	case "gorilla": // one room, no name
	case "centrifugo":
		rec.Room = centrifugoChannel
	default:
		rec.Room = o.room
	}
	if o.scenario != "idle" && (o.scenario != "reach" || o.reach.PublishURL == "") {
		rec.SenderURLs = env.senderURLs
	}
	if o.tokenSecret != "" {
		rec.Auth = "token"
	}
	rec.Compression = o.compression
	var err error
	switch o.scenario {
	case "idle":
		cfg := o.idle
		if cfg.PublishURL != "" {
			cfg.Marker = newPublishMarker()
		}
		rec.Idle, err = runIdle(ctx, env, cfg)
	case "fanout":
		rec.Fanout, err = runFanout(ctx, env, o.fanout)
	case "ladder":
		rec.Ladder, err = runLadder(ctx, env, o.fanout, o.rates, o.stepDuration)
	case "storm":
		rec.Storm, err = runStorm(ctx, env, o.storm)
	case "reach":
		rec.Reach, err = runReach(ctx, env, o.reach)
	}
	if err != nil {
		return nil, fmt.Errorf("%s against %s: %w", o.scenario, rec.URL, err)
	}
	return rec, nil
}

// hiddenFlags are internal to the parent/child protocol of -procs.
var hiddenFlags = map[string]bool{idleWorkerFlag: true, "worker-offset": true, workerMarkerFlag: true}

// workerMarkerFlag hands a child the publish marker to watch for.
const workerMarkerFlag = "worker-marker"

// parseFlags reads the command line. Any bad value comes back as one error
// line naming the flag.
func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // we print our own one-line errors
	var targetName, rates, senderURLs string
	fs.StringVar(&targetName, "target", "switchboard-text", "server adapter: "+strings.Join(targetNames(), "|")+" (storm: switchboard-json, the only one it runs)")
	fs.StringVar(&o.rawURLs, "url", "ws://127.0.0.1:5000/ws", "WebSocket endpoint(s), comma-separated (loopback only); connection i (receiver or idle) dials the (i mod n)-th; switchboard targets append /{room}")
	fs.StringVar(&senderURLs, "sender-url", "", "fanout/ladder: the senders' endpoint(s), comma-separated; sender i dials the (i mod n)-th (default: the -url list)")
	fs.StringVar(&o.room, "room", "bench", "switchboard room")
	fs.StringVar(&o.scenario, "scenario", "fanout", "idle|fanout|ladder|storm|reach")
	fs.IntVar(&o.pid, "pid", 0, "server pid, for its CPU seconds and RSS (optional)")
	fs.IntVar(&o.sources, "sources", 1, "spread connections over source addresses 127.0.0.1..127.0.0.N")
	fs.BoolVar(&o.compression, "compression", false, "every connection offers permessage-deflate (as browsers do); the server decides")
	fs.IntVar(&o.dialConc, "dial-concurrency", 64, "handshakes in flight at most (storm's reconnect: see -reconnect-concurrency)")
	fs.BoolVar(&o.quiet, "quiet", false, "no progress lines on stderr")
	fs.StringVar(&o.md, "md", "", "append a markdown section for this run to this file")
	fs.IntVar(&o.idle.Conns, "conns", 1000, fmt.Sprintf("idle/reach: connections to open; storm: storm clients, cut and reconnected (storm default %d)", stormDefaultClients))
	fs.DurationVar(&o.idle.Hold, "hold", 5*time.Second, "idle: how long to hold them")
	fs.IntVar(&o.idle.Procs, "procs", 1, "idle: child processes to spread connections over (~20,000 fds each)")
	fs.StringVar(&o.idle.UIDs, "idle-uids", "shared", "idle/reach: shared (one uid, many sessions) or unique uids")
	fs.StringVar(&o.idle.PublishURL, "publish-url", "", "idle/reach: switchboard publish endpoint (http://127.0.0.1:PORT/api/rooms/ROOM/messages); once all connections are open, publish once and time its reach "+
		"(reach without it: one extra connection sends a client message)")
	fs.DurationVar(&o.idle.PublishWait, "publish-wait", 60*time.Second, "idle: longest wait for the publish to reach every connection")
	fs.DurationVar(&o.reach.Timeout, "reach-timeout", 30*time.Second, "reach: longest wait, from the send, for the message to reach every connection")
	fs.IntVar(&o.fanout.Receivers, "receivers", 500, fmt.Sprintf("fanout/ladder: receive-only connections; storm: stayers, whose live latency is measured (storm default %d)", stormDefaultStayers))
	fs.IntVar(&o.fanout.Senders, "senders", 5, "fanout/ladder: sending connections (they receive too)")
	fs.IntVar(&o.fanout.Rate, "rate", 100, fmt.Sprintf("fanout: messages per second per sender; storm: the one sender's (storm default %d)", stormDefaultRate))
	fs.DurationVar(&o.fanout.Duration, "duration", 10*time.Second, "fanout: sending time")
	fs.DurationVar(&o.fanout.Drain, "drain", 2*time.Second, "fanout/ladder/storm: wait for late deliveries after sending")
	fs.IntVar(&o.fanout.Payload, "payload", 128, "fanout/ladder/storm: payload bytes per message")
	fs.IntVar(&o.storm.Missed, "missed", 50, "storm: messages sent while the storm clients are cut off (keep it below the server's -history-size)")
	fs.DurationVar(&o.storm.Baseline, "baseline", 2*time.Second, "storm: the quiet window before the cut, the stayers' latency baseline")
	fs.DurationVar(&o.storm.Timeout, "recover-timeout", time.Minute, "storm: longest wait, from the reconnect's start, for every storm client to recover")
	fs.IntVar(&o.storm.ReconnectConc, "reconnect-concurrency", 0, "storm: the reconnect's handshakes in flight at most (0: all at once)")
	fs.StringVar(&rates, "rates", "100,200,400,800", "ladder: rising per-sender rates, comma-separated")
	fs.DurationVar(&o.stepDuration, "step-duration", 5*time.Second, "ladder: sending time per step")
	fs.StringVar(&o.tokenSecret, "token-secret", "", "token mode: switchboard targets prove each uid with an HS256 JWT (sub = uid) signed with this secret, "+
		"sent as Authorization: Bearer instead of the uid header, minted before the timed dial phase (empty: uid header); refused with -target gorilla, which has no identity")
	fs.DurationVar(&o.tokenTTL, "token-ttl", time.Hour, "token mode: token lifetime, from just before each dial phase (0: no exp claim)")
	fs.BoolVar(&o.workerIdle, idleWorkerFlag, false, "internal: idle worker child")
	fs.IntVar(&o.workerOffset, "worker-offset", 0, "internal: number of the worker's first connection")
	fs.StringVar(&o.idle.Marker, workerMarkerFlag, "", "internal: the publish marker a worker watches for")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(fs, stderr)
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags only, or the report subcommand)", fs.Arg(0))
	}
	applyScenarioDefaults(fs, o, &targetName)
	var ok bool
	if o.target, ok = targets[targetName]; !ok {
		return nil, fmt.Errorf("invalid value %q for flag -target: want one of %s", targetName, strings.Join(targetNames(), ", "))
	}
	var err error
	if o.rates, err = parseRates(rates); err != nil {
		return nil, fmt.Errorf("invalid value %q for flag -rates: %w", rates, err)
	}
	if o.baseURLs, err = splitURLs(o.rawURLs); err != nil {
		return nil, fmt.Errorf("invalid value %q for flag -url: %w", o.rawURLs, err)
	}
	o.senderURLs = o.baseURLs
	if senderURLs != "" {
		if o.senderURLs, err = splitURLs(senderURLs); err != nil {
			return nil, fmt.Errorf("invalid value %q for flag -sender-url: %w", senderURLs, err)
		}
	}
	o.idle.WorkerArgs = []string{"-target", targetName, "-url", o.rawURLs, "-room", o.room,
		"-sources", strconv.Itoa(o.sources)}
	if o.compression {
		o.idle.WorkerArgs = append(o.idle.WorkerArgs, "-compression")
	}
	if o.tokenSecret != "" {
		tt, ok := o.target.(tokenTarget)
		if !ok {
			return nil, fmt.Errorf("invalid use of flag -token-secret: %s has no token mode (switchboard targets only)", targetName)
		}
		o.target = tt.withTokens(newBearerTokens(o.tokenSecret, o.tokenTTL))
		o.idle.WorkerArgs = append(o.idle.WorkerArgs, "-token-secret", o.tokenSecret, "-token-ttl", o.tokenTTL.String())
	}
	o.storm.Clients, o.storm.Stayers, o.storm.Rate = o.idle.Conns, o.fanout.Receivers, o.fanout.Rate
	o.storm.Drain, o.storm.Payload = o.fanout.Drain, o.fanout.Payload
	o.reach.Conns, o.reach.UIDs, o.reach.PublishURL = o.idle.Conns, o.idle.UIDs, o.idle.PublishURL
	return o, validate(o)
}

// applyScenarioDefaults gives the flags shared between scenarios that the
// command line left unset their storm defaults: its clients are -conns,
// its stayers -receivers, its sender's rate -rate, and it speaks JSON.
func applyScenarioDefaults(fs *flag.FlagSet, o *options, targetName *string) {
	if o.scenario != "storm" {
		return
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["target"] {
		*targetName = "switchboard-json"
	}
	if !set["conns"] {
		o.idle.Conns = stormDefaultClients
	}
	if !set["receivers"] {
		o.fanout.Receivers = stormDefaultStayers
	}
	if !set["rate"] {
		o.fanout.Rate = stormDefaultRate
	}
}

// printUsage lists the public flags.
func printUsage(fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintln(w, "usage: loadtest [flags]            run a scenario, print one JSON line")
	fmt.Fprintln(w, "       loadtest report -in results.jsonl -md OUT.md [-png OUT.png]")
	fs.VisitAll(func(f *flag.Flag) {
		if hiddenFlags[f.Name] {
			return
		}
		fmt.Fprintf(w, "  -%s (default %q)\n    \t%s\n", f.Name, f.DefValue, f.Usage)
	})
}

// parseRates reads "100,200,400" into a strictly rising list.
func parseRates(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive rate", part)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, errors.New("rates must rise")
		}
		out = append(out, n)
	}
	return out, nil
}

// roomPattern is switchboard's rule for room names (PROTOCOL.md).
var roomPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// validate checks value ranges; each error names its flag.
func validate(o *options) error {
	checks := []struct {
		name string
		bad  bool
		want string
	}{
		{"scenario", o.scenario != "idle" && o.scenario != "fanout" && o.scenario != "ladder" && o.scenario != "storm" && o.scenario != "reach", "idle, fanout, ladder, storm or reach"},
		{"room", !roomPattern.MatchString(o.room), "1-64 letters, digits, '.', '_' or '-'"},
		{"sources", o.sources < 1 || o.sources > 254, "1..254"},
		{"dial-concurrency", o.dialConc < 1, "at least 1"},
		{"pid", o.pid < 0, "a process id, or 0 for none"},
		{"conns", o.idle.Conns < 1, "at least 1"},
		{"hold", o.idle.Hold < 0, "not negative"},
		{"procs", o.idle.Procs < 1 || o.idle.Procs > 64 || o.idle.Procs > o.idle.Conns, "1..64 and at most -conns"},
		{"idle-uids", o.idle.UIDs != "shared" && o.idle.UIDs != "unique", "shared or unique"},
		{"publish-wait", o.idle.PublishWait <= 0, "positive"},
		{"receivers", o.fanout.Receivers < 0, "not negative"},
		{"senders", o.fanout.Senders < 1, "at least 1"},
		{"rate", o.fanout.Rate < 1 || o.fanout.Rate > 1_000_000, "1..1000000"},
		{"duration", o.fanout.Duration <= 0, "positive"},
		{"drain", o.fanout.Drain < 0, "not negative"},
		{"payload", o.fanout.Payload < 1 || checkPayloadSize(o.target, o.fanout.Payload) != nil, payloadWant(o.target)},
		{"step-duration", o.stepDuration <= 0, "positive"},
		{"worker-offset", o.workerOffset < 0, "not negative"},
		{"token-ttl", o.tokenTTL < 0, "not negative (0: no exp claim)"},
		{"missed", o.storm.Missed < 0, "not negative"},
		{"baseline", o.storm.Baseline <= 0, "positive"},
		{"recover-timeout", o.storm.Timeout <= 0, "positive"},
		{"reconnect-concurrency", o.storm.ReconnectConc < 0, "not negative (0: all at once)"},
		{"reach-timeout", o.reach.Timeout <= 0, "positive"},
		{"procs", o.scenario == "reach" && o.idle.Procs != 1, "1 with -scenario reach (it runs in one process)"},
	}
	if o.scenario == "storm" {
		checks = append(checks, []struct {
			name string
			bad  bool
			want string
		}{
			{"target", o.target.Name() != "switchboard-json", "switchboard-json with -scenario storm (recovery is JSON mode only)"},
			{"procs", o.idle.Procs != 1, "1 with -scenario storm (it runs in one process, which holds 5,000+ clients)"},
			{"url", len(o.baseURLs) != 1, "one endpoint with -scenario storm (it checks a single node's contiguous seqs)"},
			{"sender-url", len(o.senderURLs) != 1 || o.senderURLs[0] != o.baseURLs[0], "the -url endpoint with -scenario storm (one node)"},
		}...)
	}
	for _, c := range checks {
		if c.bad {
			f := flagValue(o, c.name)
			return fmt.Errorf("invalid value %s for flag -%s: want %s", f, c.name, c.want)
		}
	}
	if err := checkURLList(o.baseURLs); err != nil {
		return fmt.Errorf("invalid value %q for flag -url: %w", o.rawURLs, err)
	}
	if err := checkURLList(o.senderURLs); err != nil {
		return fmt.Errorf("invalid value %q for flag -sender-url: %w", strings.Join(o.senderURLs, ","), err)
	}
	if err := validatePublish(o); err != nil {
		return fmt.Errorf("invalid value %q for flag -publish-url: %w", o.idle.PublishURL, err)
	}
	if o.pid > 0 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", o.pid)); err != nil {
			return fmt.Errorf("invalid value %d for flag -pid: no such process", o.pid)
		}
	}
	return nil
}

// validatePublish checks -publish-url: only the idle and reach scenarios
// measure a publish, only switchboard has the endpoint, and it is on loopback too.
func validatePublish(o *options) error {
	switch {
	case o.idle.PublishURL == "":
		return nil
	case o.scenario != "idle" && o.scenario != "reach":
		return errors.New("only with -scenario idle or reach")
	case !strings.HasPrefix(o.target.Name(), "switchboard"):
		return fmt.Errorf("%s has no publish endpoint", o.target.Name())
	}
	return checkLoopback(o.idle.PublishURL, "http")
}

func payloadWant(t Target) string {
	if t.MaxPayload() > 0 {
		return fmt.Sprintf("1..%d for %s", t.MaxPayload(), t.Name())
	}
	return "at least 1"
}

// flagValue renders the current value of a validated flag for messages.
func flagValue(o *options, name string) string {
	values := map[string]any{
		"scenario": o.scenario, "room": o.room, "sources": o.sources, "dial-concurrency": o.dialConc,
		"pid": o.pid, "conns": o.idle.Conns, "hold": o.idle.Hold, "procs": o.idle.Procs,
		"idle-uids": o.idle.UIDs, "publish-wait": o.idle.PublishWait, "receivers": o.fanout.Receivers, "senders": o.fanout.Senders,
		"rate": o.fanout.Rate, "duration": o.fanout.Duration, "drain": o.fanout.Drain,
		"payload": o.fanout.Payload, "step-duration": o.stepDuration, "worker-offset": o.workerOffset,
		"token-ttl": o.tokenTTL, "missed": o.storm.Missed, "baseline": o.storm.Baseline,
		"recover-timeout": o.storm.Timeout, "reconnect-concurrency": o.storm.ReconnectConc, "reach-timeout": o.reach.Timeout, "target": o.target.Name(), "url": o.rawURLs,
		"sender-url": strings.Join(o.senderURLs, ","),
	}
	return fmt.Sprintf("%q", fmt.Sprint(values[name]))
}
