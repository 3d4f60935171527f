package main

// End-to-end tests: TestMain builds the relaymesh binary once; each test
// runs it as a separate process on free loopback ports, feeds it with a
// real ffmpeg encoder over RTMP, and plays the result the way a viewer
// would (gohlslib, ffprobe, plain HTTP). They need ffmpeg and ffprobe on
// PATH, and are skipped with -short.

import (
	"bytes"
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// relaymeshBin is the binary under test, built once by TestMain.
var relaymeshBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "relaymesh-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	bin := filepath.Join(dir, "relaymesh")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build of the relaymesh binary failed:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	relaymeshBin = bin
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testContext is the test's overall deadline.
func testContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestRTMPToLLHLS_gohlslib publishes with ffmpeg over RTMP and plays the
// LL-HLS output with gohlslib: H.264 and AAC must arrive continuously.
func TestRTMPToLLHLS_gohlslib(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 90*time.Second)
	o := startOrigin(t)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 40)
	c := newHTTPClient(t)
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "two complete segments", hasComplete(2))

	const want = 6 * time.Second
	s := playAndCheck(t, o.url("/live/test/index.m3u8"), want, 40*time.Second)
	t.Logf("gohlslib: %d video frames over %v, %d audio AUs over %v, %d keyframes, %d parts",
		len(s.videoDTS), s.videoSpan(), len(s.audioPTS), s.audioSpan(), s.keyframes, len(s.parts))
	if lines := o.logLines("rtmp publisher started", "stream=test", "resumed=false"); len(lines) != 1 {
		t.Errorf("want one 'rtmp publisher started ... resumed=false' log line, got %q", lines)
	}
	o.stop(t)
}

// TestRTMPToLLHLS_ffprobe checks that ffprobe, given the multivariant
// playlist URL, finds the published H.264 640x360 and AAC streams.
func TestRTMPToLLHLS_ffprobe(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg", "ffprobe")
	ctx := testContext(t, 90*time.Second)
	o := startOrigin(t)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 40)
	c := newHTTPClient(t)
	// ffmpeg's HLS demuxer starts three segments from the live edge.
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "three complete segments", hasComplete(3))

	mv := string(mustGet(t, ctx, c, o.url("/live/test/index.m3u8")))
	for _, want := range []string{"#EXT-X-STREAM-INF:", "RESOLUTION=640x360", `CODECS="avc1.`, "mp4a.40.2", "\nmedia.m3u8?rmsid="} {
		if !strings.Contains(mv, want) {
			t.Errorf("multivariant playlist lacks %q:\n%s", want, mv)
		}
	}
	checkProbe(t, ffprobe(t, ctx, o.url("/live/test/index.m3u8")))
	o.stop(t)
}

// TestDecodeTimeContinuity fetches every part the playlist lists, then
// follows the live edge with blocking playlist reloads and preload-hinted
// part requests, and checks that each track's decode time runs on from one
// part to the next with no gap or overlap.
func TestDecodeTimeContinuity(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	o := startOrigin(t)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 50)
	c := newHTTPClient(t)
	media := o.url("/live/test/media.m3u8")
	pl := waitPlaylist(t, ctx, c, media, "a complete segment", hasComplete(1))

	if !strings.Contains(pl.ServerControl, "CAN-BLOCK-RELOAD=YES") {
		t.Fatalf("EXT-X-SERVER-CONTROL %q does not offer blocking reload", pl.ServerControl)
	}
	if pl.PartTarget <= 0 {
		t.Fatalf("no EXT-X-PART-INF:PART-TARGET in\n%s", pl.Raw)
	}
	initURI := pl.complete()[0].Map
	tracks := parseInit(t, mustGet(t, ctx, c, o.url("/live/test/"+initURI)))
	// Playlists and media are identified by Content-Type (RFC 8216 4).
	for url, want := range map[string]string{
		media:                                    "application/vnd.apple.mpegurl",
		o.url("/live/test/index.m3u8"):           "application/vnd.apple.mpegurl",
		o.url("/live/test/" + initURI):           "video/mp4",
		o.url("/live/test/" + pl.parts()[0].URI): "video/mp4",
	} {
		r, err := httpGet(ctx, c, url)
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("GET %s: status %d, err %v", url, r.status, err)
		}
		if got := r.header.Get("Content-Type"); got != want {
			t.Errorf("GET %s: Content-Type %q, want %q", url, got, want)
		}
	}
	videoID, audioID := videoAudioIDs(t, tracks)

	type gotPart struct {
		partRef
		data     []byte
		blocking bool // reached through a blocking request
	}
	var seq []gotPart
	seen := map[string]bool{}
	prefetched := map[string][]byte{}
	// take appends the parts pl lists after the last one taken.
	take := func(pl *mediaPlaylist, blocking bool) int {
		all := pl.parts()
		from := 0
		if len(seq) > 0 {
			last := seq[len(seq)-1].URI
			from = -1
			for i, p := range all {
				if p.URI == last {
					from = i + 1
				}
			}
			if from < 0 {
				t.Fatalf("part %s, taken last, is no longer listed: the playlist moved on by more than it lists\n%s", last, pl.Raw)
			}
			for _, p := range all[:from] {
				if !seen[p.URI] {
					t.Fatalf("part %s was inserted before parts already listed\n%s", p.URI, pl.Raw)
				}
			}
		}
		for _, p := range all[from:] {
			if seen[p.URI] {
				t.Fatalf("part %s listed twice\n%s", p.URI, pl.Raw)
			}
			seen[p.URI] = true
			data, ok := prefetched[p.URI]
			if !ok {
				data = mustGet(t, ctx, c, o.url("/live/test/"+p.URI))
			}
			seq = append(seq, gotPart{p, data, blocking})
		}
		return len(all) - from
	}
	take(pl, false)
	listed := len(seq)

	const wantBlocking = 25
	viaBlocking, viaHint := 0, 0
	for i := 0; viaBlocking < wantBlocking; i++ {
		msn, part, ok := pl.nextPart()
		if !ok {
			t.Fatalf("playlist lists no parts:\n%s", pl.Raw)
		}
		// Every other round, first ask for the preload-hinted part: the
		// server holds it until it is complete, and it must then be the
		// next part listed.
		hint := ""
		if i%2 == 1 {
			if pl.PreloadPart == "" {
				t.Fatalf("live playlist has no EXT-X-PRELOAD-HINT:TYPE=PART\n%s", pl.Raw)
			}
			hint = pl.PreloadPart
			prefetched[hint] = mustGet(t, ctx, c, o.url("/live/test/"+hint))
			viaHint++
		}
		url := blockingURL(media, msn, part)
		r, err := httpGet(ctx, c, url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: status %d: %s", url, r.status, r.body)
		}
		next, err := parseMediaPlaylist(r.body)
		if err != nil {
			t.Fatalf("GET %s: %v\n%s", url, err, r.body)
		}
		before := len(seq)
		if n := take(next, true); n == 0 {
			t.Fatalf("blocking reload %s answered without the requested part:\n%s", url, next.Raw)
		}
		if hint != "" && seq[before].URI != hint {
			t.Fatalf("preload hint named %s but the next part listed is %s", hint, seq[before].URI)
		}
		viaBlocking += len(seq) - before
		pl = next
	}
	t.Logf("%d parts listed at first, %d more through blocking reloads (%d via preload hints)", listed, viaBlocking, viaHint)

	// Decode-time continuity, part to part, for each track.
	var prevSeqNo uint32
	ends := map[int]uint64{}
	var maxPart float64
	for i, p := range seq {
		sp, frags, err := spans(p.data)
		if err != nil {
			t.Fatalf("part %s: %v", p.URI, err)
		}
		if len(frags) != 1 {
			t.Errorf("part %s holds %d fragments, want 1", p.URI, len(frags))
		}
		for _, f := range frags {
			if i > 0 && f.SequenceNumber <= prevSeqNo {
				t.Errorf("part %s: mfhd sequence number %d after %d", p.URI, f.SequenceNumber, prevSeqNo)
			}
			prevSeqNo = f.SequenceNumber
		}
		for id, s := range sp {
			ts := tracks[id]
			if ts == nil {
				t.Fatalf("part %s has track %d, which the init segment lacks", p.URI, id)
			}
			if end, ok := ends[id]; ok && s.start != end {
				t.Errorf("part %s (#%d, msn %d index %d) track %d starts at %d, previous part ended at %d: %+.3f ms gap",
					p.URI, i, p.MSN, p.Index, id, s.start, end,
					float64(int64(s.start)-int64(end))*1000/float64(ts.TimeScale))
			}
			ends[id] = s.end
		}
		v := sp[videoID]
		if v == nil {
			t.Errorf("part %s has no video", p.URI)
			continue
		}
		d := float64(v.end-v.start) / float64(tracks[videoID].TimeScale)
		if diff := d - p.Duration; diff > 0.0015 || diff < -0.0015 {
			t.Errorf("part %s: EXT-X-PART DURATION=%.3f but its video lasts %.4fs", p.URI, p.Duration, d)
		}
		if p.Independent && !v.firstSync {
			t.Errorf("part %s is INDEPENDENT=YES but does not start with a keyframe", p.URI)
		}
		if !p.Independent && v.firstSync {
			t.Errorf("part %s starts with a keyframe but lacks INDEPENDENT=YES", p.URI)
		}
		maxPart = max(maxPart, p.Duration)
	}
	if _, ok := ends[audioID]; !ok {
		t.Errorf("no part carried audio")
	}
	t.Logf("checked %d consecutive parts; longest part %.3fs, PART-TARGET %.3fs", len(seq), maxPart, pl.PartTarget)

	// A complete segment is its parts, back to back.
	byURI := map[string][]byte{}
	for _, p := range seq {
		byURI[p.URI] = p.data
	}
	checked := false
	for _, seg := range pl.complete() {
		var whole []byte
		all := len(seg.Parts) > 0
		for _, p := range seg.Parts {
			d, ok := byURI[p.URI]
			all = all && ok
			whole = append(whole, d...)
		}
		if !all {
			continue
		}
		if got := mustGet(t, ctx, c, o.url("/live/test/"+seg.URI)); !bytes.Equal(got, whole) {
			t.Errorf("segment %s (%d bytes) is not the concatenation of its parts (%d bytes)", seg.URI, len(got), len(whole))
		}
		checked = true
		break
	}
	if !checked {
		t.Errorf("no complete segment whose parts were all fetched:\n%s", pl.Raw)
	}
	o.stop(t)
}

// pollStats is what the reconnect test's background poller saw.
type pollStats struct {
	requests int
	problems []string
}

// pollPlaylists requests the media and multivariant playlists without
// blocking until ctx ends, and records every answer that is not a 200
// carrying a valid playlist, and any step back in media sequence numbers.
func pollPlaylists(ctx context.Context, c *http.Client, o *daemon) pollStats {
	var st pollStats
	var lastFirst, lastMSN uint64
	for i := 0; ctx.Err() == nil; i++ {
		url := o.url("/live/test/media.m3u8")
		if i%4 == 3 {
			url = o.url("/live/test/index.m3u8")
		}
		// A short request deadline of its own keeps a stalled server visible.
		rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := httpGet(rctx, c, url)
		cancel()
		st.requests++
		switch {
		case err != nil:
			st.problems = append(st.problems, fmt.Sprintf("%s GET %s: %v", time.Now().Format("15:04:05.000"), url, err))
		case r.status != http.StatusOK:
			st.problems = append(st.problems, fmt.Sprintf("%s GET %s: status %d: %s", time.Now().Format("15:04:05.000"), url, r.status, truncate(r.body, 100)))
		case strings.HasSuffix(url, "media.m3u8"):
			pl, err := parseMediaPlaylist(r.body)
			if err != nil {
				st.problems = append(st.problems, fmt.Sprintf("GET %s: %v", url, err))
				break
			}
			if pl.MediaSequence < lastFirst || pl.lastMSN() < lastMSN {
				st.problems = append(st.problems, fmt.Sprintf("media sequence went back: first %d -> %d, last %d -> %d",
					lastFirst, pl.MediaSequence, lastMSN, pl.lastMSN()))
			}
			lastFirst, lastMSN = pl.MediaSequence, pl.lastMSN()
		default:
			if !bytes.HasPrefix(r.body, []byte("#EXTM3U")) {
				st.problems = append(st.problems, fmt.Sprintf("GET %s: 200 without a playlist: %q", url, truncate(r.body, 100)))
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return st
}

// TestPublisherReconnect kills the encoder mid-stream and restarts it
// within the grace period: viewers polling throughout must only ever get
// 200s, the playlist must continue with a discontinuity and higher media
// sequence numbers, decode time must not go back, and the stream must
// play again.
func TestPublisherReconnect(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 150*time.Second)
	o := startOrigin(t)
	c := newHTTPClient(t)
	media := o.url("/live/test/media.m3u8")

	first := startPublisher(t, "ffmpeg #1", o.rtmpURL("test"), 60)
	waitPlaylist(t, ctx, c, media, "two complete segments", hasComplete(2))

	pollCtx, stopPolling := context.WithCancel(ctx)
	polled := make(chan pollStats, 1)
	pollDone := make(chan struct{})
	pc := newHTTPClient(t)
	go func() {
		defer close(pollDone)
		polled <- pollPlaylists(pollCtx, pc, o)
	}()
	t.Cleanup(func() { stopPolling(); <-pollDone })

	// Let the playlist advance once more, then kill the encoder hard.
	pl := getPlaylist(t, ctx, c, media)
	msn, part, _ := pl.nextPart()
	getPlaylist(t, ctx, c, blockingURL(media, msn, part+3))
	first.kill()
	o.waitLog(t, 15*time.Second, "rtmp publisher stopped", func(l string) bool {
		return strings.Contains(l, "rtmp publisher stopped") && strings.Contains(l, "stream=test")
	})
	// The stream outlives its publisher: its open segment is completed, and
	// it keeps hinting at the next part, which a reconnecting encoder will
	// deliver under the same number.
	before := waitPlaylist(t, ctx, c, media, "the stream to end its open segment", func(pl *mediaPlaylist) bool {
		return len(pl.Segments) > 0 && pl.Segments[len(pl.Segments)-1].URI != "" && pl.PreloadPart != ""
	})
	maxBefore := before.lastMSN()
	lastSegBefore := before.Segments[len(before.Segments)-1]

	// The encoder comes back a couple of seconds later.
	time.Sleep(2 * time.Second)
	startPublisher(t, "ffmpeg #2", o.rtmpURL("test"), 40)
	after := waitPlaylist(t, ctx, c, media, "a discontinuity followed by two complete segments", func(pl *mediaPlaylist) bool {
		n := -1
		for _, s := range pl.Segments {
			if s.Discontinuity {
				n = 0
			} else if n >= 0 && s.URI != "" {
				n++
			}
		}
		return n >= 2
	})
	stopPolling()
	ps := <-polled

	if ps.requests < 20 {
		t.Errorf("the poller made only %d requests", ps.requests)
	}
	for _, p := range ps.problems {
		t.Errorf("poller: %s", p)
	}
	if o.exited() || o.cmd.Process.Pid != o.pid {
		t.Fatalf("relaymesh process %d is gone", o.pid)
	}
	o.requireAlive(t)

	var disc *hlsSegment
	for _, s := range after.Segments {
		if s.Discontinuity {
			if disc != nil {
				t.Errorf("more than one EXT-X-DISCONTINUITY after one reconnect:\n%s", after.Raw)
			}
			disc = s
		}
		if disc != nil && s.MSN <= maxBefore {
			t.Errorf("segment %d after the reconnect does not have a media sequence number above %d, the last before it", s.MSN, maxBefore)
		}
	}
	if disc == nil {
		t.Fatalf("no EXT-X-DISCONTINUITY after the reconnect:\n%s", after.Raw)
	}
	if disc.MSN != maxBefore+1 {
		t.Errorf("first segment after the reconnect has media sequence %d, want %d (right after the last one before it)", disc.MSN, maxBefore+1)
	}
	if lines := o.logLines("rtmp publisher started", "stream=test", "resumed=true"); len(lines) != 1 {
		t.Errorf("want one 'rtmp publisher started ... resumed=true' log line, got %q", lines)
	}

	// Decode time continues across the reconnect: the new publisher's
	// first video sample is not before the old publisher's last one ended.
	var prev *hlsSegment
	for _, s := range after.complete() {
		if s.MSN == lastSegBefore.MSN {
			prev = s
		}
	}
	if prev == nil {
		t.Fatalf("segment %d is no longer listed:\n%s", lastSegBefore.MSN, after.Raw)
	}
	oldTracks := parseInit(t, mustGet(t, ctx, c, o.url("/live/test/"+prev.Map)))
	newTracks := parseInit(t, mustGet(t, ctx, c, o.url("/live/test/"+disc.Map)))
	oldVideo, _ := videoAudioIDs(t, oldTracks)
	newVideo, _ := videoAudioIDs(t, newTracks)
	oldSpans, _, err := spans(mustGet(t, ctx, c, o.url("/live/test/"+prev.URI)))
	if err != nil {
		t.Fatalf("segment %s: %v", prev.URI, err)
	}
	newSpans, _, err := spans(mustGet(t, ctx, c, o.url("/live/test/"+disc.URI)))
	if err != nil {
		t.Fatalf("segment %s: %v", disc.URI, err)
	}
	oldEnd, newStart := oldSpans[oldVideo].end, newSpans[newVideo].start
	if oldTracks[oldVideo].TimeScale != newTracks[newVideo].TimeScale {
		t.Errorf("video time scale changed from %d to %d", oldTracks[oldVideo].TimeScale, newTracks[newVideo].TimeScale)
	} else if newStart < oldEnd {
		t.Errorf("decode time went back across the reconnect: video ended at %d in %s, restarts at %d in %s",
			oldEnd, prev.URI, newStart, disc.URI)
	}
	if !newSpans[newVideo].firstSync {
		t.Errorf("segment %s after the reconnect does not start with a keyframe", disc.URI)
	}
	t.Logf("video decode time: old publisher ended at %d, new one starts at %d (%+d ticks)", oldEnd, newStart, int64(newStart)-int64(oldEnd))

	playAndCheck(t, o.url("/live/test/index.m3u8"), 3*time.Second, 40*time.Second)

	// Once the window spans both publishers and more than CAN-SKIP-UNTIL,
	// a delta update must be the full playlist with its oldest segments
	// replaced by EXT-X-SKIP.
	waitPlaylist(t, ctx, c, media, "more than 16 s of segments", func(pl *mediaPlaylist) bool {
		d := 0.0
		for _, s := range pl.complete() {
			d += s.Duration
		}
		return d > 16 && pl.Segments[0].MSN <= disc.MSN
	})
	if skipped := checkDeltaUpdate(t, ctx, c, media); skipped == 0 {
		t.Errorf("delta update skipped nothing although the playlist spans more than 16 s")
	}
	o.stop(t)
}

// TestSecondPublisherRejected publishes a second encoder to a stream that
// is live: it must be refused (ffmpeg exits non-zero) while the first
// publisher's stream keeps advancing untouched.
func TestSecondPublisherRejected(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 90*time.Second)
	o := startOrigin(t)
	c := newHTTPClient(t)
	media := o.url("/live/test/media.m3u8")
	first := startPublisher(t, "ffmpeg #1", o.rtmpURL("test"), 40)
	pl := waitPlaylist(t, ctx, c, media, "a complete segment", hasComplete(1))

	second := startPublisher(t, "ffmpeg #2", o.rtmpURL("test"), 10)
	if !second.waitExit(15 * time.Second) {
		t.Fatalf("the second publisher is still running 15 s after it started: it was not refused")
	}
	if code := second.exitCode(); code == 0 {
		t.Errorf("the second publisher exited 0: want a non-zero status after being refused")
	}
	o.waitLog(t, 15*time.Second, "about the refused publisher", func(l string) bool {
		return strings.Contains(l, "rtmp publish refused") && strings.Contains(l, "already has a publisher")
	})
	if first.exited() {
		t.Fatalf("the first publisher exited (status %d) when the second was refused", first.exitCode())
	}

	// The playlist keeps advancing: ten more parts, through blocking reloads.
	for i := 0; i < 10; i++ {
		pl = nextPlaylist(t, ctx, c, media, pl)
	}
	for _, s := range pl.Segments {
		if s.Discontinuity {
			t.Errorf("the refused publisher caused a discontinuity:\n%s", pl.Raw)
		}
	}
	if lines := o.logLines("rtmp publisher stopped"); len(lines) > 0 {
		t.Errorf("the first publisher was disconnected: %q", lines)
	}
	o.stop(t)
}

// TestHostileInput sends garbage to the RTMP port and malformed or
// path-traversing requests to the HTTP port. Each request must get 400 or
// 404, the daemon must log the bad RTMP connections and live on, and the
// stream must keep playing.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	o := startOrigin(t)
	c := newHTTPClient(t)
	media := o.url("/live/test/media.m3u8")
	publisher := startPublisher(t, "ffmpeg", o.rtmpURL("test"), 60)
	pl := waitPlaylist(t, ctx, c, media, "a complete segment", hasComplete(1))

	// (a) Garbage on the RTMP port.
	var peers []string
	for i := range 4 {
		junk := make([]byte, 64<<10)
		rand.Read(junk)
		switch i {
		case 1:
			junk[0] = 3 // a valid RTMP version byte, then noise
		case 2:
			junk[0] = 3
			copy(junk[1:9], make([]byte, 8)) // C1 with zero time fields
		}
		conn, err := net.DialTimeout("tcp", o.rtmpAddr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial RTMP: %v", err)
		}
		peers = append(peers, conn.LocalAddr().String())
		conn.SetDeadline(time.Now().Add(3 * time.Second)) //nolint:errcheck
		if i == 3 {
			// A proper handshake, then noise where chunks should be.
			hs := make([]byte, 1+1536)
			rand.Read(hs)
			hs[0] = 3
			copy(hs[1:9], make([]byte, 8))
			conn.Write(hs) //nolint:errcheck
			s01 := make([]byte, 1+1536+1536)
			if _, err := io.ReadFull(conn, s01); err == nil {
				conn.Write(s01[1 : 1+1536]) //nolint:errcheck // C2 echoes S1
			} else {
				t.Logf("RTMP handshake with the server failed: %v", err)
			}
		}
		var wg sync.WaitGroup
		wg.Go(func() { io.Copy(io.Discard, conn) }) //nolint:errcheck // drain until the deadline or close
		conn.Write(junk)                            //nolint:errcheck // the server may hang up first
		time.Sleep(300 * time.Millisecond)
		conn.Close()
		wg.Wait()
	}
	for _, peer := range peers {
		line := o.waitLog(t, 15*time.Second, "about the garbage RTMP connection from "+peer, func(l string) bool {
			return strings.Contains(l, "peer="+peer+" ") || strings.HasSuffix(l, "peer="+peer)
		})
		t.Logf("logged: %s", line)
		if !strings.Contains(line, "proto=rtmp") || !strings.Contains(line, "err=") {
			t.Errorf("log line for the garbage RTMP connection from %s does not say what went wrong: %s", peer, line)
		}
		if strings.Contains(line, "panicked") {
			t.Logf("note: the RTMP library panicked on garbage (recovered by relaymesh): %s", line)
		}
	}

	// (b) Hostile HTTP requests, sent raw so that nothing cleans them.
	long := strings.Repeat("a", 8000)
	targets := []string{
		"/live/test/media.m3u8?_HLS_msn=99999999999999999999999",
		"/live/test/media.m3u8?_HLS_msn=-1",
		"/live/test/media.m3u8?_HLS_part=1",
		"/live/test/media.m3u8?_HLS_msn=abc",
		"/live/test/media.m3u8?_HLS_msn=1e3",
		"/live/test/media.m3u8?_HLS_msn=%00",
		"/live/test/media.m3u8?_HLS_msn=9007199254740993",
		"/live/test/media.m3u8?_HLS_msn=9007199254740992",
		"/live/test/media.m3u8?_HLS_msn=1&_HLS_msn=2",
		"/live/test/media.m3u8?_HLS_msn=0&_HLS_part=-1",
		"/live/test/media.m3u8?_HLS_msn=0&_HLS_part=99999999999999999999",
		"/live/test/media.m3u8?_HLS_skip=MAYBE",
		"/live/test/media.m3u8?_HLS_msn=" + strings.Repeat("9", 5000),
		"/live/../etc/passwd",
		"/live/test/../../x",
		"/live/test/../test/index.m3u8",
		"/live/%2e%2e/etc/passwd",
		"/live/test/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
		"/live/test/..",
		"/live/test//part1.m4s",
		"/live/test/part99999999999999999999.m4s",
		"/live/test/part18446744073709551615.m4s",
		"/live/test/part9999999999999999999.m4s",
		"/live/test/part-1.m4s",
		"/live/test/part%201.m4s",
		"/live/test/seg-1.m4s",
		"/live/test/seg18446744073709551615.m4s",
		"/live/test/init0.mp4",
		"/live/test/init-1.mp4",
		"/live/test/" + long + ".m4s",
		"/live/test/part" + strings.Repeat("1", 5000) + ".m4s",
		"/live/" + long + "/index.m3u8",
		"/live/nosuchstream/index.m3u8",
		"/live/test/index.m3u8/..",
		"/live/",
		"../../etc/passwd",
		"/live/test/part1.m4s%zz",
	}
	for _, target := range targets {
		status, hdr, body, err := rawGet(o.httpAddr, target)
		show := target
		if len(show) > 80 {
			show = show[:80] + "..."
		}
		switch {
		case err != nil:
			t.Errorf("GET %s: %v", show, err)
		case status != http.StatusBadRequest && status != http.StatusNotFound:
			t.Errorf("GET %s: status %d (Location %q), want 400 or 404: %q", show, status, hdr.Get("Location"), truncate([]byte(body), 100))
		case strings.Contains(body, "root:"):
			t.Errorf("GET %s: body looks like /etc/passwd", show)
		}
	}
	// The raw client itself works: a sane request through it succeeds.
	if status, _, body, err := rawGet(o.httpAddr, "/live/test/media.m3u8"); err != nil || status != http.StatusOK || !strings.HasPrefix(body, "#EXTM3U") {
		t.Errorf("raw GET of the media playlist: status %d, err %v", status, err)
	}

	// The daemon lives on and the stream still plays.
	o.requireAlive(t)
	if publisher.exited() {
		t.Fatalf("the publisher was disconnected (ffmpeg exited %d)", publisher.exitCode())
	}
	pl = getPlaylist(t, ctx, c, media)
	for i := 0; i < 5; i++ {
		pl = nextPlaylist(t, ctx, c, media, pl)
	}
	ps := pl.parts()
	last := ps[len(ps)-1]
	tracks := parseInit(t, mustGet(t, ctx, c, o.url("/live/test/"+pl.Segments[len(pl.Segments)-1].Map)))
	videoID, _ := videoAudioIDs(t, tracks)
	sp, _, err := spans(mustGet(t, ctx, c, o.url("/live/test/"+last.URI)))
	if err != nil || sp[videoID] == nil || sp[videoID].samples == 0 {
		t.Errorf("newest part %s: no video (%v)", last.URI, err)
	}
	o.stop(t)
}

// TestShutdownReleasesBlockedRequests stops the daemon with SIGINT while
// an encoder publishes and a viewer waits in a blocking playlist reload:
// the daemon must exit 0 promptly, and the waiting viewer must not be
// handed a 200 that is not a playlist.
func TestShutdownReleasesBlockedRequests(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 90*time.Second)
	o := startOrigin(t)
	c := newHTTPClient(t)
	media := o.url("/live/test/media.m3u8")
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 40)
	pl := waitPlaylist(t, ctx, c, media, "a complete segment", hasComplete(1))

	// Two segments ahead of the last complete one: a couple of seconds away.
	url := fmt.Sprintf("%s?_HLS_msn=%d", media, pl.complete()[len(pl.complete())-1].MSN+2)
	type result struct {
		r   fetched
		err error
	}
	res := make(chan result, 1)
	go func() {
		r, err := httpGet(ctx, c, url)
		res <- result{r, err}
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case r := <-res:
		t.Fatalf("blocking reload %s returned at once (status %d, err %v): it should wait for the segment", url, r.r.status, r.err)
	default:
	}
	o.stop(t)
	select {
	case r := <-res:
		switch {
		case r.err != nil:
			t.Logf("blocked reload ended with %v after shutdown", r.err)
		case r.r.status == http.StatusOK && !bytes.HasPrefix(r.r.body, []byte("#EXTM3U")):
			t.Errorf("blocked reload %s got status 200 with a %d-byte body that is not a playlist (%q) when the server shut down; "+
				"want a complete playlist, a 503, or a closed connection", url, len(r.r.body), truncate(r.r.body, 60))
		default:
			t.Logf("blocked reload got status %d after shutdown", r.r.status)
		}
	case <-time.After(3 * time.Second):
		t.Errorf("blocked reload still pending after the server exited")
	}
}

// TestDemoCommand runs `relaymesh demo`: it prints its playback URL, and
// ffprobe finds H.264 and AAC there.
func TestDemoCommand(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffprobe")
	ctx := testContext(t, 90*time.Second)
	d := startNode(t, "relaymesh demo", false, func(h, _ string) ([]string, []string) {
		return []string{"demo", "--http", h, "--rtmp", "", "--srt", "", "--rtsp", "", "--mesh", "", "--relay", ""}, nil
	})
	want := "http://" + d.httpAddr + "/live/demo/index.m3u8"
	re := regexp.MustCompile(`Play:\s+(\S+)`)
	var got string
	for deadline := time.Now().Add(10 * time.Second); ; {
		if m := re.FindStringSubmatch(d.stdout.String()); m != nil {
			got = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("relaymesh demo printed no 'Play: URL' line on stdout within 10 s:\n%s", d.stdout.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got != want {
		t.Fatalf("demo prints playback URL %q, want %q", got, want)
	}
	if strings.Contains(d.stderr.String(), "rtmp ingest listening") {
		t.Errorf(`--rtmp "" should disable RTMP ingest, but it is listening`)
	}
	c := newHTTPClient(t)
	waitPlaylist(t, ctx, c, strings.TrimSuffix(got, "index.m3u8")+"media.m3u8", "three complete segments", hasComplete(3))
	checkProbe(t, ffprobe(t, ctx, got))

	// The demo is a mesh: the two edges serve the same stream, byte for
	// byte, edge-2 through edge-1.
	all := re.FindAllStringSubmatch(d.stdout.String(), -1)
	if len(all) != 3 {
		t.Fatalf("demo printed %d Play URLs, want 3 (origin and two edges):\n%s", len(all), d.stdout.String())
	}
	var first []byte
	for i, m := range all {
		base := strings.TrimSuffix(m[1], "index.m3u8")
		waitPlaylist(t, ctx, c, base+"media.m3u8?_HLS_msn=4", "segment 4", hasComplete(1))
		seg := mustGet(t, ctx, c, base+"seg4.m4s")
		if i == 0 {
			first = seg
		} else if !bytes.Equal(seg, first) {
			t.Errorf("%s serves a different seg4.m4s than the origin (%d vs %d bytes)", base, len(seg), len(first))
		}
	}
	checkProbe(t, ffprobe(t, ctx, all[2][1]))
	d.stop(t)
}

// runCLI runs relaymesh to completion and returns its exit status and output.
func runCLI(t *testing.T, env []string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, relaymeshBin, args...)
	cmd.Env = cleanEnv(env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("relaymesh %q did not exit within 20 s", args)
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("run relaymesh %q: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), o.String(), e.String()
}

// TestCLI covers help, flag errors, and settings from the environment and
// a config file.
func TestCLI(t *testing.T) {
	t.Parallel()
	requireE2E(t)
	rtmpForm := regexp.MustCompile(`rtmp://HOST(:\d+)?/live/\{stream\}`)

	t.Run("help", func(t *testing.T) {
		for _, args := range [][]string{{"--help"}, {"origin", "--help"}} {
			code, stdout, stderr := runCLI(t, nil, args...)
			if code != 0 {
				t.Errorf("relaymesh %q exited %d, want 0; stderr: %s", args, code, stderr)
			}
			if !rtmpForm.MatchString(stdout) {
				t.Errorf("relaymesh %q does not show the RTMP URL form rtmp://HOST/live/{stream}:\n%s", args, stdout)
			}
		}
	})

	t.Run("unknown flag", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, nil, "origin", "--bogus-flag")
		if code == 0 {
			t.Errorf("exit status 0, want non-zero")
		}
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], "--bogus-flag") {
			t.Errorf("want one stderr line naming --bogus-flag, got %q", stderr)
		}
		if stdout != "" {
			t.Errorf("stdout should stay empty, got %q", stdout)
		}
	})

	t.Run("part target out of range", func(t *testing.T) {
		code, _, stderr := runCLI(t, nil, "origin", "--part-target", "5ms", "--http", "", "--rtmp", "",
			"--srt", "", "--rtsp", "", "--mesh", "", "--relay", "")
		if code == 0 {
			t.Errorf("exit status 0, want non-zero")
		}
		msg := strings.TrimSpace(stderr)
		if strings.Count(msg, "\n") > 0 || !strings.Contains(msg, "--part-target") || !strings.Contains(msg, "5ms") {
			t.Errorf("want one line naming --part-target and the bad value 5ms, got %q", stderr)
		}
	})

	t.Run("bad ingest flags", func(t *testing.T) {
		off := []string{"--http", "", "--rtmp", "", "--srt", "", "--rtsp", "", "--mesh", "", "--relay", ""}
		for _, tc := range []struct {
			args []string
			name string // what the error line must name
		}{
			{[]string{"--pull", "cam"}, "--pull"},
			{[]string{"--pull", "cam=http://x/y"}, "--pull"},
			{[]string{"--pull", "../x=rtsp://cam/1"}, "--pull"},
			{[]string{"--pull", "a=rtsp://c/1", "--pull", "a=rtsp://c/2"}, "pulled twice"},
			{[]string{"--max-bitrate", "5X"}, "--max-bitrate"},
			{[]string{"--max-bitrate", "10k"}, "--max-bitrate"},
			{[]string{"--max-frame-size", "1KiB"}, "--max-frame-size"},
			{[]string{"--max-streams", "0"}, "--max-streams"},
			{[]string{"--srt-passphrase", "short"}, "--srt-passphrase"},
			{[]string{"--publish-keys", "/nonexistent/keys"}, "--publish-keys"},
			{[]string{"--rtsp", "127.0.0.1:0", "--rtsp-udp", "127.0.0.1:8001"}, "--rtsp-udp"},
		} {
			code, _, stderr := runCLI(t, nil, append(append([]string{"origin"}, off...), tc.args...)...)
			msg := strings.TrimSpace(stderr)
			if code == 0 || strings.Contains(msg, "\n") || !strings.Contains(msg, tc.name) {
				t.Errorf("relaymesh origin %q: exit %d, stderr %q; want non-zero and one line naming %s", tc.args, code, stderr, tc.name)
			}
		}
	})

	t.Run("env var", func(t *testing.T) {
		t.Parallel()
		n := startNode(t, "relaymesh origin (env)", true, func(h, r string) ([]string, []string) {
			return []string{"origin", "--rtmp", r, "--srt", "", "--rtsp", "", "--mesh", "", "--relay", ""},
				[]string{"RELAYMESH_HTTP=" + h}
		})
		n.stop(t)
	})

	t.Run("config file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		n := startNode(t, "relaymesh origin (config)", true, func(h, r string) ([]string, []string) {
			cfg := filepath.Join(dir, "relaymesh.yaml")
			yaml := fmt.Sprintf("http: %s\nrtmp: %s\nsrt:\nrtsp: \"\"\nmesh: \"\"\nrelay: \"\"\npart-target: 250ms\n", h, r)
			if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{"origin", "--config", cfg}, nil
		})
		conn, err := net.DialTimeout("tcp", n.rtmpAddr, 5*time.Second)
		if err != nil {
			t.Errorf("RTMP from the config file is not listening on %s: %v", n.rtmpAddr, err)
		} else {
			conn.Close()
		}
		if !regexp.MustCompile(`"rtmp ingest listening".* addr=` + regexp.QuoteMeta(n.rtmpAddr)).MatchString(n.stderr.String()) {
			t.Errorf("no log line for RTMP listening on %s", n.rtmpAddr)
		}
		n.stop(t)
	})

	t.Run("env beats config file", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		fileAddr := ""
		n := startNode(t, "relaymesh origin (env+config)", true, func(h, r string) ([]string, []string) {
			fileAddr = freeAddr(t)
			cfg := filepath.Join(dir, "relaymesh.yaml")
			yaml := fmt.Sprintf("http: %s\nrtmp: %s\nsrt: \"\"\nrtsp: \"\"\nmesh: \"\"\nrelay: \"\"\n", fileAddr, r)
			if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{"origin", "--config", cfg}, []string{"RELAYMESH_HTTP=" + h}
		})
		if conn, err := net.DialTimeout("tcp", fileAddr, time.Second); err == nil {
			conn.Close()
			t.Errorf("the config file's http %s is listening although RELAYMESH_HTTP overrides it", fileAddr)
		}
		n.stop(t)
	})

	t.Run("config file with unknown key", func(t *testing.T) {
		cfg := filepath.Join(t.TempDir(), "relaymesh.yaml")
		if err := os.WriteFile(cfg, []byte("http: 127.0.0.1:0\nhttp-adress: 127.0.0.1:1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := runCLI(t, nil, "origin", "--config", cfg, "--rtmp", "", "--srt", "", "--rtsp", "", "--mesh", "", "--relay", "")
		if code == 0 {
			t.Errorf("exit status 0, want non-zero")
		}
		if !strings.Contains(stderr, "http-adress") {
			t.Errorf("error does not name the unknown key http-adress: %q", stderr)
		}
	})
}
