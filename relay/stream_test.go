package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testPartTarget = 200 * time.Millisecond

var testEpoch = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

// writer drives a Stream the way a packager does, numbering the parts'
// payloads so tests can recognise them.
type writer struct {
	st    *Stream
	init  *Init
	parts int
	segs  int
}

func newWriter(st *Stream) *writer {
	return &writer{st: st, init: &Init{ID: 1, Data: []byte("init-1"), Codecs: "avc1.64001f"}}
}

func (w *writer) header(disc bool) *SegmentHeader {
	h := &SegmentHeader{Start: testEpoch.Add(time.Duration(w.segs) * 2 * time.Second), Discontinuity: disc, Init: w.init}
	w.segs++
	return h
}

// open opens a segment (completing the one before).
func (w *writer) open(disc bool) { w.st.Cut(nil, w.header(disc)) }

// part appends one part of size bytes.
func (w *writer) part(d time.Duration, size int) *Part {
	data := bytes.Repeat([]byte{byte(w.parts)}, size)
	copy(data, fmt.Sprintf("p%d.", w.parts))
	p := &Part{Duration: d, Independent: w.st.Snapshot().Open() != nil && len(w.st.Snapshot().Open().Parts) == 0, Data: data}
	w.parts++
	w.st.Cut(p, nil)
	return p
}

// segment appends n parts and then opens the next segment.
func (w *writer) segment(n int, d time.Duration, size int, disc bool) {
	for range n {
		w.part(d, size)
	}
	w.open(disc)
}

func completeCount(s *Snapshot) int {
	n := 0
	for _, seg := range s.Segments {
		if seg.Complete {
			n++
		}
	}
	return n
}

// checkInvariants asserts what every published snapshot must satisfy.
func checkInvariants(t *testing.T, s *Snapshot) {
	t.Helper()
	var nextN uint64
	havePart := false
	for i, seg := range s.Segments {
		if i > 0 && seg.MSN != s.Segments[i-1].MSN+1 {
			t.Fatalf("segment %d has MSN %d after %d", i, seg.MSN, s.Segments[i-1].MSN)
		}
		if !seg.Complete && i != len(s.Segments)-1 {
			t.Fatalf("segment MSN %d is open but not last", seg.MSN)
		}
		var dur time.Duration
		size := 0
		for _, p := range seg.Parts {
			if havePart && p.N != nextN {
				t.Fatalf("part %d follows part %d", p.N, nextN-1)
			}
			havePart, nextN = true, p.N+1
			dur += p.Duration
			size += len(p.Data)
		}
		if dur != seg.Duration || size != seg.Size {
			t.Fatalf("segment %d: Duration %v Size %d, parts sum to %v and %d", seg.MSN, seg.Duration, seg.Size, dur, size)
		}
		if seg.Complete && len(seg.Parts) == 0 {
			t.Fatalf("complete segment %d has no parts", seg.MSN)
		}
		// RFC 8216bis 4.4.3.1: round(EXTINF) <= TARGETDURATION.
		if r := int((seg.Duration + time.Second/2) / time.Second); r > s.TargetDuration {
			t.Fatalf("segment %d of %v rounds to %d s > TARGETDURATION %d", seg.MSN, seg.Duration, r, s.TargetDuration)
		}
	}
	if havePart && s.NextPart != nextN {
		t.Fatalf("NextPart %d, last part is %d", s.NextPart, nextN-1)
	}
}

func TestNewStreamEmpty(t *testing.T) {
	st := NewStream("s", testPartTarget, Window{})
	s := st.Snapshot()
	if len(s.Segments) != 0 || s.NextPart != 0 || s.Live || s.Gone || s.DiscSeq != 0 {
		t.Fatalf("new stream snapshot %+v", s)
	}
	if s.TargetDuration != DefaultTargetDuration {
		t.Fatalf("TargetDuration %d, want %d", s.TargetDuration, DefaultTargetDuration)
	}
	if s.Open() != nil || s.LastComplete() != nil || s.LatestInit() != nil || s.Part(0) != nil || s.Segment(0) != nil || s.Init(1) != nil {
		t.Fatal("lookups on an empty snapshot found something")
	}
	if st.PartTarget != testPartTarget || st.Name != "s" {
		t.Fatalf("stream %q part target %v", st.Name, st.PartTarget)
	}
}

func TestCutNumbersPartsAndSegments(t *testing.T) {
	st := NewStream("s", testPartTarget, Window{Segments: 100})
	w := newWriter(st)

	// A part before any segment is open has nowhere to go.
	st.Cut(&Part{Duration: testPartTarget, Data: []byte("x")}, nil)
	if s := st.Snapshot(); len(s.Segments) != 0 || s.NextPart != 0 || !s.Live {
		t.Fatalf("part without a segment: segments %d NextPart %d Live %v", len(s.Segments), s.NextPart, s.Live)
	}

	w.open(false)
	var want []*Part
	for seg := range 3 {
		for range 5 {
			want = append(want, w.part(testPartTarget, 10))
		}
		w.open(false)
		s := st.Snapshot()
		checkInvariants(t, s)
		if got := completeCount(s); got != seg+1 {
			t.Fatalf("%d complete segments, want %d", got, seg+1)
		}
	}
	s := st.Snapshot()
	for i, p := range want {
		if p.N != uint64(i) {
			t.Fatalf("part %d numbered %d", i, p.N)
		}
		if got := s.Part(uint64(i)); got != p {
			t.Fatalf("Part(%d) = %p, want %p", i, got, p)
		}
	}
	if s.Part(uint64(len(want))) != nil {
		t.Fatal("Part(NextPart) found a part")
	}
	if s.NextPart != uint64(len(want)) {
		t.Fatalf("NextPart %d, want %d", s.NextPart, len(want))
	}
	for msn := range uint64(3) {
		seg := s.Segment(msn)
		if seg == nil || seg.MSN != msn || !seg.Complete || len(seg.Parts) != 5 || seg.Duration != time.Second {
			t.Fatalf("Segment(%d) = %+v", msn, seg)
		}
		if !seg.Parts[0].Independent {
			t.Fatalf("segment %d first part not independent", msn)
		}
	}
	if open := s.Open(); open == nil || open.MSN != 3 || len(open.Parts) != 0 {
		t.Fatalf("open segment %+v", open)
	}
	if lc := s.LastComplete(); lc == nil || lc.MSN != 2 {
		t.Fatalf("LastComplete %+v", lc)
	}
	if s.Init(1) != w.init || s.LatestInit() != w.init || s.Init(2) != nil {
		t.Fatal("init lookups")
	}

	// One Cut can end a segment with its last part and open the next, as
	// the packager does at a keyframe.
	w.part(testPartTarget, 10)
	last := &Part{Duration: testPartTarget, Data: []byte("last")}
	st.Cut(last, w.header(false))
	s = st.Snapshot()
	checkInvariants(t, s)
	if seg := s.Segment(3); seg == nil || !seg.Complete || len(seg.Parts) != 2 || seg.Parts[1] != last {
		t.Fatalf("Cut(part, header) did not put the part in the segment it completes: %+v", seg)
	}
	if open := s.Open(); open == nil || open.MSN != 4 || len(open.Parts) != 0 {
		t.Fatalf("Cut(part, header) open segment %+v", open)
	}

	// Opening a segment while the open one is empty replaces it: no empty
	// complete segment and no MSN gap.
	w.open(true)
	s = st.Snapshot()
	checkInvariants(t, s)
	if open := s.Open(); open == nil || open.MSN != 4 || !open.Discontinuity {
		t.Fatalf("re-opened empty segment %+v", open)
	}
}

func TestTargetDurationCoversLongSegments(t *testing.T) {
	st := NewStream("s", testPartTarget, Window{})
	w := newWriter(st)
	w.open(false)
	for i := range 25 { // 5 s in one segment
		w.part(testPartTarget, 1)
		s := st.Snapshot()
		checkInvariants(t, s)
		d := time.Duration(i+1) * testPartTarget
		want := max(DefaultTargetDuration, int((d+time.Second/2)/time.Second))
		if s.TargetDuration != want {
			t.Fatalf("after %v: TargetDuration %d, want %d", d, s.TargetDuration, want)
		}
	}
}

func TestEndPublish(t *testing.T) {
	for _, tc := range []struct {
		name      string
		openParts int
		wantSegs  int
	}{
		{"open segment with parts is completed", 3, 2},
		{"empty open segment is dropped", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := NewStream("s", testPartTarget, Window{})
			w := newWriter(st)
			w.open(false)
			w.segment(5, testPartTarget, 10, false)
			for range tc.openParts {
				w.part(testPartTarget, 10)
			}
			before := st.Snapshot()
			st.EndPublish()
			s := st.Snapshot()
			checkInvariants(t, s)
			if s.Live || s.Gone {
				t.Fatalf("Live %v Gone %v after EndPublish", s.Live, s.Gone)
			}
			if len(s.Segments) != tc.wantSegs || s.Open() != nil {
				t.Fatalf("%d segments (open %v), want %d all complete", len(s.Segments), s.Open() != nil, tc.wantSegs)
			}
			select {
			case <-before.Changed():
			default:
				t.Fatal("EndPublish did not signal the previous snapshot")
			}
		})
	}
}

// A reader that holds on to an old snapshot, or keeps walking new ones,
// must never hold the writer up; and what it holds must never change.
func TestSnapshotReadersNeverBlockWriter(t *testing.T) {
	st := NewStream("s", testPartTarget, Window{Segments: 4})
	w := newWriter(st)
	w.open(false)
	w.segment(10, testPartTarget, 64, false)
	for range 3 {
		w.part(testPartTarget, 64)
	}

	held := st.Snapshot()
	type segView struct {
		seg   *Segment
		parts []*Part
		data  [][]byte
	}
	var view []segView
	for _, seg := range held.Segments {
		v := segView{seg: seg, parts: append([]*Part(nil), seg.Parts...)}
		for _, p := range seg.Parts {
			v.data = append(v.data, bytes.Clone(p.Data))
		}
		view = append(view, v)
	}
	heldNext, heldLen := held.NextPart, len(held.Segments)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var readers sync.WaitGroup
	var reads atomic.Int64
	for range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for ctx.Err() == nil {
				s := st.Snapshot()
				for _, seg := range s.Segments {
					for _, p := range seg.Parts {
						_ = p.Data[0] + byte(p.N)
					}
				}
				if s.Part(s.NextPart-1) == nil && s.NextPart > 0 {
					panic("newest part missing")
				}
				reads.Add(1)
			}
		}()
	}
	// A waiter that is never satisfied must not hold the writer up either.
	readers.Add(1)
	go func() {
		defer readers.Done()
		st.Wait(ctx, func(*Snapshot) bool { return false }) //nolint:errcheck
	}()

	const cuts = 10000
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		for i := range cuts {
			if i%10 == 9 {
				st.Cut(&Part{Duration: testPartTarget, Data: make([]byte, 64)}, w.header(false))
			} else {
				st.Cut(&Part{Duration: testPartTarget, Data: make([]byte, 64)}, nil)
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("writer did not finish 10000 cuts within 20 s while readers held snapshots")
	}
	cancel()
	readers.Wait()
	t.Logf("10000 cuts in %v with %d concurrent snapshot reads", time.Since(start), reads.Load())

	s := st.Snapshot()
	checkInvariants(t, s)
	if s.NextPart != heldNext+cuts {
		t.Fatalf("NextPart %d, want %d", s.NextPart, heldNext+cuts)
	}
	if completeCount(s) != 4 {
		t.Fatalf("%d complete segments kept, window is 4", completeCount(s))
	}
	select {
	case <-held.Changed():
	default:
		t.Fatal("held snapshot was never marked changed")
	}
	// The held snapshot is exactly as it was.
	if held.NextPart != heldNext || len(held.Segments) != heldLen {
		t.Fatalf("held snapshot changed: NextPart %d segments %d", held.NextPart, len(held.Segments))
	}
	for i, v := range view {
		seg := held.Segments[i]
		if seg != v.seg || len(seg.Parts) != len(v.parts) {
			t.Fatalf("held segment %d changed", i)
		}
		for j, p := range seg.Parts {
			if p != v.parts[j] || !bytes.Equal(p.Data, v.data[j]) {
				t.Fatalf("held segment %d part %d changed", i, j)
			}
		}
	}
	checkInvariants(t, held)
}

func TestWait(t *testing.T) {
	t.Run("ready at once", func(t *testing.T) {
		st := NewStream("s", testPartTarget, Window{})
		s, err := st.Wait(context.Background(), func(*Snapshot) bool { return true })
		if err != nil || s != st.Snapshot() {
			t.Fatalf("Wait = %p, %v", s, err)
		}
	})
	t.Run("wakes on change", func(t *testing.T) {
		st := NewStream("s", testPartTarget, Window{})
		w := newWriter(st)
		w.open(false)
		got := make(chan *Snapshot, 1)
		go func() {
			s, err := st.Wait(context.Background(), func(s *Snapshot) bool { return s.NextPart >= 3 })
			if err != nil {
				t.Errorf("Wait: %v", err)
			}
			got <- s
		}()
		for i := range 3 {
			select {
			case s := <-got:
				t.Fatalf("Wait returned after %d parts (NextPart %d)", i, s.NextPart)
			case <-time.After(20 * time.Millisecond):
			}
			w.part(testPartTarget, 1)
		}
		select {
		case s := <-got:
			if s.NextPart != 3 {
				t.Fatalf("Wait returned NextPart %d", s.NextPart)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Wait did not wake on the third part")
		}
	})
	t.Run("returns when ctx ends", func(t *testing.T) {
		st := NewStream("s", testPartTarget, Window{})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		s, err := st.Wait(ctx, func(*Snapshot) bool { return false })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait error %v, want deadline exceeded", err)
		}
		if s != st.Snapshot() {
			t.Fatal("Wait did not return the latest snapshot")
		}
		if el := time.Since(start); el < 40*time.Millisecond || el > 2*time.Second {
			t.Fatalf("Wait returned after %v", el)
		}
	})
	t.Run("returns when stream is gone", func(t *testing.T) {
		st := NewStream("s", testPartTarget, Window{})
		got := make(chan *Snapshot, 1)
		go func() {
			s, err := st.Wait(context.Background(), func(*Snapshot) bool { return false })
			if err != nil {
				t.Errorf("Wait: %v", err)
			}
			got <- s
		}()
		time.Sleep(20 * time.Millisecond)
		st.remove()
		select {
		case s := <-got:
			if !s.Gone || s.Live {
				t.Fatalf("Wait returned Gone %v Live %v", s.Gone, s.Live)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("Wait did not return when the stream was removed")
		}
	})
}

func TestPruneBySegmentCount(t *testing.T) {
	for _, keep := range []int{1, 3, 12} {
		t.Run(fmt.Sprint(keep), func(t *testing.T) {
			st := NewStream("s", testPartTarget, Window{Segments: keep})
			w := newWriter(st)
			w.open(false)
			for n := 1; n <= keep+5; n++ {
				w.segment(5, testPartTarget, 10, false)
				s := st.Snapshot()
				checkInvariants(t, s)
				if got := completeCount(s); got != min(n, keep) {
					t.Fatalf("after %d segments: %d complete kept, want %d", n, got, min(n, keep))
				}
				first := uint64(max(0, n-keep))
				if s.Segments[0].MSN != first {
					t.Fatalf("after %d segments: window starts at %d, want %d", n, s.Segments[0].MSN, first)
				}
				if first > 0 {
					if s.Segment(first-1) != nil {
						t.Fatalf("pruned segment %d still found", first-1)
					}
					if s.Part(first*5-1) != nil {
						t.Fatalf("part %d of a pruned segment still found", first*5-1)
					}
				}
				if s.Part(first*5) == nil {
					t.Fatalf("first part %d of the window not found", first*5)
				}
			}
		})
	}
}

func TestPruneByMaxBytes(t *testing.T) {
	// 2 s segments (TARGETDURATION 2) of 10 parts of 100 bytes.
	const partSize, partsPerSeg = 100, 10
	for _, tc := range []struct {
		name     string
		maxBytes int
		keep     int // complete segments kept once the window is full
	}{
		// 4 segments (4000 bytes) fit the budget.
		{"budget", 4500, 4},
		// The budget fits 2 segments, but a live playlist must stay at
		// least 3 target durations (6 s) long: 3 are kept.
		{"three target durations floor", 2500, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := NewStream("s", testPartTarget, Window{Segments: 100, MaxBytes: tc.maxBytes})
			w := newWriter(st)
			w.open(false)
			for n := 1; n <= 10; n++ {
				w.segment(partsPerSeg, testPartTarget, partSize, false)
				s := st.Snapshot()
				checkInvariants(t, s)
				if want := min(n, tc.keep); completeCount(s) != want {
					t.Fatalf("after %d segments: %d complete kept, want %d", n, completeCount(s), want)
				}
				if last := s.LastComplete(); last.MSN != uint64(n-1) {
					t.Fatalf("newest complete segment %d, want %d", last.MSN, n-1)
				}
			}
		})
	}
}

// DISCONTINUITY-SEQUENCE counts the discontinuities that left the window,
// so that every remaining segment keeps its discontinuity sequence number
// (RFC 8216bis 6.2.2).
func TestDiscSeqCountsPrunedDiscontinuities(t *testing.T) {
	pattern := []bool{false, true, false, true, true, false, false, true, false, false, false, false}
	for _, keep := range []int{1, 2, 3} {
		t.Run(fmt.Sprint(keep), func(t *testing.T) {
			st := NewStream("s", testPartTarget, Window{Segments: keep})
			w := newWriter(st)
			w.open(pattern[0])
			// dsn[msn] is each segment's discontinuity sequence number.
			dsn := []uint64{0}
			if pattern[0] {
				dsn[0] = 1
			}
			for i := 1; i < len(pattern); i++ {
				prev := st.Snapshot().DiscSeq
				w.segment(3, testPartTarget, 10, pattern[i])
				d := dsn[i-1]
				if pattern[i] {
					d++
				}
				dsn = append(dsn, d)

				s := st.Snapshot()
				checkInvariants(t, s)
				if s.DiscSeq < prev {
					t.Fatalf("DiscSeq went down from %d to %d", prev, s.DiscSeq)
				}
				// Recompute each window segment's number from the playlist.
				n := s.DiscSeq
				for _, seg := range s.Segments {
					// A segment's number is DISCONTINUITY-SEQUENCE plus the
					// EXT-X-DISCONTINUITY tags up to and including its own.
					if seg.Discontinuity {
						n++
					}
					if n != dsn[seg.MSN] {
						t.Fatalf("after segment %d: segment %d has discontinuity sequence %d in the playlist, want %d (DiscSeq %d)",
							i, seg.MSN, n, dsn[seg.MSN], s.DiscSeq)
					}
				}
			}
		})
	}
}

func TestWaitFor(t *testing.T) {
	t.Parallel()
	never := func(*Snapshot) bool { return false }
	t.Run("ready at once", func(t *testing.T) {
		st := NewStream("s", testPartTarget, Window{})
		s, err := st.WaitFor(context.Background(), time.Hour, func(*Snapshot) bool { return true })
		if err != nil || s != st.Snapshot() {
			t.Fatalf("WaitFor = %p, %v; want the current snapshot", s, err)
		}
	})
	t.Run("wakes on a cut", func(t *testing.T) {
		st := NewStream("s", testPartTarget, Window{})
		w := newWriter(st)
		w.open(false)
		got := make(chan *Snapshot, 1)
		go func() {
			s, err := st.WaitFor(context.Background(), time.Minute, func(s *Snapshot) bool { return s.NextPart >= 2 })
			if err != nil {
				t.Errorf("WaitFor: %v", err)
			}
			got <- s
		}()
		w.part(testPartTarget, 10)
		w.part(testPartTarget, 10)
		select {
		case s := <-got:
			if s.NextPart != 2 {
				t.Fatalf("WaitFor returned NextPart %d", s.NextPart)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("WaitFor did not wake on the second part")
		}
	})
	t.Run("gives up after d, and a reused timer does not fire early", func(t *testing.T) {
		st := NewStream("s", testPartTarget, Window{})
		for _, d := range []time.Duration{30 * time.Millisecond, 200 * time.Millisecond} {
			start := time.Now()
			s, err := st.WaitFor(context.Background(), d, never)
			if !errors.Is(err, context.DeadlineExceeded) || s != st.Snapshot() {
				t.Fatalf("WaitFor(%v) = %p, %v; want the latest snapshot and deadline exceeded", d, s, err)
			}
			if el := time.Since(start); el < d || el > d+2*time.Second {
				t.Fatalf("WaitFor(%v) returned after %v", d, el)
			}
		}
	})
	t.Run("a timer stopped before it fired is reused clean", func(t *testing.T) {
		st := NewStream("s", testPartTarget, Window{})
		w := newWriter(st)
		w.open(false)
		// The first wait ends by a cut, just as its timer would fire.
		go func() {
			time.Sleep(20 * time.Millisecond)
			w.part(testPartTarget, 10)
		}()
		st.WaitFor(context.Background(), 20*time.Millisecond, func(s *Snapshot) bool { return s.NextPart >= 1 }) //nolint:errcheck
		time.Sleep(30 * time.Millisecond)
		start := time.Now()
		if _, err := st.WaitFor(context.Background(), 150*time.Millisecond, never); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WaitFor: %v", err)
		}
		if el := time.Since(start); el < 150*time.Millisecond {
			t.Fatalf("WaitFor returned after %v: a stale tick", el)
		}
	})
	t.Run("returns when ctx ends", func(t *testing.T) {
		st := NewStream("s", testPartTarget, Window{})
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(30*time.Millisecond, cancel)
		if _, err := st.WaitFor(ctx, time.Minute, never); !errors.Is(err, context.Canceled) {
			t.Fatalf("WaitFor error %v, want canceled", err)
		}
	})
	t.Run("returns when the stream ends", func(t *testing.T) {
		st := NewStream("s", testPartTarget, Window{})
		time.AfterFunc(30*time.Millisecond, func() { st.End() })
		s, err := st.WaitFor(context.Background(), time.Minute, never)
		if err != nil || !s.Ended {
			t.Fatalf("WaitFor = Ended %v, %v", s.Ended, err)
		}
	})
}

// TestMemoOnce: viewers woken together by one publish share one
// computation, however many ask at once.
func TestMemoOnce(t *testing.T) {
	t.Parallel()
	st := NewStream("s", testPartTarget, Window{})
	snap := st.Snapshot()
	var computed atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := snap.Memo("k", func() any {
				computed.Add(1)
				<-release // slow, so that the others arrive meanwhile
				return 42
			})
			if v != 42 {
				t.Errorf("Memo = %v", v)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if n := computed.Load(); n != 1 {
		t.Fatalf("computed %d times, want once", n)
	}
	if v := snap.Memo("other", func() any { return 7 }); v != 7 {
		t.Fatalf("Memo of another key = %v", v)
	}
}

func TestSnapshotTail(t *testing.T) {
	// seg builds a complete segment of n 200 ms parts, numbered from first.
	seg := func(msn, first uint64, n int, disc bool) *Segment {
		s := &Segment{MSN: msn, Discontinuity: disc, Complete: true}
		for k := range n {
			s.Parts = append(s.Parts, &Part{N: first + uint64(k), Duration: 200 * time.Millisecond})
			s.Duration += 200 * time.Millisecond
		}
		return s
	}
	open := func(s *Segment) *Segment { s.Complete = false; return s }
	window := func(n int, td int, perSeg int, openParts int) *Snapshot {
		snap := &Snapshot{TargetDuration: td, DiscSeq: 4}
		for i := range n {
			snap.Segments = append(snap.Segments, seg(uint64(10+i), uint64(i*perSeg), perSeg, false))
		}
		snap.Segments = append(snap.Segments, open(seg(uint64(10+n), uint64(n*perSeg), openParts, false)))
		snap.NextPart = uint64(n*perSeg + openParts)
		return snap
	}
	withDisc := window(12, 1, 5, 2)
	withDisc.Segments[3].Discontinuity = true
	withDisc.Segments[9].Discontinuity = true // sent: not counted
	for _, c := range []struct {
		name     string
		snap     *Snapshot
		from     uint64
		discSeq  uint64
		segments int // how many segments the replica starts with
	}{
		{"1 s GOP: three seconds and one more", window(12, 1, 5, 2), 40, 4, 5},
		{"2 s GOP", window(12, 2, 10, 0), 80, 4, 5},
		{"an empty open segment is sent too", window(12, 1, 5, 0), 40, 4, 5},
		{"a short window is sent whole", window(2, 1, 5, 1), 0, 4, 3},
		{"only an open segment", window(0, 1, 5, 3), 0, 4, 1},
		{"discontinuities skipped are counted", withDisc, 40, 5, 5},
		{"no segments", &Snapshot{TargetDuration: 1, NextPart: 7}, 7, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			from, disc := c.snap.Tail()
			if from != c.from || disc != c.discSeq {
				t.Errorf("Tail() = %d, %d; want %d, %d", from, disc, c.from, c.discSeq)
			}
			n := 0
			for _, s := range c.snap.Segments {
				if !s.Complete || s.Parts[len(s.Parts)-1].N >= from {
					n++
				}
			}
			if n != c.segments {
				t.Errorf("the replica starts with %d segments, want %d", n, c.segments)
			}
		})
	}
}

// PartAge takes the longer of the time since this node added the newest
// part and since its media end by PROGRAM-DATE-TIME, from the last segment
// that has parts.
func TestSnapshotPartAge(t *testing.T) {
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	withParts := func(start time.Time, n int, complete bool) *Segment {
		s := &Segment{Start: start, Complete: complete}
		for range n {
			s.Parts = append(s.Parts, &Part{Duration: 200 * ms})
			s.Duration += 200 * ms
		}
		return s
	}
	for _, c := range []struct {
		name string
		snap Snapshot
		want time.Duration
	}{
		{"no part", Snapshot{}, 0},
		{"added late in the part, PDT agrees", Snapshot{PartAdded: now.Add(-150 * ms),
			Segments: []*Segment{withParts(now.Add(-550*ms), 2, false)}}, 150 * ms},
		{"replayed: just added, media ended 0.6 s ago",
			Snapshot{PartAdded: now, Segments: []*Segment{withParts(now.Add(-1000*ms), 2, false)}}, 600 * ms},
		{"media end ahead of the wall clock (an encoder's burst)",
			Snapshot{PartAdded: now.Add(-20 * ms), Segments: []*Segment{withParts(now, 2, false)}}, 20 * ms},
		{"open segment still empty: the segment before it",
			Snapshot{PartAdded: now.Add(-30 * ms), Segments: []*Segment{withParts(now.Add(-1300*ms), 5, true), {Start: now}}}, 300 * ms},
		{"no PROGRAM-DATE-TIME", Snapshot{PartAdded: now.Add(-70 * ms),
			Segments: []*Segment{withParts(time.Time{}, 1, false)}}, 70 * ms},
	} {
		if got := c.snap.PartAge(now); got != c.want {
			t.Errorf("%s: PartAge %v, want %v", c.name, got, c.want)
		}
	}
}
