package main

import (
	"testing"
	"time"
)

func TestPlayout(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type step struct {
		ms  int           // when
		add time.Duration // a part of this length arrives; 0: only look
		end bool
		// expected after the step
		stalled bool
		stalls  int
		stall   time.Duration // total, the current stall included
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"nothing before the first part", []step{
			{ms: 5000, stalled: false},
			{ms: 6000, add: 200 * time.Millisecond},
			{ms: 6150},
		}},
		{"parts in time never stall", []step{
			{ms: 0, add: 600 * time.Millisecond},
			{ms: 200, add: 200 * time.Millisecond},
			{ms: 400, add: 200 * time.Millisecond},
			{ms: 600, add: 200 * time.Millisecond},
			{ms: 1000},
		}},
		{"a part arriving exactly as the buffer empties is no stall", []step{
			{ms: 0, add: 200 * time.Millisecond},
			{ms: 200, add: 200 * time.Millisecond},
			{ms: 399},
		}},
		{"dry buffer: one stall from when it ran out until the next part", []step{
			{ms: 0, add: 200 * time.Millisecond},
			{ms: 150},
			{ms: 500, stalled: true, stalls: 1, stall: 300 * time.Millisecond},
			{ms: 900, stalled: true, stalls: 1, stall: 700 * time.Millisecond},
			{ms: 1000, add: 200 * time.Millisecond, stalls: 1, stall: 800 * time.Millisecond},
			{ms: 1100, stalls: 1, stall: 800 * time.Millisecond},
			{ms: 1300, stalled: true, stalls: 2, stall: 900 * time.Millisecond},
			{ms: 1400, add: time.Second, stalls: 2, stall: 1000 * time.Millisecond},
		}},
		{"end counts the stall so far, then nothing more", []step{
			{ms: 0, add: 200 * time.Millisecond},
			{ms: 700, end: true, stalls: 1, stall: 500 * time.Millisecond},
			{ms: 5000, stalls: 1, stall: 500 * time.Millisecond},
			{ms: 6000, add: time.Second, stalls: 1, stall: 500 * time.Millisecond},
		}},
		{"ending with media buffered is no stall", []step{
			{ms: 0, add: time.Second},
			{ms: 500, end: true},
			{ms: 9000},
		}},
		{"looking with an older time changes nothing", []step{
			{ms: 1000, add: 200 * time.Millisecond},
			{ms: 900},
			{ms: 1100},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p playout
			for i, s := range tc.steps {
				now := at(s.ms)
				switch {
				case s.end:
					p.end(now)
				case s.add > 0:
					p.add(now, s.add)
				}
				stalled := p.stalledNow(now)
				total := p.totalStall(now)
				if stalled != s.stalled || p.stalls != s.stalls || total != s.stall {
					t.Errorf("step %d (t=%d ms): stalled %v stalls %d stall %v, want %v %d %v",
						i, s.ms, stalled, p.stalls, total, s.stalled, s.stalls, s.stall)
				}
			}
		})
	}
}
