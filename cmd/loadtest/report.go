package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// baselineTargets are the peers the ratio rows divide by: the tutorial
// hub a team would write itself, and the server it would pick instead.
var baselineTargets = []string{"gorilla", "centrifugo"}

// runReportCommand is `loadtest report -in FILE -md OUT.md [-png OUT.png]`.
func runReportCommand(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest report", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	in := fs.String("in", "", "JSON lines written by loadtest runs")
	md := fs.String("md", "", "markdown report to write")
	png := fs.String("png", "", "PNG chart to write: p99 vs offered deliveries/s from ladder runs (optional)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "usage: loadtest report -in results.jsonl -md OUT.md [-png OUT.png]")
			return 0
		}
		fmt.Fprintln(stderr, "loadtest report:", err)
		return 2
	}
	for _, req := range []struct{ name, val string }{{"in", *in}, {"md", *md}} {
		if req.val == "" {
			fmt.Fprintf(stderr, "loadtest report: flag -%s is required\n", req.name)
			return 2
		}
	}
	if err := writeReport(*in, *md, *png); err != nil {
		fmt.Fprintln(stderr, "loadtest report:", err)
		return 1
	}
	return 0
}

// writeReport reads the runs and writes the markdown (and chart).
func writeReport(inPath, mdPath, pngPath string) error {
	f, err := os.Open(inPath)
	if err != nil {
		return fmt.Errorf("open results: %w", err)
	}
	defer f.Close()
	recs, err := readRecords(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", inPath, err)
	}
	chartRef := ""
	if pngPath != "" {
		if err := writeChart(recs, pngPath); err != nil {
			return err
		}
		// Link the chart relative to the report so the pair can be moved.
		chartRef = pngPath
		if rel, err := filepath.Rel(filepath.Dir(mdPath), pngPath); err == nil {
			chartRef = rel
		}
	}
	if err := os.WriteFile(mdPath, []byte(buildReport(recs, chartRef)), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// readRecords parses one Record per non-empty line.
func readRecords(r io.Reader) ([]Record, error) {
	var recs []Record
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 16<<20) // ladder lines can be long
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var rec Record
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		recs = append(recs, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return recs, nil
}

// latestByTarget keeps, per target, the last record of one scenario: a
// rerun replaces an earlier attempt. Targets come back sorted.
func latestByTarget(recs []Record, scenario string) ([]string, map[string]Record) {
	byTarget := map[string]Record{}
	for _, r := range recs {
		if r.Scenario == scenario {
			byTarget[r.Target] = r
		}
	}
	names := make([]string, 0, len(byTarget))
	for n := range byTarget {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, byTarget
}

// buildReport renders the comparison report: one table per scenario, one
// row per target, plus switchboard/peer ratio rows for each peer that ran.
func buildReport(recs []Record, chartRef string) string {
	var b strings.Builder
	b.WriteString("# Load test report\n\n")
	fmt.Fprintf(&b, "%d runs. When a target ran a scenario more than once, its last run is shown. "+
		"Ratio rows divide a switchboard target's value by each peer's (%s).\n\n", len(recs), strings.Join(baselineTargets, ", "))
	writeIdleSection(&b, recs)
	writeFanoutSection(&b, recs)
	writeLadderSection(&b, recs, chartRef)
	writeReachSection(&b, recs)
	return b.String()
}

// table is a markdown table under construction.
type table struct {
	header []string
	rows   [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(b *strings.Builder) {
	b.WriteString("| " + strings.Join(t.header, " | ") + " |\n")
	b.WriteString("|" + strings.Repeat(" --- |", len(t.header)) + "\n")
	for _, r := range t.rows {
		b.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
	b.WriteString("\n")
}

// ratioRows adds, for each peer that ran and each switchboard target, a
// row whose cells are the ratio target/peer for the columns value knows
// (ok false = blank).
func ratioRows(t *table, names []string, value func(name string, col int) (float64, bool)) {
	for _, base := range baselineTargets {
		if !slices.Contains(names, base) {
			continue
		}
		for _, n := range names {
			if !strings.HasPrefix(n, "switchboard") {
				continue
			}
			cells := []string{fmt.Sprintf("**%s / %s**", n, base)}
			for col := 1; col < len(t.header); col++ {
				cells = append(cells, ratioCell(value, n, base, col))
			}
			t.add(cells...)
		}
	}
}

func ratioCell(value func(string, int) (float64, bool), name, baseName string, col int) string {
	v, ok1 := value(name, col)
	base, ok2 := value(baseName, col)
	if !ok1 || !ok2 || base == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", v/base)
}

func writeIdleSection(b *strings.Builder, recs []Record) {
	names, by := latestByTarget(recs, "idle")
	if len(names) == 0 {
		return
	}
	b.WriteString("## idle\n\n")
	t := &table{header: []string{"target", "conns", "opened", "handshakes/s", "RSS/conn (KiB)", "dropped", "failed dials", "server CPU s"}}
	for _, n := range names {
		r := by[n].Idle
		if r == nil {
			continue
		}
		t.add(n, itoa(r.Conns), itoa(r.Opened), ff(r.HandshakesPerSec, 0), kib(r.RSSPerConnBytes),
			itoa(r.Dropped), itoa(r.FailedDials), optF(r.ServerCPUSeconds, 2))
	}
	ratioRows(t, names, func(n string, col int) (float64, bool) {
		r := by[n].Idle
		if r == nil {
			return 0, false
		}
		switch col {
		case 3:
			return r.HandshakesPerSec, true
		case 4:
			if r.RSSPerConnBytes != nil {
				return *r.RSSPerConnBytes, true
			}
		}
		return 0, false
	})
	t.write(b)
}

func writeFanoutSection(b *strings.Builder, recs []Record) {
	names, by := latestByTarget(recs, "fanout")
	if len(names) == 0 {
		return
	}
	b.WriteString("## fanout\n\n")
	t := &table{header: []string{"target", "conns", "senders × rate", "offered/s", "delivered/s", "lost",
		"dropped", "p50 ms", "p99 ms", "p999 ms", "max ms", "server CPU s/M", "server RSS MiB", "generator CPU s"}}
	for _, n := range names {
		if r := by[n].Fanout; r != nil {
			t.add(append([]string{n}, fanoutCells(r)...)...)
		}
	}
	ratioRows(t, names, func(n string, col int) (float64, bool) {
		r := by[n].Fanout
		if r == nil {
			return 0, false
		}
		switch col {
		case 4:
			return r.DeliveredPerSec, true
		case 8:
			return r.Latency.P99Ms, true
		}
		return 0, false
	})
	t.write(b)
}

// fanoutCells are the measure columns of one fanout result.
func fanoutCells(r *FanoutResult) []string {
	return []string{itoa(r.Connections), fmt.Sprintf("%d × %d/s", r.Senders, r.RatePerSender),
		ff(r.OfferedPerSec, 0), ff(r.DeliveredPerSec, 0), i64(r.Lost), itoa(r.DroppedClients),
		ff(r.Latency.P50Ms, 2), ff(r.Latency.P99Ms, 2), ff(r.Latency.P999Ms, 2), ff(r.Latency.MaxMs, 2),
		optF(r.ServerCPUPerMillion, 2), mib(r.ServerRSSBytes), ff(r.GeneratorCPUSeconds, 2)}
}

func writeLadderSection(b *strings.Builder, recs []Record, chartRef string) {
	names, by := latestByTarget(recs, "ladder")
	if len(names) == 0 {
		return
	}
	b.WriteString("## ladder\n\n")
	fmt.Fprintf(b, "A step is sustainable with no loss, no dropped client and p99 < %v.\n\n", ladderP99Limit)
	t := &table{header: []string{"target", "conns", "max sustainable rate/sender", "delivered/s at max", "steps (rate: p99 ms, verdict)"}}
	for _, n := range names {
		r := by[n].Ladder
		if r == nil {
			continue
		}
		conns := ""
		var steps []string
		for _, s := range r.Steps {
			p99 := "—"
			if s.Fanout != nil {
				p99 = ff(s.Fanout.Latency.P99Ms, 1)
				conns = itoa(s.Fanout.Connections)
			}
			steps = append(steps, fmt.Sprintf("%d: %s, %s", s.RatePerSender, p99, s.Verdict))
		}
		t.add(n, conns, itoa(r.MaxSustainableRate), ff(r.MaxSustainableDeliveredPerSec, 0), strings.Join(steps, "; "))
	}
	ratioRows(t, names, func(n string, col int) (float64, bool) {
		r := by[n].Ladder
		if r == nil {
			return 0, false
		}
		switch col {
		case 2:
			return float64(r.MaxSustainableRate), true
		case 3:
			return r.MaxSustainableDeliveredPerSec, true
		}
		return 0, false
	})
	t.write(b)
	if chartRef != "" {
		fmt.Fprintf(b, "![p99 latency against offered deliveries/s](%s)\n\n", chartRef)
	}
}

// writeChart plots p99 latency against offered deliveries/s for the ladder
// steps of each target, one line per target, on a log latency axis since
// latency grows by orders of magnitude past saturation.
func writeChart(recs []Record, path string) error {
	p := plot.New()
	p.Title.Text = "Fanout ladder: p99 latency vs offered load"
	p.X.Label.Text = "offered deliveries/s"
	p.Y.Label.Text = "p99 latency (ms)"
	p.Legend.Top = true
	p.Legend.Left = true
	names, by := latestByTarget(recs, "ladder")
	plotted := 0
	for i, n := range names {
		pts := ladderPoints(by[n].Ladder)
		if len(pts) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("chart %s: %w", n, err)
		}
		line.Color = plotutil.Color(i)
		points.Color = plotutil.Color(i)
		points.Shape = plotutil.Shape(i)
		p.Add(line, points)
		p.Legend.Add(n, line, points)
		plotted++
	}
	if plotted > 0 {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = latencyTicks{}
		// Leave air around the lines, and start load at zero.
		p.Y.Min, p.Y.Max = p.Y.Min/1.5, p.Y.Max*1.5
		p.X.Min, p.X.Max = 0, p.X.Max*1.05
		p.X.Tick.Marker = countTicks{}
	} else {
		p.Title.Text += " (no ladder runs)"
	}
	p.Add(plotter.NewGrid())
	if err := p.Save(8*vg.Inch, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("write chart %s: %w", path, err)
	}
	return nil
}

// latencyTicks labels a log latency axis at 1-2-5 steps: plot.LogTicks
// labels only powers of ten, which leaves a narrow range with one label.
type latencyTicks struct{}

func (latencyTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	for exp := math.Floor(math.Log10(lo)); math.Pow(10, exp) <= hi; exp++ {
		for _, m := range []float64{1, 2, 5} {
			if v := m * math.Pow(10, exp); v >= lo && v <= hi {
				ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return ticks
}

// countTicks places ticks where gonum's default does but labels them in
// thousands or millions (500k, 2.5M), not 2500000.00.
type countTicks struct{}

func (countTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i, t := range ticks {
		if t.Label != "" {
			ticks[i].Label = countLabel(t.Value)
		}
	}
	return ticks
}

// countLabel writes a count with a k or M suffix.
func countLabel(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case a >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// ladderPoints are (offered deliveries/s, p99 ms) of the steps that ran.
// Latency is floored at 1 µs so the log axis never sees zero.
func ladderPoints(r *LadderResult) plotter.XYs {
	if r == nil {
		return nil
	}
	var pts plotter.XYs
	for _, s := range r.Steps {
		if s.Fanout == nil {
			continue
		}
		pts = append(pts, plotter.XY{X: s.Fanout.OfferedPerSec, Y: max(s.Fanout.Latency.P99Ms, 0.001)})
	}
	return pts
}

// appendRunMarkdown appends one run's section to the -md file.
func appendRunMarkdown(path string, rec *Record) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open -md file: %w", err)
	}
	if _, err := f.WriteString(runMarkdown(rec)); err != nil {
		f.Close()
		return fmt.Errorf("write -md file: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close -md file: %w", err)
	}
	return nil
}

// runMarkdown renders one run as a heading and a table.
func runMarkdown(rec *Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## %s · %s · %s\n\n", rec.Scenario, rec.Target, rec.Time)
	fmt.Fprintf(&b, "URL %s, %d source address(es).\n\n", rec.URL, rec.Sources)
	switch {
	case rec.Idle != nil:
		r := rec.Idle
		t := &table{header: []string{"conns", "procs", "hold s", "opened", "failed dials", "handshakes/s", "dropped", "RSS/conn (KiB)", "server RSS after MiB", "generator CPU s"}}
		t.add(itoa(r.Conns), itoa(r.Procs), ff(r.HoldS, 1), itoa(r.Opened), itoa(r.FailedDials),
			ff(r.HandshakesPerSec, 0), itoa(r.Dropped), kib(r.RSSPerConnBytes), mib(r.ServerRSSAfterBytes),
			ff(r.GeneratorCPUSeconds, 2))
		t.write(&b)
		writePublishTable(&b, r)
	case rec.Fanout != nil:
		t := &table{header: []string{"conns", "senders × rate", "offered/s", "delivered/s", "lost", "dropped",
			"p50 ms", "p99 ms", "p999 ms", "max ms", "server CPU s/M", "server RSS MiB", "generator CPU s"}}
		t.add(fanoutCells(rec.Fanout)...)
		t.write(&b)
	case rec.Ladder != nil:
		t := &table{header: []string{"rate/sender", "verdict", "conns", "senders × rate", "offered/s", "delivered/s", "lost", "dropped",
			"p50 ms", "p99 ms", "p999 ms", "max ms", "server CPU s/M", "server RSS MiB", "generator CPU s"}}
		for _, s := range rec.Ladder.Steps {
			cells := []string{itoa(s.RatePerSender), s.Verdict}
			if s.Fanout != nil {
				cells = append(cells, fanoutCells(s.Fanout)...)
			}
			for len(cells) < len(t.header) {
				cells = append(cells, "")
			}
			t.add(cells...)
		}
		t.write(&b)
		fmt.Fprintf(&b, "Max sustainable rate: %d msgs/s per sender (%s deliveries/s).\n\n",
			rec.Ladder.MaxSustainableRate, ff(rec.Ladder.MaxSustainableDeliveredPerSec, 0))
	case rec.Storm != nil:
		r := rec.Storm
		t := &table{header: []string{"storm clients", "stayers", "rate", "missed", "recovered true", "recovered false",
			"incomplete", "all recovered ms", "quiet p50 / p99 ms", "storm p50 / p99 / max ms", "server CPU s"}}
		t.add(itoa(r.StormClients), itoa(r.Stayers), itoa(r.Rate), itoa(r.Missed), itoa(r.RecoveredTrue), itoa(r.RecoveredFalse),
			itoa(r.Incomplete), optF(r.TimeToAllRecoveredMs, 1),
			ff(r.QuietLatency.P50Ms, 2)+" / "+ff(r.QuietLatency.P99Ms, 2),
			ff(r.StormLatency.P50Ms, 2)+" / "+ff(r.StormLatency.P99Ms, 2)+" / "+ff(r.StormLatency.MaxMs, 2),
			optF(r.ServerCPUSeconds, 2))
		t.write(&b)
	case rec.Reach != nil:
		t := &table{header: append(reachHeader()[1:], "send error")}
		t.add(append(reachCells(rec.Reach), rec.Reach.SendError)...)
		t.write(&b)
	}
	return b.String()
}

// writeReachSection is one row per target: one message to a room of idle
// connections and how long it took to reach them all.
func writeReachSection(b *strings.Builder, recs []Record) {
	names, by := latestByTarget(recs, "reach")
	if len(names) == 0 {
		return
	}
	b.WriteString("## reach\n\n")
	t := &table{header: reachHeader()}
	for _, n := range names {
		if r := by[n].Reach; r != nil {
			t.add(append([]string{n}, reachCells(r)...)...)
		}
	}
	t.write(b)
}

func reachHeader() []string {
	return []string{"target", "via", "conns", "reached", "missing", "reach ms", "p50 ms", "p99 ms"}
}

func reachCells(r *ReachResult) []string {
	return []string{r.Via, itoa(r.Conns), itoa(r.Reached), itoa(r.Missing),
		optF(r.ReachMs, 1), optF(r.P50Ms, 1), optF(r.P99Ms, 1)}
}

// writePublishTable adds the idle run's publish measure, if it had one.
func writePublishTable(b *strings.Builder, r *IdleResult) {
	if r.PublishURL == "" {
		return
	}
	t := &table{header: []string{"publish recipients", "reached", "missing", "reach ms", "wait s", "error"}}
	t.add(optI(r.PublishRecipients), optI(r.PublishReached), optI(r.PublishMissing),
		optF(r.PublishReachMs, 1), ff(r.PublishWaitS, 0), r.PublishError)
	t.write(b)
}

// Cell formatting; absent optional values render as empty cells.
func itoa(n int) string             { return fmt.Sprint(n) }
func i64(n int64) string            { return fmt.Sprint(n) }
func ff(v float64, prec int) string { return fmt.Sprintf("%.*f", prec, v) }

func optI(v *int) string {
	if v == nil {
		return ""
	}
	return itoa(*v)
}

func optF(v *float64, prec int) string {
	if v == nil {
		return ""
	}
	return ff(*v, prec)
}

func kib(v *float64) string {
	if v == nil {
		return ""
	}
	return ff(*v/1024, 1)
}

func mib(v *int64) string {
	if v == nil {
		return ""
	}
	return ff(float64(*v)/(1<<20), 1)
}
