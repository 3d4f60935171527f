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
		r.wantVideo = announced(obj, "videocodecid")
		r.wantAud = announced(obj, "audiocodecid")
		return
	}
}

// announced reports whether metadata names a codec for key. Some
// encoders write 0 for a track they do not send.
func announced(obj amf0.Object, key string) bool {
	v, ok := obj.Get(key)
	if n, isNum := v.(float64); isNum && n == 0 {
		return false
	}
	return ok
}

// run sends everything to the session: the media read early, then what
// follows, until read fails or the session ends.
func (r *reader) run(sess *ingest.Session, video, audio int) error {
	for _, msg := range r.early {
		if err := r.write(sess, msg, video, audio); err != nil {
			return err
		}
	}
	r.early = nil
	for {
		msg, err := r.read()
		if err != nil {
			return err
		}
		if err := r.write(sess, msg, video, audio); err != nil {
			return err
		}
	}
}

// write hands one message to the session. Bad input is dropped with a log
// line; the error is non-nil only when the publisher must be disconnected.
func (r *reader) write(sess *ingest.Session, msg message.Message, video, audio int) error {
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
				if !errors.Is(err, h264.ErrAVCCNoNALUs) {
					sess.Drop(fmt.Errorf("H.264 access unit: %w", err))
				}
				return nil
			}
			return sess.WriteH264(video, m.DTS+m.PTSDelta, m.DTS, au)
		case message.VideoTypeConfig:
			c := m.AVCConfig
			if c == nil || len(c.SequenceParameterSets) == 0 || len(c.PictureParameterSets) == 0 {
				sess.Drop(errors.New("H.264 configuration without SPS or PPS"))
				return nil
			}
			sps, pps := c.SequenceParameterSets[0].NALUnit, c.PictureParameterSets[0].NALUnit
			if bytes.Equal(sps, r.sps) && bytes.Equal(pps, r.pps) {
				return nil // encoders repeat the sequence header
			}
			r.sps, r.pps = sps, pps
			return r.reconfigure(sess)
		}
	case *message.Audio:
		if audio < 0 {
			return nil
		}
		if m.Codec != message.CodecMPEG4Audio {
			return fmt.Errorf("%w (audio codec id %d)", errCodec, m.Codec)
		}
		switch m.AACType {
		case message.AudioAACTypeAU:
			return sess.WriteMPEG4Audio(audio, m.DTS, m.AU)
		case message.AudioAACTypeConfig:
			if m.AACConfig == nil || *m.AACConfig == *r.audio {
				return nil
			}
			r.audio = m.AACConfig
			return r.reconfigure(sess)
		}
	}
	return nil
}

// reconfigure applies a new sequence header: a new init segment after a
// discontinuity. Parameters the packager cannot use are dropped, and the
// old ones stay in force.
func (r *reader) reconfigure(sess *ingest.Session) error {
	var tracks []ingest.Track
	if r.sps != nil {
		tracks = append(tracks, ingest.Track{Codec: &mp4codecs.H264{SPS: r.sps, PPS: r.pps}})
	}
	if r.audio != nil {
		tracks = append(tracks, ingest.Track{Codec: &mp4codecs.MPEG4Audio{Config: *r.audio}})
	}
	if err := sess.SetTracks(tracks); err != nil {
		sess.Drop(fmt.Errorf("new codec parameters: %w", err))
	}
	return sess.Err()
}
