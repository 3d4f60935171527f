// Package relay owns the stream model: a stream's init segments, segments
// and parts, and the per-stream GOP cache that holds the playlist window.
//
// A Stream has one writer (the packager at an origin, the relay client at an
// edge) and any number of readers (playlist and media handlers). The writer
// publishes immutable Snapshots through an atomic pointer, so readers never
// take a lock the writer needs and a slow reader can never stall ingest.
// Each Snapshot carries a channel that is closed when it is superseded,
// which is how blocking playlist reloads and hinted-part requests wait.
package relay

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Init is a CMAF initialization segment and what a player needs to know
// about the tracks it describes.
type Init struct {
	ID        uint64 // unique within the stream; names the URI init{ID}.mp4
	Data      []byte
	Codecs    string // RFC 6381 list for the CODECS attribute, e.g. "avc1.64001f,mp4a.40.2"
	Width     int    // 0 when there is no video
	Height    int
	FrameRate float64
}

// Part is one CMAF chunk (moof+mdat) holding whole frames of every track.
type Part struct {
	N           uint64 // stream-wide part number; names the URI part{N}.m4s
	Duration    time.Duration
	Independent bool // starts with a keyframe
	Data        []byte
}

// Segment is a run of parts that starts at a keyframe.
// Segments inside a Snapshot are never mutated; the writer replaces them.
type Segment struct {
	MSN           uint64    // media sequence number
	Start         time.Time // wall clock at ingest: PROGRAM-DATE-TIME
	Discontinuity bool      // first segment after a publisher change
	Init          *Init
	Parts         []*Part
	Duration      time.Duration // sum of part durations
	Size          int           // sum of part sizes in bytes
	Complete      bool
}

// SegmentHeader describes a segment the writer is opening.
type SegmentHeader struct {
	Start         time.Time
	Discontinuity bool
	Init          *Init
}

// Snapshot is an immutable view of a stream's window.
type Snapshot struct {
	// Segments holds the window, oldest first. The last one may be open
	// (not Complete) while the publisher is cutting parts into it.
	Segments []*Segment
	// NextPart is the number the next part will get: the preload hint.
	NextPart uint64
	// DiscSeq is the discontinuity sequence number of Segments[0].
	DiscSeq uint64
	// Live is true while a publisher (or upstream) feeds the stream.
	Live bool
	// Ended is true once the show is over: its publisher left and did not
	// come back within the grace period. Playlists carry EXT-X-ENDLIST;
	// nothing is added any more.
	Ended bool
	// Gone is true once the stream was removed; no further change follows.
	Gone bool
	// TargetDuration is EXT-X-TARGETDURATION in seconds. It starts at the
	// stream's floor and only grows, if an encoder's GOP is longer.
	TargetDuration int
	// PartAdded is when this node added the newest part, by its own clock:
	// how stale a playlist rendered from this snapshot is.
	PartAdded time.Time

	changed chan struct{}
	memo    *sync.Map
}

// Memo returns the value cached on this snapshot under key, computing it
// when absent. Every viewer blocked on one update wakes to the same
// snapshot, so work derived from it (a rendered playlist) is done once and
// shared, and is freed with the snapshot. Callers that arrive while it is
// being computed wait for it rather than compute it again: a publish wakes
// all blocked viewers at once.
func (s *Snapshot) Memo(key any, compute func() any) any {
	e, ok := s.memo.Load(key)
	if !ok {
		e, _ = s.memo.LoadOrStore(key, new(memoEntry))
	}
	m := e.(*memoEntry)
	m.once.Do(func() { m.v = compute() })
	return m.v
}

type memoEntry struct {
	once sync.Once
	v    any
}

// Changed returns a channel that is closed when a newer snapshot exists.
func (s *Snapshot) Changed() <-chan struct{} { return s.changed }

// Tail returns where a fresh replica of s starts: the first part number
// and the discontinuity sequence number of the segment it starts at. That
// segment is the one before the complete segments covering three target
// durations back from the live edge (HOLD-BACK, where the most patient
// players start), so every player can start inside the replica. A new node
// that is sent only these serves its first viewers sooner; its window grows
// to full length as the show goes on. It is not backfilled: a playlist
// may not gain segments at its head (RFC 8216bis 6.2.1).
func (s *Snapshot) Tail() (fromPart, discSeq uint64) {
	holdBack := 3 * time.Duration(s.TargetDuration) * time.Second
	i := len(s.Segments) - 1
	if i >= 0 && !s.Segments[i].Complete {
		i-- // the open segment is always sent
	}
	var covered time.Duration
	for ; i > 0 && covered < holdBack; i-- {
		covered += s.Segments[i].Duration
	}
	// i is now one more, for a player that rounds its start down.
	i = max(i, 0)
	discSeq = s.DiscSeq
	for _, seg := range s.Segments[:i] {
		if seg.Discontinuity {
			discSeq++
		}
	}
	for _, seg := range s.Segments[i:] {
		if len(seg.Parts) > 0 {
			return seg.Parts[0].N, discSeq
		}
	}
	return s.NextPart, discSeq
}

// PartAge is how long ago the newest part was complete, as well as this
// node knows: the longer of the time since it added the part and since
// the part's media end by PROGRAM-DATE-TIME. A fresh replica receives its
// first parts all at once, so only the second tells their age (given
// clocks in step). Zero when there is no part.
func (s *Snapshot) PartAge(now time.Time) time.Duration {
	for i := len(s.Segments) - 1; i >= 0; i-- {
		seg := s.Segments[i]
		if len(seg.Parts) == 0 {
			continue
		}
		age := now.Sub(s.PartAdded)
		if !seg.Start.IsZero() {
			age = max(age, now.Sub(seg.Start.Add(seg.Duration)))
		}
		return age
	}
	return 0
}

// Open returns the segment being cut, or nil.
func (s *Snapshot) Open() *Segment {
	if n := len(s.Segments); n > 0 && !s.Segments[n-1].Complete {
		return s.Segments[n-1]
	}
	return nil
}

// LastComplete returns the newest complete segment, or nil.
func (s *Snapshot) LastComplete() *Segment {
	for i := len(s.Segments) - 1; i >= 0; i-- {
		if s.Segments[i].Complete {
			return s.Segments[i]
		}
	}
	return nil
}

// Segment finds a segment by media sequence number.
func (s *Snapshot) Segment(msn uint64) *Segment {
	if len(s.Segments) == 0 {
		return nil
	}
	first := s.Segments[0].MSN
	if msn < first || msn-first >= uint64(len(s.Segments)) {
		return nil
	}
	return s.Segments[msn-first]
}

// Part finds a part by number.
func (s *Snapshot) Part(n uint64) *Part {
	// Search from the newest segment: viewers ask for the live edge.
	for i := len(s.Segments) - 1; i >= 0; i-- {
		seg := s.Segments[i]
		if len(seg.Parts) == 0 {
			continue
		}
		first := seg.Parts[0].N
		if n >= first {
			if n-first < uint64(len(seg.Parts)) {
				return seg.Parts[n-first]
			}
			return nil
		}
	}
	return nil
}

// Init finds an init segment by ID among those the window uses.
func (s *Snapshot) Init(id uint64) *Init {
	for i := len(s.Segments) - 1; i >= 0; i-- {
		if in := s.Segments[i].Init; in != nil && in.ID == id {
			return in
		}
	}
	return nil
}

// LatestInit returns the init segment of the newest segment, or nil.
func (s *Snapshot) LatestInit() *Init {
	if n := len(s.Segments); n > 0 {
		return s.Segments[n-1].Init
	}
	return nil
}

// Window bounds what a stream keeps in memory.
type Window struct {
	// Segments is the most complete segments kept (default 12).
	Segments int
	// MaxBytes caps the bytes kept; the oldest segments go first (default 64 MiB).
	MaxBytes int
}

func (w Window) withDefaults() Window {
	if w.Segments <= 0 {
		w.Segments = 12
	}
	if w.MaxBytes <= 0 {
		w.MaxBytes = 64 << 20
	}
	return w
}

// Stream is one live stream's window and its writer API.
type Stream struct {
	Name       string
	PartTarget time.Duration // PART-TARGET: no part is longer

	window Window
	snap   atomic.Pointer[Snapshot]

	mu      sync.Mutex // serialises writers; readers never take it
	nextMSN uint64
	bytes   int

	timers sync.Pool // stopped *time.Timer for WaitFor: one per wait otherwise

	// onPart, if set, learns how long after its media ended each part
	// became available here.
	onPart func(stream string, lag time.Duration)
}

// DefaultTargetDuration is the EXT-X-TARGETDURATION a stream starts with:
// it fits the 2 s keyframe interval that encoders are told to use.
const DefaultTargetDuration = 2

// NewStream returns an empty stream.
func NewStream(name string, partTarget time.Duration, w Window) *Stream {
	s := &Stream{Name: name, PartTarget: partTarget, window: w.withDefaults()}
	s.snap.Store(&Snapshot{TargetDuration: DefaultTargetDuration, changed: make(chan struct{}), memo: new(sync.Map)})
	return s
}

// Snapshot returns the current view. It never blocks.
func (s *Stream) Snapshot() *Snapshot { return s.snap.Load() }

// Wait returns the first snapshot for which ready is true, or one of an
// ended or removed stream, which will not change any more. It returns the
// latest snapshot and ctx's error when ctx ends first.
func (s *Stream) Wait(ctx context.Context, ready func(*Snapshot) bool) (*Snapshot, error) {
	for {
		snap := s.Snapshot()
		if ready(snap) || snap.Ended || snap.Gone {
			return snap, nil
		}
		select {
		case <-snap.changed:
		case <-ctx.Done():
			return s.Snapshot(), ctx.Err()
		}
	}
}

// WaitFor is Wait bounded by d as well: when d passes first it returns the
// latest snapshot and context.DeadlineExceeded. Unlike Wait under a
// context.WithTimeout it allocates nothing (its timer is reused), which
// matters because every blocking reload and hinted-part request of every
// viewer waits once.
func (s *Stream) WaitFor(ctx context.Context, d time.Duration, ready func(*Snapshot) bool) (*Snapshot, error) {
	snap := s.Snapshot()
	if ready(snap) || snap.Ended || snap.Gone {
		return snap, nil
	}
	t, _ := s.timers.Get().(*time.Timer)
	if t == nil {
		t = time.NewTimer(d)
	} else {
		t.Reset(d)
	}
	defer s.putTimer(t)
	for {
		select {
		case <-snap.changed:
		case <-ctx.Done():
			return s.Snapshot(), ctx.Err()
		case <-t.C:
			return s.Snapshot(), context.DeadlineExceeded
		}
		snap = s.Snapshot()
		if ready(snap) || snap.Ended || snap.Gone {
			return snap, nil
		}
	}
}

func (s *Stream) putTimer(t *time.Timer) {
	// Since Go 1.23 a stopped timer's channel holds no stale tick, so the
	// next Reset starts clean.
	t.Stop()
	s.timers.Put(t)
}

// publish installs next and wakes everyone waiting on the previous view.
func (s *Stream) publish(next *Snapshot) {
	next.changed = make(chan struct{})
	next.memo = new(sync.Map)
	prev := s.snap.Swap(next)
	close(prev.changed)
}

// clone copies the header of the current snapshot with a fresh segment
// slice, so the writer can modify it without touching what readers hold.
func (s *Stream) clone() *Snapshot {
	cur := s.snap.Load()
	next := *cur
	next.Segments = make([]*Segment, len(cur.Segments), len(cur.Segments)+1)
	copy(next.Segments, cur.Segments)
	return &next
}

// Cut is the writer's one step. It appends last (if not nil) to the open
// segment, and when next is not nil it completes the open segment and opens
// a new one. The stream numbers parts and segments.
func (s *Stream) Cut(last *Part, next *SegmentHeader) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap.Load().Ended {
		return // an ended playlist never changes (a publisher starts a new stream)
	}
	snap := s.clone()
	snap.Live = true
	if last != nil {
		s.appendPart(snap, last)
	}
	if next != nil {
		s.closeOpen(snap)
		snap.Segments = append(snap.Segments, &Segment{
			MSN:           s.nextMSN,
			Start:         next.Start,
			Discontinuity: next.Discontinuity,
			Init:          next.Init,
		})
		s.nextMSN++
		s.prune(snap)
	}
	s.publish(snap)
}

func (s *Stream) appendPart(snap *Snapshot, p *Part) {
	open := snap.Open()
	if open == nil {
		return // a writer must open a segment first; dropping keeps the window valid
	}
	p.N = snap.NextPart
	snap.NextPart++
	seg := *open
	// Parts is append-only under the writer lock, so sharing the backing
	// array with older snapshots is safe: they only see their own length.
	seg.Parts = append(seg.Parts, p)
	seg.Duration += p.Duration
	seg.Size += len(p.Data)
	s.bytes += len(p.Data)
	snap.Segments[len(snap.Segments)-1] = &seg
	snap.PartAdded = time.Now()
	if s.onPart != nil && !seg.Start.IsZero() {
		s.onPart(s.Name, snap.PartAdded.Sub(seg.Start.Add(seg.Duration)))
	}
	// A segment rounds to its nearest whole second (RFC 8216bis 4.4.3.1).
	if td := int((seg.Duration + time.Second/2) / time.Second); td > snap.TargetDuration {
		snap.TargetDuration = td
	}
}

// closeOpen completes the open segment, or drops it when it has no parts.
func (s *Stream) closeOpen(snap *Snapshot) {
	open := snap.Open()
	if open == nil {
		return
	}
	if len(open.Parts) == 0 {
		snap.Segments = snap.Segments[:len(snap.Segments)-1]
		s.nextMSN--
		return
	}
	seg := *open
	seg.Complete = true
	snap.Segments[len(snap.Segments)-1] = &seg
}

func (s *Stream) prune(snap *Snapshot) {
	complete := 0
	var listed time.Duration
	for _, seg := range snap.Segments {
		if seg.Complete {
			complete++
			listed += seg.Duration
		}
	}
	// A live playlist must never be shorter than three target durations
	// (RFC 8216bis 6.2.2), whatever the byte budget says.
	minListed := 3 * time.Duration(snap.TargetDuration) * time.Second
	drop := 0
	for drop < len(snap.Segments)-1 && snap.Segments[drop].Complete {
		seg := snap.Segments[drop]
		overCount := complete > s.window.Segments
		overBytes := s.bytes > s.window.MaxBytes && listed-seg.Duration >= minListed
		if !overCount && !overBytes {
			break
		}
		s.bytes -= seg.Size
		if seg.Discontinuity {
			snap.DiscSeq++
		}
		complete--
		listed -= seg.Duration
		drop++
	}
	if drop > 0 {
		snap.Segments = append([]*Segment(nil), snap.Segments[drop:]...)
	}
}

// EndPublish marks the publisher gone: the open segment is completed (or
// dropped when empty) and the window stays servable.
func (s *Stream) EndPublish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap.Load().Ended {
		return
	}
	snap := s.clone()
	s.closeOpen(snap)
	snap.Live = false
	s.publish(snap)
}

// End marks the show over: the open segment is completed (or dropped when
// empty), and the window, which stays servable, gets no more media. It
// reports whether the stream was not ended already.
func (s *Stream) End() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur := s.snap.Load(); cur.Ended || cur.Gone {
		return false
	}
	snap := s.clone()
	s.closeOpen(snap)
	snap.Live = false
	snap.Ended = true
	s.publish(snap)
	return true
}

// remove marks the stream gone so that blocked readers return at once.
func (s *Stream) remove() {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.clone()
	snap.Live = false
	snap.Gone = true
	s.publish(snap)
}

// The replica writer: a node that relays a stream applies its upstream's
// segments and parts with the upstream's numbers and timestamps, so every
// node in the mesh serves the same playlist. Each method is idempotent, so
// a new upstream after a failover may resend what the node already holds.

// Seed sets what an upstream reports when a subscription starts: the
// discontinuity sequence of the first segment it will send (used only while
// the stream is empty), its target duration and whether a publisher is live.
func (s *Stream) Seed(discSeq uint64, targetDuration int, live bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap.Load().Ended {
		return
	}
	snap := s.clone()
	if len(snap.Segments) == 0 {
		snap.DiscSeq = discSeq
	}
	snap.TargetDuration = max(snap.TargetDuration, targetDuration)
	snap.Live = live
	s.publish(snap)
}

// NextMSN is the media sequence number the next segment opened gets.
func (s *Stream) NextMSN() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextMSN
}

// OpenSegment opens segment msn, completing the open one. It reports
// false, changing nothing, for a segment the stream already has, unless
// that is the open segment, still without parts, and h differs: the
// upstream replaced it (its publisher was taken over before the segment's
// first part), and the new header replaces it here too. A gap in sequence
// numbers (segments this node never received) restarts the window at msn
// with a discontinuity, since a playlist cannot skip numbers.
func (s *Stream) OpenSegment(msn uint64, h SegmentHeader) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.snap.Load().Ended {
		return false
	}
	snap := s.clone()
	if n := len(snap.Segments); n > 0 {
		if open := snap.Segments[n-1]; open.MSN == msn && !open.Complete && len(open.Parts) == 0 && !sameHeader(open, h) {
			snap.Segments[n-1] = &Segment{MSN: msn, Start: h.Start, Discontinuity: h.Discontinuity, Init: h.Init}
			s.publish(snap)
			return true
		}
		last := snap.Segments[n-1].MSN
		if msn <= last {
			return false
		}
		if msn != last+1 {
			for _, seg := range snap.Segments {
				if seg.Discontinuity {
					snap.DiscSeq++
				}
			}
			snap.Segments = nil
			s.bytes = 0
			h.Discontinuity = true
		}
	}
	s.closeOpen(snap)
	snap.Segments = append(snap.Segments, &Segment{
		MSN: msn, Start: h.Start, Discontinuity: h.Discontinuity, Init: h.Init,
	})
	s.nextMSN = msn + 1
	s.prune(snap)
	s.publish(snap)
	return true
}

// AddPart appends part p (numbered by the upstream) to open segment msn.
// It reports false for a part the stream already has or that does not
// belong to the open segment.
func (s *Stream) AddPart(msn uint64, p *Part) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.snap.Load()
	open := cur.Open()
	if cur.Ended || open == nil || open.MSN != msn || p.N < cur.NextPart {
		return false
	}
	snap := s.clone()
	snap.NextPart = p.N
	s.appendPart(snap, p)
	s.publish(snap)
	return true
}

// CloseSegment completes segment msn if it is the open one.
func (s *Stream) CloseSegment(msn uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if open := s.snap.Load().Open(); s.snap.Load().Ended || open == nil || open.MSN != msn || len(open.Parts) == 0 {
		return
	}
	snap := s.clone()
	s.closeOpen(snap)
	s.publish(snap)
}

// sameHeader reports whether seg was opened with h.
func sameHeader(seg *Segment, h SegmentHeader) bool {
	sameInit := seg.Init == h.Init || (seg.Init != nil && h.Init != nil && seg.Init.ID == h.Init.ID)
	return seg.Start.Equal(h.Start) && seg.Discontinuity == h.Discontinuity && sameInit
}
