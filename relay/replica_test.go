package relay

import (
	"testing"
	"time"
)

// originWindow cuts n segments of parts parts each on an origin stream.
func originWindow(t *testing.T, segments, parts int) *Stream {
	t.Helper()
	o := NewStream("o", testPartTarget, Window{Segments: 100})
	in := &Init{ID: 1, Data: []byte("init")}
	start := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	o.Cut(nil, &SegmentHeader{Start: start, Init: in})
	for sg := range segments {
		for p := range parts {
			var next *SegmentHeader
			if p == parts-1 {
				next = &SegmentHeader{Start: start.Add(time.Duration(sg+1) * time.Second), Init: in}
			}
			o.Cut(&Part{Duration: testPartTarget, Independent: p == 0, Data: []byte{byte(sg), byte(p)}}, next)
		}
	}
	return o
}

// replay applies a window to a replica the way the relay client does.
func replay(r *Stream, snap *Snapshot, fromPart uint64) {
	r.Seed(snap.DiscSeq, snap.TargetDuration, snap.Live)
	for _, seg := range snap.Segments {
		if len(seg.Parts) > 0 && seg.Parts[len(seg.Parts)-1].N < fromPart {
			continue
		}
		r.OpenSegment(seg.MSN, SegmentHeader{Start: seg.Start, Discontinuity: seg.Discontinuity, Init: seg.Init})
		for _, p := range seg.Parts {
			if p.N >= fromPart {
				cp := *p
				r.AddPart(seg.MSN, &cp)
			}
		}
		if seg.Complete {
			r.CloseSegment(seg.MSN)
		}
	}
}

func sameWindow(t *testing.T, got, want *Snapshot) {
	t.Helper()
	if len(got.Segments) != len(want.Segments) || got.NextPart != want.NextPart ||
		got.DiscSeq != want.DiscSeq || got.TargetDuration != want.TargetDuration {
		t.Fatalf("replica: %d segments, next part %d, disc %d, td %d; upstream: %d, %d, %d, %d",
			len(got.Segments), got.NextPart, got.DiscSeq, got.TargetDuration,
			len(want.Segments), want.NextPart, want.DiscSeq, want.TargetDuration)
	}
	for i, w := range want.Segments {
		g := got.Segments[i]
		if g.MSN != w.MSN || !g.Start.Equal(w.Start) || g.Complete != w.Complete || len(g.Parts) != len(w.Parts) || g.Duration != w.Duration {
			t.Fatalf("segment %d: replica %+v, upstream %+v", i, g, w)
		}
		for j, p := range w.Parts {
			if g.Parts[j].N != p.N || string(g.Parts[j].Data) != string(p.Data) {
				t.Fatalf("segment %d part %d: replica N=%d, upstream N=%d", w.MSN, j, g.Parts[j].N, p.N)
			}
		}
	}
}

func TestReplicaMatchesUpstream(t *testing.T) {
	o := originWindow(t, 3, 5)
	r := NewStream("o", testPartTarget, Window{Segments: 100})
	replay(r, o.Snapshot(), 0)
	sameWindow(t, r.Snapshot(), o.Snapshot())

	// Replaying the same window again (a failover to an upstream with the
	// same window) changes nothing.
	before := r.Snapshot()
	replay(r, o.Snapshot(), 0)
	sameWindow(t, r.Snapshot(), before)
}

// After a failover the new upstream resumes from the next part: nothing is
// lost or duplicated.
func TestReplicaResumesFromPart(t *testing.T) {
	o := originWindow(t, 2, 5)
	r := NewStream("o", testPartTarget, Window{Segments: 100})
	replay(r, o.Snapshot(), 0)
	next := r.Snapshot().NextPart
	// The origin goes on while the replica is between upstreams.
	in := o.Snapshot().LatestInit()
	o.Cut(&Part{Duration: testPartTarget, Data: []byte("a")}, nil)
	o.Cut(&Part{Duration: testPartTarget, Data: []byte("b")}, &SegmentHeader{Start: time.Now(), Init: in})
	o.Cut(&Part{Duration: testPartTarget, Independent: true, Data: []byte("c")}, nil)
	replay(r, o.Snapshot(), next)
	sameWindow(t, r.Snapshot(), o.Snapshot())
}

// A gap in segment numbers restarts the window with a discontinuity.
func TestReplicaSegmentGap(t *testing.T) {
	r := NewStream("o", testPartTarget, Window{Segments: 100})
	in := &Init{ID: 1}
	r.OpenSegment(5, SegmentHeader{Init: in})
	r.AddPart(5, &Part{N: 50, Duration: testPartTarget})
	r.CloseSegment(5)
	if !r.OpenSegment(9, SegmentHeader{Init: in}) {
		t.Fatal("segment after a gap refused")
	}
	r.AddPart(9, &Part{N: 90, Duration: testPartTarget})
	s := r.Snapshot()
	if len(s.Segments) != 1 || s.Segments[0].MSN != 9 || !s.Segments[0].Discontinuity || s.NextPart != 91 {
		t.Fatalf("after a gap: %d segments, first %d, discontinuity %v, next part %d",
			len(s.Segments), s.Segments[0].MSN, s.Segments[0].Discontinuity, s.NextPart)
	}
	if r.OpenSegment(7, SegmentHeader{Init: in}) || r.AddPart(9, &Part{N: 80}) {
		t.Error("an older segment or part was accepted")
	}
}

// An upstream whose publisher was taken over before the open segment's
// first part replaces that segment: the replica takes the new header.
func TestReplicaReplacesEmptyOpenSegment(t *testing.T) {
	st := NewStream("r", 200*time.Millisecond, Window{})
	old := &Init{ID: 1, Data: []byte("a")}
	st.OpenSegment(5, SegmentHeader{Start: time.Unix(100, 0), Init: old})
	st.AddPart(5, &Part{N: 50, Duration: time.Second, Independent: true, Data: []byte("x")})
	st.OpenSegment(6, SegmentHeader{Start: time.Unix(101, 0), Init: old})
	if st.OpenSegment(6, SegmentHeader{Start: time.Unix(101, 0), Init: old}) {
		t.Fatal("the same header again opened a segment")
	}
	taken := &Init{ID: 2, Data: []byte("b")}
	if !st.OpenSegment(6, SegmentHeader{Start: time.Unix(100, 500e6), Discontinuity: true, Init: taken}) {
		t.Fatal("a new header for the empty open segment was refused")
	}
	st.AddPart(6, &Part{N: 51, Duration: time.Second, Independent: true, Data: []byte("y")})
	snap := st.Snapshot()
	seg := snap.Segments[len(snap.Segments)-1]
	if seg.MSN != 6 || !seg.Discontinuity || seg.Init != taken || len(seg.Parts) != 1 {
		t.Fatalf("open segment %+v, want 6 with the new header and its part", seg)
	}
	// A segment with parts is never replaced.
	if st.OpenSegment(6, SegmentHeader{Start: time.Unix(200, 0), Init: old}) {
		t.Fatal("a segment with parts was replaced")
	}
}
