package ingest

import (
	"bytes"
	"encoding/hex"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2/pkg/codecparams"
	hlscodecs "github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/relaymesh/relaymesh/relay"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// Parameter sets written by libx265 (320x240 and 640x360, Main profile) and
// libx264 (640x360, High profile).
var (
	testVPS265    = mustHex("40010c01ffff01600000030090000003000003003c959809")
	testSPS265    = mustHex("42010101600000030090000003000003003ca00a080f165959a4932bc05a020000030002000003003c10")
	testPPS265    = mustHex("4401c172b46240")
	testVPS265big = mustHex("40010c01ffff01600000030090000003000003003f959809")
	testSPS265big = mustHex("42010101600000030090000003000003003fa00502016965959a4932bc05a020000003002000000303c1")
	testSPS360    = mustHex("6764001eacd940a02ff970110000030001000003003c0f162d96")
)

func h265Track() Track {
	return Track{Codec: &mp4codecs.H265{VPS: testVPS265, SPS: testSPS265, PPS: testPPS265}}
}

func h265AU(k int, key bool) [][]byte {
	if key { // IDR_W_RADL
		return [][]byte{testVPS265, testSPS265, testPPS265, {0x26, 0x01, 0xaf, byte(k), 0x10}}
	}
	return [][]byte{{0x02, 0x01, 0xd0, byte(k), 0x20}} // TRAIL_R
}

// opusPacket is one 20 ms CELT fullband frame (TOC config 31, code 0).
func opusPacket(j int) []byte { return []byte{0xf8, 0xff, 0xfe, byte(j)} }

func TestCodecsString(t *testing.T) {
	for _, tc := range []struct {
		name  string
		track Track
		hls   hlscodecs.Codec
		want  string
	}{
		{"H.264", h264Track(), &hlscodecs.H264{SPS: testSPS, PPS: testPPS}, "avc1.64001f"},
		{"H.265", h265Track(), &hlscodecs.H265{VPS: testVPS265, SPS: testSPS265, PPS: testPPS265}, "hvc1.1.6.L60.90"},
		{"H.265 level 3", Track{Codec: &mp4codecs.H265{VPS: testVPS265big, SPS: testSPS265big, PPS: testPPS265}},
			&hlscodecs.H265{VPS: testVPS265big, SPS: testSPS265big, PPS: testPPS265}, "hvc1.1.6.L63.90"},
		{"AAC-LC", aacTrack(48000), nil, "mp4a.40.2"},
		{"Opus", Track{Codec: &mp4codecs.Opus{ChannelCount: 2}}, &hlscodecs.Opus{ChannelCount: 2}, "opus"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := buildInit([]Track{tc.track}, 1)
			if err != nil {
				t.Fatal(err)
			}
			if in.Codecs != tc.want {
				t.Fatalf("CODECS %q, want %q", in.Codecs, tc.want)
			}
			// gohlslib, a real HLS client, derives the same string.
			if tc.hls != nil {
				if got := codecparams.Marshal(tc.hls); !strings.EqualFold(got, tc.want) {
					t.Fatalf("gohlslib says %q, we say %q", got, tc.want)
				}
			}
		})
	}
}

func TestHEVCCodecRejectsShortSPS(t *testing.T) {
	for _, sps := range [][]byte{nil, {0x42}, {0x42, 0x01, 0x01, 0x01}} {
		if s, err := hevcCodec(sps); err == nil {
			t.Errorf("hevcCodec(%x) = %q, want error", sps, s)
		}
	}
}

func FuzzHEVCCodec(f *testing.F) {
	f.Add(testSPS265)
	f.Add(testSPS265big)
	f.Fuzz(func(t *testing.T, sps []byte) {
		s, err := hevcCodec(sps)
		if err == nil && !strings.HasPrefix(s, "hvc1.") {
			t.Fatalf("hevcCodec = %q", s)
		}
	})
}

func TestH265AndOpus(t *testing.T) {
	reg := newTestRegistry()
	defer reg.Close()
	pub, _ := reg.Publish("hevc")
	pk, err := NewPackager(pub, []Track{h265Track(), {Codec: &mp4codecs.Opus{ChannelCount: 2}}}, PackagerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var in fmp4.Init
	if err := in.Unmarshal(bytes.NewReader(pk.Init().Data)); err != nil {
		t.Fatalf("init segment does not parse: %v", err)
	}
	if _, ok := in.Tracks[0].Codec.(*mp4codecs.H265); !ok || in.Tracks[0].TimeScale != 90000 {
		t.Fatalf("video track %T at %d Hz", in.Tracks[0].Codec, in.Tracks[0].TimeScale)
	}
	if c, ok := in.Tracks[1].Codec.(*mp4codecs.Opus); !ok || c.ChannelCount != 2 || in.Tracks[1].TimeScale != 48000 {
		t.Fatalf("audio track %T at %d Hz", in.Tracks[1].Codec, in.Tracks[1].TimeScale)
	}
	if pk.Init().Width != 320 || pk.Init().Height != 240 {
		t.Fatalf("init says %dx%d", pk.Init().Width, pk.Init().Height)
	}
	// 3 s at 30 fps with a keyframe every second; Opus every 20 ms with
	// 90 kHz jitter, as MPEG-TS delivers it.
	frame := time.Second / 30
	for k, j := 0, 0; k < 90; k++ {
		ts := time.Duration(k) * frame
		if err := pk.WriteH265(0, ts, ts, h265AU(k, k%30 == 0)); err != nil {
			t.Fatal(err)
		}
		for ; time.Duration(j)*20*time.Millisecond < ts+frame; j++ {
			at := time.Duration(j)*20*time.Millisecond + time.Duration(j%3)*11*time.Microsecond
			if err := pk.WriteOpus(1, at, opusPacket(j)); err != nil {
				t.Fatal(err)
			}
		}
	}
	pk.Close()
	snap := pub.Stream.Snapshot()
	if len(snap.Segments) != 3 {
		t.Fatalf("%d segments, want 3", len(snap.Segments))
	}
	var opusSamples int
	for _, p := range parseParts(t, snap) {
		if a := p.tracks[2]; a != nil {
			for _, s := range a.Samples {
				if s.Duration != 960 {
					t.Fatalf("Opus sample of %d ticks, want 960", s.Duration)
				}
				opusSamples++
			}
		}
		if v := p.tracks[1]; v != nil && p.idx == 0 && v.Samples[0].IsNonSyncSample {
			t.Fatalf("segment %d starts with a non-sync sample", p.seg.MSN)
		}
	}
	if opusSamples < 140 {
		t.Fatalf("%d Opus samples packaged, want about 150", opusSamples)
	}
}

// Video parameter sets that arrive only in-band (MPEG-TS, RTSP without
// sprop) are learned from the first keyframe that carries them.
func TestInBandParameterSets(t *testing.T) {
	reg := newTestRegistry()
	defer reg.Close()
	pub, _ := reg.Publish("ts")
	pk, err := NewPackager(pub, []Track{{Codec: &mp4codecs.H264{}}, aacTrack(48000)}, PackagerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if pk.Init() != nil {
		t.Fatal("init segment built without SPS and PPS")
	}
	frame := time.Second / 30
	bare := [][]byte{{0x65, 0x88, 0x84, 0x00}} // an IDR slice without parameter sets
	for k := 0; k < 3; k++ {
		ts := time.Duration(k) * frame
		if err := pk.WriteH264(0, ts, ts, bare); err != nil {
			t.Fatal(err)
		}
		if err := pk.WriteMPEG4Audio(1, ts, audioAU(k)); err != nil {
			t.Fatal(err)
		}
	}
	if pk.Init() != nil || len(pub.Stream.Snapshot().Segments) != 0 {
		t.Fatal("media packaged before the parameter sets were known")
	}
	for k := 3; k < 60; k++ {
		ts := time.Duration(k) * frame
		if err := pk.WriteH264(0, ts, ts, videoAU(k, k%30 == 3)); err != nil {
			t.Fatal(err)
		}
	}
	pk.Close()
	if pk.Init() == nil || pk.Init().Width != 1280 {
		t.Fatalf("init %+v after an in-band SPS", pk.Init())
	}
	snap := pub.Stream.Snapshot()
	if len(snap.Segments) == 0 || snap.Segments[0].Init != pk.Init() || snap.Segments[0].Discontinuity {
		t.Fatalf("segments %+v", snap.Segments)
	}
}

// A new SPS at a keyframe (the encoder changed resolution) ends the
// segment and starts a new one with a new init segment after a
// discontinuity, and the decode timeline carries on.
func TestParameterChangeStartsNewInit(t *testing.T) {
	reg := newTestRegistry()
	defer reg.Close()
	pub, _ := reg.Publish("cam")
	pk, err := NewPackager(pub, []Track{h264Track()}, PackagerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	frame := time.Second / 30
	for k := 0; k < 120; k++ {
		ts := time.Duration(k) * frame
		au := videoAU(k, k%30 == 0)
		if k >= 45 {
			au = slicesReplace(au, testSPS, testSPS360)
		}
		if err := pk.WriteH264(0, ts, ts, au); err != nil {
			t.Fatal(err)
		}
	}
	pk.Close()
	snap := pub.Stream.Snapshot()
	var inits []*relay.Init
	var discAt int
	for i, seg := range snap.Segments {
		if len(inits) == 0 || inits[len(inits)-1] != seg.Init {
			inits = append(inits, seg.Init)
		}
		if seg.Discontinuity {
			discAt = i
		}
	}
	if len(inits) != 2 {
		t.Fatalf("%d init segments, want 2", len(inits))
	}
	if inits[0].ID == inits[1].ID || inits[1].Width != 640 || inits[1].Height != 360 || inits[1].Codecs != "avc1.64001e" {
		t.Fatalf("inits %+v then %+v", inits[0], inits[1])
	}
	if discAt == 0 || snap.Segments[discAt].Init != inits[1] || snap.Segments[discAt-1].Init != inits[0] {
		t.Fatalf("discontinuity at segment %d", discAt)
	}
	// The new SPS came with the keyframe at frame 60 (2 s), so the old
	// parameters cover frames 0-59 and decode time runs on without a gap.
	parts := parseParts(t, snap)
	var end uint64
	for i, p := range parts {
		v := p.tracks[videoTrackID]
		if i > 0 && v.BaseTime != end {
			t.Fatalf("part %d starts at %d, previous ended at %d", p.part.N, v.BaseTime, end)
		}
		end = v.BaseTime + trackDuration(v)
	}
	if first := snap.Segments[discAt].Parts[0]; first == nil || !first.Independent {
		t.Fatal("segment after the change does not start with a keyframe")
	}
	if got := time.Duration(end) * time.Second / videoRate; got < 3990*time.Millisecond || got > 4010*time.Millisecond {
		t.Fatalf("timeline ends at %v, want 4s", got)
	}
}

func slicesReplace(au [][]byte, old, new []byte) [][]byte {
	out := make([][]byte, len(au))
	for i, n := range au {
		if bytes.Equal(n, old) {
			n = new
		}
		out[i] = n
	}
	return out
}

// Reconfigure applies a new track set announced out of band (a new RTMP
// sequence header).
func TestReconfigure(t *testing.T) {
	reg := newTestRegistry()
	defer reg.Close()
	pub, _ := reg.Publish("cam")
	pk, err := NewPackager(pub, []Track{h264Track(), aacTrack(44100)}, PackagerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	frame := time.Second / 30
	write := func(from, to int) {
		for k := from; k < to; k++ {
			ts := time.Duration(k) * frame
			if err := pk.WriteH264(0, ts, ts, videoAU(k, k%30 == 0)); err != nil {
				t.Fatal(err)
			}
			if err := pk.WriteMPEG4Audio(1, ts, audioAU(k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(0, 40)
	first := pk.Init()
	if err := pk.Reconfigure([]Track{{Codec: &mp4codecs.VP9{}}}); err == nil {
		t.Fatal("Reconfigure to VP9 succeeded")
	}
	if err := pk.Reconfigure([]Track{h264Track(), aacTrack(48000)}); err != nil {
		t.Fatal(err)
	}
	write(40, 100)
	pk.Close()
	if pk.Init() == first || pk.Init().ID <= first.ID {
		t.Fatal("no new init segment")
	}
	var in fmp4.Init
	if err := in.Unmarshal(bytes.NewReader(pk.Init().Data)); err != nil || in.Tracks[1].TimeScale != 48000 {
		t.Fatalf("new init: %v, %+v", err, in.Tracks)
	}
	var discs int
	for _, seg := range pub.Stream.Snapshot().Segments {
		if seg.Discontinuity {
			discs++
			if seg.Init != pk.Init() {
				t.Fatal("discontinuity without the new init")
			}
		}
	}
	if discs != 1 {
		t.Fatalf("%d discontinuities, want 1", discs)
	}
}

// FuzzPackagerH265Opus feeds H.265 access units whose parameter sets
// arrive in-band and change, mixed with Opus packets: the packager must
// not panic, every segment must start with a sync sample, and decode time
// must never go backwards, running on without gaps between discontinuities.
func FuzzPackagerH265Opus(f *testing.F) {
	f.Add([]byte{0, 33, 2, 33, 1, 20, 2, 33, 3, 40, 1, 20, 0, 33, 2, 33})
	f.Add([]byte{3, 10, 0, 33, 2, 33, 4, 5, 1, 33, 2, 33, 1, 20})
	f.Fuzz(func(t *testing.T, data []byte) {
		reg := newTestRegistry()
		defer reg.Close()
		pub, _ := reg.Publish("hevc")
		cfg := PackagerConfig{PartTarget: 100 * time.Millisecond, MinSegment: 300 * time.Millisecond}
		pk, err := NewPackager(pub, []Track{{Codec: &mp4codecs.H265{}}, {Codec: &mp4codecs.Opus{ChannelCount: 2}}}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var ts time.Duration
		k := 0
		for len(data) >= 2 {
			op, step := data[0], data[1]
			data = data[2:]
			ts += time.Duration(step) * time.Millisecond
			k++
			switch op % 6 {
			case 0: // keyframe with the small parameter sets
				pk.WriteH265(0, ts, ts, h265AU(k, true)) //nolint:errcheck
			case 1: // keyframe with the big ones: a resolution change
				pk.WriteH265(0, ts, ts, [][]byte{testVPS265big, testSPS265big, testPPS265, {0x26, 0x01, 0xaf, byte(k)}}) //nolint:errcheck
			case 2:
				pk.WriteH265(0, ts, ts, h265AU(k, false)) //nolint:errcheck
			case 3: // a raw NAL unit from the input
				n := min(int(op>>3), len(data))
				pk.WriteH265(0, ts, ts, [][]byte{data[:n]}) //nolint:errcheck
				data = data[n:]
			default:
				pk.WriteOpus(1, ts, opusPacket(k)) //nolint:errcheck
			}
		}
		pk.Close()
		pub.Close()

		end := map[int]uint64{}
		for _, seg := range pub.Stream.Snapshot().Segments {
			for i, p := range seg.Parts {
				pp := parsePart(t, p)
				if v := pp.tracks[videoTrackID]; i == 0 && (v == nil || !p.Independent || v.Samples[0].IsNonSyncSample) {
					t.Fatalf("segment %d does not start with a sync sample", seg.MSN)
				}
				for id, tr := range pp.tracks {
					if prev, ok := end[id]; ok {
						if tr.BaseTime < prev || (tr.BaseTime != prev && !(i == 0 && seg.Discontinuity) && id == videoTrackID) {
							t.Fatalf("part %d track %d: BaseTime %d after %d", p.N, id, tr.BaseTime, prev)
						}
					}
					end[id] = tr.BaseTime + trackDuration(tr)
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
