package main

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	for _, tc := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 50, 7 * time.Millisecond},
		{ms(3, 1, 2), 50, 2 * time.Millisecond},
		{ms(4, 1, 3, 2), 50, 2 * time.Millisecond}, // nearest rank: ceil(2) = 2nd
		{ms(4, 1, 3, 2), 100, 4 * time.Millisecond},
		{ms(5, 1, 4, 2, 3, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{ms(5, 1, 4, 2, 3, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{ms(5, 1), 1, 1 * time.Millisecond},
	} {
		if got := percentile(tc.in, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.in, tc.p, got, tc.want)
		}
	}
	in := []time.Duration{3, 1, 2}
	percentile(in, 50)
	if in[0] != 3 {
		t.Error("percentile sorted its input in place")
	}
}

func TestTrialAndSummary(t *testing.T) {
	ok := trial{10 * time.Millisecond, 30 * time.Millisecond, 20 * time.Millisecond}
	missed := trial{10 * time.Millisecond, -1, 40 * time.Millisecond}
	if d, all := ok.all(); !all || d != 30*time.Millisecond {
		t.Errorf("all() = %v, %v; want 30ms, true", d, all)
	}
	if _, all := missed.all(); all {
		t.Error("a trial with an observer that never saw the event converged")
	}
	if _, all := (trial{}).all(); all {
		t.Error("a trial without observers converged")
	}
	if m := missed.median(); m != 10*time.Millisecond {
		t.Errorf("median of the observers that saw it = %v, want 10ms", m)
	}

	slow := trial{50 * time.Millisecond, 90 * time.Millisecond}
	for _, tc := range []struct {
		in   []trial
		want string
	}{
		{nil, "-"},
		{[]trial{ok}, "30/30"},
		{[]trial{ok, slow, ok}, "30/90"},
		{[]trial{ok, missed, slow}, "30/90(1_missed)"},
		{[]trial{missed, missed}, "none(2_missed)"},
	} {
		if got := summarize(tc.in).String(); got != tc.want {
			t.Errorf("summarize(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPerNodeRate(t *testing.T) {
	for _, tc := range []struct {
		delta int64
		nodes int
		d     time.Duration
		want  float64
	}{
		{1000, 10, 2 * time.Second, 50},
		{1000, 0, time.Second, 0},
		{1000, 10, 0, 0},
	} {
		if got := perNodeRate(tc.delta, tc.nodes, tc.d); got != tc.want {
			t.Errorf("perNodeRate(%d, %d, %v) = %v, want %v", tc.delta, tc.nodes, tc.d, got, tc.want)
		}
	}
}
