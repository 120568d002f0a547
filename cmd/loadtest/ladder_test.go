package main

import (
	"strings"
	"testing"
)

func step(rate int, lost int64, dropped int, p99 float64) LadderStep {
	fr := &FanoutResult{RatePerSender: rate, Lost: lost, DroppedClients: dropped,
		Latency: LatencySummary{P99Ms: p99}, DeliveredPerSec: float64(rate) * 100}
	pass, verdict := judgeStep(fr)
	return LadderStep{RatePerSender: rate, Pass: pass, Verdict: verdict, Fanout: fr}
}

func TestJudgeStep(t *testing.T) {
	cases := []struct {
		s    LadderStep
		pass bool
		why  string
	}{
		{step(100, 0, 0, 12), true, "ok"},
		{step(100, 3, 0, 12), false, "lost 3"},
		{step(100, 0, 2, 12), false, "dropped 2"},
		{step(100, 0, 0, 100), false, "p99 100.0 ms"},
		{step(100, 1, 1, 250), false, "lost 1, dropped 1 clients, p99 250.0 ms"},
	}
	for _, c := range cases {
		if c.s.Pass != c.pass || !strings.Contains(c.s.Verdict, c.why) {
			t.Errorf("verdict %v %q, want %v containing %q", c.s.Pass, c.s.Verdict, c.pass, c.why)
		}
	}
}

func TestMaxSustainable(t *testing.T) {
	cases := []struct {
		name  string
		steps []LadderStep
		rate  int
		found bool
	}{
		{"climbs then fails", []LadderStep{step(100, 0, 0, 5), step(200, 0, 0, 20), step(400, 0, 0, 150)}, 200, true},
		{"all pass", []LadderStep{step(100, 0, 0, 5), step(200, 0, 0, 20)}, 200, true},
		{"first fails", []LadderStep{step(100, 5, 0, 5)}, 0, false},
		{"pass after a failure does not count", []LadderStep{step(100, 0, 0, 5), step(200, 1, 0, 5), step(400, 0, 0, 5)}, 100, true},
		{"error step", []LadderStep{step(100, 0, 0, 5), {RatePerSender: 200, Verdict: "error: dial"}}, 100, true},
		{"none", nil, 0, false},
	}
	for _, c := range cases {
		best, found := maxSustainable(c.steps)
		if found != c.found || best.RatePerSender != c.rate {
			t.Errorf("%s: got %d %v, want %d %v", c.name, best.RatePerSender, found, c.rate, c.found)
		}
	}
}
