package main

// Browser end-to-end tests: a real ffmpeg publishes, and headless Chromium
// plays the stream on relaymesh's own player page (/live/{stream}/, hls.js
// in low-latency mode). The tests read the page's window.relaymesh stats:
// the video must play continuously from LL-HLS parts, without fatal
// errors, close to the live edge. They need chromium on PATH as well as
// ffmpeg, and are skipped with -short.

import (
	"strings"
	"testing"
	"time"
)

// h264Opus is H.264 video with Opus audio, which browsers play from fMP4
// (unlike H.265, which Chromium's MSE lacks without hardware decoding).
var h264Opus = encoding{"H.264+Opus", h264AAC.video, h265Opus.audio}

// MSE types of the codecs the tests publish, and of H.265 for the record.
const (
	mseH264 = `video/mp4; codecs="avc1.42E01E"`
	mseAAC  = `audio/mp4; codecs="mp4a.40.2"`
	mseOpus = `audio/mp4; codecs="opus"`
	mseHEVC = `video/mp4; codecs="hvc1.1.6.L93.90"`
)

// TestBrowserPlaysOrigin publishes H.264+AAC over RTMP to an origin and
// plays it in Chromium from the origin's player page.
func TestBrowserPlaysOrigin(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	requireChromium(t)
	ctx := testContext(t, 60*time.Second)
	o := startOrigin(t)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 50)
	b := startBrowser(t)
	c := newHTTPClient(t)
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment", hasComplete(1))

	p := playInBrowser(t, b, o.url("/live/test/"), browserStartLimit, browserWatch)
	logPlayback(t, "chromium on the origin (H.264+AAC over RTMP)", p)
	for _, problem := range browserProblems(p, "640x360") {
		t.Error(problem)
	}
	o.requireAlive(t)
}

// TestBrowserPlaysEdge publishes to an origin, lets an edge in the same
// mesh relay the stream, and plays it in Chromium from the edge's page.
func TestBrowserPlaysEdge(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	requireChromium(t)
	ctx := testContext(t, 60*time.Second)
	c := newHTTPClient(t)
	o := startMeshOrigin(t, "origin", testClusterKey)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 60)
	e := startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr)
	b := startBrowser(t)
	waitMembers(t, ctx, c, 2, o, e)
	waitPlaylist(t, ctx, c, e.url("/live/test/media.m3u8"), "a complete segment on the edge", hasComplete(1))
	if lines := e.logLines("relaying stream", "stream=test"); len(lines) == 0 || !strings.Contains(lines[0], "upstream=origin") {
		t.Fatalf("the edge should relay test from the origin; its log says %q", lines)
	}

	p := playInBrowser(t, b, e.url("/live/test/"), browserStartLimit, browserWatch)
	logPlayback(t, "chromium on the edge (H.264+AAC over RTMP, relayed)", p)
	for _, problem := range browserProblems(p, "640x360") {
		t.Error(problem)
	}
	o.requireAlive(t)
	e.requireAlive(t)
}

// TestBrowserPlaysOpus publishes H.264 with Opus audio over SRT and plays
// it in Chromium, whose MSE takes Opus in fMP4. It records whether this
// Chromium could play H.265 from MSE, which is not tested: Chromium on
// Linux has no software HEVC decoder.
func TestBrowserPlaysOpus(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	requireChromium(t)
	ctx := testContext(t, 60*time.Second)
	o := startIngestOrigin(t)
	const stream = "opus"
	enc := startProc(t, "ffmpeg "+stream, nil, "ffmpeg",
		encoderArgs(h264Opus, 50, []string{"-f", "mpegts"}, o.srtURL("publish:"+stream))...)
	t.Cleanup(enc.kill)
	b := startBrowser(t)

	// The tab is still on about:blank, which has MediaSource too.
	t.Logf("chromium MSE: H.264 %v, AAC %v, Opus %v, H.265 (%s) %v", b.mseSupports(t, mseH264),
		b.mseSupports(t, mseAAC), b.mseSupports(t, mseOpus), mseHEVC, b.mseSupports(t, mseHEVC))
	if !b.mseSupports(t, mseOpus) {
		t.Fatalf("this Chromium's MediaSource does not support %s", mseOpus)
	}

	c := newHTTPClient(t)
	waitPlaylist(t, ctx, c, o.url("/live/"+stream+"/media.m3u8"), "a complete segment", hasComplete(1))
	if got := advertisedCodecs(t, ctx, c, o.url("/live/"+stream+"/index.m3u8")); !strings.Contains(got, "opus") {
		t.Fatalf("multivariant CODECS=%q, want Opus audio", got)
	}
	p := playInBrowser(t, b, o.url("/live/"+stream+"/"), browserStartLimit, browserWatch)
	logPlayback(t, "chromium on the origin (H.264+Opus over SRT)", p)
	for _, problem := range browserProblems(p, "320x240") {
		t.Error(problem)
	}
	if enc.exited() {
		t.Errorf("ffmpeg exited early with status %d: %s", enc.exitCode(), enc.stderr.String())
	}
	o.requireAlive(t)
}

// TestBrowserCatchesUpAfterPause pauses the player for 1.2 s, which puts
// the viewer that much further behind the live edge, and checks that the
// page plays faster until the latency is back near its target, as a viewer
// who stalled needs to stay in step with the host and the chat. (hls.js
// speeds up only while the excess is under about one target duration.)
func TestBrowserCatchesUpAfterPause(t *testing.T) {
	t.Parallel()
	r := recoverAfter(t, `(document.querySelector('video').pause(), true)`, 1200*time.Millisecond,
		`(document.querySelector('video').play(), true)`, 0.3, 15*time.Second,
		func(r *recovery) bool { return r.behind > r.before+0.9 })
	if !r.ok {
		t.Fatalf("latency %.2f s before the pause, at most %.2f s after it, still %s 15 s later: the player did not catch up",
			r.before, r.behind, r.last.String())
	}
	t.Logf("latency %.2f s before the pause, %.2f s after it, back to %.2f s", r.before, r.behind, *r.last.Latency)
}

// TestBrowserBackToLiveAfterStall blocks the page's JavaScript for 4 s, as
// a busy device would stall a viewer, which leaves it about 4 s behind the
// live edge with that much buffered. The page jumps it back near its
// latency before the stall, since the viewer did not pause or seek. (The
// jump can come before the test's next look, so the proof that the viewer
// was behind is the page's count of jumps, which it makes only from 3 s
// behind.)
func TestBrowserBackToLiveAfterStall(t *testing.T) {
	t.Parallel()
	r := recoverAfter(t, `(() => { const end = Date.now() + 4000; while (Date.now() < end) {} return true; })()`, 0, "",
		0.4, 20*time.Second, func(r *recovery) bool { return r.last.Jumps > 0 })
	if !r.ok {
		t.Fatalf("latency %.2f s before the stall, at most %.2f s after it, still %s 20 s later: the player did not get back",
			r.before, r.behind, r.last.String())
	}
	t.Logf("latency %.2f s before the stall, %.2f s seen after it, back to %.2f s after %d jump(s)", r.before, r.behind, *r.last.Latency, r.last.Jumps)
}

type recovery struct {
	before, behind float64 // latency before the disturbance, and the most after it
	last           *playerStats
	ok             bool
}

// recoverAfter plays the built-in page on an origin, runs the script
// disturb in it, waits pause, runs resume (if any), and waits up to bound
// until seen says the disturbance has shown and the latency is back within
// within of where it was, while playing.
func recoverAfter(t *testing.T, disturb string, pause time.Duration, resume string, within float64, bound time.Duration,
	seen func(*recovery) bool) recovery {
	t.Helper()
	requireE2E(t, "ffmpeg")
	requireChromium(t)
	ctx := testContext(t, 60*time.Second)
	o := startOrigin(t)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 55)
	b := startBrowser(t)
	c := newHTTPClient(t)
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment", hasComplete(1))
	p := playInBrowser(t, b, o.url("/live/test/"), browserStartLimit, 2*time.Second)
	var r recovery
	r.before, _ = p.latencyRange()

	eval[bool](t, b, disturb)
	time.Sleep(pause)
	if resume != "" {
		eval[bool](t, b, resume)
	}
	deadline := time.Now().Add(bound)
	for {
		r.last = b.mustStats(t)
		if lat := r.last.Latency; lat != nil {
			r.behind = max(r.behind, *lat)
			if seen(&r) && *lat < r.before+within && r.last.Playing {
				r.ok = true
				return r
			}
		}
		if time.Now().After(deadline) {
			return r
		}
		time.Sleep(250 * time.Millisecond)
	}
}
