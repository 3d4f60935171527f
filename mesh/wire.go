package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/hashicorp/serf/coordinate"
)

// Wire formats. Every encoding starts with wireVersion; a decoder rejects any
// other first byte, so a later release can change a format by bumping it.
// Decoders take bytes from the network: they check every length against what
// is left, never allocate more than the input can describe, and never panic.
//
//	meta    = version role:u8 state:u8 capacity:uv viewers:uv egress:uv cpu:u16be
//	          region:str http:str relay:str public:str standbyFor:str
//	          [ignored trailing bytes]
//	streams = version kindStreams entry                 (UDP broadcast)
//	state   = version kindState count:uv entry*count    (TCP push/pull)
//	entry   = node:str seq:uv count:uv (name:str viewers:uv flags:u8 [firstMSN:uv] [via:str])*count
//	flags   = bit 0: published here (origin), followed by firstMSN;
//	          bit 1: held here as a standby;
//	          bit 2: relayed here from node via, which follows
//	coord   = version dims:u8 vec:f64be*dims error:f64be adjustment:f64be height:f64be
//	str     = len:uv bytes
//
// uv is an unsigned varint (encoding/binary).
const (
	wireVersion = 4

	kindStreams = 1
	kindState   = 2

	// metaLimit is the most NodeMeta may return; memberlist panics above
	// MetaMaxSize (512), and we stay strictly below it.
	metaLimit = 511
	// maxFieldLen bounds one string in meta (region, addresses).
	maxFieldLen = 255
	// maxNodeName and maxStreamName bound names a decoder accepts.
	maxNodeName   = 255
	maxStreamName = 1024
	// maxCoordDims bounds the dimensionality a coordinate decoder accepts.
	maxCoordDims = 32
	// maxCoordComponent bounds coordinate components (seconds); memberlist
	// never measures an RTT above 10 s, so anything far beyond is bogus.
	maxCoordComponent = 1000.0
)

var (
	errVersion   = errors.New("unknown encoding version")
	errTruncated = errors.New("truncated")
	errRange     = errors.New("value out of range")
)

// roleCode and stateCode map the gossiped enums to one byte. Unknown values
// encode as 0 and decode as "".
func roleCode(r Role) byte {
	switch r {
	case RoleOrigin:
		return 1
	case RoleEdge:
		return 2
	}
	return 0
}

func roleFromCode(b byte) (Role, error) {
	switch b {
	case 0:
		return "", nil
	case 1:
		return RoleOrigin, nil
	case 2:
		return RoleEdge, nil
	}
	return "", fmt.Errorf("role %d: %w", b, errRange)
}

func stateCode(s State) byte {
	switch s {
	case StateWarming:
		return 1
	case StateReady:
		return 2
	case StateDraining:
		return 3
	}
	return 0
}

func stateFromCode(b byte) (State, error) {
	switch b {
	case 0:
		return "", nil
	case 1:
		return StateWarming, nil
	case 2:
		return StateReady, nil
	case 3:
		return StateDraining, nil
	}
	return "", fmt.Errorf("state %d: %w", b, errRange)
}

// clipUTF8 cuts s to at most n bytes without splitting a UTF-8 sequence.
func clipUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	s = s[:n]
	// Drop a trailing partial rune (at most utf8.UTFMax-1 bytes).
	for i := 0; i < utf8.UTFMax && len(s) > 0; i++ {
		r, size := utf8.DecodeLastRuneInString(s)
		if r != utf8.RuneError || size > 1 {
			break
		}
		s = s[:len(s)-1]
	}
	return s
}

func nonNeg(v int64) uint64 {
	if v < 0 {
		return 0
	}
	return uint64(v)
}

func cpuUnits(cpu float64) uint16 {
	switch {
	case !(cpu > 0): // also NaN
		return 0
	case cpu >= 1:
		return 10000
	}
	return uint16(math.Round(cpu * 10000))
}

// metaClip says which fields encodeMeta had to shorten or drop.
type metaClip struct {
	Region, HTTPAddr, RelayAddr, PublicURL, StandbyFor bool
}

func (c metaClip) any() bool {
	return c.Region || c.HTTPAddr || c.RelayAddr || c.PublicURL || c.StandbyFor
}

// encodeMeta encodes the small fixed fields of s into at most limit bytes
// (and never more than metaLimit). Strings longer than maxFieldLen are cut.
// If the whole still does not fit, the region is shortened first; an address
// that still does not fit is dropped (sent empty) rather than cut, since a
// cut address would silently dial the wrong place: the public URL first
// (viewers are then not routed here), then the relay address, then the
// HTTP address.
func encodeMeta(s NodeState, limit int) ([]byte, metaClip) {
	if limit > metaLimit {
		limit = metaLimit
	}
	var clip metaClip
	region := clipUTF8(s.Region, maxFieldLen)
	httpAddr, relayAddr, public, standbyFor := s.HTTPAddr, s.RelayAddr, s.PublicURL, s.StandbyFor
	clip.Region = len(region) != len(s.Region)
	if len(httpAddr) > maxFieldLen {
		httpAddr, clip.HTTPAddr = "", true
	}
	if len(relayAddr) > maxFieldLen {
		relayAddr, clip.RelayAddr = "", true
	}
	if len(public) > maxFieldLen {
		public, clip.PublicURL = "", true
	}
	if len(standbyFor) > maxFieldLen {
		standbyFor, clip.StandbyFor = "", true
	}

	b := make([]byte, 0, 64+len(region)+len(httpAddr)+len(relayAddr)+len(public)+len(standbyFor))
	b = append(b, wireVersion, roleCode(s.Role), stateCode(s.State))
	b = binary.AppendUvarint(b, nonNeg(int64(s.Capacity)))
	b = binary.AppendUvarint(b, nonNeg(int64(s.Viewers)))
	b = binary.AppendUvarint(b, nonNeg(s.EgressBps))
	b = binary.BigEndian.AppendUint16(b, cpuUnits(s.CPU))

	size := func(str string) int { return uvarintLen(uint64(len(str))) + len(str) }
	need := len(b) + size(region) + size(httpAddr) + size(relayAddr) + size(public) + size(standbyFor)
	if over := need - limit; over > 0 {
		keep := len(region) - over
		if keep < 0 {
			keep = 0
		}
		// The length prefix may shrink too; that only frees space.
		region = clipUTF8(region, keep)
		clip.Region = true
		need = len(b) + size(region) + size(httpAddr) + size(relayAddr) + size(public) + size(standbyFor)
	}
	if need > limit && public != "" {
		need -= size(public) - size("")
		public, clip.PublicURL = "", true
	}
	if need > limit && standbyFor != "" {
		need -= size(standbyFor) - size("")
		standbyFor, clip.StandbyFor = "", true
	}
	if need > limit {
		need -= size(relayAddr) - size("")
		relayAddr, clip.RelayAddr = "", true
	}
	if need > limit {
		httpAddr, clip.HTTPAddr = "", true
	}
	b = appendString(b, region)
	b = appendString(b, httpAddr)
	b = appendString(b, relayAddr)
	b = appendString(b, public)
	b = appendString(b, standbyFor)
	if len(b) > limit {
		// Only reachable with an absurdly small limit: send nothing rather
		// than something memberlist would refuse.
		return nil, metaClip{true, true, true, true, true}
	}
	return b, clip
}

// decodeMeta decodes what encodeMeta wrote into the gossiped fields of a
// NodeState (Name, Streams and Coord are not part of meta).
func decodeMeta(b []byte) (NodeState, error) {
	var s NodeState
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != wireVersion {
		return s, fmt.Errorf("meta: %w %d", errVersion, v)
	}
	role, state := r.byte(), r.byte()
	capacity := r.int()
	viewers := r.int()
	egress := r.int()
	cpu := r.uint16()
	region := r.string(maxFieldLen)
	httpAddr := r.string(maxFieldLen)
	relayAddr := r.string(maxFieldLen)
	public := r.string(maxFieldLen)
	standbyFor := r.string(maxFieldLen)
	if r.err != nil {
		return s, fmt.Errorf("meta: %w", r.err)
	}
	var err error
	if s.Role, err = roleFromCode(role); err != nil {
		return s, fmt.Errorf("meta: %w", err)
	}
	if s.State, err = stateFromCode(state); err != nil {
		return s, fmt.Errorf("meta: %w", err)
	}
	if cpu > 10000 {
		return s, fmt.Errorf("meta: cpu %d: %w", cpu, errRange)
	}
	s.Capacity, s.Viewers, s.EgressBps = capacity, viewers, int64(egress)
	s.CPU = float64(cpu) / 10000
	s.Region, s.HTTPAddr, s.RelayAddr, s.PublicURL, s.StandbyFor = region, httpAddr, relayAddr, public, standbyFor
	return s, nil
}

// streamEntry is one node's stream list at one version. seq orders versions
// of the same node's list: higher wins.
type streamEntry struct {
	Node    string
	Seq     uint64
	Streams []StreamLoad
}

func appendEntry(b []byte, e streamEntry) []byte {
	b = appendString(b, e.Node)
	b = binary.AppendUvarint(b, e.Seq)
	b = binary.AppendUvarint(b, uint64(len(e.Streams)))
	for _, s := range e.Streams {
		b = appendString(b, s.Name)
		b = binary.AppendUvarint(b, nonNeg(int64(s.Viewers)))
		var flags byte
		if s.Origin {
			flags |= flagOrigin
		}
		if s.Standby {
			flags |= flagStandby
		}
		if s.Via != "" {
			flags |= flagVia
		}
		b = append(b, flags)
		if s.Origin {
			b = binary.AppendUvarint(b, s.FirstMSN)
		}
		if s.Via != "" {
			b = appendString(b, s.Via)
		}
	}
	return b
}

// Stream flags.
const (
	flagOrigin  = 1 << 0
	flagStandby = 1 << 1
	flagVia     = 1 << 2
)

func (r *reader) entry() streamEntry {
	var e streamEntry
	e.Node = r.string(maxNodeName)
	e.Seq = r.uvarint()
	n := r.count(3) // a stream is at least three bytes: empty name, viewers, flags
	if r.err != nil {
		return e
	}
	if n > 0 {
		e.Streams = make([]StreamLoad, 0, n)
	}
	for range n {
		name := r.string(maxStreamName)
		viewers := r.int()
		flags := r.byte()
		if r.err == nil && flags&^(flagOrigin|flagStandby|flagVia) != 0 {
			r.fail(fmt.Errorf("stream flags %#x: %w", flags, errRange))
		}
		l := StreamLoad{Name: name, Viewers: viewers, Origin: flags&flagOrigin != 0, Standby: flags&flagStandby != 0}
		if l.Origin {
			l.FirstMSN = r.uvarint()
		}
		if flags&flagVia != 0 {
			l.Via = r.string(maxNodeName)
		}
		if r.err != nil {
			return e
		}
		e.Streams = append(e.Streams, l)
	}
	return e
}

// encodeStreams encodes one node's stream list as a broadcast message.
func encodeStreams(e streamEntry) []byte {
	return appendEntry([]byte{wireVersion, kindStreams}, e)
}

func decodeStreams(b []byte) (streamEntry, error) {
	r := reader{b: b}
	r.header(kindStreams)
	e := r.entry()
	r.end()
	if r.err != nil {
		return streamEntry{}, fmt.Errorf("streams message: %w", r.err)
	}
	return e, nil
}

// encodeState encodes every known node's stream list for push/pull.
func encodeState(entries []streamEntry) []byte {
	b := []byte{wireVersion, kindState}
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, e := range entries {
		b = appendEntry(b, e)
	}
	return b
}

func decodeState(b []byte) ([]streamEntry, error) {
	r := reader{b: b}
	r.header(kindState)
	n := r.count(3) // an entry is at least three bytes
	var out []streamEntry
	if r.err == nil && n > 0 {
		out = make([]streamEntry, 0, n)
	}
	for i := 0; i < n && r.err == nil; i++ {
		out = append(out, r.entry())
	}
	r.end()
	if r.err != nil {
		return nil, fmt.Errorf("push/pull state: %w", r.err)
	}
	return out, nil
}

// encodeCoord encodes a Vivaldi coordinate for a ping ack.
func encodeCoord(c *coordinate.Coordinate) []byte {
	b := make([]byte, 0, 2+8*(len(c.Vec)+3))
	b = append(b, wireVersion, byte(len(c.Vec)))
	for _, v := range c.Vec {
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(v))
	}
	for _, v := range []float64{c.Error, c.Adjustment, c.Height} {
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(v))
	}
	return b
}

func decodeCoord(b []byte) (*coordinate.Coordinate, error) {
	r := reader{b: b}
	if v := r.byte(); r.err == nil && v != wireVersion {
		return nil, fmt.Errorf("coordinate: %w %d", errVersion, v)
	}
	dims := int(r.byte())
	if r.err == nil && (dims == 0 || dims > maxCoordDims) {
		return nil, fmt.Errorf("coordinate: %d dimensions: %w", dims, errRange)
	}
	if r.err == nil && len(r.b) != 8*(dims+3) {
		return nil, fmt.Errorf("coordinate: %d bytes for %d dimensions: %w", len(r.b), dims, errRange)
	}
	c := &coordinate.Coordinate{Vec: make([]float64, dims)}
	for i := range c.Vec {
		c.Vec[i] = r.float()
	}
	c.Error, c.Adjustment, c.Height = r.float(), r.float(), r.float()
	r.end()
	if r.err != nil {
		return nil, fmt.Errorf("coordinate: %w", r.err)
	}
	ok := c.IsValid() && c.Error >= 0 && c.Height >= 0 &&
		c.Error <= maxCoordComponent && math.Abs(c.Adjustment) <= maxCoordComponent && c.Height <= maxCoordComponent
	for _, v := range c.Vec {
		ok = ok && math.Abs(v) <= maxCoordComponent
	}
	if !ok {
		return nil, fmt.Errorf("coordinate: %w", errRange)
	}
	return c, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// reader decodes untrusted bytes; the first error sticks and later reads
// return zero values.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) header(kind byte) {
	if v := r.byte(); r.err == nil && v != wireVersion {
		r.fail(fmt.Errorf("%w %d", errVersion, v))
	}
	if k := r.byte(); r.err == nil && k != kind {
		r.fail(fmt.Errorf("kind %d, want %d: %w", k, kind, errRange))
	}
}

func (r *reader) end() {
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Errorf("%d trailing bytes", len(r.b)))
	}
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 1 {
		r.fail(errTruncated)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) uint16() uint16 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 2 {
		r.fail(errTruncated)
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) float() float64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.fail(errTruncated)
		return 0
	}
	v := math.Float64frombits(binary.BigEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		if n == 0 {
			r.fail(errTruncated)
		} else {
			r.fail(fmt.Errorf("varint overflow: %w", errRange))
		}
		return 0
	}
	r.b = r.b[n:]
	return v
}

// int reads a uvarint that must fit a non-negative int64 (and int).
func (r *reader) int() int {
	v := r.uvarint()
	if v > math.MaxInt64 || v > uint64(math.MaxInt) {
		r.fail(fmt.Errorf("integer %d: %w", v, errRange))
		return 0
	}
	return int(v)
}

// count reads an element count and checks that the rest of the input could
// hold that many elements of at least minSize bytes, so a hostile count
// cannot make the decoder allocate more than the input's size.
func (r *reader) count(minSize int) int {
	v := r.uvarint()
	if r.err == nil && v > uint64(len(r.b)/minSize) {
		r.fail(fmt.Errorf("count %d for %d bytes: %w", v, len(r.b), errRange))
		return 0
	}
	return int(v)
}

func (r *reader) string(max int) string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(max) {
		r.fail(fmt.Errorf("string of %d bytes (max %d): %w", n, max, errRange))
		return ""
	}
	if n > uint64(len(r.b)) {
		r.fail(errTruncated)
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}
