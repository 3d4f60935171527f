package wire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/relay"
)

type frame struct {
	t Type
	p []byte
}

func TestFrames(t *testing.T) {
	frames := []frame{
		{TypeHello, Hello{Version: Version, Node: "a"}.Marshal()},
		{TypeSegmentEnd, nil},
		{TypePart, bytes.Repeat([]byte{1}, coalesce)},   // one Write
		{TypePart, bytes.Repeat([]byte{2}, coalesce+1)}, // header, then payload
		{TypeCatalog, bytes.Repeat([]byte{3}, 3*eagerAlloc+5)},
	}
	var buf bytes.Buffer
	for _, f := range frames {
		if err := WriteFrame(&buf, f.t, f.p); err != nil {
			t.Fatal(err)
		}
	}
	r := NewReader(&buf, 0)
	for i, want := range frames {
		typ, p, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if typ != want.t || !bytes.Equal(p, want.p) {
			t.Fatalf("frame %d: got %s with %d bytes, want %s with %d", i, typ, len(p), want.t, len(want.p))
		}
	}
	if _, _, err := r.ReadFrame(); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

// TestTruncated cuts a stream of frames at every byte: complete frames
// read, then io.EOF at a boundary or ErrTruncated inside a frame.
func TestTruncated(t *testing.T) {
	var buf bytes.Buffer
	var ends []int
	for _, m := range []Message{
		&Hello{Version: Version, Node: "origin"},
		&Part{N: 300, Duration: time.Second, Data: bytes.Repeat([]byte{9}, 200)},
		&SegmentEnd{MSN: 1, Complete: true},
	} {
		if err := WriteMessage(&buf, m); err != nil {
			t.Fatal(err)
		}
		ends = append(ends, buf.Len())
	}
	all := buf.Bytes()
	for cut := 0; cut <= len(all); cut++ {
		r := NewReader(bytes.NewReader(all[:cut]), 0)
		whole := 0
		for _, e := range ends {
			if e <= cut {
				whole++
			}
		}
		for i := range whole {
			if _, err := r.ReadMessage(); err != nil {
				t.Fatalf("cut %d: frame %d: %v", cut, i, err)
			}
		}
		_, err := r.ReadMessage()
		atBoundary := cut == 0 || (whole > 0 && ends[whole-1] == cut)
		if atBoundary && err != io.EOF {
			t.Fatalf("cut %d at a boundary: %v, want io.EOF", cut, err)
		}
		if !atBoundary && (!errors.Is(err, ErrTruncated) || !errors.Is(err, io.ErrUnexpectedEOF)) {
			t.Fatalf("cut %d inside a frame: %v, want ErrTruncated", cut, err)
		}
	}
}

func TestReadFrameRejects(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		max  int
		want error
	}{
		{"type-zero", []byte{0, 0}, 0, ErrUnknownType},
		{"type-9", []byte{9, 0}, 0, ErrUnknownType},
		{"type-255", []byte{255}, 0, ErrUnknownType},
		{"part-2^60", uv([]byte{byte(TypePart)}, 1<<60), 0, ErrTooLarge},
		{"part-2^64-1", uv([]byte{byte(TypePart)}, 1<<64-1), 0, ErrTooLarge},
		{"part-over-default", uv([]byte{byte(TypePart)}, DefaultMaxPayload+1), 0, ErrTooLarge},
		{"part-over-custom", uv([]byte{byte(TypePart)}, 1001), 1000, ErrTooLarge},
		{"catalog-over-custom", uv([]byte{byte(TypeCatalog)}, 1001), 1000, ErrTooLarge},
		{"hello-over-control", uv([]byte{byte(TypeHello)}, controlMaxPayload+1), 0, ErrTooLarge},
		{"error-over-small-max", uv([]byte{byte(TypeError)}, 101), 100, ErrTooLarge},
		{"length-non-minimal", []byte{byte(TypePart), 0x81, 0x00}, 0, ErrMalformed},
		{"length-overflow", []byte{byte(TypePart), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 0, ErrMalformed},
		{"length-missing", []byte{byte(TypePart)}, 0, ErrTruncated},
		{"length-cut", []byte{byte(TypePart), 0x80}, 0, ErrTruncated},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, p, err := NewReader(bytes.NewReader(tc.in), tc.max).ReadFrame()
			if !errors.Is(err, tc.want) || p != nil {
				t.Fatalf("err %v (payload %d bytes), want %v", err, len(p), tc.want)
			}
		})
	}
	if err := WriteFrame(io.Discard, 0, nil); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("WriteFrame type 0: %v", err)
	}
	if err := WriteFrame(io.Discard, 200, nil); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("WriteFrame type 200: %v", err)
	}
	if _, err := Decode(42, nil); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("Decode type 42: %v", err)
	}
}

// TestDeclaredLengthCostsLittle: a peer that declares a 15 MiB part and
// sends a few bytes makes the reader allocate about eagerAlloc, not 15 MiB.
func TestDeclaredLengthCostsLittle(t *testing.T) {
	in := append(uv([]byte{byte(TypePart)}, 15<<20), "only this"...)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, _, err := NewReader(bytes.NewReader(in), 0).ReadFrame()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("err %v, want ErrTruncated", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 3*eagerAlloc/2 {
		t.Fatalf("allocated %d bytes for a truncated frame", got)
	}
}

type failWriter struct{ after int }

func (w *failWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, io.ErrClosedPipe
	}
	w.after--
	return len(p), nil
}

func TestWriteErrors(t *testing.T) {
	big := &Part{N: 1, Data: make([]byte, 4*coalesce)}
	for _, tc := range []struct {
		name  string
		m     Message
		after int
	}{
		{"small", &SegmentEnd{MSN: 1}, 0},
		{"big-header", big, 0},
		{"big-data", big, 1},
	} {
		if err := WriteMessage(&failWriter{after: tc.after}, tc.m); !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("%s: %v, want io.ErrClosedPipe", tc.name, err)
		}
	}
	if err := WriteFrame(&failWriter{after: 1}, TypePart, make([]byte, 2*coalesce)); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("WriteFrame payload: %v", err)
	}
}

// TestWritePartZeroCopy checks the large-part path matches Marshal.
func TestWritePartZeroCopy(t *testing.T) {
	p := &Part{N: 77, Duration: 200 * time.Millisecond, Independent: true, Data: bytes.Repeat([]byte("cmaf"), 5000)}
	var direct, framed bytes.Buffer
	if err := WriteMessage(&direct, p); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&framed, TypePart, p.Marshal()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(direct.Bytes(), framed.Bytes()) {
		t.Fatal("WriteMessage(*Part) differs from WriteFrame(Marshal)")
	}
}

func TestConvert(t *testing.T) {
	in := &relay.Init{ID: 3, Data: []byte("init"), Codecs: "avc1.64001f", Width: 1920, Height: 1080, FrameRate: 30}
	if got := InitFrom(in).Relay(); !reflect.DeepEqual(got, in) {
		t.Fatalf("init round trip %+v", got)
	}
	p := &relay.Part{N: 5, Duration: time.Second / 5, Independent: true, Data: []byte("part")}
	if got := PartFrom(p).Relay(); got.N != p.N || got.Duration != p.Duration || !got.Independent || !bytes.Equal(got.Data, p.Data) {
		t.Fatalf("part round trip %+v", got)
	}
	if InitFrom(nil).Relay().ID != 0 || PartFrom(nil).Relay().N != 0 {
		t.Fatal("nil conversions")
	}

	st := relay.NewStream("shop", 202*time.Millisecond, relay.Window{})
	a := &relay.Init{ID: 1, Data: []byte("a"), Codecs: "avc1"}
	b := &relay.Init{ID: 2, Data: []byte("b"), Codecs: "avc1"}
	start := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	st.Cut(nil, &relay.SegmentHeader{Start: start, Init: a})
	st.Cut(&relay.Part{Duration: time.Second}, &relay.SegmentHeader{Start: start.Add(time.Second), Init: a})
	st.Cut(&relay.Part{Duration: time.Second}, &relay.SegmentHeader{Start: start.Add(2 * time.Second), Init: b, Discontinuity: true})
	st.Cut(&relay.Part{Duration: time.Second}, nil)
	snap := st.Snapshot()
	c := CatalogFrom(st, snap)
	if c.Stream != "shop" || c.PartTarget != 202*time.Millisecond || c.TargetDuration != 2*time.Second ||
		!c.Live || c.NextPart != 3 || len(c.Inits) != 2 || c.Inits[0].ID != 1 || c.Inits[1].ID != 2 {
		t.Fatalf("catalog %+v", c)
	}
	if c.TargetSeconds() != 2 {
		t.Fatalf("TargetSeconds %d", c.TargetSeconds())
	}
	var back Catalog
	if err := back.Unmarshal(c.Marshal()); err != nil {
		t.Fatalf("CatalogFrom does not decode: %v", err)
	}
	ss := SegmentStartFrom(snap.Segments[2])
	if ss.MSN != 2 || !ss.Start.Equal(start.Add(2*time.Second)) || !ss.Discontinuity || ss.InitID != 2 {
		t.Fatalf("segment start %+v", ss)
	}
	if h := ss.Header(b); h.Init != b || !h.Discontinuity || !h.Start.Equal(ss.Start) {
		t.Fatalf("header %+v", h)
	}
	if s := StreamStateFrom(snap); !s.Live || s.Gone || s.TargetDuration != 2*time.Second || s.TargetSeconds() != 2 {
		t.Fatalf("stream state %+v", s)
	}
	if got := (StreamState{TargetDuration: 2*time.Second + 1}).TargetSeconds(); got != 3 {
		t.Fatalf("TargetSeconds rounds up: got %d", got)
	}
}
