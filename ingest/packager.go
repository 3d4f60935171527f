package ingest

import (
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/relaymesh/relaymesh/relay"
)

// Track is one elementary stream of a publication. Codec is one of
// *mp4codecs.H264 and *mp4codecs.MPEG4Audio.
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
type Packager struct {
	cfg    PackagerConfig
	pub    *relay.Publication
	init   *relay.Init
	tracks []*trackState
	driver *trackState // video if there is any: parts and segments follow its frames

	open       bool  // a segment is open
	offset     int64 // nanoseconds added to every timestamp, for timeline continuity
	segStart   int64 // driver ticks where the open segment started
	partStart  int64 // driver ticks where the part being filled started
	seq        uint32
	discontinu bool
}

type trackState struct {
	id        int
	timescale int64
	video     bool
	aacFrame  int64 // samples per AAC frame, 0 if not AAC

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

// NewPackager prepares an init segment for tracks and returns a packager
// that writes into pub.
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
	if len(tracks) == 0 {
		return nil, errors.New("package: publication has no tracks")
	}
	p := &Packager{cfg: cfg, pub: pub, discontinu: pub.Resumed}
	init, err := buildInit(tracks, pub.Generation)
	if err != nil {
		return nil, err
	}
	p.init = init
	for i, t := range tracks {
		ts := &trackState{id: i + 1, video: t.Codec.IsVideo()}
		switch c := t.Codec.(type) {
		case *mp4codecs.H264:
			ts.timescale = 90000
		case *mp4codecs.MPEG4Audio:
			ts.timescale = int64(c.Config.SampleRate)
			ts.aacFrame = 1024
		default:
			return nil, fmt.Errorf("package track %d: %w %T", i, ErrUnsupportedCodec, t.Codec)
		}
		p.tracks = append(p.tracks, ts)
		if p.driver == nil && ts.video {
			p.driver = ts
		}
	}
	if p.driver == nil {
		p.driver = p.tracks[0]
	}
	return p, nil
}

// Init returns the init segment this packager writes segments against.
func (p *Packager) Init() *relay.Init { return p.init }

func (t *trackState) ticks(d time.Duration) int64 {
	return (int64(d)*t.timescale + int64(time.Second)/2) / int64(time.Second)
}

func (t *trackState) duration(ticks int64) time.Duration {
	return time.Duration(ticks * int64(time.Second) / t.timescale)
}

// WriteH264 takes one H.264 access unit as NAL units.
func (p *Packager) WriteH264(track int, pts, dts time.Duration, au [][]byte) error {
	t, err := p.track(track)
	if err != nil {
		return err
	}
	// Parameter sets travel in the init segment and AUDs carry nothing a
	// player needs, so both are dropped to save bytes on every hop.
	nalus := make([][]byte, 0, len(au))
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeAccessUnitDelimiter, h264.NALUTypeSPS, h264.NALUTypePPS:
			continue
		}
		nalus = append(nalus, n)
	}
	if len(nalus) == 0 {
		return nil
	}
	payload, err := h264.AVCC(nalus).Marshal()
	if err != nil {
		return fmt.Errorf("package H.264: %w", err)
	}
	ticks := t.ticks(dts + time.Duration(p.offset))
	s := &fmp4.Sample{
		PTSOffset:       int32(t.ticks(pts+time.Duration(p.offset)) - ticks),
		IsNonSyncSample: !h264.IsRandomAccess(nalus),
		Payload:         payload,
	}
	return p.write(t, ticks, s)
}

// WriteMPEG4Audio takes one AAC access unit.
func (p *Packager) WriteMPEG4Audio(track int, pts time.Duration, au []byte) error {
	t, err := p.track(track)
	if err != nil {
		return err
	}
	if len(au) == 0 {
		return nil
	}
	ticks := t.ticks(pts + time.Duration(p.offset))
	// Millisecond timestamps jitter around the true frame grid; snapping to
	// it keeps audio sample durations exact.
	if t.pending != nil {
		want := t.pending.ticks + t.aacFrame
		if d := ticks - want; d > -t.aacFrame/2 && d < t.aacFrame/2 {
			ticks = want
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
	p.offset = int64(p.pub.MediaStart - first)
}

func (p *Packager) openFirst(t *trackState, s *fmp4.Sample) error {
	start := p.pub.MediaStart
	for _, tr := range p.tracks {
		tr.firstTicks = tr.ticks(start)
	}
	ticks := t.ticks(start)
	t.pending = &pendingSample{ticks: ticks, sample: s}
	p.segStart, p.partStart = ticks, ticks
	p.open = true
	p.pub.Stream.Cut(nil, &relay.SegmentHeader{
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
		p.pub.Stream.Cut(part, hdr)
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
	p.pub.SetMediaEnd(mediaEnd)
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
			p.pub.Stream.Cut(part, nil)
		}
	}
	p.open = false
}
