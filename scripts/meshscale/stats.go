package main

import (
	"fmt"
	"slices"
	"time"
)

// percentile is the nearest-rank p-th percentile (0 < p <= 100) of ds; 0
// for none. ds need not be sorted.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100 + 0.999999) // ceil without float noise
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// trial is one convergence measurement: for each observer, when it first
// saw the event (negative: it never did within the bound).
type trial []time.Duration

// all is when the last observer saw it, and whether every one did.
func (t trial) all() (time.Duration, bool) {
	var last time.Duration
	for _, d := range t {
		if d < 0 {
			return 0, false
		}
		last = max(last, d)
	}
	return last, len(t) > 0
}

// median is when half the observers had seen it (of those that did).
func (t trial) median() time.Duration {
	seen := slices.DeleteFunc(slices.Clone(t), func(d time.Duration) bool { return d < 0 })
	return percentile(seen, 50)
}

// spread summarizes trials of one kind: p50 and max over trials of the
// time until every observer saw the event, and how many trials missed.
type spread struct {
	P50, Max time.Duration
	Trials   int
	Missed   int
}

func summarize(ts []trial) spread {
	var alls []time.Duration
	missed := 0
	for _, t := range ts {
		if d, ok := t.all(); ok {
			alls = append(alls, d)
		} else {
			missed++
		}
	}
	sp := spread{P50: percentile(alls, 50), Trials: len(ts), Missed: missed}
	if len(alls) > 0 {
		sp.Max = slices.Max(alls)
	}
	return sp
}

// String is "p50/max" in milliseconds, with "(k missed)" when some trial
// did not converge within its bound, or "-" for no trials.
func (s spread) String() string {
	if s.Trials == 0 {
		return "-"
	}
	if s.Missed == s.Trials {
		return fmt.Sprintf("none(%d_missed)", s.Missed)
	}
	out := fmt.Sprintf("%d/%d", s.P50.Milliseconds(), s.Max.Milliseconds())
	if s.Missed > 0 {
		out += fmt.Sprintf("(%d_missed)", s.Missed)
	}
	return out
}

// perNodeRate is a process-wide byte (or packet) count over d, per node
// per second.
func perNodeRate(delta int64, nodes int, d time.Duration) float64 {
	if nodes <= 0 || d <= 0 {
		return 0
	}
	return float64(delta) / float64(nodes) / d.Seconds()
}
