package rtmp

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/relaymesh/relaymesh/ingest"
)

// reader turns a publisher's FLV-in-RTMP messages into access units.
//
// gortmplib's Reader buffers two seconds of media to discover tracks, which
// would delay every publish by 2 s and then release that media in one
// burst, stamping two segments with almost the same PROGRAM-DATE-TIME.
// Encoders announce their tracks in onMetaData and send the codec
// configuration before the first frame, so reader starts the packager as
// soon as those are in.
type reader struct {
	read func() (message.Message, error)

	// From onMetaData: which tracks to wait for. Without metadata, the
	// first media frame ends the wait.
	metadata           bool
	wantVideo, wantAud bool

	sps, pps []byte
	audio    *mpeg4audio.AudioSpecificConfig
	early    []message.Message // media read before the tracks were known
}

// maxEarly bounds how much media a publisher may send before its codec
// configuration.
const maxEarly = 256

var errCodec = errors.New("unsupported codec over RTMP: send H.264 video and AAC audio")

// tracks reads until every announced track is configured, and returns the
// tracks with the index of the video and audio track (-1 when absent).
func (r *reader) tracks() (tracks []ingest.Track, video, audio int, err error) {
	for !r.ready() {
		msg, err := r.read()
		if err != nil {
			return nil, 0, 0, err
		}
		if err := r.configure(msg); err != nil {
			return nil, 0, 0, err
		}
	}
	video, audio = -1, -1
	if r.sps != nil {
		video = len(tracks)
		tracks = append(tracks, ingest.Track{Codec: &mp4codecs.H264{SPS: r.sps, PPS: r.pps}})
	}
	if r.audio != nil {
		audio = len(tracks)
		tracks = append(tracks, ingest.Track{Codec: &mp4codecs.MPEG4Audio{Config: *r.audio}})
	}
	if len(tracks) == 0 {
		return nil, 0, 0, errors.New("publisher sent media but no codec configuration")
	}
	return tracks, video, audio, nil
}

func (r *reader) ready() bool {
	if r.metadata {
		return (!r.wantVideo || r.sps != nil) && (!r.wantAud || r.audio != nil)
	}
	return len(r.early) > 0
}

// configure takes one message read before the tracks are known.
func (r *reader) configure(msg message.Message) error {
	switch m := msg.(type) {
	case *message.DataAMF0:
		r.onMetadata(m.Payload)
	case *message.Video:
		if m.Codec != message.CodecH264 {
			return fmt.Errorf("%w (video codec id %d)", errCodec, m.Codec)
		}
		if m.Type == message.VideoTypeConfig {
			return r.configureH264(m)
		}
		if m.Type == message.VideoTypeAU && r.sps != nil {
			return r.keep(msg)
		}
	case *message.Audio:
		if m.Codec != message.CodecMPEG4Audio {
			return fmt.Errorf("%w (audio codec id %d)", errCodec, m.Codec)
		}
		if m.AACType == message.AudioAACTypeConfig && m.AACConfig != nil {
			r.audio = m.AACConfig
		} else if m.AACType == message.AudioAACTypeAU && r.audio != nil {
			return r.keep(msg)
		}
	case *message.VideoExSequenceStart, *message.VideoExCodedFrames, *message.VideoExFramesX,
		*message.VideoExMultitrack, *message.AudioExSequenceStart, *message.AudioExCodedFrames,
		*message.AudioExMultitrack:
		return fmt.Errorf("%w (enhanced RTMP %T)", errCodec, msg)
	}
	return nil
}

func (r *reader) keep(msg message.Message) error {
	if len(r.early) >= maxEarly {
		return errors.New("publisher sent media without the codec configuration its metadata announced")
	}
	r.early = append(r.early, msg)
	return nil
}

func (r *reader) configureH264(m *message.Video) error {
	c := m.AVCConfig
	if c == nil || len(c.SequenceParameterSets) == 0 || len(c.PictureParameterSets) == 0 {
		return errors.New("H.264 configuration without SPS or PPS")
	}
	var sps h264.SPS
	if err := sps.Unmarshal(c.SequenceParameterSets[0].NALUnit); err != nil {
		return fmt.Errorf("H.264 SPS: %w", err)
	}
	r.sps = c.SequenceParameterSets[0].NALUnit
	r.pps = c.PictureParameterSets[0].NALUnit
	return nil
}

// onMetadata reads the tracks an encoder announces in
// @setDataFrame/onMetaData.
func (r *reader) onMetadata(payload amf0.Data) {
	for i, v := range payload {
		if s, ok := v.(string); !ok || s != "onMetaData" || i+1 >= len(payload) {
			continue
		}
		var obj amf0.Object
		switch o := payload[i+1].(type) {
		case amf0.Object:
			obj = o
		case amf0.ECMAArray:
			obj = amf0.Object(o)
		default:
			return
		}
		r.metadata = true
		_, r.wantVideo = obj.Get("videocodecid")
		_, r.wantAud = obj.Get("audiocodecid")
		return
	}
}

// run sends everything to pk: the media read early, then what
// follows, until read fails.
func (r *reader) run(pk *ingest.Packager, video, audio int, drops func(error)) error {
	for _, msg := range r.early {
		if err := r.write(pk, msg, video, audio); err != nil {
			drops(err)
		}
	}
	r.early = nil
	for {
		msg, err := r.read()
		if err != nil {
			return err
		}
		if err := r.write(pk, msg, video, audio); err != nil {
			if errors.Is(err, errCodec) {
				return err
			}
			drops(err)
		}
	}
}

func (r *reader) write(pk *ingest.Packager, msg message.Message, video, audio int) error {
	switch m := msg.(type) {
	case *message.Video:
		if video < 0 {
			return nil // not announced, so not packaged
		}
		if m.Codec != message.CodecH264 {
			return fmt.Errorf("%w (video codec id %d)", errCodec, m.Codec)
		}
		switch m.Type {
		case message.VideoTypeAU:
			var au h264.AVCC
			if err := au.Unmarshal(m.AU); err != nil {
				if errors.Is(err, h264.ErrAVCCNoNALUs) {
					return nil
				}
				return fmt.Errorf("H.264 access unit: %w", err)
			}
			return pk.WriteH264(video, m.DTS+m.PTSDelta, m.DTS, au)
		case message.VideoTypeConfig:
			if c := m.AVCConfig; c != nil && len(c.SequenceParameterSets) > 0 &&
				!bytes.Equal(c.SequenceParameterSets[0].NALUnit, r.sps) {
				return errors.New("H.264 parameters changed mid-stream; reconnect the encoder to apply them")
			}
		}
	case *message.Audio:
		if audio < 0 || m.AACType != message.AudioAACTypeAU {
			return nil
		}
		if m.Codec != message.CodecMPEG4Audio {
			return fmt.Errorf("%w (audio codec id %d)", errCodec, m.Codec)
		}
		return pk.WriteMPEG4Audio(audio, m.DTS, m.AU)
	}
	return nil
}
