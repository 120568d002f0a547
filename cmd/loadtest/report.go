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

// runReportCommand is `loadtest report -in FILE -md OUT.md [-png OUT.png]
// [-reach-png OUT.png]`.
func runReportCommand(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("loadtest report", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	in := fs.String("in", "", "JSON lines written by loadtest runs")
	md := fs.String("md", "", "markdown report to write")
	png := fs.String("png", "", "PNG chart to write: p99 vs offered deliveries/s from ladder runs (optional)")
	reachPNG := fs.String("reach-png", "", "PNG chart to write: p50, p99 and last receipt of reach runs (optional; none without reach runs)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "usage: loadtest report -in results.jsonl -md OUT.md [-png OUT.png] [-reach-png OUT.png]")
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
	if err := writeReport(*in, *md, *png, *reachPNG); err != nil {
		fmt.Fprintln(stderr, "loadtest report:", err)
		return 1
	}
	return 0
}

// writeReport reads the runs and writes the markdown (and the charts whose
// paths are not empty; the reach chart only when there are reach runs).
func writeReport(inPath, mdPath, pngPath, reachPNGPath string) error {
	f, err := os.Open(inPath)
	if err != nil {
		return fmt.Errorf("open results: %w", err)
	}
	defer f.Close()
	recs, err := readRecords(f)
	if err != nil {
		return fmt.Errorf("read %s: %w", inPath, err)
	}
	var refs chartRefs
	if pngPath != "" {
		if err := writeChart(recs, pngPath); err != nil {
			return err
		}
		refs.ladder = chartLink(mdPath, pngPath)
	}
	if reachPNGPath != "" && len(reachRuns(recs)) > 0 {
		if err := writeReachChart(recs, reachPNGPath); err != nil {
			return err
		}
		refs.reach = chartLink(mdPath, reachPNGPath)
	}
	if err := os.WriteFile(mdPath, []byte(renderReport(recs, refs)), 0o644); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// chartLink is the chart's path relative to the report, so the pair can be
// moved together; the path as given if no relative path exists.
func chartLink(mdPath, pngPath string) string {
	if rel, err := filepath.Rel(filepath.Dir(mdPath), pngPath); err == nil {
		return rel
	}
	return pngPath
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

// chartRefs are the links from the report to its charts; empty means no
// chart was written, so none is linked.
type chartRefs struct {
	ladder, reach string
}

// renderReport renders the comparison report: one table per scenario, one
// row per target, plus switchboard/peer ratio rows for each peer that ran.
func renderReport(recs []Record, refs chartRefs) string {
	var b strings.Builder
	b.WriteString("# Load test report\n\n")
	fmt.Fprintf(&b, "%d runs. When a target ran a scenario more than once, its last run is shown. "+
		"Ratio rows divide a switchboard target's value by each peer's (%s).\n\n", len(recs), strings.Join(baselineTargets, ", "))
	writeIdleSection(&b, recs)
	writeFanoutSection(&b, recs)
	writeLadderSection(&b, recs, refs.ladder)
	writeReachSection(&b, recs, refs.reach)
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

// reachSeries are the bars of each reach run, in drawing order: the median
// and tail receipt times, then the last one, which is what the scenario is
// about (reach_ms).
var reachSeries = []struct {
	name  string
	value func(*ReachResult) *float64
}{
	{"p50", func(r *ReachResult) *float64 { return r.P50Ms }},
	{"p99", func(r *ReachResult) *float64 { return r.P99Ms }},
	{"last", func(r *ReachResult) *float64 { return r.ReachMs }},
}

// reachBarWidth is one bar; a run's three bars sit side by side.
const reachBarWidth = 16 * vg.Millimeter / 3

// reachRuns are the reach records in file order, one per target, via and
// conns: a rerun replaces the earlier attempt in its place, as
// latestByTarget does per target for the tables.
func reachRuns(recs []Record) []Record {
	type key struct {
		target, via string
		conns       int
	}
	at := map[key]int{}
	var runs []Record
	for _, r := range recs {
		if r.Scenario != "reach" || r.Reach == nil {
			continue
		}
		k := key{r.Target, r.Reach.Via, r.Reach.Conns}
		if i, ok := at[k]; ok {
			runs[i] = r
			continue
		}
		at[k] = len(runs)
		runs = append(runs, r)
	}
	return runs
}

// writeReachChart draws, per reach run, the p50, p99 and last receipt time
// of the one message as grouped bars on a linear ms axis: the runs differ
// by a few times, not by orders of magnitude as the ladder's tail does.
func writeReachChart(recs []Record, path string) error {
	runs := reachRuns(recs)
	if len(runs) == 0 {
		return fmt.Errorf("reach chart %s: no reach runs", path)
	}
	p := plot.New()
	p.Title.Text = "One message to every connection of one room (reach)"
	p.Y.Label.Text = "ms"
	p.Legend.Top = true
	if err := addReachBars(p, runs); err != nil {
		return fmt.Errorf("reach chart %s: %w", path, err)
	}
	labels := reachLabels(runs)
	p.NominalX(labels...)
	// One cell per run, label centred, so the end labels are not clipped.
	p.X.Min, p.X.Max = -0.5, float64(len(runs))-0.5
	// Start at zero and leave room above the bars for the legend.
	p.Y.Min = 0
	if p.Y.Max <= 0 {
		p.Y.Max = 1
		p.Title.Text += " (no run reached a connection)"
	}
	p.Y.Max *= 1.25
	grid := plotter.NewGrid()
	grid.Vertical.Color = nil // the groups are categories, not values
	p.Add(grid)
	if err := p.Save(reachChartWidth(p, labels), 5*vg.Inch, path); err != nil {
		return fmt.Errorf("write reach chart %s: %w", path, err)
	}
	return nil
}

// reachChartWidth widens the canvas past 8 inches when the runs' labels,
// one per group, would otherwise overlap: each group gets its widest label
// plus a margin, and the y axis an inch.
func reachChartWidth(p *plot.Plot, labels []string) vg.Length {
	var widest vg.Length
	for _, l := range labels {
		widest = max(widest, p.X.Tick.Label.Width(l))
	}
	return max(8*vg.Inch, vg.Length(len(labels))*(widest+0.3*vg.Inch)+vg.Inch)
}

// addReachBars adds one bar chart per series, offset so that each run's
// bars sit side by side around its label, and a legend entry for each.
func addReachBars(p *plot.Plot, runs []Record) error {
	for i, s := range reachSeries {
		vals := make(plotter.Values, len(runs))
		for j, r := range runs {
			if v := s.value(r.Reach); v != nil {
				vals[j] = *v // absent (nobody reached): no bar
			}
		}
		bars, err := plotter.NewBarChart(vals, reachBarWidth)
		if err != nil {
			return fmt.Errorf("%s bars: %w", s.name, err)
		}
		bars.Color = plotutil.Color(i)
		bars.LineStyle.Width = 0
		bars.Offset = vg.Length(i-(len(reachSeries)-1)/2) * reachBarWidth
		p.Add(bars)
		p.Legend.Add(s.name, bars)
	}
	return nil
}

// reachLabels name each run by target and how the message was sent, plus
// the connection count when the runs differ in it, and a second line with
// the missing count of a run that did not reach everyone: its "last" is
// then only the last of those reached.
func reachLabels(runs []Record) []string {
	sameConns := true
	for _, r := range runs {
		sameConns = sameConns && r.Reach.Conns == runs[0].Reach.Conns
	}
	labels := make([]string, len(runs))
	for i, r := range runs {
		l := r.Target
		if r.Reach.Via != "" {
			l += " (" + r.Reach.Via + ")"
		}
		if !sameConns {
			l += " " + countLabel(float64(r.Reach.Conns))
		}
		if r.Reach.Missing > 0 {
			l += fmt.Sprintf("\n%d missing", r.Reach.Missing)
		}
		labels[i] = l
	}
	return labels
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

// floorTarget is the reach scenario's floor (cmd/reachfloor): a server
// that only writes one frame to each connection. The reach table divides
// every run's time by the floor's at the same connection count.
const floorTarget = "floor"

// writeReachSection is one row per reach run (target, how the message was
// sent, connection count): one message to a room of idle connections and
// how long it took to reach them all, as a multiple of the floor's time
// when the floor ran, then the reach chart if one was written.
func writeReachSection(b *strings.Builder, recs []Record, chartRef string) {
	runs := reachRuns(recs)
	if len(runs) == 0 {
		return
	}
	floors := map[int]float64{} // conns -> the floor's reach ms
	for _, r := range runs {
		if r.Target == floorTarget && r.Reach.OK() && r.Reach.ReachMs != nil {
			floors[r.Reach.Conns] = *r.Reach.ReachMs
		}
	}
	b.WriteString("## reach\n\n")
	header := reachHeader()
	if len(floors) > 0 {
		header = append(header, "× floor")
	}
	t := &table{header: header}
	for _, r := range runs {
		cells := append([]string{r.Target}, reachCells(r.Reach)...)
		if len(floors) > 0 {
			cells = append(cells, floorRatio(r.Reach, floors))
		}
		t.add(cells...)
	}
	t.write(b)
	if chartRef != "" {
		fmt.Fprintf(b, "![p50, p99 and last receipt of one message per reach run](%s)\n\n", chartRef)
	}
}

// floorRatio is a run's reach time over the floor's at the same count, or
// "-" when either is missing or the run did not reach every connection.
func floorRatio(r *ReachResult, floors map[int]float64) string {
	floor, ok := floors[r.Conns]
	if !ok || floor <= 0 || !r.OK() || r.ReachMs == nil {
		return "-"
	}
	return ff(*r.ReachMs/floor, 2)
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
