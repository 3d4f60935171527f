package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/relaymesh/relaymesh/ingest"
	"github.com/relaymesh/relaymesh/relay"
)

// What the clip is expected to be, stated independently of Load so that a
// regenerated clip that breaks the loop is caught here.
const (
	videoTrackID  = 1 // the packager numbers tracks from 1 in Tracks order
	audioTrackID  = 2
	videoRate     = 90000
	audioRate     = 48000
	videoFrame    = videoRate / 30 // ticks per frame at 30 fps
	audioFrame    = 1024           // ticks (samples) per AAC frame
	clipDuration  = 8 * time.Second
	gopDuration   = 2 * time.Second
	frameDuration = time.Second / 30
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func mustLoad(t *testing.T) *Clip {
	t.Helper()
	c, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return c
}

func TestLoad(t *testing.T) {
	c := mustLoad(t)

	if len(c.Tracks) != 2 {
		t.Fatalf("got %d tracks, want 2 (H.264, AAC)", len(c.Tracks))
	}
	v, ok := c.Tracks[0].Codec.(*mp4codecs.H264)
	if !ok {
		t.Fatalf("track 0 is %T, want *mp4codecs.H264", c.Tracks[0].Codec)
	}
	if len(v.PPS) == 0 || h264.NALUType(v.PPS[0]&0x1f) != h264.NALUTypePPS {
		t.Errorf("PPS %x is not a PPS NAL unit", v.PPS)
	}
	if len(v.SPS) == 0 || h264.NALUType(v.SPS[0]&0x1f) != h264.NALUTypeSPS {
		t.Fatalf("SPS %x is not an SPS NAL unit", v.SPS)
	}
	var sps h264.SPS
	if err := sps.Unmarshal(v.SPS); err != nil {
		t.Fatalf("parse SPS: %v", err)
	}
	if sps.Width() != 640 || sps.Height() != 360 {
		t.Errorf("SPS says %dx%d, want 640x360", sps.Width(), sps.Height())
	}
	if fps := sps.FPS(); fps != 0 && fps != 30 {
		t.Errorf("SPS says %v fps, want 30", fps)
	}

	a, ok := c.Tracks[1].Codec.(*mp4codecs.MPEG4Audio)
	if !ok {
		t.Fatalf("track 1 is %T, want *mp4codecs.MPEG4Audio", c.Tracks[1].Codec)
	}
	if a.Config.Type != mpeg4audio.ObjectTypeAACLC || a.Config.SampleRate != audioRate || a.Config.ChannelConfig != 2 {
		t.Errorf("AAC config %+v, want AAC-LC 48 kHz stereo", a.Config)
	}

	if d := c.Duration(); d < clipDuration-frameDuration || d > clipDuration+frameDuration {
		t.Errorf("Duration() = %v, want %v within one frame", d, clipDuration)
	}
	if n := len(c.frames[0]); n != 240 {
		t.Errorf("%d video frames, want 240", n)
	}
	if n := len(c.frames[1]); n != 375 {
		t.Errorf("%d AAC frames, want 375", n)
	}
}

// publish runs clip.Publish in the background and returns the stream and a
// channel that yields Publish's result. The returned context is cancelled
// when Publish returns, so waits on the stream end with it.
func publish(t *testing.T, ctx context.Context, c *Clip, reg *relay.Registry, name string, speed float64) (*relay.Stream, <-chan error, context.Context) {
	t.Helper()
	done := make(chan error, 1)
	published, stopped := context.WithCancel(context.Background())
	go func() {
		defer stopped()
		done <- c.Publish(ctx, reg, name, ingest.PackagerConfig{}, Options{Speed: speed, Logger: testLogger(t)})
	}()
	for {
		if st := reg.Get(name); st != nil {
			return st, done, published
		}
		select {
		case err := <-done:
			t.Fatalf("Publish returned before claiming the stream: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
}

func mediaDuration(s *relay.Snapshot) time.Duration {
	var d time.Duration
	for _, seg := range s.Segments {
		d += seg.Duration
	}
	return d
}

func TestPublishLoopsContinuously(t *testing.T) {
	c := mustLoad(t)
	reg := relay.NewRegistry(relay.RegistryConfig{Window: relay.Window{Segments: 1000}, Logger: testLogger(t)})
	t.Cleanup(reg.Close)

	const speed = 40
	target := clipDuration * 5 / 2 // two loop boundaries and then some

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	begin := time.Now()
	st, done, published := publish(t, ctx, c, reg, "demo", speed)

	// At speed 40 this takes half a second; ten seconds leaves room for the
	// race detector but still fails if Speed were ignored (20 s).
	wctx, wcancel := context.WithTimeout(published, 10*time.Second)
	defer wcancel()
	_, werr := st.Wait(wctx, func(s *relay.Snapshot) bool { return mediaDuration(s) >= target })
	elapsed := time.Since(begin)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if werr != nil {
		t.Fatalf("stream did not reach %v of media: %v (has %v)", target, werr, mediaDuration(st.Snapshot()))
	}
	// Frames are written no earlier than start + dts/speed, so reaching
	// `target` of media cannot take less than target/speed.
	if min := target / speed; elapsed < min {
		t.Errorf("reached %v of media after %v of wall time; at speed %d it cannot take less than %v", target, elapsed, speed, min)
	}

	snap := st.Snapshot()
	if snap.Live {
		t.Error("stream still live after Publish returned: publication not closed")
	}
	checkTimeline(t, snap, target)
}

type trackTimeline struct {
	seen      bool
	first     uint64 // BaseTime of the first part holding the track
	next      uint64 // where the next part must start
	lastStart uint64 // decode time of the last sample
	pts       []int64
	badDurs   int
}

// checkTimeline parses every part of snap and checks that each track's
// decode timeline runs without gap or overlap, that every sample lasts one
// frame (so a loop boundary that shifts timestamps shows up), that video
// presentation times form an unbroken 30 fps sequence, and that segments
// start with a keyframe and last one GOP.
func checkTimeline(t *testing.T, snap *relay.Snapshot, covered time.Duration) {
	t.Helper()
	if len(snap.Segments) < 3 {
		t.Fatalf("only %d segments", len(snap.Segments))
	}
	tl := map[int]*trackTimeline{videoTrackID: {}, audioTrackID: {}}
	wantDur := map[int]uint32{videoTrackID: videoFrame, audioTrackID: audioFrame}
	init := snap.Segments[0].Init
	var nextPart uint64
	for si, seg := range snap.Segments {
		last := si == len(snap.Segments)-1
		name := fmt.Sprintf("segment %d (MSN %d)", si, seg.MSN)
		if !seg.Complete {
			t.Errorf("%s: not complete after the publication ended", name)
		}
		if seg.Discontinuity {
			t.Errorf("%s: discontinuity inside one publication", name)
		}
		if seg.Init != init {
			t.Errorf("%s: init segment changed within one publication", name)
		}
		if len(seg.Parts) == 0 {
			t.Errorf("%s: no parts", name)
			continue
		}
		var segVideo uint64
		for pi, part := range seg.Parts {
			pname := fmt.Sprintf("%s part %d (N %d)", name, pi, part.N)
			if si > 0 || pi > 0 {
				if part.N != nextPart {
					t.Errorf("%s: part number %d, want %d", pname, part.N, nextPart)
				}
			}
			nextPart = part.N + 1

			var parts fmp4.Parts
			if err := parts.Unmarshal(part.Data); err != nil {
				t.Fatalf("%s: unmarshal: %v", pname, err)
			}
			if len(parts) != 1 {
				t.Fatalf("%s: %d moof boxes, want 1", pname, len(parts))
			}
			var partVideo uint64
			sawVideo := false
			for _, pt := range parts[0].Tracks {
				tr := tl[pt.ID]
				if tr == nil {
					t.Fatalf("%s: unknown track ID %d", pname, pt.ID)
				}
				if len(pt.Samples) == 0 {
					t.Errorf("%s track %d: empty traf", pname, pt.ID)
					continue
				}
				if tr.seen && pt.BaseTime != tr.next {
					t.Errorf("%s track %d: BaseTime %d, want %d (previous part's base + durations): %s of %d ticks",
						pname, pt.ID, pt.BaseTime, tr.next, gapOrOverlap(pt.BaseTime, tr.next), absDiff(pt.BaseTime, tr.next))
				}
				if !tr.seen {
					tr.seen, tr.first = true, pt.BaseTime
				}
				dt := pt.BaseTime
				for k, s := range pt.Samples {
					if s.Duration != wantDur[pt.ID] {
						if tr.badDurs < 5 {
							t.Errorf("%s track %d sample %d at %d: duration %d, want %d",
								pname, pt.ID, k, dt, s.Duration, wantDur[pt.ID])
						}
						tr.badDurs++
					}
					if pt.ID == videoTrackID {
						if k == 0 {
							sawVideo = true
							if part.Independent == s.IsNonSyncSample {
								t.Errorf("%s: Independent=%v but first video sample sync=%v",
									pname, part.Independent, !s.IsNonSyncSample)
							}
							if pi == 0 && s.IsNonSyncSample && !last {
								t.Errorf("%s: segment does not start with a keyframe", pname)
							}
						}
						tr.pts = append(tr.pts, int64(dt)+int64(s.PTSOffset))
						partVideo += uint64(s.Duration)
					}
					tr.lastStart = dt
					dt += uint64(s.Duration)
				}
				tr.next = dt
			}
			if !sawVideo {
				t.Errorf("%s: no video samples", pname)
			}
			if got, want := part.Duration, ticks(partVideo, videoRate); absDur(got-want) > time.Microsecond {
				t.Errorf("%s: Duration %v, but its video samples last %v", pname, got, want)
			}
			segVideo += partVideo
		}
		if !last {
			if !seg.Parts[0].Independent {
				t.Errorf("%s: first part not independent", name)
			}
			if d := seg.Duration; absDur(d-gopDuration) > frameDuration {
				t.Errorf("%s: Duration %v, want %v within a frame", name, d, gopDuration)
			}
			if got := ticks(segVideo, videoRate); got != gopDuration {
				t.Errorf("%s: video samples last %v, want one GOP (%v)", name, got, gopDuration)
			}
		}
	}
	for id, tr := range tl {
		if tr.badDurs > 5 {
			t.Errorf("track %d: %d samples with a wrong duration in all", id, tr.badDurs)
		}
	}

	v, a := tl[videoTrackID], tl[audioTrackID]
	if !v.seen || !a.seen {
		t.Fatalf("video seen %v, audio seen %v", v.seen, a.seen)
	}
	vEnd, aEnd := ticks(v.next, videoRate), ticks(a.next, audioRate)
	vStart, aStart := ticks(v.first, videoRate), ticks(a.first, audioRate)
	if got := vEnd - vStart; got < covered {
		t.Errorf("video covers %v, want at least %v", got, covered)
	}
	// Audio must have crossed two loop boundaries too.
	if got := aEnd - aStart; got < 2*clipDuration+time.Second {
		t.Errorf("audio covers %v, want at least %v", got, 2*clipDuration+time.Second)
	}
	// In the clip audio starts 45 ms after video; a wrong loop period on
	// either track would pull them apart by a frame or more per loop.
	if d := absDur(aStart - vStart); d > 100*time.Millisecond {
		t.Errorf("audio starts %v, video %v: offset %v", aStart, vStart, d)
	}
	if d := absDur(aEnd - vEnd); d > 150*time.Millisecond {
		t.Errorf("audio ends %v, video %v: drift %v", aEnd, vEnd, d)
	}

	// Every frame decoded up to the last one must be presented exactly once
	// on the 30 fps grid: B-frame reordering must survive loop boundaries.
	pts := slices.Clone(v.pts)
	slices.Sort(pts)
	limit := int64(v.lastStart)
	for i := 1; i < len(pts) && pts[i] <= limit; i++ {
		if d := pts[i] - pts[i-1]; d != videoFrame {
			t.Errorf("video presentation times %d and %d are %d ticks apart, want %d", pts[i-1], pts[i], d, videoFrame)
			break
		}
	}
	if len(pts) > 0 && pts[0] < int64(v.first) {
		t.Errorf("first video presentation time %d before its decode time %d", pts[0], v.first)
	}
}

func ticks(n uint64, rate int64) time.Duration {
	return time.Duration(int64(n) * int64(time.Second) / rate)
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func absDiff(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

func gapOrOverlap(got, want uint64) string {
	if got > want {
		return "gap"
	}
	return "overlap"
}

func TestPublishReleasesStream(t *testing.T) {
	c := mustLoad(t)
	reg := relay.NewRegistry(relay.RegistryConfig{Logger: testLogger(t)})
	t.Cleanup(reg.Close)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st, done, published := publish(t, ctx, c, reg, "live", 1)

	// A second publisher is refused while the demo holds the stream.
	err := c.Publish(ctx, reg, "live", ingest.PackagerConfig{}, Options{Logger: testLogger(t)})
	if !errors.Is(err, relay.ErrStreamBusy) {
		t.Errorf("second Publish: %v, want ErrStreamBusy", err)
	}

	// At real time the first part (200 ms) appears after about 200 ms.
	wctx, wcancel := context.WithTimeout(published, 10*time.Second)
	defer wcancel()
	if _, err := st.Wait(wctx, func(s *relay.Snapshot) bool { return s.NextPart > 0 }); err != nil {
		t.Fatalf("no part at real-time speed: %v", err)
	}

	stop := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Publish did not return after ctx ended")
	}
	if d := time.Since(stop); d > time.Second {
		t.Errorf("Publish took %v to return after cancel", d)
	}
	snap := st.Snapshot()
	if snap.Live || snap.Open() != nil {
		t.Errorf("after Publish: Live=%v open=%v, want the publication closed", snap.Live, snap.Open() != nil)
	}
	if snap.NextPart == 0 {
		t.Error("packager wrote no part")
	}
	pub, err := reg.Publish("live")
	if err != nil {
		t.Fatalf("stream not released after Publish returned: %v", err)
	}
	pub.Close()
}

func TestPublishBadName(t *testing.T) {
	c := mustLoad(t)
	reg := relay.NewRegistry(relay.RegistryConfig{Logger: testLogger(t)})
	t.Cleanup(reg.Close)
	err := c.Publish(t.Context(), reg, "../x", ingest.PackagerConfig{}, Options{Logger: testLogger(t)})
	if !errors.Is(err, relay.ErrBadStreamName) {
		t.Errorf("Publish(../x): %v, want ErrBadStreamName", err)
	}
}

// trackSpans parses the parts of segs and returns, per track ID, the decode
// time of its first sample and the end of its last one.
func trackSpans(t *testing.T, segs []*relay.Segment) map[int][2]uint64 {
	t.Helper()
	spans := map[int][2]uint64{}
	for _, seg := range segs {
		for _, part := range seg.Parts {
			var parts fmp4.Parts
			if err := parts.Unmarshal(part.Data); err != nil {
				t.Fatalf("segment %d part %d: unmarshal: %v", seg.MSN, part.N, err)
			}
			for _, p := range parts {
				for _, pt := range p.Tracks {
					end := pt.BaseTime
					for _, s := range pt.Samples {
						end += uint64(s.Duration)
					}
					sp, ok := spans[pt.ID]
					if !ok {
						sp[0] = pt.BaseTime
					}
					sp[1] = end
					spans[pt.ID] = sp
				}
			}
		}
	}
	return spans
}

// A restarted demo continues the stream's timeline: the new publication's
// first segment is a discontinuity with a new init segment, video resumes
// exactly where it ended and no track's decode time goes backwards.
func TestRepublishContinuesTimeline(t *testing.T) {
	c := mustLoad(t)
	reg := relay.NewRegistry(relay.RegistryConfig{Window: relay.Window{Segments: 1000}, Logger: testLogger(t)})
	t.Cleanup(reg.Close)

	run := func(until time.Duration) *relay.Snapshot {
		t.Helper()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		st, done, published := publish(t, ctx, c, reg, "again", 40)
		wctx, wcancel := context.WithTimeout(published, 10*time.Second)
		defer wcancel()
		_, werr := st.Wait(wctx, func(s *relay.Snapshot) bool { return mediaDuration(s) >= until })
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Publish: %v", err)
		}
		if werr != nil {
			t.Fatalf("stream did not reach %v: %v", until, werr)
		}
		return st.Snapshot()
	}

	first := run(3 * time.Second)
	n := len(first.Segments)
	before := trackSpans(t, first.Segments)
	second := run(mediaDuration(first) + 3*time.Second)

	if len(second.Segments) <= n {
		t.Fatalf("second publication added no segment (%d, was %d)", len(second.Segments), n)
	}
	resumed := second.Segments[n]
	if !resumed.Discontinuity {
		t.Errorf("first segment of the second publication has no discontinuity")
	}
	if resumed.Init == nil || resumed.Init.ID != 2 || resumed.Init == first.Segments[0].Init {
		t.Errorf("second publication's init segment: %+v, want a new one with ID 2", resumed.Init)
	}
	for i, seg := range second.Segments[n+1:] {
		if seg.Discontinuity {
			t.Errorf("segment %d of the second publication is a discontinuity", i+1)
		}
	}
	after := trackSpans(t, second.Segments[n:])
	if got, want := after[videoTrackID][0], before[videoTrackID][1]; got != want {
		t.Errorf("video resumes at %d, want %d where the first publication ended", got, want)
	}
	if got, end := after[audioTrackID][0], before[audioTrackID][1]; got < end || ticks(got-end, audioRate) > 100*time.Millisecond {
		t.Errorf("audio resumes at %d after ending at %d: want no overlap and no long gap", got, end)
	}
}
