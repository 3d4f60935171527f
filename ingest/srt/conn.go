package srt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/relaymesh/relaymesh/ingest"
)

// errTimeout is a publisher that went quiet (or never said what it sends).
var errTimeout = errors.New("publisher timed out")

// errNoTracks is an MPEG-TS program with nothing relaymesh can package.
var errNoTracks = errors.New("no H.264, H.265, AAC or Opus track in the MPEG-TS program")

// conn is one admitted publisher: its SRT connection and its session.
type conn struct {
	sc   gosrt.Conn
	sess *ingest.Session // its Log names the stream and the peer
}

// serve reads the publisher's MPEG-TS into its session until the publisher
// leaves, goes quiet, is taken over or the server stops (parent ends). It
// always closes the connection and the session.
func (c *conn) serve(parent context.Context, timeout time.Duration) {
	log := c.sess.Log
	ctx, cancel := context.WithCancelCause(parent)
	var wg sync.WaitGroup
	// A takeover or a broken limit ends the session; the connection goes
	// with it.
	wg.Go(func() {
		select {
		case <-c.sess.Done():
			cancel(nil)
		case <-ctx.Done():
		}
	})
	// gosrt's read deadlines are no-ops; closing is the only way to unblock
	// a Read.
	stop := context.AfterFunc(ctx, func() { c.sc.Close() })

	err := c.run(ctx, cancel, timeout)

	var why error
	switch {
	case parent.Err() != nil:
		why = errors.New("server shutting down")
	case c.sess.Err() != nil:
		why = c.sess.Err()
	case errors.Is(context.Cause(ctx), errTimeout):
		why = context.Cause(ctx)
	case errors.Is(err, io.EOF):
		why = errors.New("publisher disconnected")
	default:
		why = err
	}
	stop()
	cancel(nil)
	wg.Wait()
	c.sc.Close()
	c.sess.Close() // before the log line: by then the stream shows the publisher gone

	var pe panicError
	switch {
	case errors.As(err, &pe):
		log.Error("srt connection handler panicked; connection dropped", "panic", fmt.Sprint(pe.v))
	case errors.Is(why, errTimeout), errors.Is(err, errNoTracks), errors.Is(err, errMPEGTS):
		log.Warn("srt publisher stopped", "reason", why, "codecs", c.sess.Codecs())
	default:
		log.Info("srt publisher stopped", "reason", why, "codecs", c.sess.Codecs())
	}
}

// errMPEGTS marks a publisher whose MPEG-TS could not be set up.
var errMPEGTS = errors.New("MPEG-TS")

// run demuxes until an error. A panic in the demuxer, which parses what
// the publisher sends, comes back as a panicError.
func (c *conn) run(ctx context.Context, cancel context.CancelCauseFunc, timeout time.Duration) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = panicError{v}
		}
	}()
	// The tracks must be known within timeout, however the publisher
	// trickles bytes; after that, timeout bounds silence.
	setup := time.AfterFunc(timeout, func() {
		cancel(fmt.Errorf("%w: no MPEG-TS program (PAT/PMT) within %s", errTimeout, timeout))
	})
	rd := &activityReader{r: c.sc}
	r := &mpegts.Reader{R: rd}
	if err := r.Initialize(); err != nil {
		setup.Stop()
		return fmt.Errorf("%w: read tracks: %w", errMPEGTS, err)
	}
	if !setup.Stop() {
		return context.Cause(ctx)
	}
	idle := time.AfterFunc(timeout, func() {
		cancel(fmt.Errorf("%w: nothing received for %s", errTimeout, timeout))
	})
	defer idle.Stop()
	rd.onData = func() { idle.Reset(timeout) }

	tracks, names, err := c.mapTracks(r)
	if err != nil {
		return err
	}
	if err := c.sess.SetTracks(tracks); err != nil {
		return fmt.Errorf("%w: announce tracks: %w", errMPEGTS, err)
	}
	c.sess.Log.Info("srt publisher started", "tracks", strings.Join(names, ","), "resumed", c.sess.Resumed())
	r.OnDecodeError(func(err error) { c.sess.Drop(fmt.Errorf("MPEG-TS: %w", err)) })
	for {
		if err := r.Read(); err != nil {
			return err
		}
	}
}

// mapTracks picks the first video and the first audio track the packager
// takes, video first, and routes their access units to the session. Other
// tracks are ignored with a log line each.
func (c *conn) mapTracks(r *mpegts.Reader) ([]ingest.Track, []string, error) {
	var video, audio *mpegts.Track
	for _, tr := range r.Tracks() {
		why := ""
		switch codec := tr.Codec.(type) {
		case *tscodecs.H264, *tscodecs.H265:
			if video == nil {
				video = tr
				continue
			}
			why = "relaymesh packages one video track"
		case *tscodecs.MPEG4Audio, *tscodecs.Opus:
			switch {
			case !audioUsable(codec):
				why = "audio parameters out of range"
			case audio == nil:
				audio = tr
				continue
			default:
				why = "relaymesh packages one audio track"
			}
		default:
			why = "relaymesh packages H.264, H.265, AAC and Opus"
		}
		c.sess.Log.Info("srt: ignoring MPEG-TS track", "pid", tr.PID, "codec", codecName(tr.Codec), "why", why)
	}
	if video == nil && audio == nil {
		return nil, nil, errNoTracks
	}

	// One decoder for every track: they share the program clock, so one
	// unwraps the 33-bit 90 kHz timestamps consistently for all.
	td := &mpegts.TimeDecoder{}
	var tracks []ingest.Track
	var names []string
	add := func(name string, codec mp4codecs.Codec) int {
		tracks = append(tracks, ingest.Track{Codec: codec})
		names = append(names, name)
		return len(tracks) - 1
	}
	if video != nil {
		switch video.Codec.(type) {
		case *tscodecs.H264:
			i := add("H264", &mp4codecs.H264{}) // parameter sets come in-band
			r.OnDataH264(video, func(pts, dts int64, au [][]byte) error {
				return c.sess.WriteH264(i, ticks(td.Decode(pts)), ticks(td.Decode(dts)), au)
			})
		case *tscodecs.H265:
			i := add("H265", &mp4codecs.H265{})
			r.OnDataH265(video, func(pts, dts int64, au [][]byte) error {
				return c.sess.WriteH265(i, ticks(td.Decode(pts)), ticks(td.Decode(dts)), au)
			})
		}
	}
	if audio != nil {
		switch codec := audio.Codec.(type) {
		case *tscodecs.MPEG4Audio:
			rate := time.Duration(codec.Config.SampleRate)
			i := add("AAC", &mp4codecs.MPEG4Audio{Config: codec.Config})
			r.OnDataMPEG4Audio(audio, func(pts int64, aus [][]byte) error {
				// A PES carries several AAC frames of 1024 samples each.
				start := ticks(td.Decode(pts))
				for k, au := range aus {
					if err := c.sess.WriteMPEG4Audio(i, start+time.Duration(k)*1024*time.Second/rate, au); err != nil {
						return err
					}
				}
				return nil
			})
		case *tscodecs.Opus:
			i := add("Opus", &mp4codecs.Opus{ChannelCount: codec.Desc.ChannelCount()})
			r.OnDataOpus(audio, func(pts int64, packets [][]byte) error {
				// A PES carries several Opus packets back to back.
				at := ticks(td.Decode(pts))
				for _, p := range packets {
					if err := c.sess.WriteOpus(i, at, p); err != nil {
						return err
					}
					at += time.Duration(opus.PacketDuration2(p)) * time.Second / 48000
				}
				return nil
			})
		}
	}
	return tracks, names, nil
}

// audioUsable reports whether an audio track's parameters are ones the
// packager takes.
func audioUsable(c tscodecs.Codec) bool {
	switch c := c.(type) {
	case *tscodecs.MPEG4Audio:
		return c.Config.SampleRate > 0
	case *tscodecs.Opus:
		return c.Desc != nil && c.Desc.ChannelCount() >= 1 && c.Desc.ChannelCount() <= 8
	}
	return false
}

func codecName(c tscodecs.Codec) string {
	name := fmt.Sprintf("%T", c)
	return name[strings.LastIndexByte(name, '.')+1:]
}

// ticks converts MPEG-TS 90 kHz ticks, unwrapped by a TimeDecoder, to a
// duration, exactly and without overflow for any stream length.
func ticks(t int64) time.Duration {
	const rate = 90000
	return time.Duration(t/rate)*time.Second + time.Duration(t%rate)*time.Second/rate
}

// activityReader calls onData whenever bytes arrive, to push back the
// idle timeout.
type activityReader struct {
	r      io.Reader
	onData func()
}

func (a *activityReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 && a.onData != nil {
		a.onData()
	}
	return n, err
}
