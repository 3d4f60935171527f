package ingest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/relaymesh/relaymesh/edge"
	"github.com/relaymesh/relaymesh/relay"
)

// A High-profile level 3.1 SPS (1280x720, 30 fps timing info) and its PPS.
var (
	testSPS = []byte{
		0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
		0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
	}
	testPPS = []byte{0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0}
	testAUD = []byte{0x09, 0xf0}
)

var testEpoch = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

const (
	videoTrackID = 1
	audioTrackID = 2
	videoRate    = 90000
	aacFrame     = 1024
)

func TestTestSPSIsValid(t *testing.T) {
	var sps h264.SPS
	if err := sps.Unmarshal(testSPS); err != nil {
		t.Fatalf("h264.SPS.Unmarshal: %v", err)
	}
	if sps.Width() != 1280 || sps.Height() != 720 {
		t.Fatalf("SPS is %dx%d", sps.Width(), sps.Height())
	}
}

// clock is a settable cfg.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// source describes a synthetic encoder.
type source struct {
	fpsNum, fpsDen int // frame rate num/den
	gopFrames      int
	msTimestamps   bool // round timestamps to milliseconds, as RTMP does
	audioRate      int  // 0: no audio
	videoStart     time.Duration
	audioStart     time.Duration
	leadingFrames  int           // non-IDR frames before the first keyframe (joined mid-GOP)
	audioLead      time.Duration // audio runs this far past the last video frame
	audioLag       time.Duration // audio arrives this much later than video of the same time
	duration       time.Duration
}

type event struct {
	ts    time.Duration // pts = dts; no B-frames
	video bool
	key   bool
	n     int
}

func (s source) frameTime(k int) time.Duration {
	d := time.Duration(int64(k) * int64(time.Second) * int64(s.fpsDen) / int64(s.fpsNum))
	if s.msTimestamps {
		d = d.Round(time.Millisecond)
	}
	return s.videoStart + d
}

func (s source) audioTime(j int) time.Duration {
	d := time.Duration(int64(j) * aacFrame * int64(time.Second) / int64(s.audioRate))
	if s.msTimestamps {
		d = d.Round(time.Millisecond)
	}
	return s.audioStart + d
}

func (s source) isKey(k int) bool {
	return k >= s.leadingFrames && (k-s.leadingFrames)%s.gopFrames == 0
}

// events returns the access units in the order an interleaving muxer sends
// them: by timestamp, video first on ties.
func (s source) events() []event {
	var evs []event
	end := s.videoStart + s.duration
	lastVideo := time.Duration(0)
	for k := 0; ; k++ {
		ts := s.frameTime(k)
		if ts >= end {
			break
		}
		lastVideo = ts
		evs = append(evs, event{ts: ts, video: true, key: s.isKey(k), n: k})
	}
	if s.audioRate > 0 {
		aend := lastVideo + time.Second*time.Duration(s.fpsDen)/time.Duration(s.fpsNum) + s.audioLead
		for j := 0; ; j++ {
			ts := s.audioTime(j)
			if ts >= aend {
				break
			}
			evs = append(evs, event{ts: ts, n: j})
		}
	}
	arrival := func(e event) time.Duration {
		if e.video {
			return e.ts
		}
		return e.ts + s.audioLag
	}
	slices.SortStableFunc(evs, func(a, b event) int {
		if a, b := arrival(a), arrival(b); a != b {
			return int(a - b)
		}
		if a.video != b.video {
			if a.video {
				return -1
			}
			return 1
		}
		return 0
	})
	return evs
}

func videoAU(k int, key bool) [][]byte {
	if key {
		return [][]byte{testAUD, testSPS, testPPS, {0x65, 0x88, 0x84, byte(k), byte(k >> 8), 0x11, 0x22}}
	}
	return [][]byte{testAUD, {0x41, 0x9a, byte(k), byte(k >> 8), 0x33}}
}

func audioAU(j int) []byte { return []byte{0x21, 0x10, byte(j), byte(j >> 8), 0x05} }

func h264Track() Track { return Track{Codec: &mp4codecs.H264{SPS: testSPS, PPS: testPPS}} }

func aacTrack(rate int) Track {
	return Track{Codec: &mp4codecs.MPEG4Audio{Config: mpeg4audio.AudioSpecificConfig{
		Type: mpeg4audio.ObjectTypeAACLC, SampleRate: rate, ChannelConfig: 2,
	}}}
}

func (s source) tracks() []Track {
	tr := []Track{h264Track()}
	if s.audioRate > 0 {
		tr = append(tr, aacTrack(s.audioRate))
	}
	return tr
}

// feed writes the source into pk, setting the wall clock to wall+ts before
// each access unit, and closes the packager.
func feed(t *testing.T, pk *Packager, src source, clk *clock, wall time.Time) {
	t.Helper()
	for _, ev := range src.events() {
		clk.Set(wall.Add(ev.ts))
		var err error
		if ev.video {
			err = pk.WriteH264(0, ev.ts, ev.ts, videoAU(ev.n, ev.key))
		} else {
			err = pk.WriteMPEG4Audio(1, ev.ts, audioAU(ev.n))
		}
		if err != nil {
			t.Fatalf("write %+v: %v", ev, err)
		}
	}
	pk.Close()
}

func newTestRegistry() *relay.Registry {
	return relay.NewRegistry(relay.RegistryConfig{
		PartTarget: 200 * time.Millisecond,
		Window:     relay.Window{Segments: 100000, MaxBytes: 1 << 30},
		Grace:      time.Minute,
	})
}

// parsedPart is one relay part with its fMP4 content.
type parsedPart struct {
	seg    *relay.Segment
	idx    int // index within seg
	part   *relay.Part
	fp     *fmp4.Part
	tracks map[int]*fmp4.PartTrack
}

func parseParts(t *testing.T, s *relay.Snapshot) []parsedPart {
	t.Helper()
	var out []parsedPart
	for _, seg := range s.Segments {
		for i, p := range seg.Parts {
			var fps fmp4.Parts
			if err := fps.Unmarshal(p.Data); err != nil {
				t.Fatalf("part %d: fmp4.Parts.Unmarshal: %v", p.N, err)
			}
			if len(fps) != 1 {
				t.Fatalf("part %d holds %d moof boxes, want 1", p.N, len(fps))
			}
			pp := parsedPart{seg: seg, idx: i, part: p, fp: fps[0], tracks: map[int]*fmp4.PartTrack{}}
			for _, tr := range fps[0].Tracks {
				if pp.tracks[tr.ID] != nil {
					t.Fatalf("part %d has track %d twice", p.N, tr.ID)
				}
				pp.tracks[tr.ID] = tr
			}
			out = append(out, pp)
		}
	}
	return out
}

func trackDuration(tr *fmp4.PartTrack) uint64 {
	var d uint64
	for _, s := range tr.Samples {
		d += uint64(s.Duration)
	}
	return d
}

func ticksToDuration(ticks uint64, rate int) time.Duration {
	return time.Duration(ticks * uint64(time.Second) / uint64(rate))
}

// checkStructure asserts the rules every packaged stream must satisfy,
// whatever its source.
func checkStructure(t *testing.T, cfg PackagerConfig, parts []parsedPart) {
	t.Helper()
	if len(parts) == 0 {
		t.Fatal("no parts")
	}
	next := map[int]uint64{}
	for i, pp := range parts {
		p := pp.part
		last := pp.idx == len(pp.seg.Parts)-1
		if p.Duration > cfg.PartTarget+relay.PartSlack {
			t.Errorf("part %d (segment %d) lasts %v > PartTarget %v + slack %v", p.N, pp.seg.MSN, p.Duration, cfg.PartTarget, relay.PartSlack)
		}
		if p.Duration <= 0 {
			t.Errorf("part %d lasts %v", p.N, p.Duration)
		}
		// RFC 8216bis 4.4.4.9: at least 85% of PART-TARGET, except
		// INDEPENDENT parts and a segment's final part.
		if !last && !p.Independent && p.Duration*100 < cfg.PartTarget*85 {
			t.Errorf("part %d (segment %d, %d of %d) lasts %v < 85%% of %v", p.N, pp.seg.MSN, pp.idx, len(pp.seg.Parts), p.Duration, cfg.PartTarget)
		}
		if i > 0 && pp.fp.SequenceNumber != parts[i-1].fp.SequenceNumber+1 && pp.seg.Init == parts[i-1].seg.Init {
			t.Errorf("part %d: mfhd sequence %d after %d", p.N, pp.fp.SequenceNumber, parts[i-1].fp.SequenceNumber)
		}
		v := pp.tracks[videoTrackID]
		if v == nil || len(v.Samples) == 0 {
			t.Fatalf("part %d has no video samples", p.N)
		}
		if got := ticksToDuration(trackDuration(v), videoRate); got != p.Duration {
			t.Errorf("part %d: video samples last %v, part Duration %v", p.N, got, p.Duration)
		}
		if sync := !v.Samples[0].IsNonSyncSample; sync != p.Independent {
			t.Errorf("part %d: Independent %v but first video sample sync %v", p.N, p.Independent, sync)
		}
		if pp.idx == 0 && !p.Independent {
			t.Errorf("segment %d starts with part %d that is not INDEPENDENT", pp.seg.MSN, p.N)
		}
		// Per-track decode times are continuous within a publication.
		for id, tr := range pp.tracks {
			if want, ok := next[id]; ok && !pp.seg.Discontinuity || ok && pp.idx > 0 {
				if tr.BaseTime != want {
					t.Errorf("part %d track %d: BaseTime %d, previous part ended at %d", p.N, id, tr.BaseTime, want)
				}
			}
			next[id] = tr.BaseTime + trackDuration(tr)
		}
		for id, tr := range pp.tracks {
			for j, s := range tr.Samples {
				if s.Duration == 0 {
					t.Errorf("part %d track %d sample %d has zero duration", p.N, id, j)
				}
			}
		}
	}
	for _, pp := range parts {
		seg := pp.seg
		if pp.idx != 0 {
			continue
		}
		if seg.Complete && seg != parts[len(parts)-1].seg && seg.Duration < cfg.MinSegment {
			t.Errorf("segment %d lasts %v < MinSegment %v", seg.MSN, seg.Duration, cfg.MinSegment)
		}
	}
}

// expectedSegments returns where segments must start, as video media time
// relative to the first keyframe: every keyframe at least MinSegment after
// the start of the previous segment.
func expectedSegments(src source, minSeg time.Duration) []time.Duration {
	var keys []time.Duration
	for _, ev := range src.events() {
		if ev.video && ev.key {
			keys = append(keys, ev.ts)
		}
	}
	first := keys[0]
	starts := []time.Duration{0}
	for _, k := range keys[1:] {
		if k-first-starts[len(starts)-1] >= minSeg {
			starts = append(starts, k-first)
		}
	}
	return starts
}

func TestPackagerBoundaries(t *testing.T) {
	type tc struct {
		name string
		src  source
		cfg  PackagerConfig
	}
	var cases []tc
	for _, fps := range []struct {
		name     string
		num, den int
		ms       bool
	}{
		{"30fps-ms", 30, 1, true},
		{"30fps-90k", 30, 1, false},
		{"25fps-ms", 25, 1, true},
		{"60fps-ms", 60, 1, true},
	} {
		for _, gop := range []time.Duration{2 * time.Second, time.Second, 500 * time.Millisecond, 4 * time.Second} {
			for _, rate := range []int{0, 44100, 48000} {
				frames := int(int64(gop) * int64(fps.num) / int64(fps.den) / int64(time.Second))
				if frames*int(time.Second)/fps.num*fps.den != int(gop) {
					continue // 25 fps has no 0.5 s GOP
				}
				cases = append(cases, tc{
					name: fmt.Sprintf("%s/gop%v/aac%d", fps.name, gop, rate),
					src: source{
						fpsNum: fps.num, fpsDen: fps.den, gopFrames: frames, msTimestamps: fps.ms,
						audioRate: rate, videoStart: 3 * time.Second, audioStart: 3*time.Second - 7*time.Millisecond,
						duration: 12 * time.Second,
					},
					cfg: PackagerConfig{PartTarget: 200 * time.Millisecond, MinSegment: time.Second},
				})
			}
		}
	}
	cases = append(cases,
		tc{"part250ms-30fps", source{fpsNum: 30, fpsDen: 1, gopFrames: 60, msTimestamps: true, audioRate: 48000, duration: 9 * time.Second}, PackagerConfig{PartTarget: 250 * time.Millisecond, MinSegment: time.Second}},
		tc{"part100ms-60fps", source{fpsNum: 60, fpsDen: 1, gopFrames: 60, msTimestamps: true, audioRate: 48000, duration: 6 * time.Second}, PackagerConfig{PartTarget: 100 * time.Millisecond, MinSegment: 500 * time.Millisecond}},
		tc{"part500ms-min2s-gop1s", source{fpsNum: 25, fpsDen: 1, gopFrames: 25, msTimestamps: true, audioRate: 44100, duration: 9 * time.Second}, PackagerConfig{PartTarget: 500 * time.Millisecond, MinSegment: 2 * time.Second}},
		tc{"defaults", source{fpsNum: 30, fpsDen: 1, gopFrames: 60, msTimestamps: true, audioRate: 48000, duration: 7 * time.Second}, PackagerConfig{}},
	)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reg := newTestRegistry()
			defer reg.Close()
			pub, err := reg.Publish("cam")
			if err != nil {
				t.Fatal(err)
			}
			clk := &clock{}
			cfg := c.cfg
			cfg.Now = clk.Now
			pk, err := NewPackager(pub, c.src.tracks(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			feed(t, pk, c.src, clk, testEpoch)
			pub.Close()
			if cfg.PartTarget == 0 {
				cfg.PartTarget = 200 * time.Millisecond
			}
			if cfg.MinSegment == 0 {
				cfg.MinSegment = time.Second
			}

			snap := pub.Stream.Snapshot()
			parts := parseParts(t, snap)
			checkStructure(t, cfg, parts)

			// Segments start exactly at the expected keyframes, and that is
			// where PROGRAM-DATE-TIME comes from: the clock when the
			// keyframe arrived.
			starts := expectedSegments(c.src, cfg.MinSegment)
			if len(snap.Segments) != len(starts) {
				t.Fatalf("%d segments, want %d starting at %v", len(snap.Segments), len(starts), starts)
			}
			firstKey := c.src.frameTime(c.src.leadingFrames)
			for i, seg := range snap.Segments {
				v := parsePart(t, seg.Parts[0]).tracks[videoTrackID]
				got := ticksToDuration(v.BaseTime, videoRate)
				if d := got - starts[i]; d < -time.Microsecond || d > time.Microsecond {
					t.Errorf("segment %d starts at media time %v, want %v", seg.MSN, got, starts[i])
				}
				if want := testEpoch.Add(firstKey + starts[i]); !seg.Start.Equal(want) {
					t.Errorf("segment %d Start %v, want cfg.Now() at its keyframe %v", seg.MSN, seg.Start, want)
				}
				if i+1 < len(starts) {
					if want := starts[i+1] - starts[i]; absDur(seg.Duration-want) > time.Microsecond {
						t.Errorf("segment %d lasts %v, want %v", seg.MSN, seg.Duration, want)
					}
				}
				if seg.Discontinuity {
					t.Errorf("segment %d of the first publication has a discontinuity", seg.MSN)
				}
				if seg.Init != pk.Init() || seg.Init.ID != 1 {
					t.Errorf("segment %d init %+v", seg.MSN, seg.Init)
				}
			}
			wantTD := relay.DefaultTargetDuration
			for _, seg := range snap.Segments {
				wantTD = max(wantTD, int((seg.Duration+time.Second/2)/time.Second))
			}
			if snap.TargetDuration != wantTD {
				t.Errorf("TargetDuration %d, want %d", snap.TargetDuration, wantTD)
			}

			// The first sample of the stream is the first keyframe, at 0.
			first := parts[0].tracks[videoTrackID]
			if first.BaseTime != 0 || first.Samples[0].IsNonSyncSample {
				t.Errorf("first video sample at %d sync %v", first.BaseTime, !first.Samples[0].IsNonSyncSample)
			}
			var videoEnd, audioStart, audioEnd time.Duration
			audioStart = -1
			for _, pp := range parts {
				v := pp.tracks[videoTrackID]
				videoEnd = ticksToDuration(v.BaseTime+trackDuration(v), videoRate)
				if a := pp.tracks[audioTrackID]; a != nil {
					if c.src.audioRate == 0 {
						t.Fatal("audio track in a video-only stream")
					}
					if audioStart < 0 {
						audioStart = ticksToDuration(a.BaseTime, c.src.audioRate)
					}
					audioEnd = ticksToDuration(a.BaseTime+trackDuration(a), c.src.audioRate)
					for _, s := range a.Samples {
						if s.Duration != aacFrame {
							t.Fatalf("part %d: AAC sample of %d ticks, want %d", pp.part.N, s.Duration, aacFrame)
						}
					}
				}
			}
			if c.src.audioRate > 0 {
				// Audio starts with the first frame at or after the keyframe.
				frame := time.Duration(aacFrame) * time.Second / time.Duration(c.src.audioRate)
				if audioStart < 0 || audioStart >= frame+time.Millisecond {
					t.Errorf("audio starts at media time %v; want within one frame (%v) after the first keyframe", audioStart, frame)
				}
				if absDur(audioEnd-videoEnd) > 2*frame {
					t.Errorf("audio ends at %v, video at %v", audioEnd, videoEnd)
				}
			}
			wantCodecs := "avc1.64001f"
			if c.src.audioRate > 0 {
				wantCodecs += ",mp4a.40.2"
			}
			if in := pk.Init(); in.Codecs != wantCodecs || in.Width != 1280 || in.Height != 720 {
				t.Errorf("init %q %dx%d", in.Codecs, in.Width, in.Height)
			}
		})
	}
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func parsePart(t *testing.T, p *relay.Part) parsedPart {
	t.Helper()
	var fps fmp4.Parts
	if err := fps.Unmarshal(p.Data); err != nil || len(fps) != 1 {
		t.Fatalf("part %d: %d parts, %v", p.N, len(fps), err)
	}
	pp := parsedPart{part: p, fp: fps[0], tracks: map[int]*fmp4.PartTrack{}}
	for _, tr := range fps[0].Tracks {
		pp.tracks[tr.ID] = tr
	}
	return pp
}

func TestInitSegment(t *testing.T) {
	reg := newTestRegistry()
	defer reg.Close()
	pub, _ := reg.Publish("cam")
	pk, err := NewPackager(pub, []Track{h264Track(), aacTrack(44100)}, PackagerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var in fmp4.Init
	if err := in.Unmarshal(bytes.NewReader(pk.Init().Data)); err != nil {
		t.Fatalf("init segment does not parse: %v", err)
	}
	if len(in.Tracks) != 2 || in.Tracks[0].ID != videoTrackID || in.Tracks[0].TimeScale != videoRate ||
		in.Tracks[1].ID != audioTrackID || in.Tracks[1].TimeScale != 44100 {
		t.Fatalf("init tracks %+v %+v", in.Tracks[0], in.Tracks[1])
	}
	if pk.Init().ID != 1 || pk.Init().FrameRate != 30 {
		t.Fatalf("init ID %d frame rate %v", pk.Init().ID, pk.Init().FrameRate)
	}
}

func TestNewPackagerErrors(t *testing.T) {
	reg := newTestRegistry()
	defer reg.Close()
	pub, _ := reg.Publish("cam")
	for _, tc := range []struct {
		name   string
		tracks []Track
		is     error
	}{
		{"no tracks", nil, nil},
		{"unsupported codec", []Track{{Codec: &mp4codecs.VP9{}}}, ErrUnsupportedCodec},
		{"bad SPS", []Track{{Codec: &mp4codecs.H264{SPS: []byte{0x67, 0xff, 0xff, 0xff, 0xff}, PPS: testPPS}}}, nil},
		{"bad H.265 SPS", []Track{{Codec: &mp4codecs.H265{VPS: testVPS265, SPS: []byte{0x42, 0x01, 0xff}, PPS: testPPS265}}}, nil},
		{"AAC without sample rate", []Track{aacTrack(0)}, nil},
		{"Opus without channels", []Track{{Codec: &mp4codecs.Opus{}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewPackager(pub, tc.tracks, PackagerConfig{})
			if err == nil {
				t.Fatal("NewPackager succeeded")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	reg := newTestRegistry()
	defer reg.Close()
	pub, _ := reg.Publish("cam")
	pk, err := NewPackager(pub, []Track{h264Track(), aacTrack(48000)}, PackagerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pk.WriteH264(5, 0, 0, videoAU(0, true)); err == nil {
		t.Fatal("write to track 5 succeeded")
	}
	if err := pk.WriteMPEG4Audio(-1, 0, audioAU(0)); err == nil {
		t.Fatal("write to track -1 succeeded")
	}
	// Parameter sets and delimiters alone carry no picture.
	if err := pk.WriteH264(0, 0, 0, [][]byte{testAUD, testSPS, testPPS}); err != nil {
		t.Fatal(err)
	}
	if err := pk.WriteH264(0, 0, 0, videoAU(0, true)); err != nil {
		t.Fatal(err)
	}
	if err := pk.WriteH264(0, 33*time.Millisecond, 33*time.Millisecond, videoAU(1, false)); err != nil {
		t.Fatal(err)
	}
	if err := pk.WriteH264(0, 33*time.Millisecond, 33*time.Millisecond, videoAU(2, false)); !errors.Is(err, ErrTimestamp) {
		t.Fatalf("repeated timestamp: %v, want ErrTimestamp", err)
	}
	if err := pk.WriteH264(0, 20*time.Millisecond, 20*time.Millisecond, videoAU(2, false)); !errors.Is(err, ErrTimestamp) {
		t.Fatalf("timestamp going back: %v, want ErrTimestamp", err)
	}
	// The packager carries on after a rejected frame.
	if err := pk.WriteH264(0, 67*time.Millisecond, 67*time.Millisecond, videoAU(2, false)); err != nil {
		t.Fatal(err)
	}
	pk.Close()
	parts := parseParts(t, pub.Stream.Snapshot())
	if n := len(parts[0].tracks[videoTrackID].Samples); n != 3 {
		t.Fatalf("%d video samples, want 3", n)
	}
}

// Audio before the first keyframe, and video before it, cannot be decoded
// from the first segment and must be dropped.
func TestMediaBeforeFirstKeyframeIsDropped(t *testing.T) {
	for _, tc := range []struct {
		rate int
		lag  time.Duration
	}{{44100, 0}, {48000, 0}, {44100, 150 * time.Millisecond}, {48000, 300 * time.Millisecond}} {
		rate := tc.rate
		// With lag, audio stamped before the keyframe arrives after it.
		t.Run(fmt.Sprintf("%d/lag%v", rate, tc.lag), func(t *testing.T) {
			src := source{
				fpsNum: 30, fpsDen: 1, gopFrames: 60, msTimestamps: true, audioRate: rate,
				videoStart: 10 * time.Second, audioStart: 9 * time.Second, leadingFrames: 17,
				audioLag: tc.lag, duration: 6 * time.Second,
			}
			reg := newTestRegistry()
			defer reg.Close()
			pub, _ := reg.Publish("cam")
			clk := &clock{}
			cfg := PackagerConfig{PartTarget: 200 * time.Millisecond, MinSegment: time.Second, Now: clk.Now}
			pk, err := NewPackager(pub, src.tracks(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			feed(t, pk, src, clk, testEpoch)
			parts := parseParts(t, pub.Stream.Snapshot())
			checkStructure(t, cfg, parts)

			keyTS := src.frameTime(src.leadingFrames)
			v := parts[0].tracks[videoTrackID]
			if v.BaseTime != 0 || v.Samples[0].IsNonSyncSample {
				t.Fatalf("stream starts with a video sample at %d, sync %v", v.BaseTime, !v.Samples[0].IsNonSyncSample)
			}
			var videoSamples, audioSamples int
			var firstAudio *fmp4.PartTrack
			for _, pp := range parts {
				videoSamples += len(pp.tracks[videoTrackID].Samples)
				if a := pp.tracks[audioTrackID]; a != nil {
					audioSamples += len(a.Samples)
					if firstAudio == nil {
						firstAudio = a
					}
				}
			}
			var wantVideo, wantAudio int
			for _, ev := range src.events() {
				if ev.ts >= keyTS {
					if ev.video {
						wantVideo++
					} else {
						wantAudio++
					}
				}
			}
			if videoSamples != wantVideo {
				t.Errorf("%d video samples, want the %d from the first keyframe on", videoSamples, wantVideo)
			}
			// The last audio frame stays pending when the publisher stops.
			if audioSamples != wantAudio-1 {
				t.Errorf("%d audio samples, want %d (frames at or after the keyframe, minus the pending one)", audioSamples, wantAudio-1)
			}
			// The first audio sample kept is the first frame at or after the keyframe.
			j := 0
			for src.audioTime(j) < keyTS {
				j++
			}
			if firstAudio == nil || !bytes.Equal(firstAudio.Samples[0].Payload, audioAU(j)) {
				t.Fatalf("first audio sample is not frame %d", j)
			}
			at := ticksToDuration(firstAudio.BaseTime, rate)
			if want := src.audioTime(j) - keyTS; absDur(at-want) > time.Millisecond {
				t.Errorf("first audio sample at media time %v, want %v", at, want)
			}
			if seg := pub.Stream.Snapshot().Segments[0]; !seg.Start.Equal(testEpoch.Add(keyTS)) {
				t.Errorf("first segment Start %v, want the clock at the first keyframe %v", seg.Start, testEpoch.Add(keyTS))
			}
		})
	}
}

// A publisher that reconnects continues the same stream: decode times go
// on from where the first publication stopped, the first new segment
// carries a discontinuity and the new publication's init segment.
func TestTimelineContinuesAcrossPublications(t *testing.T) {
	for _, tc := range []struct {
		name      string
		audioLead time.Duration
	}{
		{"interleaved", 0},
		// Encoders often send audio a little ahead of video; the cut at a
		// disconnect then leaves audio past the last video frame.
		{"audio ahead at disconnect", 60 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newTestRegistry()
			defer reg.Close()
			clk := &clock{}
			cfg := PackagerConfig{PartTarget: 200 * time.Millisecond, MinSegment: time.Second, Now: clk.Now}

			pub1, _ := reg.Publish("cam")
			src1 := source{fpsNum: 30, fpsDen: 1, gopFrames: 60, msTimestamps: true, audioRate: 48000,
				videoStart: 5 * time.Second, audioStart: 5 * time.Second, duration: 5500 * time.Millisecond, audioLead: tc.audioLead}
			pk1, err := NewPackager(pub1, src1.tracks(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			feed(t, pk1, src1, clk, testEpoch)
			pub1.Close()
			snap1 := pub1.Stream.Snapshot()
			parts1 := parseParts(t, snap1)
			lastVideo := parts1[len(parts1)-1].tracks[videoTrackID]
			videoEnd1 := lastVideo.BaseTime + trackDuration(lastVideo)
			var audioEnd1 uint64
			for _, pp := range parts1 {
				if a := pp.tracks[audioTrackID]; a != nil {
					audioEnd1 = a.BaseTime + trackDuration(a)
				}
			}

			pub2, err := reg.Publish("cam")
			if err != nil {
				t.Fatal(err)
			}
			if !pub2.Resumed || pub2.Generation != 2 {
				t.Fatalf("second publication Resumed %v Generation %d", pub2.Resumed, pub2.Generation)
			}
			// The new publication starts where the old one's media ended: the
			// later of its tracks' ends, so no track's decode time goes back.
			end1 := max(ticksToDuration(videoEnd1, videoRate), ticksToDuration(audioEnd1, 48000))
			if absDur(pub2.MediaStart-end1) > time.Microsecond {
				t.Errorf("MediaStart %v; the first publication's video ended at %v and its audio at %v",
					pub2.MediaStart, ticksToDuration(videoEnd1, videoRate), ticksToDuration(audioEnd1, 48000))
			}
			// The new encoder's clock starts from zero, at a later wall time.
			src2 := source{fpsNum: 30, fpsDen: 1, gopFrames: 60, msTimestamps: true, audioRate: 48000,
				videoStart: 0, audioStart: 0, duration: 4 * time.Second}
			pk2, err := NewPackager(pub2, src2.tracks(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			wall2 := testEpoch.Add(time.Minute)
			feed(t, pk2, src2, clk, wall2)
			pub2.Close()

			snap := pub2.Stream.Snapshot()
			n1 := len(snap1.Segments)
			if len(snap.Segments) <= n1 {
				t.Fatalf("%d segments after the second publication, %d before", len(snap.Segments), n1)
			}
			for i, seg := range snap.Segments {
				if want := i == n1; seg.Discontinuity != want {
					t.Errorf("segment %d Discontinuity %v, want %v", seg.MSN, seg.Discontinuity, want)
				}
				wantInit := uint64(1)
				if i >= n1 {
					wantInit = 2
				}
				if seg.Init.ID != wantInit {
					t.Errorf("segment %d init ID %d, want %d", seg.MSN, seg.Init.ID, wantInit)
				}
				if seg.MSN != uint64(i) {
					t.Errorf("segment %d at index %d", seg.MSN, i)
				}
			}
			if first2 := snap.Segments[n1]; !first2.Start.Equal(wall2) || !first2.Parts[0].Independent {
				t.Errorf("first segment of the second publication: Start %v (want %v), independent %v", first2.Start, wall2, first2.Parts[0].Independent)
			}
			parts := parseParts(t, snap)
			checkStructure(t, cfg, parts)
			p2 := parts[len(parts1)]
			if p2.seg != snap.Segments[n1] || p2.idx != 0 {
				t.Fatal("part bookkeeping")
			}
			if got, want := p2.tracks[videoTrackID].BaseTime, uint64((int64(pub2.MediaStart)*videoRate+int64(time.Second)/2)/int64(time.Second)); got != want || got < videoEnd1 {
				t.Errorf("video resumes at %d, want MediaStart %v = %d (first publication's video ended at %d)", got, pub2.MediaStart, want, videoEnd1)
			}
			// All of the second publication's media made it.
			var v2, a2, wantV2, wantA2 int
			for _, pp := range parts[len(parts1):] {
				v2 += len(pp.tracks[videoTrackID].Samples)
				if a := pp.tracks[audioTrackID]; a != nil {
					a2 += len(a.Samples)
				}
			}
			for _, ev := range src2.events() {
				if ev.video {
					wantV2++
				} else {
					wantA2++
				}
			}
			if v2 != wantV2 || a2 != wantA2-1 {
				t.Errorf("second publication: %d video and %d audio samples, sent %d and %d (the last audio frame stays pending)", v2, a2, wantV2, wantA2)
			}
			for _, pp := range parts[len(parts1):] {
				if a := pp.tracks[audioTrackID]; a != nil {
					if a.BaseTime < audioEnd1 {
						t.Errorf("audio of the second publication starts at %d (%v), before the first publication's audio ended at %d (%v): decode time goes backwards",
							a.BaseTime, ticksToDuration(a.BaseTime, 48000), audioEnd1, ticksToDuration(audioEnd1, 48000))
					}
					break
				}
			}
		})
	}
}

// RFC 8216bis 4.4.4.9: "The duration of a Partial Segment MUST be less
// than or equal to the Part Target Duration." The edge advertises the
// stream's PartTarget as PART-TARGET, so parts must not exceed it. At
// 29.97 fps six frames span 200.2 ms (200 or 201 ms with millisecond
// timestamps) and five span 166.8 ms, below the 85% floor: no cutting
// meets PART-TARGET=0.200, so what is advertised must cover the slack.
func TestPartsFitAdvertisedPartTarget(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  source
	}{
		{"29.97fps-ms", source{fpsNum: 30000, fpsDen: 1001, gopFrames: 60, msTimestamps: true, audioRate: 48000, duration: 10 * time.Second}},
		{"29.97fps-90k", source{fpsNum: 30000, fpsDen: 1001, gopFrames: 60, audioRate: 48000, duration: 10 * time.Second}},
		{"30fps-ms", source{fpsNum: 30, fpsDen: 1, gopFrames: 60, msTimestamps: true, audioRate: 48000, duration: 10 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newTestRegistry()
			defer reg.Close()
			pub, _ := reg.Publish("cam")
			clk := &clock{}
			// As cmd/relaymesh wires it: --part-target 200ms goes to both
			// the registry (whose streams advertise it) and the packager.
			cfg := PackagerConfig{PartTarget: 200 * time.Millisecond, MinSegment: time.Second, Now: clk.Now}
			pk, err := NewPackager(pub, tc.src.tracks(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			feed(t, pk, tc.src, clk, testEpoch)
			snap := pub.Stream.Snapshot()
			var over []string
			for _, seg := range snap.Segments {
				for _, p := range seg.Parts {
					if p.Duration > pub.Stream.PartTarget {
						over = append(over, fmt.Sprintf("part %d: %v", p.N, p.Duration))
					}
				}
			}
			if len(over) > 0 {
				t.Errorf("%d parts are longer than the stream's PartTarget %v (advertised as PART-TARGET): %s",
					len(over), pub.Stream.PartTarget, strings.Join(over[:min(len(over), 5)], ", "))
			}
			// And as a player sees it.
			pl := string(edge.RenderMedia(snap, pub.Stream.PartTarget, false))
			m := regexp.MustCompile(`PART-TARGET=([0-9.]+)`).FindStringSubmatch(pl)
			if m == nil {
				t.Fatal("no PART-TARGET")
			}
			target, _ := strconv.ParseFloat(m[1], 64)
			for _, d := range regexp.MustCompile(`#EXT-X-PART:DURATION=([0-9.]+)`).FindAllStringSubmatch(pl, -1) {
				if v, _ := strconv.ParseFloat(d[1], 64); v > target {
					t.Errorf("playlist has #EXT-X-PART:DURATION=%s > PART-TARGET=%s", d[1], m[1])
					break
				}
			}
		})
	}
}

// WriteH264 skips empty NAL units; an access unit holding one must not
// bring the packager down.
func TestWriteH264EmptyNALU(t *testing.T) {
	for _, tc := range []struct {
		name string
		au   [][]byte
	}{
		{"empty before IDR", [][]byte{{}, {0x65, 0x88, 0x84}}},
		{"empty after non-IDR", [][]byte{{0x41, 0x9a}, {}}},
		{"empty between SPS and IDR", [][]byte{testSPS, {}, {0x65, 0x88}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newTestRegistry()
			defer reg.Close()
			pub, _ := reg.Publish("cam")
			pk, err := NewPackager(pub, []Track{h264Track()}, PackagerConfig{})
			if err != nil {
				t.Fatal(err)
			}
			if err := pk.WriteH264(0, 0, 0, videoAU(0, true)); err != nil {
				t.Fatal(err)
			}
			func() {
				defer func() {
					if v := recover(); v != nil {
						t.Errorf("WriteH264(%x) panicked: %v", tc.au, v)
					}
				}()
				pk.WriteH264(0, 40*time.Millisecond, 40*time.Millisecond, tc.au) //nolint:errcheck
			}()
		})
	}
}

// FuzzPackager feeds the packager access units built from fuzz bytes, as a
// hostile or broken encoder could send them, and checks that it never
// panics and that what it writes stays well formed.
//
// Each access unit is: flags (bit 0 audio, bit 1 keyframe, bits 2-3 extra
// NAL units), a timestamp step in ms, then per NAL unit a length byte
// (0-15) and that many bytes.
func FuzzPackager(f *testing.F) {
	seed := func(aus ...[]byte) []byte { return bytes.Join(aus, nil) }
	idr := []byte{0x02, 0, 4, 0x65, 0x88, 0x84, 0x00}
	p := []byte{0x00, 33, 3, 0x41, 0x9a, 0x01}
	a := []byte{0x01, 21, 4, 0x21, 0x10, 0x00, 0x05}
	f.Add(seed(idr, p, a, p, a, p, idr, p))
	f.Add(seed(a, a, p, idr, p, a, p, a, p, a, idr))
	f.Add(seed(idr, []byte{0x00, 0, 2, 0x41, 0x9a}, p, []byte{0x00, 255, 2, 0x41, 0x9a}, idr))
	f.Add(seed(idr, []byte{0x0a, 40, 1, 0x09, 3, 0x67, 0x64, 0x00, 4, 0x65, 1, 2, 3}))
	f.Fuzz(func(t *testing.T, data []byte) {
		reg := newTestRegistry()
		defer reg.Close()
		pub, _ := reg.Publish("cam")
		cfg := PackagerConfig{PartTarget: 100 * time.Millisecond, MinSegment: 300 * time.Millisecond}
		pk, err := NewPackager(pub, []Track{h264Track(), aacTrack(48000)}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var ts time.Duration
		for len(data) >= 2 {
			flags, step := data[0], data[1]
			data = data[2:]
			ts += time.Duration(step) * time.Millisecond
			var au [][]byte
			for range 1 + int(flags>>2&3) {
				if len(data) == 0 {
					break
				}
				n := int(data[0] & 15)
				data = data[1:]
				n = min(n, len(data))
				au = append(au, data[:n])
				data = data[n:]
			}
			if flags&1 != 0 {
				if len(au) > 0 {
					pk.WriteMPEG4Audio(1, ts, au[0]) //nolint:errcheck
				}
				continue
			}
			pk.WriteH264(0, ts+time.Duration(flags>>4)*time.Millisecond, ts, au) //nolint:errcheck
		}
		pk.Close()
		pub.Close()

		snap := pub.Stream.Snapshot()
		next := map[int]uint64{}
		for _, seg := range snap.Segments {
			for i, p := range seg.Parts {
				pp := parsePart(t, p)
				v := pp.tracks[videoTrackID]
				if v == nil || len(v.Samples) == 0 {
					t.Fatalf("part %d has no video", p.N)
				}
				if i == 0 && (!p.Independent || v.Samples[0].IsNonSyncSample) {
					t.Fatalf("segment %d does not start with a sync sample", seg.MSN)
				}
				for id, tr := range pp.tracks {
					if want, ok := next[id]; ok && tr.BaseTime != want {
						t.Fatalf("part %d track %d: BaseTime %d, want %d", p.N, id, tr.BaseTime, want)
					}
					next[id] = tr.BaseTime + trackDuration(tr)
					for _, s := range tr.Samples {
						if s.Duration == 0 || s.Duration > math.MaxInt32 {
							t.Fatalf("part %d track %d: sample duration %d", p.N, id, s.Duration)
						}
					}
				}
			}
		}
	})
}

// The parts' payloads are AVCC: length-prefixed NAL units without the
// parameter sets and delimiters, which travel in the init segment.
func TestSamplePayloadIsAVCC(t *testing.T) {
	reg := newTestRegistry()
	defer reg.Close()
	pub, _ := reg.Publish("cam")
	pk, err := NewPackager(pub, []Track{h264Track()}, PackagerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if err := pk.WriteH264(0, 0, 0, videoAU(0, true)); err != nil {
		t.Fatal(err)
	}
	pk.Close()
	parts := parseParts(t, pub.Stream.Snapshot())
	payload := parts[0].tracks[videoTrackID].Samples[0].Payload
	idr := videoAU(0, true)[3]
	want := binary.BigEndian.AppendUint32(nil, uint32(len(idr)))
	want = append(want, idr...)
	if !bytes.Equal(payload, want) {
		t.Fatalf("sample payload %x, want %x", payload, want)
	}
}
