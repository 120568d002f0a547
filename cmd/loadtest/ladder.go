package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// ladderP99Limit is the latency bound of a sustainable step.
const ladderP99Limit = 100 * time.Millisecond

// ladderPause lets the server tear down one step's connections before the
// next step dials a fresh set.
const ladderPause = time.Second

// LadderStep is one rung: the per-sender rate, whether it was sustainable
// and why not, and the full fanout result (absent if the step errored).
type LadderStep struct {
	RatePerSender int           `json:"rate_per_sender"`
	Pass          bool          `json:"pass"`
	Verdict       string        `json:"verdict"`
	Fanout        *FanoutResult `json:"fanout,omitempty"`
}

// LadderResult is every step plus the conclusion.
type LadderResult struct {
	Rates         []int        `json:"rates"`
	StepDurationS float64      `json:"step_duration_s"`
	Steps         []LadderStep `json:"steps"`
	// MaxSustainableRate is the highest per-sender rate that passed, 0 if
	// none did; MaxSustainableDeliveredPerSec is that step's delivery rate.
	MaxSustainableRate            int     `json:"max_sustainable_rate"`
	MaxSustainableDeliveredPerSec float64 `json:"max_sustainable_delivered_per_s"`
}

// judgeStep decides whether a step was sustainable: nothing lost, nobody
// dropped, and p99 under ladderP99Limit. The verdict names every failure.
func judgeStep(r *FanoutResult) (bool, string) {
	var why []string
	if r.Lost > 0 {
		why = append(why, fmt.Sprintf("lost %d", r.Lost))
	}
	if r.DroppedClients > 0 {
		why = append(why, fmt.Sprintf("dropped %d clients", r.DroppedClients))
	}
	if r.SendErrors > 0 {
		why = append(why, fmt.Sprintf("%d send errors", r.SendErrors))
	}
	if limit := float64(ladderP99Limit.Milliseconds()); r.Latency.P99Ms >= limit {
		why = append(why, fmt.Sprintf("p99 %.1f ms >= %.0f ms", r.Latency.P99Ms, limit))
	}
	if len(why) == 0 {
		return true, "ok"
	}
	return false, strings.Join(why, ", ")
}

// maxSustainable returns the last passing step before the first failing
// one (steps are in climbing order, and the climb ends at a failure), and
// false when the first step already failed.
func maxSustainable(steps []LadderStep) (LadderStep, bool) {
	var best LadderStep
	found := false
	for _, s := range steps {
		if !s.Pass {
			break
		}
		best, found = s, true
	}
	return best, found
}

// runLadder runs the fanout scenario once per rate, with fresh connections
// each time, and stops climbing after the first failing step.
func runLadder(ctx context.Context, env *runEnv, base fanoutConfig, rates []int, stepDuration time.Duration) (*LadderResult, error) {
	res := &LadderResult{Rates: rates, StepDurationS: stepDuration.Seconds()}
	for i, rate := range rates {
		if i > 0 {
			if err := sleepCtx(ctx, ladderPause); err != nil {
				return nil, err
			}
		}
		cfg := base
		cfg.Rate = rate
		cfg.Duration = stepDuration
		if env.progress != nil {
			fmt.Fprintf(env.progress.out, "ladder step %d/%d: %d msgs/s per sender\n", i+1, len(rates), rate)
		}
		step := LadderStep{RatePerSender: rate}
		fr, err := runFanout(ctx, env, cfg)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if err != nil {
			step.Verdict = "error: " + err.Error()
		} else {
			step.Fanout = fr
			step.Pass, step.Verdict = judgeStep(fr)
		}
		res.Steps = append(res.Steps, step)
		if !step.Pass {
			break
		}
	}
	if best, ok := maxSustainable(res.Steps); ok && best.Fanout != nil {
		res.MaxSustainableRate = best.RatePerSender
		res.MaxSustainableDeliveredPerSec = best.Fanout.DeliveredPerSec
	}
	return res, nil
}

// sleepCtx sleeps d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
