package ingest

import (
	"fmt"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/relaymesh/relaymesh/relay"
)

// buildInit writes the CMAF init segment for tracks and describes it for
// the multivariant playlist.
func buildInit(tracks []Track, id uint64) (*relay.Init, error) {
	in := &relay.Init{ID: id}
	var fi fmp4.Init
	var codecs []string
	for i, t := range tracks {
		it := &fmp4.InitTrack{ID: i + 1, Codec: t.Codec}
		switch c := t.Codec.(type) {
		case *mp4codecs.H264:
			var sps h264.SPS
			if len(c.SPS) < 4 || len(c.PPS) == 0 {
				return nil, fmt.Errorf("H.264 track %d: missing SPS or PPS", i)
			}
			if err := sps.Unmarshal(c.SPS); err != nil {
				return nil, fmt.Errorf("H.264 track %d: parse SPS: %w", i, err)
			}
			it.TimeScale = 90000
			in.Width, in.Height, in.FrameRate = sps.Width(), sps.Height(), sps.FPS()
			codecs = append(codecs, fmt.Sprintf("avc1.%02x%02x%02x", c.SPS[1], c.SPS[2], c.SPS[3]))
		case *mp4codecs.MPEG4Audio:
			if c.Config.SampleRate <= 0 {
				return nil, fmt.Errorf("AAC track %d: sample rate %d", i, c.Config.SampleRate)
			}
			it.TimeScale = uint32(c.Config.SampleRate)
			codecs = append(codecs, fmt.Sprintf("mp4a.40.%d", c.Config.Type))
		default:
			return nil, fmt.Errorf("track %d: %w %T", i, ErrUnsupportedCodec, t.Codec)
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
