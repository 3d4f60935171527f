package main

// Helpers for the browser end-to-end tests in e2e_browser_test.go: a
// headless Chromium driven over the DevTools protocol with chromedp, which
// opens relaymesh's player page and reads the stats object the page keeps
// at window.relaymesh (see the doc comment of edge/player).

import (
	"context"
	"fmt"
	"github.com/relaymesh/relaymesh/internal/logbuf"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/relaymesh/relaymesh/internal/headless"
)

// chromiumBin is the browser the tests drive: Debian's package chromium.
const chromiumBin = "chromium"

// requireChromium fails the test when Chromium is not installed, like
// requireE2E does for the media tools, and returns its path.
func requireChromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath(chromiumBin)
	if err != nil {
		t.Fatalf("%s is not installed (apt-get install chromium): %v", chromiumBin, err)
	}
	return path
}

// browser is a headless Chromium with one tab.
type browser struct {
	ctx     context.Context // the tab's chromedp context; the browser lives as long as it
	output  logbuf.Buffer   // the browser's stdout and stderr
	console logbuf.Buffer   // the page's console messages
}

// startBrowser starts a headless Chromium, as root in a container if need
// be, that plays media without a user gesture. Cleanup stops the browser
// and its child processes.
func startBrowser(t *testing.T) *browser {
	t.Helper()
	path := requireChromium(t)
	b := &browser{}
	opts := append(headless.Options(path), chromedp.CombinedOutput(&b.output))
	// The browser's lifetime is the test's: the contexts are cancelled by
	// cleanup, not by a deadline (a deadline on the first Run would end
	// the browser). Every step below runs under a deadline of its own.
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	b.ctx = ctx
	var consoleDone chan struct{} // closed when the console reader below returns
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		if consoleDone != nil {
			<-consoleDone
		}
		if t.Failed() {
			t.Logf("---- chromium output (without D-Bus complaints):\n%s---- page console:\n%s",
				quietOutput(b.output.String()), b.console.String())
		}
	})
	// Start the browser now, so that its start-up is not counted against
	// the first step's deadline.
	done := make(chan error, 1)
	go func() {
		_, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`1`))
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("start %s: %v", path, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not start within 30 s", path)
	}
	// Keep the page's console messages (and uncaught exceptions, and the
	// browser's log) until cleanup cancels the tab.
	messages := chromedp.Console(ctx)
	consoleDone = make(chan struct{})
	go func() {
		defer close(consoleDone)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.URL != "" {
				fmt.Fprintf(&b.console, "%s (%s)\n", m, m.URL)
			} else {
				fmt.Fprintf(&b.console, "%s\n", m)
			}
		}
	}()
	return b
}

// quietOutput drops from a browser's output the errors of a container
// without D-Bus, which Chromium logs by the dozen and which do not matter.
func quietOutput(s string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if !strings.Contains(line, ":ERROR:dbus/") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// browserRun runs a chromedp action on b's tab within limit.
func browserRun[T any](b *browser, limit time.Duration, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, limit)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// eval evaluates a JavaScript expression in the page and decodes its value.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	v, err := browserRun(b, 10*time.Second, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// playerStats is a snapshot of the page's window.relaymesh.
type playerStats struct {
	Engine        string   `json:"engine"`
	Playing       bool     `json:"playing"`
	CurrentTime   float64  `json:"currentTime"`
	Latency       *float64 `json:"latency"` // null while unknown
	BufferAhead   float64  `json:"bufferAhead"`
	Level         string   `json:"level"`
	DroppedFrames int      `json:"droppedFrames"`
	TotalFrames   int      `json:"totalFrames"`
	FragsLoaded   int      `json:"fragsLoaded"`
	PartsLoaded   int      `json:"partsLoaded"`
	Errors        []string `json:"errors"`
	FatalErrors   []string `json:"fatalErrors"`
	ErrorCount    int      `json:"errorCount"`
	// Where media came from, and stalls (see edge/player).
	Host          string         `json:"host"`
	Hosts         map[string]int `json:"hosts"`
	Pathway       string         `json:"pathway"`
	SteeringLoads int            `json:"steeringLoads"`
	Waiting       int            `json:"waiting"`
	StalledMs     float64        `json:"stalledMs"`
	Jumps         int            `json:"jumps"`
	Ended         bool           `json:"ended"`
	// Beyond window.relaymesh: the page's clock (performance.now(), in
	// ms), Chromium's count of decoded audio bytes, and the page's status
	// line for failure messages.
	Now          float64 `json:"now"`
	AudioDecoded float64 `json:"audioDecoded"`
	Status       string  `json:"status"`
}

func (s *playerStats) String() string {
	lat := "null"
	if s.Latency != nil {
		lat = fmt.Sprintf("%.2fs", *s.Latency)
	}
	return fmt.Sprintf("engine=%q playing=%v currentTime=%.2f latency=%s bufferAhead=%.2f level=%q "+
		"frames=%d dropped=%d audioBytes=%.0f frags=%d parts=%d errors=%d %q fatal=%q status=%q "+
		"pathway=%q host=%q hosts=%v steeringLoads=%d waiting=%d stalled=%.0fms jumps=%d",
		s.Engine, s.Playing, s.CurrentTime, lat, s.BufferAhead, s.Level, s.TotalFrames, s.DroppedFrames,
		s.AudioDecoded, s.FragsLoaded, s.PartsLoaded, s.ErrorCount, s.Errors, s.FatalErrors, s.Status,
		s.Pathway, s.Host, s.Hosts, s.SteeringLoads, s.Waiting, s.StalledMs, s.Jumps)
}

// statsJS reads window.relaymesh field by field (its properties are
// getters), or null before the page's script has run.
const statsJS = `(() => {
	const r = window.relaymesh;
	if (!r) return null;
	const st = document.getElementById('status');
	const v = document.getElementById('video');
	return {
		engine: r.engine, playing: r.playing, currentTime: r.currentTime, latency: r.latency,
		bufferAhead: r.bufferAhead, level: r.level, droppedFrames: r.droppedFrames,
		totalFrames: r.totalFrames, fragsLoaded: r.fragsLoaded, partsLoaded: r.partsLoaded,
		errors: r.errors, fatalErrors: r.fatalErrors, errorCount: r.errorCount,
		host: r.host, hosts: r.hosts, pathway: r.pathway, steeringLoads: r.steeringLoads,
		waiting: r.waiting, stalledMs: r.stalledMs, jumps: r.jumps, ended: r.ended,
		now: performance.now(),
		audioDecoded: v && v.webkitAudioDecodedByteCount || 0,
		status: st ? st.textContent : ''
	};
})()`

// stats reads window.relaymesh; nil before the page has set it up.
func (b *browser) stats() (*playerStats, error) {
	return browserRun(b, 10*time.Second, chromedp.Evaluate[*playerStats](statsJS))
}

// mustStats is stats, failing the test when the page has no stats object.
func (b *browser) mustStats(t *testing.T) *playerStats {
	t.Helper()
	s, err := b.stats()
	if err != nil {
		t.Fatalf("read window.relaymesh: %v", err)
	}
	if s == nil {
		t.Fatal("the page has no window.relaymesh")
	}
	return s
}

// open navigates the tab to url.
func (b *browser) open(t *testing.T, url string) {
	t.Helper()
	if _, err := browserRun(b, 20*time.Second, chromedp.Navigate(url)); err != nil {
		t.Fatalf("open %s: %v", url, err)
	}
}

// mseSupports reports MediaSource.isTypeSupported(mime) in the page.
func (b *browser) mseSupports(t *testing.T, mime string) bool {
	t.Helper()
	return eval[bool](t, b, fmt.Sprintf(`typeof MediaSource !== 'undefined' && MediaSource.isTypeSupported(%q)`, mime))
}

// playback is what a browser session measured.
type playback struct {
	first, last *playerStats
	wall        time.Duration // between first and last, by the page's clock
	startup     time.Duration // from opening the page until it played
	latencies   []float64     // window.relaymesh.latency sampled over the session
	notPlaying  int           // samples taken while the video was not playing
	samples     int
}

// latencyRange returns the smallest and largest latency sampled.
func (p *playback) latencyRange() (lo, hi float64) {
	for i, l := range p.latencies {
		if i == 0 || l < lo {
			lo = l
		}
		if i == 0 || l > hi {
			hi = l
		}
	}
	return lo, hi
}

// playInBrowser opens the player page at pageURL, waits up to startLimit
// for the video to play, then watches it for watch, sampling the stats
// every 250 ms.
func playInBrowser(t *testing.T, b *browser, pageURL string, startLimit, watch time.Duration) *playback {
	t.Helper()
	opened := time.Now()
	b.open(t, pageURL)
	var last *playerStats
	for {
		s, err := b.stats()
		if err != nil {
			t.Fatalf("read window.relaymesh: %v (last stats: %v)", err, last)
		}
		if s != nil {
			last = s
			if len(s.FatalErrors) > 0 {
				t.Fatalf("fatal player errors before playback started: %v", s)
			}
			if s.Playing && s.CurrentTime > 0 {
				break
			}
		}
		if time.Since(opened) > startLimit {
			if last == nil {
				t.Fatalf("%s: the page never set up window.relaymesh within %v", pageURL, startLimit)
			}
			t.Fatalf("%s: the video did not play within %v: %v", pageURL, startLimit, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p := &playback{startup: time.Since(opened)}
	start := time.Now()
	p.first = b.mustStats(t)
	for {
		time.Sleep(250 * time.Millisecond)
		s := b.mustStats(t)
		p.samples++
		if !s.Playing {
			p.notPlaying++
		}
		if s.Latency != nil {
			p.latencies = append(p.latencies, *s.Latency)
		}
		if time.Since(start) >= watch {
			p.last = s
			p.wall = time.Duration((s.Now - p.first.Now) * float64(time.Millisecond))
			return p
		}
	}
}

// Bounds on a browser session. They are generous: the point is that the
// player works, not how fast this machine is.
//
// The latency is set when playback starts (hls.js does not speed up to
// catch up), so a slow start on a busy machine adds to it: about 1-2 s
// usually, up to 3 s with the CPUs oversubscribed. Without LL-HLS the
// player would hold back three target durations, at least 6 s with the
// 2 s GOPs of publisherArgs.
const (
	browserStartLimit = 20 * time.Second // page opened to video playing
	browserWatch      = 6 * time.Second  // how long the tests watch it play
	maxLatency        = 4.0              // seconds behind the live edge
	maxTimeDeficit    = 1.0              // seconds currentTime may lag the wall clock over browserWatch
)

// browserProblems lists what is wrong with a browser session that should
// have played wantLevel (e.g. "320x240") with hls.js and LL-HLS parts.
func browserProblems(p *playback, wantLevel string) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	s := p.last
	if s.Engine != "hls.js" {
		add("engine %q, want hls.js", s.Engine)
	}
	if !s.Playing {
		add("not playing at the end")
	}
	advanced := s.CurrentTime - p.first.CurrentTime
	if min := p.wall.Seconds() - maxTimeDeficit; advanced < min {
		add("currentTime advanced %.2f s over %.2f s of wall time, want at least %.2f s",
			advanced, p.wall.Seconds(), min)
	}
	if len(s.FatalErrors) > 0 {
		add("fatal player errors: %q", s.FatalErrors)
	}
	if s.PartsLoaded == 0 {
		add("hls.js loaded no LL-HLS parts (%d whole segments)", s.FragsLoaded)
	}
	if s.Latency == nil {
		add("latency unknown at the end")
	} else if *s.Latency <= 0 || *s.Latency >= maxLatency {
		add("live latency %.2f s, want 0 < latency < %.1f s", *s.Latency, maxLatency)
	}
	if s.Level != wantLevel {
		add("level %q, want %q", s.Level, wantLevel)
	}
	if s.TotalFrames <= p.first.TotalFrames {
		add("no video frames decoded while watching (%d -> %d)", p.first.TotalFrames, s.TotalFrames)
	}
	if s.AudioDecoded <= p.first.AudioDecoded {
		add("no audio decoded while watching (webkitAudioDecodedByteCount %.0f -> %.0f)",
			p.first.AudioDecoded, s.AudioDecoded)
	}
	if len(out) > 0 {
		add("last stats: %v", s)
	}
	return out
}

// logPlayback records a session's measurements.
func logPlayback(t *testing.T, what string, p *playback) {
	t.Helper()
	lat := "unknown"
	if p.last.Latency != nil {
		lat = fmt.Sprintf("%.2f s", *p.last.Latency)
	}
	lo, hi := p.latencyRange()
	t.Logf("%s: latency %s at the end (%.2f-%.2f s over %d samples), playing after %v, "+
		"currentTime +%.2f s over %.2f s, buffer ahead %.2f s, %s, frames %d (dropped %d), "+
		"%d parts + %d segments loaded, not playing in %d/%d samples, %d player errors %q",
		what, lat, lo, hi, len(p.latencies), p.startup.Round(time.Millisecond),
		p.last.CurrentTime-p.first.CurrentTime, p.wall.Seconds(), p.last.BufferAhead, p.last.Level,
		p.last.TotalFrames, p.last.DroppedFrames, p.last.PartsLoaded, p.last.FragsLoaded,
		p.notPlaying, p.samples, p.last.ErrorCount, p.last.Errors)
}
