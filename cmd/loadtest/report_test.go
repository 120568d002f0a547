package main

import (
	"bytes"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// sampleRecords is one idle, fanout and ladder run for two targets.
func sampleRecords() []Record {
	var recs []Record
	for i, target := range []string{"gorilla", "switchboard-text"} {
		k := float64(i + 1)
		rss := 20_000 * k
		cpu := 1.5 * k
		mem := int64(50 << 20)
		recs = append(recs,
			Record{Target: target, Scenario: "idle", Idle: &IdleResult{Conns: 500, Opened: 500,
				HandshakesPerSec: 4000 * k, RSSPerConnBytes: &rss}},
			Record{Target: target, Scenario: "fanout", Fanout: &FanoutResult{Connections: 505, Senders: 5,
				RatePerSender: 100, OfferedPerSec: 252_500, DeliveredPerSec: 250_000 * k,
				Latency:             LatencySummary{P50Ms: 1, P99Ms: 4 * k, P999Ms: 9, MaxMs: 20},
				ServerCPUPerMillion: &cpu, ServerRSSBytes: &mem}},
			Record{Target: target, Scenario: "ladder", Ladder: &LadderResult{
				Steps: []LadderStep{
					step(100, 0, 0, 2*k), step(200, 0, 0, 8*k), step(400, int64(10*k), 0, 300),
				},
				MaxSustainableRate: 200, MaxSustainableDeliveredPerSec: 100_000 * k}},
		)
	}
	// Offered load on the x axis of the chart.
	for _, r := range recs {
		if r.Ladder != nil {
			for _, s := range r.Ladder.Steps {
				s.Fanout.OfferedPerSec = float64(s.RatePerSender) * 505
			}
		}
	}
	return recs
}

// writeRecords writes recs as JSON lines into dir and returns the path.
func writeRecords(t *testing.T, dir string, recs []Record) string {
	t.Helper()
	in := filepath.Join(dir, "results.jsonl")
	var buf bytes.Buffer
	for _, r := range recs {
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(append(line, '\n'))
	}
	if err := os.WriteFile(in, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return in
}

// reachRecord is one reach run of target with the three receipt times.
func reachRecord(target, via string, conns int, p50, p99, last float64) Record {
	return Record{Target: target, Scenario: "reach", Reach: &ReachResult{Via: via, Conns: conns, Reached: conns,
		P50Ms: &p50, P99Ms: &p99, ReachMs: &last}}
}

func TestReportCommandWritesMarkdownAndPNG(t *testing.T) {
	dir := t.TempDir()
	in := writeRecords(t, dir, sampleRecords())
	md, png := filepath.Join(dir, "report.md"), filepath.Join(dir, "chart.png")
	var stderr bytes.Buffer
	if code := run([]string{"report", "-in", in, "-md", md, "-png", png}, nil, &stderr, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	raw, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for _, want := range []string{
		"## idle", "## fanout", "## ladder",
		"| gorilla | 500 | 500 | 4000 | 19.5 |", // handshakes/s and RSS/conn KiB
		"| switchboard-text | 505 | 5 × 100/s |",
		"**switchboard-text / gorilla**",
		"| **switchboard-text / gorilla** |  |  | 2.00× | 2.00× |", // idle ratios
		"400: 300.0, lost 20",
		"![p99 latency against offered deliveries/s](chart.png)",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q\n%s", want, text)
		}
	}
	img, err := os.ReadFile(png)
	if err != nil {
		t.Fatal(err)
	}
	if len(img) < 1000 || !bytes.HasPrefix(img, []byte("\x89PNG")) {
		t.Fatalf("chart is %d bytes, not a PNG", len(img))
	}
}

func TestReportCommandNeedsFlags(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"report", "-md", "x.md"}, nil, &stderr, &stderr); code != 2 || !strings.Contains(stderr.String(), "-in") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestRunMarkdownAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runs.md")
	for _, r := range sampleRecords() {
		if err := appendRunMarkdown(path, &r); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	if n := strings.Count(text, "\n## "); n < 5 { // 6 sections; the first starts the file
		t.Fatalf("found %d section headings:\n%s", n, text)
	}
	if !strings.Contains(text, "Max sustainable rate: 200 msgs/s per sender") {
		t.Fatalf("ladder section missing conclusion:\n%s", text)
	}
}

// The load axis is labelled in thousands and millions.
func TestCountTicks(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 500: "500", 2500: "2.5k", 500000: "500k", 2500000: "2.5M", 3000000: "3M"} {
		if got := countLabel(v); got != want {
			t.Errorf("countLabel(%v) = %q, want %q", v, got, want)
		}
	}
	labelled := 0
	for _, tick := range (countTicks{}).Ticks(0, 3.2e6) {
		if tick.Label == "" {
			continue
		}
		labelled++
		if strings.Contains(tick.Label, ".00") || !strings.ContainsAny(tick.Label[len(tick.Label)-1:], "kM0") {
			t.Errorf("tick %v labelled %q", tick.Value, tick.Label)
		}
	}
	if labelled < 3 {
		t.Errorf("%d labelled ticks on 0..3.2M", labelled)
	}
}

// Each peer that ran gets its own ratio rows.
func TestReportRatiosAgainstEachPeer(t *testing.T) {
	idle := func(target string, rate float64) Record {
		return Record{Target: target, Scenario: "idle", Idle: &IdleResult{Conns: 10, Opened: 10, HandshakesPerSec: rate}}
	}
	md := renderReport([]Record{idle("gorilla", 100), idle("centrifugo", 50), idle("switchboard-text", 200)}, chartRefs{})
	for _, want := range []string{"| **switchboard-text / gorilla** |  |  | 2.00× |", "| **switchboard-text / centrifugo** |  |  | 4.00× |"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	if md := renderReport([]Record{idle("switchboard-text", 200)}, chartRefs{}); strings.Contains(md, " / ") {
		t.Errorf("ratio rows without a peer:\n%s", md)
	}
}

// Two reach runs (one rerun) give a reach chart that the report links.
func TestReportCommandWritesReachChart(t *testing.T) {
	dir := t.TempDir()
	recs := append(sampleRecords(),
		reachRecord("switchboard-text", "publish", 19_000, 100, 300, 999), // replaced by the rerun below
		reachRecord("floor", "client", 20_000, 5, 9, 12),
		reachRecord("switchboard-text", "publish", 19_000, 40, 90, 120))
	in := writeRecords(t, dir, recs)
	md, chart := filepath.Join(dir, "report.md"), filepath.Join(dir, "charts", "reach.png")
	if err := os.Mkdir(filepath.Dir(chart), 0o755); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	if code := run([]string{"report", "-in", in, "-md", md, "-reach-png", chart}, nil, &stderr, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	f, err := os.Open(chart)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("reach chart does not decode: %v", err)
	}
	if b := img.Bounds(); b.Dx() == 0 || b.Dy() == 0 {
		t.Fatalf("reach chart is %v", b)
	}
	raw, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	if !strings.Contains(text, "## reach") || !strings.Contains(text, "](charts/reach.png)") {
		t.Errorf("report does not link the reach chart:\n%s", text)
	}
	if strings.Contains(text, "chart.png") {
		t.Errorf("report links a ladder chart that was not written:\n%s", text)
	}
}

// Without reach runs -reach-png writes nothing, links nothing and is no error.
func TestReportCommandNoReachRunsNoReachChart(t *testing.T) {
	dir := t.TempDir()
	in := writeRecords(t, dir, sampleRecords())
	md, chart := filepath.Join(dir, "report.md"), filepath.Join(dir, "reach.png")
	var stderr bytes.Buffer
	if code := run([]string{"report", "-in", in, "-md", md, "-reach-png", chart}, nil, &stderr, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(chart); !os.IsNotExist(err) {
		t.Fatalf("reach chart written without reach runs (stat: %v)", err)
	}
	raw, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "reach.png") {
		t.Fatalf("report links a reach chart that was not written:\n%s", raw)
	}
}

// A rerun of one target, via and conns replaces the earlier run in its
// place; labels carry the conns only when they differ, and missing counts.
func TestReachRunsAndLabels(t *testing.T) {
	incomplete := reachRecord("floor", "client", 20_000, 5, 9, 12)
	incomplete.Reach.Missing = 3
	recs := []Record{
		reachRecord("switchboard-text", "publish", 19_000, 100, 300, 999),
		{Target: "gorilla", Scenario: "idle", Idle: &IdleResult{}},
		reachRecord("switchboard-text", "client", 19_000, 50, 60, 70),
		incomplete,
		reachRecord("switchboard-text", "publish", 19_000, 40, 90, 120),
	}
	runs := reachRuns(recs)
	if len(runs) != 3 || *runs[0].Reach.ReachMs != 120 || runs[1].Reach.Via != "client" || runs[2].Target != "floor" {
		t.Fatalf("runs: %+v", runs)
	}
	want := []string{"switchboard-text (publish) 19k", "switchboard-text (client) 19k", "floor (client) 20k\n3 missing"}
	if got := reachLabels(runs); !slices.Equal(got, want) {
		t.Errorf("labels %q, want %q", got, want)
	}
	if got := reachLabels(runs[:2]); !slices.Equal(got, []string{"switchboard-text (publish)", "switchboard-text (client)"}) {
		t.Errorf("same-conns labels %q", got)
	}
}
