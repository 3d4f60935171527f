package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"
)

func validMessages() []struct {
	name string
	m    Message
} {
	longName := strings.Repeat("n", MaxNameLen)
	longStream := strings.Repeat("s", 128)
	big := bytes.Repeat([]byte{0xab}, 100_000)
	return []struct {
		name string
		m    Message
	}{
		{"hello", &Hello{Version: Version, Node: "edge-1"}},
		{"hello/one-byte", &Hello{Version: Version, Node: "a"}},
		{"hello/longest", &Hello{Version: Version, Node: longName}},
		{"hello/unicode", &Hello{Version: Version, Node: "nœud-ü-東京"}},

		{"subscribe/window", &Subscribe{Stream: "shop", FromPart: 0}},
		{"subscribe/resume", &Subscribe{Stream: "live_1.x-y", FromPart: 300}},
		{"subscribe/max", &Subscribe{Stream: longStream, FromPart: math.MaxUint64}},

		{"catalog/minimal", &Catalog{Stream: "s", PartTarget: 1, TargetDuration: 1}},
		{"catalog/typical", &Catalog{
			Stream: "shop", PartTarget: 202 * time.Millisecond, TargetDuration: 2 * time.Second,
			DiscSeq: 3, Live: true, NextPart: 1234,
			Inits: []Init{
				{ID: 1, Codecs: "avc1.64001f,mp4a.40.2", Width: 1280, Height: 720, FrameRate: 29.97, Data: []byte("ftypmoov")},
				{ID: 2, Codecs: "mp4a.40.2", Data: []byte{0}},
				{ID: 7, Codecs: "", Width: 0, Height: 0, FrameRate: 0, Data: nil},
			},
		}},
		{"catalog/max", &Catalog{
			Stream: longStream, PartTarget: math.MaxInt64, TargetDuration: math.MaxInt64,
			DiscSeq: math.MaxUint64, NextPart: math.MaxUint64,
			Inits: []Init{{ID: math.MaxUint64, Codecs: strings.Repeat("c", MaxCodecsLen), Width: MaxDimension,
				Height: MaxDimension, FrameRate: math.MaxFloat64, Data: big}},
		}},

		{"segment-start/zero", &SegmentStart{Stream: "s"}},
		{"segment-start/typical", &SegmentStart{Stream: "cam", MSN: 42, Start: time.Date(2026, 11, 24, 12, 0, 1, 123456789, time.UTC), InitID: 1}},
		{"segment-start/before-1970", &SegmentStart{Stream: "a.b-c_d", MSN: 1, Start: time.Date(1969, 7, 20, 20, 17, 40, 1, time.UTC), Discontinuity: true}},
		{"segment-start/max", &SegmentStart{Stream: "x", MSN: math.MaxUint64, Start: time.Unix(0, math.MaxInt64).UTC(), Discontinuity: true, InitID: math.MaxUint64}},
		{"segment-start/min", &SegmentStart{Stream: "y", Start: time.Unix(0, math.MinInt64).UTC()}},

		{"part/zero", &Part{}},
		{"part/typical", &Part{N: 9, Duration: 200 * time.Millisecond, Independent: true, Data: []byte("moofmdat")}},
		{"part/max", &Part{N: math.MaxUint64, Duration: math.MaxInt64, Data: big}},

		{"segment-end/zero", &SegmentEnd{}},
		{"segment-end/max", &SegmentEnd{MSN: math.MaxUint64, Complete: true}},

		{"stream-state/zero", &StreamState{}},
		{"stream-state/live", &StreamState{Live: true, TargetDuration: 2 * time.Second, DiscSeq: 1}},
		{"stream-state/gone", &StreamState{Gone: true, TargetDuration: math.MaxInt64, DiscSeq: math.MaxUint64}},
		{"stream-state/ended", &StreamState{Ended: true, TargetDuration: 2 * time.Second, DiscSeq: 3}},

		{"error/bare", &Error{Code: CodeNotFound}},
		{"error/message", &Error{Code: CodeBadVersion, Message: "want version 1 ✓"}},
		{"error/max", &Error{Code: math.MaxUint16, Message: strings.Repeat("m", MaxErrorLen)}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range validMessages() {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.m.Marshal()
			got := newMessage(tc.m.Type())
			if err := got.Unmarshal(b); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if !reflect.DeepEqual(got, tc.m) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, tc.m)
			}
			if again := got.Marshal(); !bytes.Equal(again, b) {
				t.Fatalf("re-marshal differs")
			}
			// Every strict prefix is truncated and every extension has
			// trailing bytes: no field is optional.
			for i := 0; i < len(b); i++ {
				if i > 256 { // past the fields, sample the data
					i += len(b) / 64
					i = min(i, len(b)-1)
				}
				if err := newMessage(tc.m.Type()).Unmarshal(b[:i]); !errors.Is(err, ErrMalformed) {
					t.Fatalf("prefix of %d/%d bytes: err %v, want ErrMalformed", i, len(b), err)
				}
			}
			if err := newMessage(tc.m.Type()).Unmarshal(append(b[:len(b):len(b)], 0)); !errors.Is(err, ErrMalformed) {
				t.Fatalf("trailing byte: err %v, want ErrMalformed", err)
			}
			// And through a frame.
			var buf bytes.Buffer
			if err := WriteMessage(&buf, tc.m); err != nil {
				t.Fatal(err)
			}
			r := NewReader(&buf, 0)
			m, err := r.ReadMessage()
			if err != nil {
				t.Fatalf("ReadMessage: %v", err)
			}
			if !reflect.DeepEqual(m, tc.m) {
				t.Fatalf("framed round trip:\n got %#v\nwant %#v", m, tc.m)
			}
		})
	}
}

// uv appends uvarints.
func uv(b []byte, vs ...uint64) []byte {
	for _, v := range vs {
		b = binary.AppendUvarint(b, v)
	}
	return b
}

func TestUnmarshalRejects(t *testing.T) {
	okCatalog := func(f func(*Catalog)) []byte {
		c := Catalog{Stream: "s", PartTarget: time.Second, TargetDuration: time.Second,
			Inits: []Init{{ID: 1, Codecs: "avc1", Width: 2, Height: 2, FrameRate: 25}}}
		f(&c)
		return c.Marshal()
	}
	hugeLen := uv([]byte{Version}, 1<<60)
	cases := []struct {
		name string
		t    Type
		b    []byte
		want error
	}{
		{"hello/empty", TypeHello, nil, ErrMalformed},
		{"hello/version-0", TypeHello, Hello{Version: 0, Node: "a"}.Marshal(), ErrBadVersion},
		{"hello/next-version", TypeHello, append(Hello{Version: Version + 1, Node: "a"}.Marshal(), "future fields"...), ErrBadVersion},
		{"hello/no-node", TypeHello, Hello{Version: Version}.Marshal(), ErrMalformed},
		{"hello/long-node", TypeHello, Hello{Version: Version, Node: strings.Repeat("n", MaxNameLen+1)}.Marshal(), ErrMalformed},
		{"hello/bad-utf8", TypeHello, Hello{Version: Version, Node: "a\xff"}.Marshal(), ErrMalformed},
		{"hello/control", TypeHello, Hello{Version: Version, Node: "a\nb"}.Marshal(), ErrMalformed},
		{"hello/huge-length", TypeHello, hugeLen, ErrMalformed},
		{"hello/length-past-end", TypeHello, uv([]byte{Version}, 5), ErrMalformed},

		{"subscribe/empty-stream", TypeSubscribe, Subscribe{}.Marshal(), ErrMalformed},
		{"subscribe/dotdot", TypeSubscribe, Subscribe{Stream: "../x"}.Marshal(), ErrMalformed},
		{"subscribe/long-stream", TypeSubscribe, Subscribe{Stream: strings.Repeat("s", 129)}.Marshal(), ErrMalformed},
		{"subscribe/non-minimal", TypeSubscribe, append(appendString(nil, "s"), 0x80, 0x00), ErrMalformed},
		{"subscribe/overflow", TypeSubscribe, append(appendString(nil, "s"), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02), ErrMalformed},
		{"subscribe/eleven-byte-varint", TypeSubscribe, append(appendString(nil, "s"), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x00), ErrMalformed},

		{"catalog/zero-part-target", TypeCatalog, okCatalog(func(c *Catalog) { c.PartTarget = 0 }), ErrMalformed},
		{"catalog/negative-target", TypeCatalog, okCatalog(func(c *Catalog) { c.TargetDuration = -time.Second }), ErrMalformed},
		{"catalog/nan", TypeCatalog, okCatalog(func(c *Catalog) { c.Inits[0].FrameRate = math.NaN() }), ErrMalformed},
		{"catalog/inf", TypeCatalog, okCatalog(func(c *Catalog) { c.Inits[0].FrameRate = math.Inf(1) }), ErrMalformed},
		{"catalog/negative-rate", TypeCatalog, okCatalog(func(c *Catalog) { c.Inits[0].FrameRate = -1 }), ErrMalformed},
		{"catalog/negative-width", TypeCatalog, okCatalog(func(c *Catalog) { c.Inits[0].Width = -1 }), ErrMalformed},
		{"catalog/wide", TypeCatalog, okCatalog(func(c *Catalog) { c.Inits[0].Height = MaxDimension + 1 }), ErrMalformed},
		{"catalog/quote-in-codecs", TypeCatalog, okCatalog(func(c *Catalog) { c.Inits[0].Codecs = `avc1",X="y` }), ErrMalformed},
		{"catalog/newline-in-codecs", TypeCatalog, okCatalog(func(c *Catalog) { c.Inits[0].Codecs = "avc1\n#EXT" }), ErrMalformed},
		{"catalog/non-ascii-codecs", TypeCatalog, okCatalog(func(c *Catalog) { c.Inits[0].Codecs = "avç1" }), ErrMalformed},
		{"catalog/duplicate-init", TypeCatalog, okCatalog(func(c *Catalog) { c.Inits = append(c.Inits, c.Inits[0]) }), ErrMalformed},
		{"catalog/too-many-inits", TypeCatalog, okCatalog(func(c *Catalog) { c.Inits = make([]Init, MaxInits+1) }), ErrMalformed},
		{"catalog/bad-live", TypeCatalog, func() []byte {
			b := appendString(nil, "s")
			b = uv(b, 1, 1, 0)
			return uv(append(b, 2), 0, 0)
		}(), ErrMalformed},
		{"catalog/count-past-end", TypeCatalog, func() []byte {
			b := uv(appendString(nil, "s"), 1, 1, 0)
			return uv(append(b, 0), 0, MaxInits)
		}(), ErrMalformed},

		{"segment-start/bad-bool", TypeSegmentStart, uv(nil, 1, 0, 7, 0), ErrMalformed},
		{"part/data-past-end", TypePart, append(uv(nil, 1, 1, 0, 10), "short"...), ErrMalformed},
		{"part/huge-data", TypePart, uv(append(uv(nil, 1, 1), 0), 1<<60), ErrMalformed},
		{"part/negative-duration", TypePart, Part{Duration: -1}.Marshal(), ErrMalformed},
		{"segment-end/bad-bool", TypeSegmentEnd, []byte{1, 2}, ErrMalformed},
		{"stream-state/live-and-gone", TypeStreamState, StreamState{Live: true, Gone: true}.Marshal(), ErrMalformed},
		{"stream-state/live-and-ended", TypeStreamState, StreamState{Live: true, Ended: true}.Marshal(), ErrMalformed},
		{"error/zero-code", TypeError, uv(nil, 0, 0), ErrMalformed},
		{"error/wide-code", TypeError, uv(nil, 1<<16, 0), ErrMalformed},
		{"error/long-message", TypeError, appendString(uv(nil, 1), strings.Repeat("m", MaxErrorLen+1)), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := Decode(tc.t, tc.b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if tc.want == ErrMalformed && !reflect.DeepEqual(m, newMessage(tc.t)) {
				t.Fatalf("failed Unmarshal left %#v, want the zero message", m)
			}
		})
	}
}

func TestHelloBadVersionKeepsVersion(t *testing.T) {
	var h Hello
	err := h.Unmarshal(append([]byte{Version + 1}, "whatever the next version sends"...))
	if !errors.Is(err, ErrBadVersion) || h.Version != Version+1 {
		t.Fatalf("Unmarshal: %v, version %d; want ErrBadVersion and %d", err, h.Version, Version+1)
	}
}

func TestErrorMarshalSanitizes(t *testing.T) {
	long := strings.Repeat("é", MaxErrorLen) // 2 bytes each
	for _, msg := range []string{"line\nbreak\t", "bad \xff utf-8", long, strings.Repeat("x", MaxErrorLen-1) + "é"} {
		var e Error
		if err := e.Unmarshal(Error{Code: CodeInternal, Message: msg}.Marshal()); err != nil {
			t.Fatalf("%.20q: %v", msg, err)
		}
		if len(e.Message) > MaxErrorLen || strings.ContainsAny(e.Message, "\n\t") {
			t.Fatalf("%.20q decoded as %.20q (%d bytes)", msg, e.Message, len(e.Message))
		}
	}
	e := &Error{Code: CodeNotFound, Message: "no stream shop"}
	var err error = e
	if !strings.Contains(err.Error(), "not found: no stream shop") {
		t.Fatalf("Error() = %q", err.Error())
	}
}
