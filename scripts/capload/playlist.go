//go:build linux

package main

import (
	"bytes"
	"errors"
	"time"
)

// cursor names a part as players do: the media sequence number of its
// segment and its index within it.
type cursor struct {
	msn uint64
	idx int
}

func (c cursor) less(o cursor) bool { return c.msn < o.msn || (c.msn == o.msn && c.idx < o.idx) }

// listedPart is one EXT-X-PART line. Its URI is kept as offsets into the
// playlist body it was scanned from: valid until that buffer is reused.
type listedPart struct {
	at       cursor
	dur      time.Duration
	uri, end int // body[uri:end]
}

// listing is what a viewer needs of a media playlist, no more: the parts
// near the live edge, the part after the last one listed (the blocking
// reload's target), PART-TARGET, the init section and the end tag. scan
// refills it in place so that the hot loop allocates nothing once its
// slice has grown.
type listing struct {
	parts      []listedPart
	next       cursor // the part after the last one listed
	partTarget time.Duration
	mapURI     [2]int // offsets of the last EXT-X-MAP URI; equal when none
	endList    bool
}

var (
	errNotPlaylist = errors.New("not an HLS playlist")
	errBadPart     = errors.New("bad EXT-X-PART line")
)

var (
	tagMediaSeq = []byte("#EXT-X-MEDIA-SEQUENCE:")
	tagPart     = []byte("#EXT-X-PART:")
	tagPartInf  = []byte("#EXT-X-PART-INF:")
	tagInf      = []byte("#EXTINF:")
	tagMap      = []byte("#EXT-X-MAP:")
	tagEnd      = []byte("#EXT-X-ENDLIST")
	tagSkip     = []byte("#EXT-X-SKIP:")
	attrURI     = []byte(`URI="`)
	attrDur     = []byte("DURATION=")
	attrTarget  = []byte("PART-TARGET=")
)

// scan reads a media playlist into l. Segments are counted from
// EXT-X-MEDIA-SEQUENCE by their EXTINF lines; parts after the last EXTINF
// belong to the open segment. It hand-parses only those tags and never
// allocates once l.parts has room.
func scan(body []byte, l *listing) error {
	if !bytes.HasPrefix(body, []byte("#EXTM3U")) {
		return errNotPlaylist
	}
	l.parts = l.parts[:0]
	l.endList = false
	l.mapURI = [2]int{}
	var msn uint64
	idx := 0
	for off := 0; off < len(body); {
		end := bytes.IndexByte(body[off:], '\n')
		if end < 0 {
			end = len(body)
		} else {
			end += off
		}
		line := body[off:end]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		switch {
		case bytes.HasPrefix(line, tagPart) && !bytes.HasPrefix(line, tagPartInf):
			u0, u1, ok := quoted(line, attrURI)
			d, ok2 := attrSeconds(line, attrDur)
			if !ok || !ok2 {
				return errBadPart
			}
			l.parts = append(l.parts, listedPart{at: cursor{msn, idx}, dur: d, uri: off + u0, end: off + u1})
			idx++
		case bytes.HasPrefix(line, tagInf):
			msn++
			idx = 0
		case bytes.HasPrefix(line, tagMediaSeq):
			n, ok := uintOf(line[len(tagMediaSeq):])
			if !ok {
				return errors.New("bad EXT-X-MEDIA-SEQUENCE")
			}
			msn = n
		case bytes.HasPrefix(line, tagSkip):
			// Delta updates are never asked for; a server that sends one
			// anyway would shift every MSN.
			return errors.New("unexpected EXT-X-SKIP")
		case bytes.HasPrefix(line, tagPartInf):
			if d, ok := attrSeconds(line, attrTarget); ok {
				l.partTarget = d
			}
		case bytes.HasPrefix(line, tagMap):
			if u0, u1, ok := quoted(line, attrURI); ok {
				l.mapURI = [2]int{off + u0, off + u1}
			}
		case bytes.HasPrefix(line, tagEnd):
			l.endList = true
		}
		off = end + 1
	}
	l.next = cursor{msn, idx}
	return nil
}

// quoted finds attr (NAME=") in line and returns the offsets of its value.
func quoted(line, attr []byte) (int, int, bool) {
	i := bytes.Index(line, attr)
	if i < 0 {
		return 0, 0, false
	}
	i += len(attr)
	j := bytes.IndexByte(line[i:], '"')
	if j <= 0 {
		return 0, 0, false
	}
	return i, i + j, true
}

// attrSeconds reads a decimal-seconds attribute (DURATION=0.200) to the
// microsecond, by hand: strconv would need a string.
func attrSeconds(line, attr []byte) (time.Duration, bool) {
	i := bytes.Index(line, attr)
	// A bare DURATION= must not match inside PART-TARGET= or similar.
	for i > 0 && line[i-1] != ':' && line[i-1] != ',' {
		j := bytes.Index(line[i+1:], attr)
		if j < 0 {
			return 0, false
		}
		i += 1 + j
	}
	if i < 0 {
		return 0, false
	}
	v := line[i+len(attr):]
	var whole, frac, scale int64 = 0, 0, 1_000_000
	k, digits := 0, 0
	for ; k < len(v) && v[k] >= '0' && v[k] <= '9'; k++ {
		whole = whole*10 + int64(v[k]-'0')
		digits++
		if digits > 9 {
			return 0, false
		}
	}
	if k < len(v) && v[k] == '.' {
		k++
		for ; k < len(v) && v[k] >= '0' && v[k] <= '9'; k++ {
			if scale > 1 {
				scale /= 10
				frac += int64(v[k]-'0') * scale
			}
			digits++
		}
	}
	if digits == 0 {
		return 0, false
	}
	return time.Duration(whole)*time.Second + time.Duration(frac)*time.Microsecond, true
}

// uintOf parses a decimal number that makes up all of b.
func uintOf(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	return n, true
}

// where says what a viewer at cursor pos does with listing l.
type where int

const (
	atPart   where = iota // fetch l.parts[i]
	atWait                // pos is past the last part listed: reload
	atBehind              // pos fell out of the listed parts: rejoin at i
)

// locate finds pos in l: the first listed part at or after it. A part
// index past the end of a segment that has since completed means part 0
// of the next segment, which is the first part after pos too. Any other
// pos before the first listed part has fallen behind the window.
func locate(l *listing, pos cursor) (where, int) {
	for i := range l.parts {
		at := l.parts[i].at
		if at.less(pos) {
			continue
		}
		if i == 0 && at != pos && !(at.msn == pos.msn+1 && at.idx == 0 && pos.idx > 0) {
			return atBehind, startIndex(l, holdBackParts)
		}
		return atPart, i
	}
	return atWait, len(l.parts)
}

// holdBackParts is where a player starts: this many parts behind the live
// edge (PART-HOLD-BACK is three part targets).
const holdBackParts = 3

// startIndex is the listed part a new viewer starts with: back parts
// before the end.
func startIndex(l *listing, back int) int {
	return max(len(l.parts)-back, 0)
}
