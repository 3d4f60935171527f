//go:build linux

package main

import (
	"testing"
	"time"
)

func TestPlayout(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	const part = 200 * time.Millisecond
	type arrival struct {
		at          int // ms
		stall, left time.Duration
	}
	for _, c := range []struct {
		name     string
		arrivals []arrival
	}{
		{"the first part starts playback", []arrival{{0, 0, 0}}},
		{"held back three parts, then in real time", []arrival{
			{0, 0, 0}, {10, 0, 190 * time.Millisecond}, {20, 0, 380 * time.Millisecond},
			{220, 0, 380 * time.Millisecond}, {420, 0, 380 * time.Millisecond},
		}},
		{"a late part ends a stall", []arrival{
			{0, 0, 0}, {250, 50 * time.Millisecond, -50 * time.Millisecond}, {300, 0, 150 * time.Millisecond},
		}},
		{"arriving exactly as the buffer runs dry is no stall", []arrival{{0, 0, 0}, {200, 0, 0}}},
	} {
		var p playout
		for i, a := range c.arrivals {
			stall, left := p.add(ms(a.at), part)
			if stall != a.stall || left != a.left {
				t.Errorf("%s: arrival %d at %d ms: stall %v left %v, want %v %v", c.name, i, a.at, stall, left, a.stall, a.left)
			}
		}
	}
}

func TestVerdict(t *testing.T) {
	good := result{viewers: 100, playing: 100, genCore: 50, genCPU: 40}
	for _, c := range []struct {
		name string
		edit func(*result)
		want string
	}{
		{"all well", func(*result) {}, "ok"},
		{"a stall", func(r *result) { r.stalls = 1 }, "stalls"},
		{"stalled at the end", func(r *result) { r.stalledNow = 2 }, "stalls"},
		{"an error", func(r *result) { r.errors = 1 }, "errors"},
		{"fell behind", func(r *result) { r.behind = 1 }, "errors"},
		{"not everyone playing", func(r *result) { r.playing = 99 }, "not_playing"},
		{"generator core busy", func(r *result) { r.genCore = 90 }, "gen_saturated"},
		{"generator busy and stalls: the generator is to blame", func(r *result) { r.genCore, r.stalls = 95, 3 }, "gen_saturated"},
		{"no core figure: the process's own CPU", func(r *result) { r.genCore, r.genCPU = 0, 91 }, "gen_saturated"},
		{"just under the limit", func(r *result) { r.genCore = 89.9 }, "ok"},
	} {
		r := good
		c.edit(&r)
		if got := verdict(r, 90); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}

func TestPerViewer(t *testing.T) {
	idle := result{serverCPU: 2, serverRSS: 20000}
	r := result{viewers: 500, serverCPU: 52, serverRSS: 30000}
	cpu, rss := perViewer(r, idle)
	if cpu != 1000 || rss != 20 {
		t.Errorf("%v µs/viewer-s, %v kB/viewer; want 1000 and 20", cpu, rss)
	}
}

func TestCoreEstimate(t *testing.T) {
	idle := result{serverCore: 10}
	if est, ok := coreEstimate(result{viewers: 900, serverCore: 55}, idle); !ok || est != 1800 {
		t.Errorf("%v %v, want 1800", est, ok)
	}
	if _, ok := coreEstimate(result{viewers: 10, serverCore: 10.5}, idle); ok {
		t.Error("an estimate from half a percent")
	}
}

func TestParseSteps(t *testing.T) {
	if s, err := parseSteps("100, 200,400"); err != nil || len(s) != 3 || s[2] != 400 {
		t.Errorf("%v %v", s, err)
	}
	for _, bad := range []string{"", "0", "100,100", "200,100", "x", "-5"} {
		if _, err := parseSteps(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseProc(t *testing.T) {
	stat := "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 9 0 100 1000 50 18446744073709551615\n"
	if n, err := parseStatTicks([]byte(stat)); err != nil || n != 1801 {
		t.Errorf("ticks %d %v, want 1801", n, err)
	}
	if _, err := parseStatTicks([]byte("4242 (x) S 1")); err == nil {
		t.Error("short stat accepted")
	}
	status := "Name:\tx\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\n"
	if parseStatusMem([]byte(status)) != 40960 || parseStatusField([]byte(status), "VmHWM:") != 51200 {
		t.Error("status fields")
	}
	procStat := "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 1 2 3 40 5 6 7 8 9 10\ncpu1 100 0 50 850 0 0 0 0 0 0\n"
	c0, err := parseCore([]byte(procStat), 0)
	if err != nil || c0.busy != 1+2+3+6+7+8 || c0.total != 1+2+3+40+5+6+7+8 {
		t.Errorf("cpu0 %+v %v", c0, err)
	}
	c1, _ := parseCore([]byte(procStat), 1)
	if got := c1.pct(coreTimes{}); got != 15 {
		t.Errorf("cpu1 %v%%, want 15", got)
	}
	if _, err := parseCore([]byte(procStat), 2); err == nil {
		t.Error("cpu2 found")
	}
}
