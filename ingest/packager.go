package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/relaymesh/relaymesh/relay"
)

// Track is one elementary stream of a publication. Codec is one of
// *mp4codecs.H264, *mp4codecs.H265, *mp4codecs.MPEG4Audio and
// *mp4codecs.Opus. A video codec may come without parameter sets, as from
// MPEG-TS or an RTSP camera that sends them in-band: the packager then
// learns them from the first keyframe that carries them.
type Track struct {
	Codec mp4codecs.Codec
}

// PackagerConfig sets how media is cut.
type PackagerConfig struct {
	// PartTarget is the part duration aimed for (default 200ms). A part
	// holds whole frames and never lasts longer than PartTarget plus
	// relay.PartSlack, the PART-TARGET that streams advertise.
	PartTarget time.Duration
	// MinSegment is the shortest segment; segments start at the first
	// keyframe after it (default 1s).
	MinSegment time.Duration
	// Now is the wall clock, for PROGRAM-DATE-TIME (default time.Now).
	Now func() time.Time
}

// Errors a protocol handler can match on to log and drop an access unit.
var (
	ErrUnsupportedCodec = errors.New("unsupported codec")
	ErrTimestamp        = errors.New("timestamp does not advance")
)

// Packager cuts a publication's access units into CMAF parts and segments
// and writes them into its relay.Stream. It is not safe for concurrent use:
// one protocol handler owns it.
//
// When a video track's parameter sets change at a keyframe (a new
// resolution or profile), or Reconfigure is called, the packager ends the
// segment, writes a new init segment and starts the next segment after a
// discontinuity, continuing the timeline.
type Packager struct {
	cfg    PackagerConfig
	pub    *relay.Publication
	init   *relay.Init // nil until every video track's parameter sets are known
	tracks []*trackState
	driver *trackState // video if there is any: parts and segments follow its frames

	open       bool          // a segment is open
	offset     int64         // nanoseconds added to every timestamp, for timeline continuity
	mediaStart time.Duration // where the next segment's timeline starts
	mediaEnd   time.Duration // the latest end of any track so far
	segStart   int64         // driver ticks where the open segment started
	partStart  int64         // driver ticks where the part being filled started
	seq        uint32
	discontinu bool
}

type trackState struct {
	id        int
	codec     mp4codecs.Codec // as in the current init segment
	timescale int64
	video     bool
	frame     func(*fmp4.Sample) int64 // audio frame length in ticks, for snapping; nil for video

	pending    *pendingSample
	samples    []*fmp4.Sample
	base       int64 // ticks of samples[0]
	end        int64 // ticks where the last flushed part ended
	lastDur    int64
	lastTicks  int64
	hasLast    bool
	firstTicks int64 // ticks when the stream's segment opened; earlier samples are dropped
}

type pendingSample struct {
	ticks  int64
	sample *fmp4.Sample
}

// NewPackager checks tracks and returns a packager that writes into pub.
func NewPackager(pub *relay.Publication, tracks []Track, cfg PackagerConfig) (*Packager, error) {
	if cfg.PartTarget <= 0 {
		cfg.PartTarget = 200 * time.Millisecond
	}
	if cfg.MinSegment <= 0 {
		cfg.MinSegment = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Packager{cfg: cfg, pub: pub, discontinu: pub.Resumed, mediaStart: pub.MediaStart, mediaEnd: pub.MediaStart}
	if err := p.setTracks(tracks); err != nil {
		return nil, err
	}
	return p, nil
}

// setTracks replaces the track set. It builds the init segment when every
// parameter set is known.
func (p *Packager) setTracks(tracks []Track) error {
	if len(tracks) == 0 {
		return errors.New("package: publication has no tracks")
	}
	states := make([]*trackState, 0, len(tracks))
	var driver *trackState
	for i, t := range tracks {
		if err := checkCodec(t.Codec); err != nil {
			return fmt.Errorf("package track %d: %w", i, err)
		}
		ts := &trackState{id: i + 1, codec: t.Codec, video: t.Codec.IsVideo()}
		switch c := t.Codec.(type) {
		case *mp4codecs.H264, *mp4codecs.H265:
			ts.timescale = 90000
		case *mp4codecs.MPEG4Audio:
			ts.timescale = int64(c.Config.SampleRate)
			ts.frame = func(*fmp4.Sample) int64 { return 1024 }
		case *mp4codecs.Opus:
			ts.timescale = 48000
			ts.frame = func(s *fmp4.Sample) int64 { return opus.PacketDuration2(s.Payload) }
		}
		states = append(states, ts)
		if driver == nil && ts.video {
			driver = ts
		}
	}
	if driver == nil {
		driver = states[0]
	}
	p.tracks, p.driver, p.init = states, driver, nil
	return p.tryInit()
}

// tryInit builds the init segment once every parameter set is known.
func (p *Packager) tryInit() error {
	if p.init != nil {
		return nil
	}
	tracks := make([]Track, len(p.tracks))
	for i, t := range p.tracks {
		if !hasParams(t.codec) {
			return nil
		}
		tracks[i] = Track{Codec: t.codec}
	}
	init, err := buildInit(tracks, p.pub.NewInitID())
	if err != nil {
		return err
	}
	p.init = init
	return nil
}

// Init returns the init segment this packager writes segments against, or
// nil while a video track's parameter sets are still unknown.
func (p *Packager) Init() *relay.Init { return p.init }

// retarget makes the packager write into pub from now on, naming its init
// segment init there (the same bytes under an ID of pub's stream). What it
// cut before is the caller's to carry over, including the open segment, in
// which it goes on cutting parts; with none open, the next segment it opens
// carries a discontinuity.
func (p *Packager) retarget(pub *relay.Publication, init *relay.Init) {
	p.pub = pub
	if p.init != nil {
		p.init = init
	}
	if !p.open {
		p.discontinu = true
	}
}

// Reconfigure ends the open segment and continues with a new track set: a
// new init segment and a discontinuity, on the same timeline. Protocols
// call it when an encoder announces new codec parameters.
func (p *Packager) Reconfigure(tracks []Track) error {
	oldTracks, oldDriver, oldInit := p.tracks, p.driver, p.init
	p.Close()
	if err := p.setTracks(tracks); err != nil {
		// Keep writing what the current init segment describes.
		p.tracks, p.driver, p.init = oldTracks, oldDriver, oldInit
		return err
	}
	return nil
}

func (t *trackState) ticks(d time.Duration) int64 {
	return (int64(d)*t.timescale + int64(time.Second)/2) / int64(time.Second)
}

func (t *trackState) duration(ticks int64) time.Duration {
	return time.Duration(ticks * int64(time.Second) / t.timescale)
}

// WriteH264 takes one H.264 access unit as NAL units. Parameter sets in it
// that differ from the current ones take effect at the next keyframe.
func (p *Packager) WriteH264(track int, pts, dts time.Duration, au [][]byte) error {
	t, err := p.track(track)
	if err != nil {
		return err
	}
	c, ok := t.codec.(*mp4codecs.H264)
	if !ok {
		return fmt.Errorf("package: track %d is not H.264", track)
	}
	next := *c
	nalus := make([][]byte, 0, len(au))
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		// Parameter sets travel in the init segment and AUDs carry nothing
		// a player needs, so both are dropped to save bytes on every hop.
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeAccessUnitDelimiter:
			continue
		case h264.NALUTypeSPS:
			next.SPS = n
			continue
		case h264.NALUTypePPS:
			next.PPS = n
			continue
		}
		nalus = append(nalus, n)
	}
	changed := !bytes.Equal(next.SPS, c.SPS) || !bytes.Equal(next.PPS, c.PPS)
	if len(nalus) == 0 {
		return nil
	}
	key := h264.IsRandomAccess(nalus)
	if changed && key {
		if err := p.paramsChanged(t, &next); err != nil {
			return err
		}
		t = p.tracks[track] // Reconfigure replaced the track states
	}
	return p.writeVideo(t, pts, dts, nalus, key)
}

// WriteH265 takes one H.265 access unit as NAL units, like WriteH264.
func (p *Packager) WriteH265(track int, pts, dts time.Duration, au [][]byte) error {
	t, err := p.track(track)
	if err != nil {
		return err
	}
	c, ok := t.codec.(*mp4codecs.H265)
	if !ok {
		return fmt.Errorf("package: track %d is not H.265", track)
	}
	next := *c
	nalus := make([][]byte, 0, len(au))
	for _, n := range au {
		if len(n) < 2 {
			continue
		}
		switch h265.NALUType((n[0] >> 1) & 0x3f) {
		case h265.NALUType_AUD_NUT:
			continue
		case h265.NALUType_VPS_NUT:
			next.VPS = n
			continue
		case h265.NALUType_SPS_NUT:
			next.SPS = n
			continue
		case h265.NALUType_PPS_NUT:
			next.PPS = n
			continue
		}
		nalus = append(nalus, n)
	}
	changed := !bytes.Equal(next.VPS, c.VPS) || !bytes.Equal(next.SPS, c.SPS) || !bytes.Equal(next.PPS, c.PPS)
	if len(nalus) == 0 {
		return nil
	}
	key := h265.IsRandomAccess(nalus)
	if changed && key {
		if err := p.paramsChanged(t, &next); err != nil {
			return err
		}
		t = p.tracks[track] // Reconfigure replaced the track states
	}
	return p.writeVideo(t, pts, dts, nalus, key)
}

// paramsChanged applies new parameter sets that arrived with a keyframe.
func (p *Packager) paramsChanged(t *trackState, next mp4codecs.Codec) error {
	if err := checkCodec(next); err != nil {
		return fmt.Errorf("track %d: new parameter sets: %w", t.id, err)
	}
	if p.init == nil {
		t.codec = next
		return p.tryInit()
	}
	tracks := make([]Track, len(p.tracks))
	for i, tr := range p.tracks {
		tracks[i] = Track{Codec: tr.codec}
	}
	tracks[t.id-1] = Track{Codec: next}
	return p.Reconfigure(tracks)
}

func (p *Packager) writeVideo(t *trackState, pts, dts time.Duration, nalus [][]byte, key bool) error {
	if p.init == nil {
		return nil // parameter sets still unknown: wait for a keyframe that has them
	}
	payload, err := h264.AVCC(nalus).Marshal() // H.265 in MP4 uses the same length-prefixed form
	if err != nil {
		return fmt.Errorf("package video: %w", err)
	}
	ticks := t.ticks(dts + time.Duration(p.offset))
	s := &fmp4.Sample{
		PTSOffset:       int32(t.ticks(pts+time.Duration(p.offset)) - ticks),
		IsNonSyncSample: !key,
		Payload:         payload,
	}
	return p.write(t, ticks, s)
}

// WriteMPEG4Audio takes one AAC access unit.
func (p *Packager) WriteMPEG4Audio(track int, pts time.Duration, au []byte) error {
	return p.writeAudio(track, pts, au, "AAC")
}

// WriteOpus takes one Opus packet.
func (p *Packager) WriteOpus(track int, pts time.Duration, packet []byte) error {
	return p.writeAudio(track, pts, packet, "Opus")
}

func (p *Packager) writeAudio(track int, pts time.Duration, au []byte, want string) error {
	t, err := p.track(track)
	if err != nil {
		return err
	}
	switch t.codec.(type) {
	case *mp4codecs.MPEG4Audio:
		if want != "AAC" {
			return fmt.Errorf("package: track %d is AAC, not %s", track, want)
		}
	case *mp4codecs.Opus:
		if want != "Opus" {
			return fmt.Errorf("package: track %d is Opus, not %s", track, want)
		}
	default:
		return fmt.Errorf("package: track %d is not %s", track, want)
	}
	if len(au) == 0 || p.init == nil {
		return nil
	}
	ticks := t.ticks(pts + time.Duration(p.offset))
	// Timestamps in milliseconds (RTMP) or 90 kHz (MPEG-TS) jitter around
	// the true frame grid; snapping to it keeps sample durations exact.
	if t.pending != nil {
		if f := t.frame(t.pending.sample); f > 0 {
			want := t.pending.ticks + f
			if d := ticks - want; d > -f/2 && d < f/2 {
				ticks = want
			}
		}
	}
	return p.write(t, ticks, &fmp4.Sample{Payload: au})
}

func (p *Packager) track(i int) (*trackState, error) {
	if i < 0 || i >= len(p.tracks) {
		return nil, fmt.Errorf("package: no track %d", i)
	}
	return p.tracks[i], nil
}

// write queues a sample. A sample's duration is known only when the next
// one on its track arrives, so each track holds one pending sample.
func (p *Packager) write(t *trackState, ticks int64, s *fmp4.Sample) error {
	if !p.open {
		if t != p.driver || s.IsNonSyncSample {
			return nil // wait for a keyframe to open the first segment
		}
		p.startTimeline(ticks)
		return p.openFirst(t, s)
	}
	if ticks < t.firstTicks {
		return nil // audio from before the first keyframe
	}
	if t.pending != nil {
		dur := ticks - t.pending.ticks
		if dur <= 0 {
			return fmt.Errorf("track %d at %d after %d: %w", t.id, ticks, t.pending.ticks, ErrTimestamp)
		}
		t.pending.sample.Duration = uint32(dur)
		if len(t.samples) == 0 {
			t.base = t.pending.ticks
		}
		t.samples = append(t.samples, t.pending.sample)
		t.lastDur = dur
	}
	t.pending = &pendingSample{ticks: ticks, sample: s}
	if t != p.driver {
		return nil
	}
	newSegment := !s.IsNonSyncSample &&
		t.duration(ticks-p.segStart) >= p.cfg.MinSegment
	partDur := t.duration(ticks - p.partStart)
	if newSegment || partDur+t.duration(t.lastDur) > p.cfg.PartTarget+relay.PartSlack {
		p.cut(ticks, newSegment)
	}
	return nil
}

// startTimeline chooses the offset that puts this publication's first
// keyframe where the previous publication's timeline ended.
func (p *Packager) startTimeline(driverTicks int64) {
	first := p.driver.duration(driverTicks)
	p.offset += int64(p.mediaStart - first) // first already includes the old offset
}

func (p *Packager) openFirst(t *trackState, s *fmp4.Sample) error {
	start := p.mediaStart
	for _, tr := range p.tracks {
		tr.firstTicks = tr.ticks(start)
	}
	ticks := t.ticks(start)
	t.pending = &pendingSample{ticks: ticks, sample: s}
	p.segStart, p.partStart = ticks, ticks
	p.open = true
	p.pub.Cut(nil, &relay.SegmentHeader{
		Start: p.cfg.Now(), Discontinuity: p.discontinu, Init: p.init,
	})
	return nil
}

// cut closes the part that ends at driver time `at`, and the segment too
// when newSegment is set.
func (p *Packager) cut(at int64, newSegment bool) {
	part := p.flush(at)
	var hdr *relay.SegmentHeader
	if newSegment {
		hdr = &relay.SegmentHeader{Start: p.cfg.Now(), Init: p.init}
		p.segStart = at
	}
	p.partStart = at
	if part != nil || hdr != nil {
		p.pub.Cut(part, hdr)
	}
}

// flush marshals every track's queued samples into one part.
func (p *Packager) flush(end int64) *relay.Part {
	fp := fmp4.Part{SequenceNumber: p.seq + 1}
	independent := false
	for _, t := range p.tracks {
		if len(t.samples) == 0 {
			continue
		}
		fp.Tracks = append(fp.Tracks, &fmp4.PartTrack{
			ID: t.id, BaseTime: uint64(t.base), Samples: t.samples,
		})
		t.end = t.base
		for _, smp := range t.samples {
			t.end += int64(smp.Duration)
		}
		if t == p.driver {
			independent = !t.samples[0].IsNonSyncSample
		}
		t.samples = nil
	}
	if len(fp.Tracks) == 0 {
		return nil
	}
	var buf seekablebuffer.Buffer
	if err := fp.Marshal(&buf); err != nil {
		return nil // Marshal fails only on writer errors; the buffer has none
	}
	p.seq++
	// The next publisher continues after the latest end of any track, so
	// no track's decode time goes backwards across the reconnect.
	mediaEnd := p.driver.duration(end)
	for _, t := range p.tracks {
		mediaEnd = max(mediaEnd, t.duration(t.end))
	}
	p.mediaEnd = max(p.mediaEnd, mediaEnd)
	p.pub.SetMediaEnd(p.mediaEnd)
	return &relay.Part{
		Duration:    p.driver.duration(end - p.partStart),
		Independent: independent,
		Data:        buf.Bytes(),
	}
}

// Close flushes what is queued as a last part. The publication stays the
// caller's to close.
func (p *Packager) Close() {
	if !p.open {
		return
	}
	d := p.driver
	if d.pending != nil {
		// The last frame's duration is unknown; assume it matches the one before.
		dur := d.lastDur
		if dur <= 0 {
			dur = d.ticks(40 * time.Millisecond)
		}
		end := d.pending.ticks + dur
		d.pending.sample.Duration = uint32(dur)
		if len(d.samples) == 0 {
			d.base = d.pending.ticks
		}
		d.samples = append(d.samples, d.pending.sample)
		d.pending = nil
		if part := p.flush(end); part != nil {
			p.pub.Cut(part, nil)
		}
	}
	for _, t := range p.tracks {
		t.pending, t.samples = nil, nil
	}
	p.open = false
	// Whatever opens the next segment continues where this one ended.
	p.mediaStart = p.mediaEnd
	p.discontinu = true
}
