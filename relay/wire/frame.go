package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Type identifies a frame's message.
type Type uint8

// Frame types. Zero is never valid.
const (
	TypeHello        Type = 1
	TypeSubscribe    Type = 2
	TypeCatalog      Type = 3
	TypeStreamState  Type = 4
	TypeError        Type = 5
	TypeSegmentStart Type = 6
	TypePart         Type = 7
	TypeSegmentEnd   Type = 8
)

// String names t for logs and errors.
func (t Type) String() string {
	switch t {
	case TypeHello:
		return "hello"
	case TypeSubscribe:
		return "subscribe"
	case TypeCatalog:
		return "catalog"
	case TypeStreamState:
		return "stream-state"
	case TypeError:
		return "error"
	case TypeSegmentStart:
		return "segment-start"
	case TypePart:
		return "part"
	case TypeSegmentEnd:
		return "segment-end"
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// Known reports whether t is a frame type of this protocol version.
func (t Type) Known() bool { return t >= TypeHello && t <= TypeSegmentEnd }

// Errors that frame and message decoding wrap.
var (
	// ErrTruncated means the input ended inside a frame.
	ErrTruncated = errors.New("truncated frame")
	// ErrTooLarge means a frame declared a payload over the limit.
	ErrTooLarge = errors.New("frame too large")
	// ErrUnknownType means a frame's type is not one of this version's.
	ErrUnknownType = errors.New("unknown frame type")
	// ErrMalformed means a payload does not decode as its message.
	ErrMalformed = errors.New("malformed message")
	// ErrBadVersion means a Hello carries another protocol Version.
	ErrBadVersion = errors.New("unsupported protocol version")
)

const (
	// DefaultMaxPayload is the payload limit for Catalog and Part frames
	// when NewReader is given none.
	DefaultMaxPayload = 16 << 20

	// controlMaxPayload caps the payload of every other frame type: none
	// of them can legitimately come near it.
	controlMaxPayload = 4 << 10

	// eagerAlloc is the largest payload allocated in one go before any of
	// it has arrived; bigger payloads grow as their bytes arrive, so a peer
	// that declares 16 MiB and sends ten bytes costs about a megabyte.
	eagerAlloc = 1 << 20

	// maxHeader is the largest frame header: type plus a 64-bit uvarint.
	maxHeader = 1 + binary.MaxVarintLen64

	// coalesce is the payload size up to which WriteFrame copies header
	// and payload into a single Write.
	coalesce = 1 << 10
)

// WriteFrame writes one frame. Small frames go out in a single Write;
// larger ones as header then payload, without copying the payload.
// w must not be written concurrently.
func WriteFrame(w io.Writer, t Type, payload []byte) error {
	if !t.Known() {
		return fmt.Errorf("wire: write frame: %w %d", ErrUnknownType, uint8(t))
	}
	var hdr [maxHeader]byte
	hdr[0] = byte(t)
	n := 1 + binary.PutUvarint(hdr[1:], uint64(len(payload)))
	if len(payload) <= coalesce {
		buf := append(hdr[:n:n], payload...)
		if _, err := w.Write(buf); err != nil {
			return fmt.Errorf("wire: write %s frame: %w", t, err)
		}
		return nil
	}
	if _, err := w.Write(hdr[:n]); err != nil {
		return fmt.Errorf("wire: write %s frame header: %w", t, err)
	}
	if _, err := w.Write(payload); err != nil {
		return fmt.Errorf("wire: write %s frame payload: %w", t, err)
	}
	return nil
}

// WriteMessage encodes m and writes it as one frame. A Part's media data
// is written straight from p.Data, not copied.
func WriteMessage(w io.Writer, m Message) error {
	p, ok := m.(*Part)
	if !ok || len(p.Data) <= coalesce {
		return WriteFrame(w, m.Type(), m.Marshal())
	}
	head := p.appendHeader(make([]byte, 0, 40))
	size := len(head) + len(p.Data)
	buf := make([]byte, 0, maxHeader+len(head))
	buf = append(buf, byte(TypePart))
	buf = binary.AppendUvarint(buf, uint64(size))
	buf = append(buf, head...)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("wire: write part %d frame header: %w", p.N, err)
	}
	if _, err := w.Write(p.Data); err != nil {
		return fmt.Errorf("wire: write part %d frame data: %w", p.N, err)
	}
	return nil
}

// Reader reads frames from one stream. It buffers, so it must be the only
// reader of that stream. A Reader is not safe for concurrent use.
type Reader struct {
	br  *bufio.Reader
	max int
}

// NewReader returns a Reader of r whose Catalog and Part frames may carry
// up to maxPayload bytes (DefaultMaxPayload when maxPayload <= 0). Other
// frames are capped at 4 KiB, or maxPayload if that is smaller.
func NewReader(r io.Reader, maxPayload int) *Reader {
	if maxPayload <= 0 {
		maxPayload = DefaultMaxPayload
	}
	return &Reader{br: bufio.NewReaderSize(r, 4<<10), max: maxPayload}
}

// limit returns the largest payload accepted for frames of type t.
func (r *Reader) limit(t Type) int {
	if t == TypeCatalog || t == TypePart {
		return r.max
	}
	return min(r.max, controlMaxPayload)
}

// ReadFrame reads the next frame. It returns io.EOF, unwrapped, when the
// stream ends cleanly between frames. The payload is freshly allocated and
// belongs to the caller.
func (r *Reader) ReadFrame() (Type, []byte, error) {
	tb, err := r.br.ReadByte()
	if err != nil {
		if err == io.EOF {
			return 0, nil, io.EOF
		}
		return 0, nil, fmt.Errorf("wire: read frame type: %w", err)
	}
	t := Type(tb)
	if !t.Known() {
		return t, nil, fmt.Errorf("wire: read frame: %w %d", ErrUnknownType, tb)
	}
	n, err := readUvarint(r.br)
	if err != nil {
		return t, nil, fmt.Errorf("wire: read %s frame length: %w", t, err)
	}
	if lim := r.limit(t); n > uint64(lim) {
		return t, nil, fmt.Errorf("wire: read %s frame: %w: %d bytes declared, limit %d", t, ErrTooLarge, n, lim)
	}
	payload, err := readPayload(r.br, int(n))
	if err != nil {
		return t, nil, fmt.Errorf("wire: read %s frame payload: %w", t, err)
	}
	return t, payload, nil
}

// ReadMessage reads the next frame and decodes it. The message's byte
// fields share the frame's freshly allocated payload.
func (r *Reader) ReadMessage() (Message, error) {
	t, payload, err := r.ReadFrame()
	if err != nil {
		return nil, err
	}
	return Decode(t, payload)
}

// Decode decodes payload as a message of type t. The result is a pointer
// (*Hello, *Part, ...) whose byte fields share payload.
func Decode(t Type, payload []byte) (Message, error) {
	m := newMessage(t)
	if m == nil {
		return nil, fmt.Errorf("wire: decode: %w %d", ErrUnknownType, uint8(t))
	}
	if err := m.Unmarshal(payload); err != nil {
		return m, err
	}
	return m, nil
}

func newMessage(t Type) Message {
	switch t {
	case TypeHello:
		return new(Hello)
	case TypeSubscribe:
		return new(Subscribe)
	case TypeCatalog:
		return new(Catalog)
	case TypeStreamState:
		return new(StreamState)
	case TypeError:
		return new(Error)
	case TypeSegmentStart:
		return new(SegmentStart)
	case TypePart:
		return new(Part)
	case TypeSegmentEnd:
		return new(SegmentEnd)
	}
	return nil
}

// readUvarint reads a minimally encoded uvarint. Running out of input
// anywhere is ErrTruncated: the frame's type byte has already been read.
func readUvarint(br io.ByteReader) (uint64, error) {
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		c, err := br.ReadByte()
		if err != nil {
			if err == io.EOF {
				return 0, fmt.Errorf("%w: %w", ErrTruncated, io.ErrUnexpectedEOF)
			}
			return 0, err
		}
		if i == binary.MaxVarintLen64-1 && c > 1 {
			return 0, fmt.Errorf("%w: varint overflows 64 bits", ErrMalformed)
		}
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if i > 0 && c == 0 {
				return 0, fmt.Errorf("%w: non-minimal varint", ErrMalformed)
			}
			return x, nil
		}
	}
	return 0, fmt.Errorf("%w: varint overflows 64 bits", ErrMalformed)
}

// readPayload reads exactly n bytes, n already checked against the limit.
func readPayload(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, min(n, eagerAlloc))
	got, err := io.ReadFull(r, buf)
	for err == nil && len(buf) < n {
		// Grow only as bytes arrive, doubling, never past n.
		next := min(n, 2*len(buf))
		buf = slices.Grow(buf, next-len(buf))[:next]
		var k int
		k, err = io.ReadFull(r, buf[got:])
		got += k
	}
	if err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("%w: %d of %d bytes: %w", ErrTruncated, got, n, io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	return buf, nil
}
