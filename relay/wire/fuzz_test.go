package wire

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// seeds returns small valid encodings of messages of type t (all types
// when t is 0).
func seeds(t Type) [][]byte {
	var out [][]byte
	for _, tc := range validMessages() {
		b := tc.m.Marshal()
		if (t == 0 || tc.m.Type() == t) && len(b) < 300 {
			out = append(out, b)
		}
	}
	return out
}

func FuzzReadFrame(f *testing.F) {
	var stream bytes.Buffer
	for _, tc := range validMessages() {
		if b := tc.m.Marshal(); len(b) < 300 {
			var one bytes.Buffer
			_ = WriteFrame(&one, tc.m.Type(), b)
			f.Add(one.Bytes())
			stream.Write(one.Bytes())
		}
	}
	f.Add(stream.Bytes())
	f.Add(uv([]byte{byte(TypePart)}, 1<<60))
	f.Add(append(uv([]byte{byte(TypePart)}, 15<<20), 1, 2, 3))
	f.Add([]byte{byte(TypeHello), 0x80, 0x00})
	f.Add([]byte{0})
	const limit = 1 << 16
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), limit)
		for {
			typ, p, err := r.ReadFrame()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrTooLarge) &&
					!errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrMalformed) {
					t.Fatalf("unexpected error kind: %v", err)
				}
				if p != nil {
					t.Fatalf("payload with error %v", err)
				}
				return
			}
			if !typ.Known() || len(p) > r.limit(typ) {
				t.Fatalf("%s frame of %d bytes passed the checks", typ, len(p))
			}
			m, err := Decode(typ, p)
			if err == nil && !bytes.Equal(m.Marshal(), p) {
				t.Fatalf("%s: decoded payload does not re-encode to itself", typ)
			}
		}
	})
}

// fuzzUnmarshal checks that decoding never panics, that a failure leaves
// the zero message, and that whatever decodes re-encodes byte for byte.
func fuzzUnmarshal(f *testing.F, typ Type) {
	for _, s := range seeds(typ) {
		f.Add(s)
		if len(s) > 1 {
			f.Add(s[:len(s)-1])
		}
	}
	f.Add([]byte{})
	f.Add(uv(nil, 1<<60))
	f.Add(uv(nil, 1, 1<<60))
	f.Add([]byte{Version, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		m := newMessage(typ)
		err := m.Unmarshal(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBadVersion) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			zero := newMessage(typ)
			if h, ok := m.(*Hello); ok && errors.Is(err, ErrBadVersion) {
				zero.(*Hello).Version = h.Version
			}
			if !reflect.DeepEqual(m, zero) {
				t.Fatalf("failed Unmarshal left %#v", m)
			}
			return
		}
		b := m.Marshal()
		if !bytes.Equal(b, data) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", data, b)
		}
		again := newMessage(typ)
		if err := again.Unmarshal(b); err != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("second decode: %v, %#v", err, again)
		}
	})
}

func FuzzUnmarshalHello(f *testing.F)        { fuzzUnmarshal(f, TypeHello) }
func FuzzUnmarshalSubscribe(f *testing.F)    { fuzzUnmarshal(f, TypeSubscribe) }
func FuzzUnmarshalCatalog(f *testing.F)      { fuzzUnmarshal(f, TypeCatalog) }
func FuzzUnmarshalStreamState(f *testing.F)  { fuzzUnmarshal(f, TypeStreamState) }
func FuzzUnmarshalError(f *testing.F)        { fuzzUnmarshal(f, TypeError) }
func FuzzUnmarshalSegmentStart(f *testing.F) { fuzzUnmarshal(f, TypeSegmentStart) }
func FuzzUnmarshalPart(f *testing.F)         { fuzzUnmarshal(f, TypePart) }
func FuzzUnmarshalSegmentEnd(f *testing.F)   { fuzzUnmarshal(f, TypeSegmentEnd) }
