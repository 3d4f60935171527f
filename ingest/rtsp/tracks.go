package rtsp

import (
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpsimpleaudio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
	"github.com/pion/rtp"

	"github.com/relaymesh/relaymesh/ingest"
)

// sink is where a track writes access units: an *ingest.Session.
type sink interface {
	WriteH264(track int, pts, dts time.Duration, au [][]byte) error
	WriteH265(track int, pts, dts time.Duration, au [][]byte) error
	WriteMPEG4Audio(track int, pts time.Duration, au []byte) error
	WriteOpus(track int, pts time.Duration, packet []byte) error
}

// track turns the RTP packets of one media into access units. Its methods
// are called from one goroutine at a time: the reader of its media.
type track struct {
	index  int // in the session's track list
	media  *description.Media
	format format.Format
	codec  mp4codecs.Codec
	clock  int64 // RTP clock rate

	// push depacketizes one packet whose PTS, in clock ticks, is pts, and
	// writes what completes. It returns bad input as an error; a write
	// error means the session is over.
	push func(w sink, pkt *rtp.Packet, pts int64) error
}

// ticksToDuration converts RTP clock ticks without overflowing int64.
func ticksToDuration(ticks, clock int64) time.Duration {
	secs, rem := ticks/clock, ticks%clock
	return time.Duration(secs)*time.Second + time.Duration(rem*int64(time.Second)/clock)
}

// selectTracks picks the media relaymesh can package: the first video
// (H.264 or H.265) and the first audio (AAC or Opus), video first. It
// describes what it leaves out, for a log line.
func selectTracks(medias []*description.Media) (tracks []*track, ignored []string) {
	var video, audio *track
	for _, m := range medias {
		var picked *track
		for _, f := range m.Formats {
			if picked = newTrack(m, f); picked != nil {
				break
			}
		}
		switch {
		case picked == nil:
			ignored = append(ignored, describeMedia(m)+" (unsupported codec)")
		case picked.codec.IsVideo() && video == nil:
			video = picked
		case !picked.codec.IsVideo() && audio == nil:
			audio = picked
		default:
			ignored = append(ignored, describeMedia(m)+" (only one video and one audio track are packaged)")
		}
	}
	for _, t := range []*track{video, audio} {
		if t != nil {
			t.index = len(tracks)
			tracks = append(tracks, t)
		}
	}
	return tracks, ignored
}

func describeMedia(m *description.Media) string {
	codecs := ""
	for i, f := range m.Formats {
		if i > 0 {
			codecs += "/"
		}
		codecs += f.Codec()
	}
	return fmt.Sprintf("%s track %s", m.Type, codecs)
}

// ingestTracks lists the tracks for ingest.Session.SetTracks.
func ingestTracks(tracks []*track) []ingest.Track {
	out := make([]ingest.Track, len(tracks))
	for i, t := range tracks {
		out[i] = ingest.Track{Codec: t.codec}
	}
	return out
}

// withoutParams returns the tracks' codecs with video parameter sets left
// out, for when those announced in the SDP cannot be packaged: the
// packager then learns them from the first keyframe that carries them.
func withoutParams(tracks []*track) []ingest.Track {
	out := ingestTracks(tracks)
	for i, t := range out {
		switch t.Codec.(type) {
		case *mp4codecs.H264:
			out[i].Codec = &mp4codecs.H264{}
		case *mp4codecs.H265:
			out[i].Codec = &mp4codecs.H265{}
		}
	}
	return out
}

// newTrack returns a track for a format relaymesh packages, or nil.
func newTrack(m *description.Media, f format.Format) *track {
	if f.ClockRate() <= 0 {
		return nil
	}
	t := &track{media: m, format: f, clock: int64(f.ClockRate())}
	switch f := f.(type) {
	case *format.H264:
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil // a packetization mode rtph264 does not handle
		}
		sps, pps := f.SafeParams()
		var parsed h264.SPS
		if len(sps) < 4 || parsed.Unmarshal(sps) != nil || len(pps) == 0 {
			sps, pps = nil, nil // learn them in-band instead
		}
		v := &h264Track{dec: dec, sps: sps, pps: pps}
		t.codec = &mp4codecs.H264{SPS: sps, PPS: pps}
		t.push = func(w sink, pkt *rtp.Packet, pts int64) error { return v.push(w, t, pkt, pts) }
	case *format.H265:
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil
		}
		vps, sps, pps := f.SafeParams()
		var parsed h265.SPS
		if len(vps) == 0 || len(sps) == 0 || parsed.Unmarshal(sps) != nil || len(pps) == 0 {
			vps, sps, pps = nil, nil, nil
		}
		v := &h265Track{dec: dec, vps: vps, sps: sps, pps: pps}
		t.codec = &mp4codecs.H265{VPS: vps, SPS: sps, PPS: pps}
		t.push = func(w sink, pkt *rtp.Packet, pts int64) error { return v.push(w, t, pkt, pts) }
	case *format.MPEG4Audio:
		if f.Config == nil || f.Config.SampleRate <= 0 {
			return nil
		}
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil
		}
		t.codec = &mp4codecs.MPEG4Audio{Config: *f.Config}
		t.push = func(w sink, pkt *rtp.Packet, pts int64) error { return pushAAC(w, t, dec, pkt, pts) }
	case *format.Opus:
		dec, err := f.CreateDecoder()
		if err != nil {
			return nil
		}
		channels := f.ChannelCount
		if channels < 1 || channels > 8 {
			channels = 2
		}
		t.codec = &mp4codecs.Opus{ChannelCount: channels}
		t.push = func(w sink, pkt *rtp.Packet, pts int64) error { return pushOpus(w, t, dec, pkt, pts) }
	default:
		return nil
	}
	return t
}

// errSessionOver wraps a write error: the session ended, so the
// connection must close.
type errSessionOver struct{ err error }

func (e errSessionOver) Error() string { return e.err.Error() }
func (e errSessionOver) Unwrap() error { return e.err }

func over(err error) error {
	if err == nil {
		return nil
	}
	return errSessionOver{err}
}

// waiting reports whether a depacketizer error only means it needs more
// packets: a fragmented unit, or a stream joined midway. Not bad input.
func waiting(err error) bool {
	return errors.Is(err, rtph264.ErrMorePacketsNeeded) ||
		errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious) ||
		errors.Is(err, rtph265.ErrMorePacketsNeeded) ||
		errors.Is(err, rtph265.ErrNonStartingPacketAndNoPrevious) ||
		errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded)
}

// nonEmpty drops empty NAL units, which the parsers downstream index
// without checking.
func nonEmpty(au [][]byte, minLen int) [][]byte {
	out := au[:0:0]
	for _, n := range au {
		if len(n) >= minLen {
			out = append(out, n)
		}
	}
	return out
}

// h264Track keeps what H.264 needs across packets: the parameter sets in
// use and the DTS extractor, which can only start at an IDR.
type h264Track struct {
	dec      *rtph264.Decoder
	dts      h264.DTSExtractor
	synced   bool // dts has seen an IDR since it was last reset
	sps, pps []byte
}

func (v *h264Track) push(w sink, t *track, pkt *rtp.Packet, pts int64) error {
	au, err := v.dec.Decode(pkt)
	if err != nil {
		if waiting(err) {
			return nil
		}
		return fmt.Errorf("depacketize H.264: %w", err)
	}
	au = nonEmpty(au, 1)
	if len(au) == 0 {
		return nil
	}
	var hasSPS, hasPPS, hasPicture bool
	for _, n := range au {
		switch typ := h264.NALUType(n[0] & 0x1f); {
		case typ == h264.NALUTypeSPS:
			v.sps, hasSPS = n, true
		case typ == h264.NALUTypePPS:
			v.pps, hasPPS = n, true
		case typ >= h264.NALUTypeNonIDR && typ <= h264.NALUTypeIDR:
			hasPicture = true
		}
	}
	if !hasPicture {
		// Some cameras send parameter sets (or SEI) as units of their own;
		// they are kept for the next IDR.
		return nil
	}
	random := h264.IsRandomAccess(au)
	if random && (!hasSPS || !hasPPS) && v.sps != nil && v.pps != nil {
		// Encoders that announce parameter sets in the SDP (ffmpeg does)
		// may never repeat them; the DTS extractor and a packager that
		// must learn them in-band both need them at every IDR.
		au = append([][]byte{v.sps, v.pps}, au...)
	}
	if !v.synced {
		if !random {
			return nil // wait for an IDR
		}
		v.dts = h264.DTSExtractor{}
		v.dts.Initialize()
		v.synced = true
	}
	dts, err := v.dts.Extract(au, pts)
	if err != nil {
		v.synced = false
		return fmt.Errorf("H.264 decode time: %w", err)
	}
	return over(w.WriteH264(t.index, ticksToDuration(pts, t.clock), ticksToDuration(dts, t.clock), au))
}

// h265Track is h264Track for H.265.
type h265Track struct {
	dec           *rtph265.Decoder
	dts           h265.DTSExtractor
	synced        bool
	vps, sps, pps []byte
}

func (v *h265Track) push(w sink, t *track, pkt *rtp.Packet, pts int64) error {
	au, err := v.dec.Decode(pkt)
	if err != nil {
		if waiting(err) {
			return nil
		}
		return fmt.Errorf("depacketize H.265: %w", err)
	}
	au = nonEmpty(au, 2) // two-byte NAL unit headers
	if len(au) == 0 {
		return nil
	}
	var hasVPS, hasSPS, hasPPS, hasPicture bool
	for _, n := range au {
		switch typ := h265.NALUType((n[0] >> 1) & 0x3f); {
		case typ == h265.NALUType_VPS_NUT:
			v.vps, hasVPS = n, true
		case typ == h265.NALUType_SPS_NUT:
			v.sps, hasSPS = n, true
		case typ == h265.NALUType_PPS_NUT:
			v.pps, hasPPS = n, true
		case typ < h265.NALUType_VPS_NUT: // VCL units are types 0-31
			hasPicture = true
		}
	}
	if !hasPicture {
		return nil
	}
	random := h265.IsRandomAccess(au)
	if random && (!hasVPS || !hasSPS || !hasPPS) && v.vps != nil && v.sps != nil && v.pps != nil {
		au = append([][]byte{v.vps, v.sps, v.pps}, au...)
	}
	if !v.synced {
		if !random {
			return nil
		}
		v.dts = h265.DTSExtractor{}
		v.dts.Initialize()
		v.synced = true
	}
	dts, err := v.dts.Extract(au, pts)
	if err != nil {
		v.synced = false
		return fmt.Errorf("H.265 decode time: %w", err)
	}
	return over(w.WriteH265(t.index, ticksToDuration(pts, t.clock), ticksToDuration(dts, t.clock), au))
}

func pushAAC(w sink, t *track, dec *rtpmpeg4audio.Decoder, pkt *rtp.Packet, pts int64) error {
	aus, err := dec.Decode(pkt)
	if err != nil {
		if waiting(err) {
			return nil
		}
		return fmt.Errorf("depacketize AAC: %w", err)
	}
	// One packet may carry several access units of 1024 samples; the RTP
	// clock of AAC is its sample rate.
	for i, au := range aus {
		at := pts + int64(i)*mpeg4audio.SamplesPerAccessUnit
		if err := w.WriteMPEG4Audio(t.index, ticksToDuration(at, t.clock), au); err != nil {
			return over(err)
		}
	}
	return nil
}

func pushOpus(w sink, t *track, dec *rtpsimpleaudio.Decoder, pkt *rtp.Packet, pts int64) error {
	packet, err := dec.Decode(pkt)
	if err != nil {
		return fmt.Errorf("depacketize Opus: %w", err)
	}
	if len(packet) == 0 {
		return nil
	}
	return over(w.WriteOpus(t.index, ticksToDuration(pts, t.clock), packet))
}
