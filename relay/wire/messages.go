package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"

	"github.com/relaymesh/relaymesh/relay"
)

// Limits on decoded values. A peer that exceeds one is malformed.
const (
	// MaxNameLen is the longest node name in bytes.
	MaxNameLen = 255
	// MaxCodecsLen is the longest CODECS string in bytes.
	MaxCodecsLen = 255
	// MaxErrorLen is the longest Error message in bytes.
	MaxErrorLen = 1024
	// MaxInits is the most init segments a Catalog may carry.
	MaxInits = 1024
	// MaxDimension is the largest video width or height.
	MaxDimension = 1<<16 - 1
)

// Message is one protocol message. Pointers to the message structs of this
// package implement it. Marshal never fails: a value that breaks the rules
// above (a negative duration, an over-long name) encodes to bytes that
// Unmarshal rejects. Unmarshal replaces the whole message; its byte fields
// (Init.Data, Part.Data) share the input rather than copy it.
type Message interface {
	Type() Type
	Marshal() []byte
	Unmarshal([]byte) error
}

func unmarshalErr(t Type, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("wire: unmarshal %s: %w", t, err)
}

// ValidNodeName reports whether name can name a node in a Hello: 1 to
// MaxNameLen bytes of UTF-8 without control characters.
func ValidNodeName(name string) bool {
	return name != "" && len(name) <= MaxNameLen && printable(name)
}

// nodeName decodes a node name.
func (d *decoder) nodeName(field string) string {
	s := d.text(field, MaxNameLen)
	if d.err == nil && s == "" {
		d.fail(field, "empty")
	}
	return s
}

// streamName checks a stream name with the rules the registry applies.
func (d *decoder) streamName(field string) string {
	n := d.length(field, 255)
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	if !relay.ValidName(s) {
		d.fail(field, "invalid stream name %q", s)
		return ""
	}
	return s
}

// Hello is the first frame each way on the control stream.
type Hello struct {
	Version uint8
	Node    string // the sender's node name
}

// Type returns TypeHello.
func (Hello) Type() Type { return TypeHello }

// Marshal encodes h.
func (h Hello) Marshal() []byte {
	b := append(make([]byte, 0, 2+len(h.Node)), h.Version)
	return appendString(b, h.Node)
}

// Unmarshal decodes a Hello. A Hello of another Version sets only
// h.Version and returns an error wrapping ErrBadVersion, whatever follows
// the version byte, so that the caller can answer Error{CodeBadVersion}.
func (h *Hello) Unmarshal(b []byte) error {
	*h = Hello{}
	d := decoder{b: b}
	v := d.byte("version")
	if d.err == nil && v != Version {
		h.Version = v
		return unmarshalErr(TypeHello, fmt.Errorf("%w %d (this node speaks %d)", ErrBadVersion, v, Version))
	}
	h.Version = v
	h.Node = d.nodeName("node")
	if err := d.finish(); err != nil {
		*h = Hello{}
		return unmarshalErr(TypeHello, err)
	}
	return nil
}

// Subscribe asks for a stream on the control stream.
type Subscribe struct {
	Stream string
	// FromPart is the first part number wanted, to resume after a failover;
	// 0 asks for a fresh replica: the newest segments, as many as a player
	// starting HOLD-BACK behind the live edge needs (relay.Snapshot.Tail).
	FromPart uint64
}

// Type returns TypeSubscribe.
func (Subscribe) Type() Type { return TypeSubscribe }

// Marshal encodes s.
func (s Subscribe) Marshal() []byte {
	b := appendString(make([]byte, 0, 12+len(s.Stream)), s.Stream)
	return binary.AppendUvarint(b, s.FromPart)
}

// Unmarshal decodes a Subscribe.
func (s *Subscribe) Unmarshal(b []byte) error {
	*s = Subscribe{}
	d := decoder{b: b}
	v := Subscribe{Stream: d.streamName("stream"), FromPart: d.uvarint("from part")}
	if err := d.finish(); err != nil {
		return unmarshalErr(TypeSubscribe, err)
	}
	*s = v
	return nil
}

// Init is an init segment as carried in a Catalog.
type Init struct {
	ID        uint64
	Codecs    string // RFC 6381; printable ASCII without '"'
	Width     int    // 0..MaxDimension
	Height    int    // 0..MaxDimension
	FrameRate float64
	Data      []byte
}

// minInitSize is the smallest encoded Init: four one-byte varints, an
// empty string's length and eight float bytes.
const minInitSize = 1 + 1 + 1 + 1 + 8 + 1

func (in *Init) appendTo(b []byte) []byte {
	b = binary.AppendUvarint(b, in.ID)
	b = appendString(b, in.Codecs)
	b = binary.AppendUvarint(b, uint64(in.Width))
	b = binary.AppendUvarint(b, uint64(in.Height))
	b = appendFloat(b, in.FrameRate)
	return appendBytes(b, in.Data)
}

func (d *decoder) init() Init {
	var in Init
	in.ID = d.uvarint("init id")
	in.Codecs = d.text("init codecs", MaxCodecsLen)
	if d.err == nil && strings.ContainsFunc(in.Codecs, func(r rune) bool { return r > unicode.MaxASCII || r == '"' }) {
		d.fail("init codecs", "%q is not an RFC 6381 list", in.Codecs)
	}
	in.Width = int(d.max("init width", MaxDimension))
	in.Height = int(d.max("init height", MaxDimension))
	in.FrameRate = d.float("init frame rate")
	if d.err == nil && (math.IsNaN(in.FrameRate) || math.IsInf(in.FrameRate, 0) || in.FrameRate < 0) {
		d.fail("init frame rate", "%v", in.FrameRate)
	}
	in.Data = d.bytes("init data")
	return in
}

// Catalog answers a Subscribe: what a node needs to serve the stream's
// playlist before its first segment arrives.
type Catalog struct {
	Stream         string
	PartTarget     time.Duration // PART-TARGET; positive
	TargetDuration time.Duration // EXT-X-TARGETDURATION; positive
	DiscSeq        uint64        // discontinuity sequence of the first segment sent
	Live           bool
	NextPart       uint64 // the upstream's preload hint
	Inits          []Init // every init the segments to be sent refer to; unique IDs
}

// Type returns TypeCatalog.
func (Catalog) Type() Type { return TypeCatalog }

// Marshal encodes c.
func (c Catalog) Marshal() []byte {
	size := 64 + len(c.Stream)
	for i := range c.Inits {
		size += 40 + len(c.Inits[i].Codecs) + len(c.Inits[i].Data)
	}
	b := appendString(make([]byte, 0, size), c.Stream)
	b = appendDuration(b, c.PartTarget)
	b = appendDuration(b, c.TargetDuration)
	b = binary.AppendUvarint(b, c.DiscSeq)
	b = appendBool(b, c.Live)
	b = binary.AppendUvarint(b, c.NextPart)
	b = binary.AppendUvarint(b, uint64(len(c.Inits)))
	for i := range c.Inits {
		b = c.Inits[i].appendTo(b)
	}
	return b
}

// Unmarshal decodes a Catalog.
func (c *Catalog) Unmarshal(b []byte) error {
	*c = Catalog{}
	d := decoder{b: b}
	var v Catalog
	v.Stream = d.streamName("stream")
	v.PartTarget = d.duration("part target")
	if d.err == nil && v.PartTarget <= 0 {
		d.fail("part target", "not positive")
	}
	v.TargetDuration = d.duration("target duration")
	if d.err == nil && v.TargetDuration <= 0 {
		d.fail("target duration", "not positive")
	}
	v.DiscSeq = d.uvarint("discontinuity sequence")
	v.Live = d.bool("live")
	v.NextPart = d.uvarint("next part")
	n := d.max("init count", MaxInits)
	if d.err == nil && n > 0 {
		// The count is checked against what the input can hold before
		// anything is allocated for it.
		if n > uint64(len(d.b)/minInitSize) {
			d.fail("init count", "%d inits cannot fit in %d bytes", n, len(d.b))
		} else {
			v.Inits = make([]Init, 0, n)
		}
	}
	for i := uint64(0); d.err == nil && i < n; i++ {
		in := d.init()
		for j := range v.Inits {
			if v.Inits[j].ID == in.ID {
				d.fail("init id", "duplicate %d", in.ID)
			}
		}
		v.Inits = append(v.Inits, in)
	}
	if err := d.finish(); err != nil {
		return unmarshalErr(TypeCatalog, err)
	}
	*c = v
	return nil
}

// SegmentStart is the first frame of a segment's unidirectional stream.
// It names the stream, so that one connection between two nodes carries
// all their subscriptions.
type SegmentStart struct {
	Stream        string
	MSN           uint64
	Start         time.Time // PROGRAM-DATE-TIME, to the nanosecond; decodes as UTC
	Discontinuity bool
	InitID        uint64 // an Init sent in a Catalog
}

// Type returns TypeSegmentStart.
func (SegmentStart) Type() Type { return TypeSegmentStart }

// Marshal encodes s. Start travels as Unix nanoseconds, so it must lie
// between the years 1678 and 2262; the zero Time (and the Unix epoch
// itself) decodes as the zero Time.
func (s SegmentStart) Marshal() []byte {
	b := appendString(make([]byte, 0, 48), s.Stream)
	b = binary.AppendUvarint(b, s.MSN)
	b = appendTime(b, s.Start)
	b = appendBool(b, s.Discontinuity)
	return binary.AppendUvarint(b, s.InitID)
}

// Unmarshal decodes a SegmentStart.
func (s *SegmentStart) Unmarshal(b []byte) error {
	*s = SegmentStart{}
	d := decoder{b: b}
	v := SegmentStart{
		Stream:        d.streamName("stream"),
		MSN:           d.uvarint("msn"),
		Start:         d.time("start"),
		Discontinuity: d.bool("discontinuity"),
		InitID:        d.uvarint("init id"),
	}
	if err := d.finish(); err != nil {
		return unmarshalErr(TypeSegmentStart, err)
	}
	*s = v
	return nil
}

// Part is one CMAF part on a segment stream.
type Part struct {
	N           uint64
	Duration    time.Duration // not negative
	Independent bool
	Data        []byte
}

// Type returns TypePart.
func (Part) Type() Type { return TypePart }

// appendHeader encodes every field but the data, ending with its length.
func (p *Part) appendHeader(b []byte) []byte {
	b = binary.AppendUvarint(b, p.N)
	b = appendDuration(b, p.Duration)
	b = appendBool(b, p.Independent)
	return binary.AppendUvarint(b, uint64(len(p.Data)))
}

// Marshal encodes p. WriteMessage sends a Part without this copy.
func (p Part) Marshal() []byte {
	b := p.appendHeader(make([]byte, 0, 32+len(p.Data)))
	return append(b, p.Data...)
}

// Unmarshal decodes a Part; Data shares b.
func (p *Part) Unmarshal(b []byte) error {
	*p = Part{}
	d := decoder{b: b}
	v := Part{
		N:           d.uvarint("part number"),
		Duration:    d.duration("duration"),
		Independent: d.bool("independent"),
		Data:        d.bytes("data"),
	}
	if err := d.finish(); err != nil {
		return unmarshalErr(TypePart, err)
	}
	*p = v
	return nil
}

// SegmentEnd is the last frame of a segment stream.
type SegmentEnd struct {
	MSN      uint64
	Complete bool // false: the segment was cut short and is not to be completed
}

// Type returns TypeSegmentEnd.
func (SegmentEnd) Type() Type { return TypeSegmentEnd }

// Marshal encodes s.
func (s SegmentEnd) Marshal() []byte {
	return appendBool(binary.AppendUvarint(make([]byte, 0, 11), s.MSN), s.Complete)
}

// Unmarshal decodes a SegmentEnd.
func (s *SegmentEnd) Unmarshal(b []byte) error {
	*s = SegmentEnd{}
	d := decoder{b: b}
	v := SegmentEnd{MSN: d.uvarint("msn"), Complete: d.bool("complete")}
	if err := d.finish(); err != nil {
		return unmarshalErr(TypeSegmentEnd, err)
	}
	*s = v
	return nil
}

// StreamState reports on the control stream that the publisher left or
// returned, that the show ended, or that the stream is gone.
type StreamState struct {
	Live           bool
	Gone           bool // the stream was removed; nothing follows. Never with Live.
	TargetDuration time.Duration
	DiscSeq        uint64
	// Ended: the show is over (EXT-X-ENDLIST); no media follows. Never
	// with Live.
	Ended bool
}

// Type returns TypeStreamState.
func (StreamState) Type() Type { return TypeStreamState }

// Marshal encodes s.
func (s StreamState) Marshal() []byte {
	b := appendBool(make([]byte, 0, 23), s.Live)
	b = appendBool(b, s.Gone)
	b = appendDuration(b, s.TargetDuration)
	b = binary.AppendUvarint(b, s.DiscSeq)
	return appendBool(b, s.Ended)
}

// Unmarshal decodes a StreamState.
func (s *StreamState) Unmarshal(b []byte) error {
	*s = StreamState{}
	d := decoder{b: b}
	v := StreamState{
		Live:           d.bool("live"),
		Gone:           d.bool("gone"),
		TargetDuration: d.duration("target duration"),
		DiscSeq:        d.uvarint("discontinuity sequence"),
		Ended:          d.bool("ended"),
	}
	if d.err == nil && v.Live && (v.Gone || v.Ended) {
		d.fail("live", "a gone or ended stream cannot be live")
	}
	if err := d.finish(); err != nil {
		return unmarshalErr(TypeStreamState, err)
	}
	*s = v
	return nil
}

// ErrorCode says why a peer refused or ended a conversation.
type ErrorCode uint16

// Error codes. Zero is not valid; codes this version does not know are
// accepted and treated like CodeInternal.
const (
	CodeNotFound     ErrorCode = 1 // no such stream here
	CodeBadVersion   ErrorCode = 2 // Hello carried another Version
	CodeBadRequest   ErrorCode = 3 // a malformed or unexpected frame
	CodeInternal     ErrorCode = 4
	CodeShuttingDown ErrorCode = 5 // the node is stopping: subscribe elsewhere
)

// String names c.
func (c ErrorCode) String() string {
	switch c {
	case CodeNotFound:
		return "not found"
	case CodeBadVersion:
		return "bad version"
	case CodeBadRequest:
		return "bad request"
	case CodeInternal:
		return "internal error"
	case CodeShuttingDown:
		return "shutting down"
	}
	return fmt.Sprintf("error code %d", uint16(c))
}

// Error refuses a request or ends a conversation. *Error is an error, so a
// received one can be returned as is.
type Error struct {
	Code    ErrorCode
	Message string
}

// Type returns TypeError.
func (Error) Type() Type { return TypeError }

// Error describes e.
func (e *Error) Error() string {
	if e.Message == "" {
		return "relay peer: " + e.Code.String()
	}
	return "relay peer: " + e.Code.String() + ": " + e.Message
}

// Marshal encodes e. The message is made fit to send first: invalid UTF-8
// and control characters become spaces and it is cut to MaxErrorLen bytes
// at a character boundary, so any error text can be passed.
func (e Error) Marshal() []byte {
	msg := sanitize(e.Message, MaxErrorLen)
	b := binary.AppendUvarint(make([]byte, 0, 6+len(msg)), uint64(e.Code))
	return appendString(b, msg)
}

func sanitize(s string, limit int) string {
	s = strings.ToValidUTF8(s, " ")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if len(s) <= limit {
		return s
	}
	cut := 0
	for i := range s {
		if i > limit {
			break
		}
		cut = i
	}
	return s[:cut]
}

// Unmarshal decodes an Error.
func (e *Error) Unmarshal(b []byte) error {
	*e = Error{}
	d := decoder{b: b}
	code := d.max("code", math.MaxUint16)
	if d.err == nil && code == 0 {
		d.fail("code", "zero")
	}
	v := Error{Code: ErrorCode(code), Message: d.text("message", MaxErrorLen)}
	if err := d.finish(); err != nil {
		return unmarshalErr(TypeError, err)
	}
	*e = v
	return nil
}
