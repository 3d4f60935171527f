package ingest

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/relaymesh/relaymesh/relay"
)

// checkCodec reports whether a track's codec can be packaged. Video
// parameter sets may be missing (they are learned in-band) but must parse
// when present.
func checkCodec(c mp4codecs.Codec) error {
	switch c := c.(type) {
	case *mp4codecs.H264:
		if len(c.SPS) > 0 {
			var sps h264.SPS
			if len(c.SPS) < 4 {
				return fmt.Errorf("H.264 SPS of %d bytes", len(c.SPS))
			}
			if err := sps.Unmarshal(c.SPS); err != nil {
				return fmt.Errorf("parse H.264 SPS: %w", err)
			}
		}
	case *mp4codecs.H265:
		if len(c.SPS) > 0 {
			var sps h265.SPS
			if err := sps.Unmarshal(c.SPS); err != nil {
				return fmt.Errorf("parse H.265 SPS: %w", err)
			}
		}
	case *mp4codecs.MPEG4Audio:
		if c.Config.SampleRate <= 0 || c.Config.ChannelCount < 0 {
			return fmt.Errorf("AAC sample rate %d", c.Config.SampleRate)
		}
	case *mp4codecs.Opus:
		if c.ChannelCount < 1 || c.ChannelCount > 8 {
			return fmt.Errorf("Opus with %d channels", c.ChannelCount)
		}
	default:
		return fmt.Errorf("%w %T: relaymesh packages H.264, H.265, AAC and Opus", ErrUnsupportedCodec, c)
	}
	return nil
}

// hasParams reports whether a codec has every parameter set its init
// segment needs.
func hasParams(c mp4codecs.Codec) bool {
	switch c := c.(type) {
	case *mp4codecs.H264:
		return len(c.SPS) >= 4 && len(c.PPS) > 0
	case *mp4codecs.H265:
		return len(c.VPS) > 0 && len(c.SPS) > 0 && len(c.PPS) > 0
	}
	return true
}

// buildInit writes the CMAF init segment for tracks and describes it for
// the multivariant playlist.
func buildInit(tracks []Track, id uint64) (*relay.Init, error) {
	in := &relay.Init{ID: id}
	var fi fmp4.Init
	var codecs []string
	for i, t := range tracks {
		if err := checkCodec(t.Codec); err != nil {
			return nil, fmt.Errorf("track %d: %w", i, err)
		}
		it := &fmp4.InitTrack{ID: i + 1, Codec: t.Codec}
		switch c := t.Codec.(type) {
		case *mp4codecs.H264:
			var sps h264.SPS
			if !hasParams(c) {
				return nil, fmt.Errorf("H.264 track %d: missing SPS or PPS", i)
			}
			if err := sps.Unmarshal(c.SPS); err != nil {
				return nil, fmt.Errorf("H.264 track %d: parse SPS: %w", i, err)
			}
			it.TimeScale = 90000
			in.Width, in.Height, in.FrameRate = sps.Width(), sps.Height(), sps.FPS()
			codecs = append(codecs, fmt.Sprintf("avc1.%02x%02x%02x", c.SPS[1], c.SPS[2], c.SPS[3]))
		case *mp4codecs.H265:
			var sps h265.SPS
			if !hasParams(c) {
				return nil, fmt.Errorf("H.265 track %d: missing VPS, SPS or PPS", i)
			}
			if err := sps.Unmarshal(c.SPS); err != nil {
				return nil, fmt.Errorf("H.265 track %d: parse SPS: %w", i, err)
			}
			codec, err := hevcCodec(c.SPS)
			if err != nil {
				return nil, fmt.Errorf("H.265 track %d: %w", i, err)
			}
			it.TimeScale = 90000
			in.Width, in.Height, in.FrameRate = sps.Width(), sps.Height(), sps.FPS()
			codecs = append(codecs, codec)
		case *mp4codecs.MPEG4Audio:
			it.TimeScale = uint32(c.Config.SampleRate)
			codecs = append(codecs, fmt.Sprintf("mp4a.40.%d", c.Config.Type))
		case *mp4codecs.Opus:
			it.TimeScale = 48000
			codecs = append(codecs, "opus")
		}
		fi.Tracks = append(fi.Tracks, it)
	}
	var buf seekablebuffer.Buffer
	if err := fi.Marshal(&buf); err != nil {
		return nil, fmt.Errorf("write init segment: %w", err)
	}
	in.Data = buf.Bytes()
	in.Codecs = strings.Join(codecs, ",")
	return in, nil
}

// hevcCodec returns the RFC 6381 / ISO/IEC 14496-15 Annex E codec string
// of an H.265 SPS, e.g. "hvc1.1.6.L93.B0", read from the raw
// profile_tier_level bytes so that every constraint flag is exact.
func hevcCodec(spsNALU []byte) (string, error) {
	if len(spsNALU) < 2 {
		return "", fmt.Errorf("SPS of %d bytes", len(spsNALU))
	}
	b := h264.EmulationPreventionRemove(spsNALU[2:]) // same escaping in H.265
	// sps_video_parameter_set_id(4) max_sub_layers(3) nesting(1), then
	// profile_space(2) tier(1) profile_idc(5), 32 compatibility flags,
	// 48 constraint bits and level_idc.
	if len(b) < 1+1+4+6+1 {
		return "", fmt.Errorf("SPS of %d bytes is too short for profile_tier_level", len(spsNALU))
	}
	ptl := b[1:]
	space := ptl[0] >> 6
	tier := (ptl[0] >> 5) & 1
	profile := ptl[0] & 0x1f
	compat := uint32(ptl[1])<<24 | uint32(ptl[2])<<16 | uint32(ptl[3])<<8 | uint32(ptl[4])
	constraint := ptl[5:11]
	level := ptl[11]

	var s strings.Builder
	s.WriteString("hvc1.")
	if space > 0 {
		s.WriteByte("ABC"[space-1])
	}
	fmt.Fprintf(&s, "%d.%X.", profile, bits.Reverse32(compat))
	if tier == 1 {
		s.WriteByte('H')
	} else {
		s.WriteByte('L')
	}
	fmt.Fprintf(&s, "%d", level)
	// Constraint bytes, with trailing zero bytes left out.
	n := len(constraint)
	for n > 0 && constraint[n-1] == 0 {
		n--
	}
	for _, c := range constraint[:n] {
		fmt.Fprintf(&s, ".%X", c)
	}
	return s.String(), nil
}
