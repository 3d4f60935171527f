package main

// End-to-end tests of the standby origin: a primary and its standby
// (--standby-for), an encoder publishing to both (dual publishing, with
// ffmpeg's tee muxer) or to one, edges relaying, and the primary killed.

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// teePublisherArgs is publisherArgs, pushed to every URL of dsts at once
// with ffmpeg's tee muxer; an output that fails is dropped and the others
// carry on, as a dual-publishing encoder does.
func teePublisherArgs(dsts []string, seconds int) []string {
	args := publisherArgs("", seconds)
	args = args[:len(args)-3] // "-f", "flv", dst
	var outs []string
	for _, d := range dsts {
		outs = append(outs, "[f=flv:onfail=ignore]"+d)
	}
	// FLV wants the codecs' parameter sets up front, which encoders put in
	// the stream unless the output asks; the tee muxer does not ask.
	return append(args, "-flags", "+global_header", "-f", "tee", strings.Join(outs, "|"))
}

// segRecord is one segment as a playlist listed it.
type segRecord struct {
	msn  uint64
	pdt  time.Time
	dur  float64
	disc bool
}

// playlistLog polls a media playlist every 100 ms with a session of its
// own, recording every segment it lists and every answer other than 200.
type playlistLog struct {
	mu       sync.Mutex
	segs     map[uint64]segRecord
	failures []string
}

func watchPlaylist(ctx context.Context, c *http.Client, url string) *playlistLog {
	l := &playlistLog{segs: map[uint64]segRecord{}}
	go func() {
		for ctx.Err() == nil {
			r, err := httpGet(ctx, c, url)
			switch {
			case ctx.Err() != nil:
				return
			case err != nil:
				l.fail(err.Error())
			case r.status != http.StatusOK:
				l.fail(fmt.Sprintf("status %d: %s", r.status, truncate(r.body, 80)))
			default:
				l.record(string(r.body))
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return l
}

func (l *playlistLog) fail(why string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, why)
}

func (l *playlistLog) record(body string) {
	pl, err := parseMediaPlaylist([]byte(body))
	if err != nil {
		l.fail(err.Error())
		return
	}
	dates := programDates(pl)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range pl.complete() {
		pdt, err := time.Parse("2006-01-02T15:04:05.000Z07:00", dates[s.MSN])
		if err != nil {
			l.failures = append(l.failures, fmt.Sprintf("segment %d: PROGRAM-DATE-TIME %q: %v", s.MSN, dates[s.MSN], err))
			continue
		}
		if old, ok := l.segs[s.MSN]; ok && !old.pdt.Equal(pdt) {
			// Two numberings of one stream: two origins published it.
			l.failures = append(l.failures, fmt.Sprintf("segment %d changed its PROGRAM-DATE-TIME from %s to %s",
				s.MSN, old.pdt.Format(time.StampMilli), pdt.Format(time.StampMilli)))
		}
		l.segs[s.MSN] = segRecord{msn: s.MSN, pdt: pdt, dur: s.Duration, disc: s.Discontinuity}
	}
}

// continuity checks the segments from msn from on: consecutive numbers, at
// most maxDisc discontinuities, and the media missing at each one (the
// gap between a segment's end and the next one's PROGRAM-DATE-TIME).
func (l *playlistLog) continuity(from uint64) (last uint64, discs int, worstGap time.Duration, problems []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	last = from
	for msn := from + 1; ; msn++ {
		s, ok := l.segs[msn]
		if !ok {
			if _, later := l.segs[msn+1]; later {
				problems = append(problems, fmt.Sprintf("segment %d never listed, %d was", msn, msn+1))
			}
			break
		}
		prev := l.segs[msn-1]
		if s.disc {
			discs++
			if gap := s.pdt.Sub(prev.pdt.Add(time.Duration(prev.dur * float64(time.Second)))); gap > worstGap {
				worstGap = gap
			}
		}
		last = msn
	}
	return last, discs, worstGap, problems
}

// requireOneTakeover checks what node's playlist listed from segment from
// on: consecutive numbers through at least reach, at most one
// discontinuity with at most 1 s of media missing, one numbering, and no
// failed request.
func (l *playlistLog) requireOneTakeover(t *testing.T, node string, from, reach uint64) {
	t.Helper()
	last, discs, gap, problems := l.continuity(from)
	t.Logf("%s's playlist from segment %d: through %d, %d discontinuities, media missing at the switch %v", node, from, last, discs, gap)
	for _, pr := range problems {
		t.Error(pr)
	}
	if last < reach {
		t.Errorf("%s's playlist reached segment %d, want %d or more", node, last, reach)
	}
	if discs > 1 || gap > time.Second {
		t.Errorf("%d discontinuities and %v of media missing, want at most one and 1 s", discs, gap)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) > 0 {
		t.Errorf("%s's playlist: %q", node, l.failures)
	}
}

// TestStandbyDualPublishing: an encoder publishes to a primary and to its
// standby at once, and hls.js plays edge-2, two hops away (edge-2 relays
// through edge-1). The primary is killed (SIGKILL). The standby takes the
// stream over: edge-2's playlist continues with consecutive media sequence
// numbers, one discontinuity, and at most 1 s of media missing; no request
// gets an error; hls.js keeps playing.
func TestStandbyDualPublishing(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	requireChromium(t)
	ctx := testContext(t, 150*time.Second)
	c := newHTTPClient(t)
	a := startMeshOrigin(t, "origin-a", testClusterKey)
	b := startMeshOrigin(t, "origin-b", testClusterKey, "--standby-for", "origin-a", "--join", a.meshAddr)
	enc := startProc(t, "ffmpeg tee", nil, "ffmpeg", teePublisherArgs([]string{a.rtmpURL("test"), b.rtmpURL("test")}, 90)...)
	t.Cleanup(enc.kill)
	waitPlaylist(t, ctx, c, a.url("/live/test/media.m3u8"), "a complete segment on the primary", hasComplete(1))
	e1 := startMeshEdge(t, "edge-1", testClusterKey, a.meshAddr)
	e2 := startMeshEdge(t, "edge-2", testClusterKey, a.meshAddr, "--parent", "edge-1")
	waitMembers(t, ctx, c, 4, a, b, e1, e2)
	// The standby holds the encoder and keeps a replica: status says so.
	eventually(t, ctx, 20*time.Second, "origin-b standing by for test", func() (bool, string) {
		code, out, _ := runCLI(t, nil, "status", "--api", b.url(""))
		return code == 0 && strings.Contains(out, "test(0, standby)") && strings.Contains(out, "test(0, primary)"), out
	})
	waitPlaylist(t, ctx, c, e2.url("/live/test/media.m3u8"), "a complete segment on edge-2", hasComplete(1))
	if lines := e1.logLines("relaying stream", "stream=test"); len(lines) == 0 || !strings.Contains(lines[0], "upstream=origin-b") {
		t.Errorf("edge-1 should relay test from the standby, which is ahead of every edge; its log says %q", lines)
	}

	b2 := startBrowser(t)
	p := playInBrowser(t, b2, e2.url("/live/test/"), browserStartLimit, 3*time.Second)
	for _, problem := range browserProblems(p, "640x360") {
		t.Error(problem)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch := watchPlaylist(wctx, c, e2.url("/live/test/media.m3u8?rmsid=00000000000000ee"))
	time.Sleep(time.Second)
	pl := getPlaylist(t, ctx, c, e2.url("/live/test/media.m3u8"))
	before := pl.complete()[len(pl.complete())-1].MSN
	s0 := b2.mustStats(t)

	a.crash()
	killed := time.Now()
	b.waitLog(t, 20*time.Second, "took over", func(line string) bool { return strings.Contains(line, "took over the stream") })
	t.Logf("origin-b took over %v after origin-a was killed", time.Since(killed).Round(10*time.Millisecond))
	time.Sleep(8 * time.Second)
	stopWatch()

	watch.requireOneTakeover(t, "edge-2", before, before+4)
	s1 := b2.mustStats(t)
	stall := time.Duration((s1.StalledMs - s0.StalledMs) * float64(time.Millisecond))
	t.Logf("hls.js on edge-2: %d waiting events, stalled %v, errors %q", s1.Waiting-s0.Waiting, stall.Round(time.Millisecond), s1.Errors)
	if !s1.Playing || s1.CurrentTime < s0.CurrentTime+5 || len(s1.FatalErrors) > 0 {
		t.Errorf("hls.js does not play on after the takeover: before %v, after %v", s0, s1)
	}
	if v := mustScrape(t, ctx, c, b).value(`relaymesh_ingest_publishers{proto="rtmp"}`); v != 1 {
		t.Errorf("origin-b has %g RTMP publishers, want its held encoder, now publishing", v)
	}

	// The old primary comes back, and its encoder with it: the stream
	// stays on origin-b, and origin-a holds.
	a2 := startMeshOrigin(t, "origin-a", testClusterKey, "--join", b.meshAddr)
	startPublisher(t, "ffmpeg to origin-a", a2.rtmpURL("test"), 30)
	eventually(t, ctx, 20*time.Second, "origin-a back as the standby", func() (bool, string) {
		code, out, _ := runCLI(t, nil, "status", "--api", b.url(""))
		var aRow, bRow string
		for _, row := range strings.Split(out, "\n") {
			switch {
			case strings.HasPrefix(row, "origin-a"):
				aRow = row
			case strings.HasPrefix(row, "origin-b"):
				bRow = row
			}
		}
		return code == 0 && strings.Contains(aRow, "standby)") && strings.Contains(bRow, "primary)"), out
	})
	if lines := a2.logLines("took over the stream"); len(lines) != 0 {
		t.Errorf("the returning origin-a took the stream back: %q", lines)
	}
}

// TestStandbySinglePublishing: the encoder publishes to the primary only.
// The primary is killed, and the encoder reconnects to the standby, which
// continues the playlist its replica holds: the next media sequence
// number, after a discontinuity; not a new playlist.
func TestStandbySinglePublishing(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	c := newHTTPClient(t)
	a := startMeshOrigin(t, "origin-a", testClusterKey)
	b := startMeshOrigin(t, "origin-b", testClusterKey, "--standby-for", "origin-a", "--join", a.meshAddr)
	enc := startPublisher(t, "ffmpeg to origin-a", a.rtmpURL("test"), 60)
	e := startMeshEdge(t, "edge-1", testClusterKey, a.meshAddr)
	waitMembers(t, ctx, c, 3, a, b, e)
	waitPlaylist(t, ctx, c, e.url("/live/test/media.m3u8"), "a complete segment on the edge", hasComplete(2))
	eventually(t, ctx, 20*time.Second, "origin-b keeping a replica", func() (bool, string) {
		code, out, _ := runCLI(t, nil, "status", "--api", b.url(""))
		return code == 0 && strings.Contains(out, "test(0, standby)"), out
	})
	pl := getPlaylist(t, ctx, c, e.url("/live/test/media.m3u8"))
	before := pl.complete()[len(pl.complete())-1].MSN

	a.crash()
	enc.kill()
	startPublisher(t, "ffmpeg to origin-b", b.rtmpURL("test"), 40)
	pl = waitPlaylist(t, ctx, c, e.url("/live/test/media.m3u8"), "the playlist continued from origin-b", func(pl *mediaPlaylist) bool {
		for _, s := range pl.complete() {
			if s.Discontinuity && s.MSN > before {
				return s.MSN+1 <= pl.complete()[len(pl.complete())-1].MSN
			}
		}
		return false
	})
	segs := pl.complete()
	for i := 1; i < len(segs); i++ {
		if segs[i].MSN != segs[i-1].MSN+1 {
			t.Errorf("segment %d follows %d: the playlist was renumbered", segs[i].MSN, segs[i-1].MSN)
		}
	}
	if segs[0].MSN > before {
		t.Errorf("the playlist restarted at %d; want it to continue past %d:\n%s", segs[0].MSN, before, pl.Raw)
	}
	t.Logf("the playlist continued on origin-b: segments %d..%d around the switch after %d", segs[0].MSN, segs[len(segs)-1].MSN, before)
}

// TestOneOriginPerStreamName: a publish to a name already live on another
// origin, not this one's partner, is refused with a clear error.
func TestOneOriginPerStreamName(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 60*time.Second)
	c := newHTTPClient(t)
	a := startMeshOrigin(t, "origin-a", testClusterKey)
	other := startMeshOrigin(t, "origin-c", testClusterKey, "--join", a.meshAddr)
	startPublisher(t, "ffmpeg to origin-a", a.rtmpURL("test"), 40)
	waitMembers(t, ctx, c, 2, a, other)
	waitHolders(t, ctx, c, other, "test", "origin-a")
	second := startProc(t, "ffmpeg to origin-c", nil, "ffmpeg", publisherArgs(other.rtmpURL("test"), 10)...)
	t.Cleanup(second.kill)
	if !second.waitExit(15 * time.Second) {
		t.Fatal("the second encoder was not refused")
	}
	line := other.waitLog(t, 5*time.Second, "the refusal", func(l string) bool { return strings.Contains(l, "publish refused") })
	if !strings.Contains(line, `live on another origin \"origin-a\"`) || !strings.Contains(line, "--standby-for origin-a") {
		t.Errorf("refusal %q should name the origin that publishes the stream and the way to stand by for it", line)
	}
	m := mustScrape(t, ctx, c, other)
	if v := m.value(`relaymesh_ingest_refused_total{proto="rtmp",reason="live_elsewhere"}`); v < 1 {
		t.Errorf("refusals not counted: %v", m.prefixed("relaymesh_ingest_refused_total"))
	}
}

// freeze stops the node (SIGSTOP) for d and lets it go on (SIGCONT): a
// stalled VM, or a partition that heals. Its connections outlive it.
func (n *meshNode) freeze(t *testing.T, d time.Duration) {
	t.Helper()
	p := n.cmd.Process
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("SIGSTOP %s: %v", n.nodeName, err)
	}
	defer p.Signal(syscall.SIGCONT) //nolint:errcheck // it may have been killed meanwhile
	time.Sleep(d)
}

// TestStandbyFrozenOrigins: dual publishing, and each origin in turn is
// frozen for 5 s while its encoder connection stays open. The frozen
// standby does not take the stream when it wakes. The frozen primary is
// taken over, and when it wakes, still publishing, it yields to the
// standby: one origin publishes the name, and the edge's playlist never
// shows two numberings.
func TestStandbyFrozenOrigins(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 150*time.Second)
	c := newHTTPClient(t)
	a := startMeshOrigin(t, "origin-a", testClusterKey)
	b := startMeshOrigin(t, "origin-b", testClusterKey, "--standby-for", "origin-a", "--join", a.meshAddr)
	enc := startProc(t, "ffmpeg tee", nil, "ffmpeg", teePublisherArgs([]string{a.rtmpURL("test"), b.rtmpURL("test")}, 120)...)
	t.Cleanup(enc.kill)
	e := startMeshEdge(t, "edge-1", testClusterKey, a.meshAddr)
	waitMembers(t, ctx, c, 3, a, b, e)
	roles := func(what, primary, standby string) {
		t.Helper()
		eventually(t, ctx, 20*time.Second, what, func() (bool, string) {
			code, out, _ := runCLI(t, nil, "status", "--api", e.url(""))
			var pRow, sRow string
			for _, row := range strings.Split(out, "\n") {
				switch {
				case strings.HasPrefix(row, primary):
					pRow = row
				case strings.HasPrefix(row, standby):
					sRow = row
				}
			}
			return code == 0 && strings.Contains(pRow, "test(0, primary)") && strings.Contains(sRow, "test(0, standby)"), out
		})
	}
	roles("origin-a primary, origin-b standing by", "origin-a", "origin-b")
	waitPlaylist(t, ctx, c, e.url("/live/test/media.m3u8"), "a complete segment on the edge", hasComplete(2))
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watch := watchPlaylist(wctx, c, e.url("/live/test/media.m3u8?rmsid=00000000000000ef"))
	time.Sleep(time.Second)
	pl := getPlaylist(t, ctx, c, e.url("/live/test/media.m3u8"))
	before := pl.complete()[len(pl.complete())-1].MSN

	b.freeze(t, 5*time.Second)
	time.Sleep(4 * time.Second)
	if lines := b.logLines("took over the stream"); len(lines) != 0 {
		t.Errorf("the standby took the stream over when it woke, from a live primary: %q", lines)
	}
	roles("origin-a still primary after origin-b woke", "origin-a", "origin-b")

	a.freeze(t, 5*time.Second)
	if lines := b.logLines("took over the stream"); len(lines) != 1 {
		t.Errorf("origin-b took over %d times while origin-a was frozen, want once", len(lines))
	}
	a.waitLog(t, 20*time.Second, "origin-a yielding", func(line string) bool {
		return strings.Contains(line, "it stands by now") && strings.Contains(line, "stream=test")
	})
	roles("origin-b primary, origin-a standing by", "origin-b", "origin-a")
	time.Sleep(4 * time.Second)
	stopWatch()

	watch.requireOneTakeover(t, "edge-1", before, before+8)
	if v := mustScrape(t, ctx, c, a).value("relaymesh_standby_yields_total"); v != 1 {
		t.Errorf("origin-a yielded %g times, want 1", v)
	}
}
