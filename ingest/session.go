package ingest

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaymesh/relaymesh/internal/ratelog"
	"github.com/relaymesh/relaymesh/relay"
)

// Limits bound what publishers may send. Zero fields take the defaults.
type Limits struct {
	// MaxStreams is how many streams may be published at once (default 100).
	MaxStreams int
	// MaxBitrate is the highest average bitrate of a stream in bits per
	// second, measured over 5 s (default 50 Mbit/s). A publisher above it
	// is disconnected.
	MaxBitrate int64
	// MaxFrameSize is the largest access unit in bytes (default 8 MiB).
	// Larger ones are dropped.
	MaxFrameSize int
}

// Default limits.
const (
	DefaultMaxStreams   = 100
	DefaultMaxBitrate   = 50_000_000
	DefaultMaxFrameSize = 8 << 20
)

// Errors Admit and a session's Err return. Protocols map them to the
// refusal their encoders show.
var (
	ErrTooManyStreams = errors.New("too many streams on this node (raise --max-streams)")
	ErrBitrate        = errors.New("stream bitrate above --max-bitrate")
	ErrTakenOver      = errors.New("a newer publisher took the stream over")
	ErrLiveElsewhere  = errors.New("stream is live on another origin")
)

// Claim says how a publish of a stream fits the mesh (see Claimer).
type Claim int

// Claims.
const (
	// ClaimPublish: publish here (no other origin has the stream).
	ClaimPublish Claim = iota
	// ClaimHold: this origin is the stream's standby: the primary
	// publishes it. Package the encoder aside, ready to take over.
	ClaimHold
	// ClaimTakeOver: this origin is the stream's standby and the primary is
	// gone: continue the replica's playlist from this encoder.
	ClaimTakeOver
	// ClaimRefuse: another origin, not this one's partner, publishes it.
	ClaimRefuse
)

// Claimer is the mesh as publishing sees it: whether a stream may be
// published here. The Gate calls it, concurrently, for every publish.
type Claimer interface {
	// Claim decides a publish of stream; for ClaimRefuse, node names the
	// origin that publishes it.
	Claim(stream string) (c Claim, node string)
	// ReleaseReplica stops this node's replica of stream, which it then
	// publishes itself (ClaimTakeOver). It returns once the replica no
	// longer writes the stream.
	ReleaseReplica(stream string) error
}

// bitrateWindow is how long the bitrate is averaged over.
const bitrateWindow = 5 * time.Second

// Gate admits publishers for every protocol listener of a node: it checks
// the publish key and the stream limit, claims the stream in the registry
// and hands back a Session that packages what the publisher sends.
type Gate struct {
	Registry *relay.Registry
	Packager PackagerConfig
	Keys     *Keys // nil admits every publisher
	// Takeover lets a new publisher replace a live one instead of being
	// refused.
	Takeover bool
	// Mesh, if set, is asked whether a stream may be published here: in a
	// mesh one origin publishes a name, and its standby holds a copy.
	Mesh   Claimer
	Limits Limits
	Logger *slog.Logger
	// Now is the clock for bitrate limits (default time.Now).
	Now func() time.Time

	mu       sync.Mutex
	sessions map[string]*Session
	ended    map[string]counts // totals of sessions that ended, per stream
	refused  map[Refusal]int64 // Admit refusals
}

// Refusal names a kind of refused publish, for metrics.
type Refusal struct {
	Proto  string
	Reason string // "unauthorized", "busy", "too_many_streams" or "bad_name"
}

// counts are what a session has received.
type counts struct {
	bytes, frames, dropped int64
}

// PublisherStats describe one stream's publishing, for metrics.
type PublisherStats struct {
	Stream string
	Proto  string // of the live publisher, "" when none
	Live   bool
	// Bytes, Frames and Dropped count media since the node started, over
	// every publisher the stream has had.
	Bytes, Frames, Dropped int64
}

// Stats reports every stream published through the gate since it started.
func (g *Gate) Stats() []PublisherStats {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]PublisherStats, 0, len(g.ended)+len(g.sessions))
	seen := map[string]int{}
	for name, c := range g.ended {
		seen[name] = len(out)
		out = append(out, PublisherStats{Stream: name, Bytes: c.bytes, Frames: c.frames, Dropped: c.dropped})
	}
	for name, s := range g.sessions {
		c := s.counts()
		i, ok := seen[name]
		if !ok {
			i = len(out)
			out = append(out, PublisherStats{Stream: name})
		}
		st := &out[i]
		st.Proto, st.Live = s.proto, true
		st.Bytes += c.bytes
		st.Frames += c.frames
		st.Dropped += c.dropped
	}
	return out
}

// Refused reports how many publishes Admit refused, by protocol and reason.
func (g *Gate) Refused() map[Refusal]int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make(map[Refusal]int64, len(g.refused))
	for k, v := range g.refused {
		out[k] = v
	}
	return out
}

func (g *Gate) countRefusal(proto string, err error) {
	reason := "other"
	switch {
	case errors.Is(err, ErrUnauthorized):
		reason = "unauthorized"
	case errors.Is(err, relay.ErrStreamBusy):
		reason = "busy"
	case errors.Is(err, ErrTooManyStreams):
		reason = "too_many_streams"
	case errors.Is(err, relay.ErrBadStreamName):
		reason = "bad_name"
	case errors.Is(err, ErrLiveElsewhere):
		reason = "live_elsewhere"
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refused == nil {
		g.refused = map[Refusal]int64{}
	}
	g.refused[Refusal{Proto: proto, Reason: reason}]++
}

// Request describes a publisher asking to publish.
type Request struct {
	Stream string
	Key    string
	Proto  string // "rtmp", "srt", "rtsp" or "pull"
	Peer   string // the encoder's address, or the pulled URL
	// Configured marks a source the operator configured (a pull): it
	// needs no publish key.
	Configured bool
}

// Admit checks a publisher and claims its stream.
func (g *Gate) Admit(req Request) (*Session, error) {
	s, err := g.admit(req)
	if err != nil {
		g.countRefusal(req.Proto, err)
	}
	return s, err
}

func (g *Gate) admit(req Request) (*Session, error) {
	if !relay.ValidName(req.Stream) {
		return nil, fmt.Errorf("publish %q: %w", req.Stream, relay.ErrBadStreamName)
	}
	if !req.Configured {
		if err := g.Keys.Check(req.Stream, req.Key); err != nil {
			return nil, err
		}
	}
	maxStreams := g.Limits.MaxStreams
	if maxStreams <= 0 {
		maxStreams = DefaultMaxStreams
	}
	// The mesh is asked before the gate locks: it looks at the gate too.
	claim := ClaimPublish
	if g.Mesh != nil {
		var node string
		if claim, node = g.Mesh.Claim(req.Stream); claim == ClaimRefuse {
			return nil, fmt.Errorf("publish %q: %w %q: publish there, or start this origin with --standby-for %s",
				req.Stream, ErrLiveElsewhere, node, node)
		}
		if claim == ClaimTakeOver {
			if err := g.Mesh.ReleaseReplica(req.Stream); err != nil {
				return nil, fmt.Errorf("publish %q: take over from the replica: %w", req.Stream, err)
			}
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sessions == nil {
		g.sessions = map[string]*Session{}
	}
	if _, live := g.sessions[req.Stream]; !live && len(g.sessions) >= maxStreams {
		return nil, fmt.Errorf("publish %q: %w: %d streams live", req.Stream, ErrTooManyStreams, len(g.sessions))
	}
	var pub *relay.Publication
	var err error
	switch {
	case claim == ClaimHold:
		if old := g.sessions[req.Stream]; old != nil && !g.Takeover {
			return nil, fmt.Errorf("publish %q: %w", req.Stream, relay.ErrStreamBusy)
		}
		pub = relay.Shadow(req.Stream, g.Packager.PartTarget, relay.Window{})
	case g.Takeover:
		pub, err = g.Registry.Takeover(req.Stream)
	default:
		pub, err = g.Registry.Publish(req.Stream)
	}
	if err != nil {
		return nil, err
	}
	log := g.Logger
	if log == nil {
		log = slog.Default()
	}
	now := g.Now
	if now == nil {
		now = time.Now
	}
	s := &Session{
		Stream: req.Stream,
		held:   claim == ClaimHold,
		proto:  req.Proto,
		Log:    log.With("stream", req.Stream, "proto", req.Proto, "peer", req.Peer),
		g:      g,
		pub:    pub,
		now:    now,
		done:   make(chan struct{}),
	}
	s.maxFrame = g.Limits.MaxFrameSize
	if s.maxFrame <= 0 {
		s.maxFrame = DefaultMaxFrameSize
	}
	s.maxBitrate = g.Limits.MaxBitrate
	if s.maxBitrate <= 0 {
		s.maxBitrate = DefaultMaxBitrate
	}
	if old := g.sessions[req.Stream]; old != nil {
		old.end(ErrTakenOver) // its publication is already revoked
	}
	g.sessions[req.Stream] = s
	s.winStart = now()
	go func() {
		// A takeover in the registry revokes the publication; end the
		// session too, so its protocol handler disconnects.
		select {
		case <-pub.Done():
			s.end(ErrTakenOver)
		case <-s.done:
		}
	}()
	return s, nil
}

// Live reports how many streams are being published through the gate.
func (g *Gate) Live() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sessions)
}

// Session is one publisher's stream. Protocol handlers announce tracks with
// SetTracks and write access units; the session packages them, enforces the
// limits and logs (rate-limited) what it drops. Its methods are safe for
// concurrent use, since some protocols deliver each track on its own
// goroutine.
type Session struct {
	Stream string
	// Log carries the stream, protocol and peer.
	Log *slog.Logger

	g     *Gate
	pub   *relay.Publication // a Shadow while held
	now   func() time.Time
	proto string
	held  bool // packaged aside: this node is the stream's standby

	bytes, frames, dropped atomic.Int64

	mu         sync.Mutex
	pk         *Packager
	maxFrame   int
	maxBitrate int64
	winStart   time.Time
	winBytes   int64
	drops      ratelog.Limiter

	endOnce sync.Once
	done    chan struct{}
	err     error
	closed  sync.Once
}

// Resumed reports whether the stream had an earlier publisher whose window
// is still held, so this one continues after a discontinuity.
func (s *Session) Resumed() bool { return s.pub.Resumed }

// Held reports whether the session is held aside: this origin is the
// stream's standby and packages the encoder without serving it.
func (s *Session) Held() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held
}

// HeldStreams lists the streams whose sessions are held.
func (g *Gate) HeldStreams() []string {
	g.mu.Lock()
	sessions := make([]*Session, 0, len(g.sessions))
	for _, s := range g.sessions {
		sessions = append(sessions, s)
	}
	g.mu.Unlock()
	var out []string
	for _, s := range sessions {
		if s.Held() {
			out = append(out, s.Stream)
		}
	}
	return out
}

// Held returns the held session of stream, or nil.
func (g *Gate) Held(stream string) *Session {
	g.mu.Lock()
	s := g.sessions[stream]
	g.mu.Unlock()
	if s == nil || !s.Held() {
		return nil
	}
	return s
}

// Publishing returns the session that publishes stream here, or nil (none,
// or it is held).
func (g *Gate) Publishing(stream string) *Session {
	g.mu.Lock()
	s := g.sessions[stream]
	g.mu.Unlock()
	if s == nil || s.Held() {
		return nil
	}
	return s
}

// Demote sets a publishing session aside, held: the partner origin took
// the stream over while this one was cut off (frozen, or partitioned from
// it), and one origin publishes a name. The publication ends; the session
// goes on packaging into a shadow, ready to be promoted again.
func (s *Session) Demote() error {
	s.mu.Lock()
	if s.held {
		s.mu.Unlock()
		return errors.New("demote: the session is held already")
	}
	old := s.pub
	shadow := relay.Shadow(s.Stream, s.g.Packager.PartTarget, relay.Window{})
	if s.pk != nil {
		s.pk.retarget(shadow, s.pk.Init())
	}
	s.pub, s.held = shadow, true
	s.mu.Unlock()
	old.Close()
	return nil
}

// Promote makes a held session the stream's publisher: it continues pub,
// the publication of this node's replica of the stream, from what it has
// packaged aside. The carried-over media starts with the newest segment
// that began at or before since (where the replica's media ends), so that
// nothing between the two is missing: viewers may see up to a GOP again,
// after a discontinuity, rather than a gap.
func (s *Session) Promote(pub *relay.Publication, since time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.held {
		return errors.New("promote: the session is not held")
	}
	shadow := s.pub
	snap := shadow.Stream.Snapshot()
	from := 0
	for i, seg := range snap.Segments {
		if !seg.Start.After(since) {
			from = i
		}
	}
	inits := map[*relay.Init]*relay.Init{} // the shadow's, renamed in pub's stream
	rename := func(in *relay.Init) *relay.Init {
		if in == nil {
			return nil
		}
		if out := inits[in]; out != nil {
			return out
		}
		out := *in
		out.ID = pub.NewInitID()
		inits[in] = &out
		return &out
	}
	for i, seg := range snap.Segments[from:] {
		pub.Cut(nil, &relay.SegmentHeader{Start: seg.Start, Discontinuity: i == 0 || seg.Discontinuity, Init: rename(seg.Init)})
		for _, p := range seg.Parts {
			pub.Cut(&relay.Part{Duration: p.Duration, Independent: p.Independent, Data: p.Data}, nil)
		}
	}
	if s.pk != nil {
		s.pk.retarget(pub, rename(s.pk.Init()))
	}
	s.pub, s.held = pub, false
	shadow.Close()
	go func() {
		select {
		case <-pub.Done():
			s.end(ErrTakenOver)
		case <-s.done:
		}
	}()
	return nil
}

// Done is closed when the publisher should be disconnected: it was taken
// over, it broke a limit, or Close was called. Err says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err reports why Done closed, or nil.
func (s *Session) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

func (s *Session) end(err error) {
	s.endOnce.Do(func() {
		s.err = err
		close(s.done)
	})
}

// Codecs returns the CODECS string of the current init segment, or "" while
// it is not yet known.
func (s *Session) Codecs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pk == nil || s.pk.Init() == nil {
		return ""
	}
	return s.pk.Init().Codecs
}

// SetTracks announces the publisher's tracks. Called again with different
// tracks, it starts a new init segment after a discontinuity.
func (s *Session) SetTracks(tracks []Track) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pk == nil {
		pk, err := NewPackager(s.pub, tracks, s.g.Packager)
		if err != nil {
			return err
		}
		s.pk = pk
		return nil
	}
	if err := s.pk.Reconfigure(tracks); err != nil {
		return err
	}
	codecs := ""
	if in := s.pk.Init(); in != nil {
		codecs = in.Codecs
	}
	s.Log.Info("publisher changed codec parameters; new init segment after a discontinuity", "codecs", codecs)
	return nil
}

// WriteH264 packages one H.264 access unit. The error is non-nil only once
// the session is over; bad input is logged and dropped.
func (s *Session) WriteH264(track int, pts, dts time.Duration, au [][]byte) error {
	return s.write(nalSize(au), func(pk *Packager) error { return pk.WriteH264(track, pts, dts, au) })
}

// WriteH265 packages one H.265 access unit, like WriteH264.
func (s *Session) WriteH265(track int, pts, dts time.Duration, au [][]byte) error {
	return s.write(nalSize(au), func(pk *Packager) error { return pk.WriteH265(track, pts, dts, au) })
}

// WriteMPEG4Audio packages one AAC access unit, like WriteH264.
func (s *Session) WriteMPEG4Audio(track int, pts time.Duration, au []byte) error {
	return s.write(len(au), func(pk *Packager) error { return pk.WriteMPEG4Audio(track, pts, au) })
}

// WriteOpus packages one Opus packet, like WriteH264.
func (s *Session) WriteOpus(track int, pts time.Duration, packet []byte) error {
	return s.write(len(packet), func(pk *Packager) error { return pk.WriteOpus(track, pts, packet) })
}

func nalSize(au [][]byte) int {
	n := 0
	for _, b := range au {
		n += len(b)
	}
	return n
}

func (s *Session) write(size int, f func(*Packager) error) error {
	if err := s.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pk == nil {
		return errors.New("write before SetTracks")
	}
	if size > s.maxFrame {
		s.Drop(fmt.Errorf("access unit of %d bytes is above --max-frame-size %d", size, s.maxFrame))
		return nil
	}
	if now := s.now(); now.Sub(s.winStart) >= bitrateWindow {
		rate := int64(float64(s.winBytes*8) / now.Sub(s.winStart).Seconds())
		s.winStart, s.winBytes = now, 0
		if rate > s.maxBitrate {
			err := fmt.Errorf("%w: %d bit/s over %s, limit %d", ErrBitrate, rate, bitrateWindow, s.maxBitrate)
			s.end(err)
			return err
		}
	}
	s.winBytes += int64(size)
	s.bytes.Add(int64(size))
	s.frames.Add(1)
	before := s.pk.Init()
	if err := f(s.pk); err != nil {
		s.Drop(err)
	}
	if after := s.pk.Init(); before != nil && after != nil && after != before {
		s.Log.Info("publisher changed codec parameters; new init segment after a discontinuity", "codecs", after.Codecs)
	}
	return nil
}

func (s *Session) counts() counts {
	return counts{bytes: s.bytes.Load(), frames: s.frames.Load(), dropped: s.dropped.Load()}
}

// Drop logs bad input from the publisher, at most once every few seconds,
// and counts it.
func (s *Session) Drop(err error) {
	s.dropped.Add(1)
	if ok, suppressed := s.drops.Allow(); ok {
		s.Log.Warn("dropped bad input from publisher", "err", err, "suppressed", suppressed)
	}
}

// Close flushes what is queued, ends the publication (the stream stays
// servable for the registry's grace period) and frees the stream's slot.
func (s *Session) Close() {
	s.closed.Do(func() {
		s.end(nil)
		s.mu.Lock()
		if s.pk != nil {
			s.pk.Close()
		}
		s.mu.Unlock()
		s.pub.Close()
		g := s.g
		g.mu.Lock()
		if g.sessions[s.Stream] == s {
			delete(g.sessions, s.Stream)
		}
		if g.ended == nil {
			g.ended = map[string]counts{}
		}
		c, sc := g.ended[s.Stream], s.counts()
		g.ended[s.Stream] = counts{bytes: c.bytes + sc.bytes, frames: c.frames + sc.frames, dropped: c.dropped + sc.dropped}
		g.mu.Unlock()
	})
}
