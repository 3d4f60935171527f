package wire

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"
	"unicode"
	"unicode/utf8"
)

// Encoding helpers. Encoders append; the decoder consumes its input and
// keeps the first error, so message decoders read straight through and
// check once at the end.

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// appendDuration encodes a duration as uvarint nanoseconds. A negative
// duration encodes as a value above math.MaxInt64, which decoders reject.
func appendDuration(b []byte, d time.Duration) []byte {
	return binary.AppendUvarint(b, uint64(d))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendFloat(b []byte, f float64) []byte {
	return binary.BigEndian.AppendUint64(b, math.Float64bits(f))
}

// appendTime encodes t as zigzag varint Unix nanoseconds; the zero Time
// encodes as 0. t must lie between the years 1678 and 2262.
func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

// decoder reads a payload field by field.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(field, format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s: %s", ErrMalformed, field, fmt.Sprintf(format, args...))
	}
}

// finish reports the first error, or trailing bytes.
func (d *decoder) finish() error {
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(d.b))
	}
	return d.err
}

func (d *decoder) byte(field string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail(field, "truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) bool(field string) bool {
	switch c := d.byte(field); c {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail(field, "bool byte %d is neither 0 nor 1", c)
		return false
	}
}

// uvarint decodes a minimally encoded uvarint.
func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	var x uint64
	for i := 0; i < binary.MaxVarintLen64; i++ {
		if i >= len(d.b) {
			d.fail(field, "truncated varint")
			return 0
		}
		c := d.b[i]
		if i == binary.MaxVarintLen64-1 && c > 1 {
			break
		}
		x |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			if i > 0 && c == 0 {
				d.fail(field, "non-minimal varint")
				return 0
			}
			d.b = d.b[i+1:]
			return x
		}
	}
	d.fail(field, "varint overflows 64 bits")
	return 0
}

// varint decodes a zigzag signed varint.
func (d *decoder) varint(field string) int64 {
	u := d.uvarint(field)
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

// max decodes a uvarint no larger than limit.
func (d *decoder) max(field string, limit uint64) uint64 {
	v := d.uvarint(field)
	if v > limit {
		d.fail(field, "%d exceeds %d", v, limit)
		return 0
	}
	return v
}

func (d *decoder) duration(field string) time.Duration {
	return time.Duration(d.max(field, math.MaxInt64))
}

// length decodes a byte count that the rest of the input must hold.
func (d *decoder) length(field string, limit int) int {
	n := d.uvarint(field)
	if d.err != nil {
		return 0
	}
	if n > uint64(limit) {
		d.fail(field, "%d bytes exceeds limit %d", n, limit)
		return 0
	}
	if n > uint64(len(d.b)) {
		d.fail(field, "%d bytes declared, %d left", n, len(d.b))
		return 0
	}
	return int(n)
}

// bytes returns the next length-prefixed bytes, sharing the input; empty
// is nil.
func (d *decoder) bytes(field string) []byte {
	n := d.length(field, math.MaxInt)
	if d.err != nil || n == 0 {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// text returns the next length-prefixed string: valid UTF-8 of at most
// limit bytes, with no control characters.
func (d *decoder) text(field string, limit int) string {
	n := d.length(field, limit)
	if d.err != nil {
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	if !printable(s) {
		d.fail(field, "%q is not UTF-8 without control characters", s)
		return ""
	}
	return s
}

// printable reports whether s is valid UTF-8 without control characters.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func (d *decoder) float(field string) float64 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 8 {
		d.fail(field, "truncated float")
		return 0
	}
	f := math.Float64frombits(binary.BigEndian.Uint64(d.b))
	d.b = d.b[8:]
	return f
}

func (d *decoder) time(field string) time.Time {
	ns := d.varint(field)
	if d.err != nil || ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
