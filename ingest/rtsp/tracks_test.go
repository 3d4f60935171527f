package rtsp

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
	"github.com/pion/rtp"

	"github.com/relaymesh/relaymesh/ingest"
)

func TestTicksToDuration(t *testing.T) {
	for _, tc := range []struct {
		ticks, clock int64
		want         time.Duration
	}{
		{90000, 90000, time.Second},
		{1, 90000, 11111 * time.Nanosecond},
		{48000 * 3600 * 24 * 365, 48000, 365 * 24 * time.Hour},
		{-90000, 90000, -time.Second},
	} {
		if got := ticksToDuration(tc.ticks, tc.clock); got != tc.want {
			t.Errorf("ticksToDuration(%d, %d) = %v, want %v", tc.ticks, tc.clock, got, tc.want)
		}
	}
}

func TestSelectTracks(t *testing.T) {
	g711 := &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{&format.G711{PayloadTyp: 8, SampleRate: 8000, ChannelCount: 1}}}
	m := testMedias()
	opusAfterG711 := &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{
		&format.G711{PayloadTyp: 8, SampleRate: 8000, ChannelCount: 1}, &format.Opus{PayloadTyp: 111, ChannelCount: 2},
	}}
	tracks, ignored := selectTracks([]*description.Media{g711, opusAfterG711, m[2], m[0], m[1]})
	if len(tracks) != 2 {
		t.Fatalf("%d tracks, want 2", len(tracks))
	}
	if _, ok := tracks[0].codec.(*mp4codecs.H265); !ok || tracks[0].index != 0 {
		t.Errorf("track 0 is %T at %d, want the first video, H.265, at 0", tracks[0].codec, tracks[0].index)
	}
	if _, ok := tracks[1].codec.(*mp4codecs.Opus); !ok || tracks[1].index != 1 {
		t.Errorf("track 1 is %T at %d, want the first usable audio, Opus, at 1", tracks[1].codec, tracks[1].index)
	}
	if len(ignored) != 3 {
		t.Errorf("ignored %v, want G711, the second video and the second audio", ignored)
	}
	if tracks, _ := selectTracks([]*description.Media{g711}); len(tracks) != 0 {
		t.Errorf("G711 selected")
	}
}

// Parameter sets that cannot be parsed are left for the packager to learn
// in-band.
func TestBrokenSDPParameterSets(t *testing.T) {
	m := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{
		PayloadTyp: 96, SPS: []byte{0x67, 1, 2, 3, 4, 5}, PPS: testH264PPS, PacketizationMode: 1,
	}}}
	tracks, _ := selectTracks([]*description.Media{m})
	if len(tracks) != 1 {
		t.Fatal("H.264 track not selected")
	}
	if c := tracks[0].codec.(*mp4codecs.H264); c.SPS != nil || c.PPS != nil {
		t.Errorf("broken SPS kept: %x %x", c.SPS, c.PPS)
	}
}

// recordingSink checks what tracks write.
type recordingSink struct {
	t      *testing.T
	tracks []*track
	writes int
}

func (s *recordingSink) check(track int, video bool, au [][]byte) {
	if track < 0 || track >= len(s.tracks) || s.tracks[track].codec.IsVideo() != video {
		s.t.Fatalf("write to track %d of the wrong kind", track)
	}
	for _, n := range au {
		if len(n) == 0 {
			s.t.Fatalf("empty NAL unit written")
		}
	}
	s.writes++
}

func (s *recordingSink) WriteH264(track int, pts, dts time.Duration, au [][]byte) error {
	s.check(track, true, au)
	if dts > pts {
		s.t.Fatalf("H.264 DTS %v after PTS %v", dts, pts)
	}
	return nil
}

func (s *recordingSink) WriteH265(track int, pts, dts time.Duration, au [][]byte) error {
	s.check(track, true, au)
	if dts > pts {
		s.t.Fatalf("H.265 DTS %v after PTS %v", dts, pts)
	}
	return nil
}

func (s *recordingSink) WriteMPEG4Audio(track int, _ time.Duration, au []byte) error {
	s.check(track, false, nil)
	return nil
}

func (s *recordingSink) WriteOpus(track int, _ time.Duration, packet []byte) error {
	s.check(track, false, nil)
	return nil
}

// An encoder that announces SPS and PPS only in the SDP (as ffmpeg does)
// gets them put in front of every IDR, so DTS extraction can start.
func TestH264ParameterSetsFromSDP(t *testing.T) {
	sps := []byte{0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfa, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60}
	var parsed h264.SPS
	if err := parsed.Unmarshal(sps); err != nil {
		t.Fatalf("test SPS: %v", err)
	}
	m := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{
		PayloadTyp: 96, SPS: sps, PPS: testH264PPS, PacketizationMode: 1,
	}}}
	tracks, _ := selectTracks([]*description.Media{m})
	var got [][]byte
	w := &auSink{write: func(au [][]byte) { got = au }}
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	idr := []byte{0x65, 0x88, 0x84, 0x00, 0x33, 0xff}
	pkts, err := enc.Encode([][]byte{idr})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pkts {
		if err := tracks[0].push(w, p, 0); err != nil {
			t.Fatalf("push: %v", err)
		}
	}
	if len(got) != 3 || got[0][0] != 0x67 || got[1][0] != 0x68 || got[2][0] != 0x65 {
		t.Fatalf("access unit %x, want SPS, PPS, IDR", got)
	}
}

type auSink struct{ write func([][]byte) }

func (s *auSink) WriteH264(_ int, _, _ time.Duration, au [][]byte) error { s.write(au); return nil }
func (s *auSink) WriteH265(_ int, _, _ time.Duration, au [][]byte) error { s.write(au); return nil }
func (s *auSink) WriteMPEG4Audio(int, time.Duration, []byte) error       { return nil }
func (s *auSink) WriteOpus(int, time.Duration, []byte) error             { return nil }

// FuzzTracks feeds arbitrary RTP packets to every codec's track: no
// panic, and whatever is written is well-formed.
func FuzzTracks(f *testing.F) {
	f.Add([]byte("\x00\x00\x05\x01\x65\x88\x84\x00\x33"))
	f.Add([]byte("\x01\x00\x05\x01\x00\x10\x00\x18\xab\xcd\xef"))
	f.Add([]byte("\x02\x00\x04\x01\x26\x01\xaf\x00"))
	f.Add([]byte("\x03\x00\x03\x01\xfc\xff\xfe"))
	f.Add([]byte("\x00\x00\x04\x00\x7c\x85\xaa\xbb\x00\x00\x04\x01\x7c\x45\xcc\xdd"))
	f.Fuzz(func(t *testing.T, data []byte) {
		medias := testMedias()
		// Two sessions, as selectTracks packages one video and one audio.
		sets := [][]*track{}
		for _, pair := range [][]*description.Media{medias[:2], medias[2:]} {
			tracks, _ := selectTracks(pair)
			if len(tracks) != 2 {
				t.Fatalf("selectTracks: %d tracks", len(tracks))
			}
			sets = append(sets, tracks)
		}
		sinks := []*recordingSink{{t: t, tracks: sets[0]}, {t: t, tracks: sets[1]}}
		seq := uint16(0)
		var ts int64
		// Each packet: track byte, 2-byte length, flags byte, payload.
		for len(data) >= 4 {
			sel := int(data[0]) % 4
			n := int(binary.BigEndian.Uint16(data[1:3]))
			flags := data[3]
			data = data[4:]
			n = min(n, len(data))
			payload := data[:n]
			data = data[n:]
			set, sink := sets[sel/2], sinks[sel/2]
			tr := set[sel%2]
			seq += 1 + uint16(flags>>6) // sometimes a gap, as after loss
			ts += int64(flags&0x0f) * 1500
			pkt := &rtp.Packet{
				Header:  rtp.Header{Version: 2, PayloadType: tr.format.PayloadType(), SequenceNumber: seq, Timestamp: uint32(ts), Marker: flags&0x10 != 0},
				Payload: payload,
			}
			if err := tr.push(sink, pkt, ts); err != nil {
				_ = fmt.Sprint(err) // bad input is reported, never fatal
			}
		}
	})
}

// FuzzSDPParameterSets announces arbitrary parameter sets: selecting the
// tracks never panics, and the tracks can always be packaged, at worst by
// learning the parameter sets in-band.
func FuzzSDPParameterSets(f *testing.F) {
	f.Add(testH264SPS, testH264PPS, testH265VPS)
	f.Add(testH265SPS, testH265PPS, testH265VPS)
	f.Add([]byte{0x67}, []byte{}, []byte{0x40})
	f.Fuzz(func(t *testing.T, sps, pps, vps []byte) {
		medias := []*description.Media{
			{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{PayloadTyp: 96, SPS: sps, PPS: pps, PacketizationMode: 1}}},
			{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H265{PayloadTyp: 97, VPS: vps, SPS: sps, PPS: pps}}},
		}
		for _, m := range medias {
			tracks, _ := selectTracks([]*description.Media{m})
			if len(tracks) != 1 {
				t.Fatalf("%d tracks", len(tracks))
			}
			reg := newRegistry(slog.New(slog.DiscardHandler))
			gate := newGate(reg, slog.New(slog.DiscardHandler))
			sess, err := gate.Admit(ingest.Request{Stream: "s", Proto: "rtsp"})
			if err != nil {
				t.Fatal(err)
			}
			if err := sess.SetTracks(ingestTracks(tracks)); err != nil {
				if err := sess.SetTracks(withoutParams(tracks)); err != nil {
					t.Fatalf("tracks cannot be packaged even without parameter sets: %v", err)
				}
			}
			// An IDR with the announced parameter sets in front.
			pkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: tracks[0].format.PayloadType(), Marker: true}, Payload: []byte{0x65, 0x88, 0x84}}
			if _, ok := tracks[0].codec.(*mp4codecs.H265); ok {
				pkt.Payload = []byte{0x26, 0x01, 0xaf}
			}
			tracks[0].push(sess, pkt, 0) //nolint:errcheck // bad input is fine, a panic is not
			sess.Close()
			reg.Close()
		}
	})
}

// A camera that sends SPS and PPS as an access unit of their own, and not
// in the SDP, gets them put in front of the next IDR.
func TestH264ParameterSetsInBandAlone(t *testing.T) {
	m := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{&format.H264{PayloadTyp: 96, PacketizationMode: 1}}}
	tracks, _ := selectTracks([]*description.Media{m})
	if c := tracks[0].codec.(*mp4codecs.H264); c.SPS != nil {
		t.Fatal("parameter sets out of nowhere")
	}
	var got [][][]byte
	w := &auSink{write: func(au [][]byte) { got = append(got, au) }}
	enc := &rtph264.Encoder{PayloadType: 96, PacketizationMode: 1}
	if err := enc.Init(); err != nil {
		t.Fatal(err)
	}
	sps := []byte{0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfa, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60}
	for i, au := range [][][]byte{{sps, testH264PPS}, {{0x65, 0x88, 0x84, 0x00, 0x33, 0xff}}} {
		pkts, err := enc.Encode(au)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pkts {
			if err := tracks[0].push(w, p, int64(i*3000)); err != nil {
				t.Fatalf("push: %v", err)
			}
		}
	}
	if len(got) != 1 || len(got[0]) != 3 || got[0][0][0] != 0x67 || got[0][1][0] != 0x68 || got[0][2][0] != 0x65 {
		t.Fatalf("access units %x, want one: SPS, PPS, IDR", got)
	}
}
