//go:build linux

package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
)

// sample is the running totals at one instant: the swarm's counters and
// the processes' and cores' times.
type sample struct {
	at                                time.Time
	playlists, parts, inits, bytes    int64
	stalls, stallNanos                int64
	errors, timeouts, behind          int64
	genTicks, serverTicks, otherTicks int64
	genCore, serverCore               coreTimes
	serverRSS, serverHWM              int64 // kB
	serverOK                          bool  // every server PID could be read
	others                            bool  // -other-pids were given
}

func takeSample(cfg *config, c *counters) sample {
	s := sample{
		at:        time.Now(),
		playlists: c.playlists.Load(), parts: c.parts.Load(), inits: c.inits.Load() + c.indexes.Load(),
		bytes:  c.bytes.Load(),
		stalls: c.stalls.Load(), stallNanos: c.stallNanos.Load(),
		errors: c.errors.Load(), timeouts: c.timeouts.Load(), behind: c.behind.Load(),
		serverOK: len(cfg.serverPIDs) > 0,
	}
	s.genTicks, _ = procTicks("self")
	for _, p := range cfg.serverPIDs {
		t, err := procTicks(p)
		rss, hwm, err2 := procMem(p)
		if err != nil || err2 != nil {
			s.serverOK = false
			continue
		}
		s.serverTicks += t
		s.serverRSS += rss
		s.serverHWM += hwm
	}
	s.others = len(cfg.otherPIDs) > 0
	for _, p := range cfg.otherPIDs {
		t, _ := procTicks(p)
		s.otherTicks += t
	}
	if cfg.genCore >= 0 {
		s.genCore, _ = readCore(cfg.genCore)
	}
	if cfg.serverCore >= 0 {
		s.serverCore, _ = readCore(cfg.serverCore)
	}
	return s
}

// result is one measuring window.
type result struct {
	viewers, playing, stalledNow int
	secs                         float64
	playlists, parts, other      int64
	mbits                        float64
	stalls                       int64
	stallSecs                    float64
	errors, timeouts, behind     int64
	minLeft                      time.Duration // -1: no part arrived with a buffer
	genCPU, genCore              float64       // % of one core
	serverCPU, serverCore        float64
	otherCPU                     float64 // -1: no other PIDs
	serverRSS, serverHWM         int64   // kB
	serverOK                     bool
}

func measure(a, b sample) result {
	secs := b.at.Sub(a.at).Seconds()
	r := result{
		secs:      secs,
		playlists: b.playlists - a.playlists, parts: b.parts - a.parts, other: b.inits - a.inits,
		mbits:  float64(b.bytes-a.bytes) * 8 / 1e6 / secs,
		stalls: b.stalls - a.stalls, stallSecs: float64(b.stallNanos-a.stallNanos) / 1e9,
		errors: b.errors - a.errors, timeouts: b.timeouts - a.timeouts, behind: b.behind - a.behind,
		genCPU:    float64(b.genTicks-a.genTicks) * 100 / userHZ / secs,
		genCore:   b.genCore.pct(a.genCore),
		serverCPU: float64(b.serverTicks-a.serverTicks) * 100 / userHZ / secs,
		serverRSS: b.serverRSS, serverHWM: b.serverHWM,
		serverOK:   a.serverOK && b.serverOK,
		serverCore: b.serverCore.pct(a.serverCore),
		otherCPU:   -1,
	}
	if b.others {
		r.otherCPU = float64(b.otherTicks-a.otherTicks) * 100 / userHZ / secs
	}
	return r
}

func (r result) reqPerSec() float64 {
	return float64(r.playlists+r.parts+r.other) / r.secs
}

// verdict says whether a step counts: zero stalls and errors, every viewer
// playing, and a generator that was not itself the bottleneck. The first
// failing reason wins, the generator's first: past it the other figures
// say nothing about the server.
func verdict(r result, maxGenCore float64) string {
	switch {
	case r.genCore >= maxGenCore || (r.genCore == 0 && r.genCPU >= maxGenCore):
		return "gen_saturated"
	case r.stalls > 0 || r.stalledNow > 0:
		return "stalls"
	case r.errors > 0 || r.behind > 0:
		return "errors"
	case r.playing < r.viewers:
		return "not_playing"
	}
	return "ok"
}

// perViewer is the server's cost of one viewer above the idle baseline:
// µs of CPU per viewer-second and kB of RSS.
func perViewer(r, idle result) (cpuMicros, rssKB float64) {
	if r.viewers == 0 {
		return 0, 0
	}
	n := float64(r.viewers)
	return (r.serverCPU - idle.serverCPU) / 100 * 1e6 / n, float64(r.serverRSS-idle.serverRSS) / n
}

// coreEstimate extrapolates the viewers the server's core would hold when
// 100 % busy, from what this step's viewers added to its idle share. It
// is a ceiling, not a measurement: it knows nothing of the bursts in
// which blocked reloads are answered, nor of queueing near saturation.
func coreEstimate(r, idle result) (float64, bool) {
	added := r.serverCore - idle.serverCore
	if r.viewers == 0 || added <= 1 {
		return 0, false
	}
	return float64(r.viewers) * (100 - idle.serverCore) / added, true
}

// fields formats a step's figures as name=value pairs.
func fields(r, idle result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "viewers=%d playing=%d stalls=%d stalled_now=%d stall_s=%.2f errors=%d timeouts=%d behind=%d",
		r.viewers, r.playing, r.stalls, r.stalledNow, r.stallSecs, r.errors, r.timeouts, r.behind)
	fmt.Fprintf(&b, " req_s=%.0f playlist_s=%.0f part_s=%.0f mbit_s=%.1f",
		r.reqPerSec(), float64(r.playlists)/r.secs, float64(r.parts)/r.secs, r.mbits)
	if r.minLeft >= 0 {
		fmt.Fprintf(&b, " min_buffer_ms=%d", r.minLeft.Milliseconds())
	} else {
		b.WriteString(" min_buffer_ms=NA")
	}
	fmt.Fprintf(&b, " gen_cpu=%.1f%% gen_core=%.1f%%", r.genCPU, r.genCore)
	if r.serverOK {
		cpu, rss := perViewer(r, idle)
		fmt.Fprintf(&b, " server_cpu=%.1f%% server_core=%.1f%% server_rss_mb=%.1f server_hwm_mb=%.1f cpu_us_per_viewer_s=%.0f rss_kb_per_viewer=%.1f",
			r.serverCPU, r.serverCore, float64(r.serverRSS)/1024, float64(r.serverHWM)/1024, cpu, rss)
		if req := r.reqPerSec(); req > 0 {
			fmt.Fprintf(&b, " cpu_us_per_req=%.1f", (r.serverCPU-idle.serverCPU)/100*1e6/req)
		}
	}
	if r.otherCPU >= 0 {
		fmt.Fprintf(&b, " other_cpu=%.1f%%", r.otherCPU)
	}
	if est, ok := coreEstimate(r, idle); ok {
		fmt.Fprintf(&b, " core_est_viewers=%.0f", est)
	}
	return b.String()
}

// runRamp ramps viewers through cfg.steps and prints a line per step and
// the summary.
func runRamp(ctx context.Context, cfg *config, log *slog.Logger, out io.Writer) error {
	modeName := map[mode]string{modeLLHLS: "llhls", modePoll: "poll"}[cfg.mode]
	var c counters
	c.minLeft.Store(noLeft)
	e, err := newEngine(cfg, &c, log)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	var loopErr error
	loopDone := make(chan struct{})
	go func() {
		if loopErr = e.run(ctx); loopErr != nil {
			cancel()
		}
		close(loopDone)
	}()
	defer func() {
		cancel()
		<-loopDone
	}()
	// stopped says why the ramp cannot go on: the engine failed, or ctx
	// ended (the engine then stops within a turn of its loop).
	stopped := func() error {
		<-loopDone
		if loopErr != nil {
			return loopErr
		}
		return ctx.Err()
	}

	var idle result
	if cfg.baseline > 0 {
		a := takeSample(cfg, &c)
		if !sleepCtx(ctx, cfg.baseline) {
			return stopped()
		}
		idle = measure(a, takeSample(cfg, &c))
		idle.minLeft = -1
		fmt.Fprintf(out, "idle mode=%s secs=%.0f gen_core=%.1f%%", modeName, idle.secs, idle.genCore)
		if idle.serverOK {
			fmt.Fprintf(out, " server_cpu=%.1f%% server_core=%.1f%% server_rss_mb=%.1f server_hwm_mb=%.1f",
				idle.serverCPU, idle.serverCore, float64(idle.serverRSS)/1024, float64(idle.serverHWM)/1024)
		}
		if idle.otherCPU >= 0 {
			fmt.Fprintf(out, " other_cpu=%.1f%%", idle.otherCPU)
		}
		fmt.Fprintln(out)
	}

	var best result
	held, stop := 0, "max"
	n := 0
	for _, target := range cfg.steps {
		add := target - n
		for ; n < target; n++ {
			e.want.Store(int64(n + 1))
			if !sleepCtx(ctx, cfg.spread/time.Duration(add)) {
				return stopped()
			}
		}
		if !sleepCtx(ctx, cfg.settle) {
			return stopped()
		}
		c.minLeft.Store(noLeft)
		a := takeSample(cfg, &c)
		if !sleepCtx(ctx, cfg.hold) {
			return stopped()
		}
		b := takeSample(cfg, &c)
		r := measure(a, b)
		vs := e.viewers()
		r.viewers, r.playing = len(vs), playing(vs)
		r.stalledNow = stalledNow(vs, b.at)
		r.minLeft = time.Duration(c.minLeft.Load())
		if r.minLeft == noLeft {
			r.minLeft = -1
		}
		v := verdict(r, cfg.maxGenCore)
		fmt.Fprintf(out, "step mode=%s %s verdict=%s\n", modeName, fields(r, idle), v)
		if v != "ok" {
			stop = fmt.Sprintf("%s@%d", v, target)
			break
		}
		held, best = target, r
	}
	fmt.Fprintf(out, "capload mode=%s held=%d stop=%s", modeName, held, stop)
	if held > 0 {
		fmt.Fprintf(out, " %s", fields(best, idle))
	}
	fmt.Fprintln(out)
	return nil
}

// stalledNow counts the viewers whose buffer is dry at now: stalls that
// have begun but not yet ended (a viewer's dry time is only ever in the
// past while its buffer is empty).
func stalledNow(vs []*viewer, now time.Time) int {
	n := 0
	t := now.UnixNano()
	for _, v := range vs {
		if d := v.dryAt.Load(); d != 0 && d < t {
			n++
		}
	}
	return n
}

// playing counts the viewers that have started playback.
func playing(vs []*viewer) int {
	n := 0
	for _, v := range vs {
		if v.dryAt.Load() != 0 {
			n++
		}
	}
	return n
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
