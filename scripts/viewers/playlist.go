package main

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/relaymesh/relaymesh/internal/m3u8attr"
)

// variant is one EXT-X-STREAM-INF of a multivariant playlist (hls.js: a
// Level).
type variant struct {
	pathway   string // PATHWAY-ID; "." when absent, as in hls.js
	stableID  string // STABLE-VARIANT-ID
	bandwidth int
	uri       string // absolute
}

// steeringTag is EXT-X-CONTENT-STEERING.
type steeringTag struct {
	uri     string // SERVER-URI resolved against the playlist's URL
	pathway string // PATHWAY-ID; "." when absent
}

type multivariant struct {
	variants []variant
	steering *steeringTag // nil without the tag
}

// parseMultivariant reads a multivariant playlist fetched from base (the
// URL after redirects, which relative URIs resolve against, as hls.js uses
// the response URL). A media playlist given instead becomes a single
// variant of pathway ".", as hls.js plays one given as the manifest.
func parseMultivariant(body string, base *url.URL) (*multivariant, error) {
	if !strings.HasPrefix(body, "#EXTM3U") {
		return nil, errors.New("no #EXTM3U at the start")
	}
	if strings.Contains(body, "#EXT-X-TARGETDURATION") {
		return &multivariant{variants: []variant{{pathway: ".", uri: base.String()}}}, nil
	}
	m := &multivariant{}
	var pending *variant // STREAM-INF waiting for its URI line
	for rest := body; rest != ""; {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "#EXT-X-STREAM-INF:"):
			v := variant{pathway: "."}
			eachAttr(line[len("#EXT-X-STREAM-INF:"):], func(k, val string) {
				switch k {
				case "PATHWAY-ID":
					if val != "" {
						v.pathway = val
					}
				case "STABLE-VARIANT-ID":
					v.stableID = val
				case "BANDWIDTH":
					v.bandwidth, _ = strconv.Atoi(val)
				}
			})
			pending = &v
		case strings.HasPrefix(line, "#EXT-X-CONTENT-STEERING:"):
			t := steeringTag{pathway: "."}
			var uri string
			eachAttr(line[len("#EXT-X-CONTENT-STEERING:"):], func(k, val string) {
				switch k {
				case "SERVER-URI":
					uri = val
				case "PATHWAY-ID":
					if val != "" {
						t.pathway = val
					}
				}
			})
			u, err := resolve(base, uri)
			if err != nil || uri == "" {
				return nil, fmt.Errorf("EXT-X-CONTENT-STEERING SERVER-URI %q: %v", uri, err)
			}
			t.uri = u.String()
			m.steering = &t
		case strings.HasPrefix(line, "#"):
			// Comments and other tags between STREAM-INF and its URI are
			// skipped, as hls.js's regular expression does.
		default:
			if pending == nil {
				continue
			}
			u, err := resolve(base, line)
			if err != nil {
				return nil, fmt.Errorf("variant URI %q: %w", line, err)
			}
			pending.uri = u.String()
			m.variants = append(m.variants, *pending)
			pending = nil
		}
	}
	if len(m.variants) == 0 {
		return nil, errors.New("no variants")
	}
	return m, nil
}

// part is one EXT-X-PART.
type part struct {
	uri         string
	duration    float64
	independent bool
}

// segment is a media segment of a media playlist: complete (it has its
// EXTINF and URI) or the open one at the end, which only has parts.
type segment struct {
	msn      uint64
	duration float64 // EXTINF; 0 while open
	uri      string  // "" while open
	mapURI   string  // the EXT-X-MAP in force
	parts    []part  // listed only near the live edge
	// PROGRAM-DATE-TIME of its start: its own tag's, or extrapolated from
	// the previous segment's; zero without one.
	pdt time.Time
}

func (s *segment) complete() bool { return s.uri != "" }

// mediaPlaylist is what a viewer needs from an LL-HLS media playlist.
type mediaPlaylist struct {
	targetDuration float64
	partTarget     float64
	partHoldBack   float64
	canBlock       bool
	canSkipUntil   float64
	mediaSequence  uint64
	skipped        uint64 // EXT-X-SKIP SKIPPED-SEGMENTS of a delta update
	segments       []segment
	preloadHint    string // URI of the TYPE=PART preload hint
	endList        bool
}

// firstMSN is the media sequence number of the first listed segment.
func (pl *mediaPlaylist) firstMSN() uint64 { return pl.mediaSequence + pl.skipped }

func parseMedia(body string) (*mediaPlaylist, error) {
	if !strings.HasPrefix(body, "#EXTM3U") {
		return nil, errors.New("no #EXTM3U at the start")
	}
	pl := &mediaPlaylist{}
	var (
		mapURI   string
		open     *segment // parts seen, no URI yet
		extinf   float64
		next     uint64
		numbered bool      // next is set from MEDIA-SEQUENCE and SKIP
		pdt      time.Time // for the next segment to start
		err      error
	)
	start := func() *segment {
		if !numbered {
			next, numbered = pl.firstMSN(), true
		}
		if open == nil {
			open = &segment{msn: next, mapURI: mapURI, pdt: pdt}
			pdt = time.Time{}
		}
		return open
	}
	num := func(s string) float64 {
		f, e := strconv.ParseFloat(s, 64)
		if e != nil && err == nil {
			err = fmt.Errorf("bad number %q", s)
		}
		return f
	}
	for rest := body; rest != ""; {
		var line string
		line, rest, _ = strings.Cut(rest, "\n")
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if line[0] != '#' {
			s := start()
			s.uri, s.duration = line, extinf
			pl.segments = append(pl.segments, *s)
			open, extinf = nil, 0
			next++
			continue
		}
		tag, val, _ := strings.Cut(line, ":")
		switch tag {
		case "#EXT-X-TARGETDURATION":
			pl.targetDuration = num(val)
		case "#EXT-X-MEDIA-SEQUENCE":
			n, e := strconv.ParseUint(val, 10, 64)
			if e != nil {
				return nil, fmt.Errorf("EXT-X-MEDIA-SEQUENCE %q", val)
			}
			pl.mediaSequence = n
		case "#EXT-X-SKIP":
			eachAttr(val, func(k, v string) {
				if k == "SKIPPED-SEGMENTS" {
					pl.skipped = uint64(num(v))
				}
			})
		case "#EXT-X-SERVER-CONTROL":
			eachAttr(val, func(k, v string) {
				switch k {
				case "CAN-BLOCK-RELOAD":
					pl.canBlock = v == "YES"
				case "CAN-SKIP-UNTIL":
					pl.canSkipUntil = num(v)
				case "PART-HOLD-BACK":
					pl.partHoldBack = num(v)
				}
			})
		case "#EXT-X-PART-INF":
			eachAttr(val, func(k, v string) {
				if k == "PART-TARGET" {
					pl.partTarget = num(v)
				}
			})
		case "#EXT-X-MAP":
			eachAttr(val, func(k, v string) {
				if k == "URI" {
					mapURI = v
				}
			})
		case "#EXT-X-PART":
			var p part
			eachAttr(val, func(k, v string) {
				switch k {
				case "URI":
					p.uri = v
				case "DURATION":
					p.duration = num(v)
				case "INDEPENDENT":
					p.independent = v == "YES"
				}
			})
			if p.uri == "" {
				return nil, errors.New("EXT-X-PART without URI")
			}
			s := start()
			s.parts = append(s.parts, p)
		case "#EXTINF":
			d, _, _ := strings.Cut(val, ",")
			extinf = num(d)
		case "#EXT-X-PRELOAD-HINT":
			var typ, uri string
			eachAttr(val, func(k, v string) {
				switch k {
				case "TYPE":
					typ = v
				case "URI":
					uri = v
				}
			})
			if typ == "PART" {
				pl.preloadHint = uri
			}
		case "#EXT-X-ENDLIST":
			pl.endList = true
		case "#EXT-X-PROGRAM-DATE-TIME":
			// A bad date is ignored, as players do.
			if t, e := time.Parse(time.RFC3339Nano, val); e == nil {
				pdt = t
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tag, err)
		}
	}
	if open != nil {
		pl.segments = append(pl.segments, *open)
	}
	for i := 1; i < len(pl.segments); i++ {
		if s, prev := &pl.segments[i], &pl.segments[i-1]; s.pdt.IsZero() && !prev.pdt.IsZero() && prev.complete() {
			s.pdt = prev.pdt.Add(secondsDuration(prev.duration))
		}
	}
	return pl, nil
}

// partStart is when part idx of s starts by its PROGRAM-DATE-TIME (zero
// without one).
func (s *segment) partStart(idx int) time.Time {
	if s.pdt.IsZero() {
		return time.Time{}
	}
	var d float64
	for _, p := range s.parts[:min(idx, len(s.parts))] {
		d += p.duration
	}
	return s.pdt.Add(secondsDuration(d))
}

// cursor names a part: the segment's media sequence number and the part's
// index within it, which is what _HLS_msn and _HLS_part carry.
type cursor struct {
	msn uint64
	idx int
}

// where is what a playlist holds for a cursor.
type where int

const (
	atPart        where = iota // the part is listed
	atNextSegment              // the cursor's segment is complete: go on at the next one's part 0
	atSegment                  // the segment is complete and its parts are no longer listed: fetch it whole
	atWait                     // not there yet: block for it
	atBehind                   // before the window: the viewer fell behind
	atSkipped                  // inside the segments a delta update skipped: reload in full
	atEnd                      // past the last segment of an ended stream
)

// locate finds c in pl. It returns the segment for atPart and atSegment.
func (pl *mediaPlaylist) locate(c cursor) (where, *segment) {
	first := pl.firstMSN()
	if c.msn < first {
		if c.msn >= pl.mediaSequence {
			return atSkipped, nil
		}
		return atBehind, nil
	}
	i := c.msn - first
	if i >= uint64(len(pl.segments)) {
		if pl.endList {
			return atEnd, nil
		}
		return atWait, nil
	}
	s := &pl.segments[i]
	switch {
	case c.idx < len(s.parts):
		return atPart, s
	case s.complete() && len(s.parts) == 0:
		return atSegment, s
	case s.complete():
		return atNextSegment, nil
	case pl.endList:
		return atEnd, nil
	}
	return atWait, nil
}

// holdBackParts is how many parts back from the last listed one a viewer
// starts: PART-HOLD-BACK / PART-TARGET, at least one.
func (pl *mediaPlaylist) holdBackParts() int {
	phb := pl.partHoldBack
	if phb <= 0 {
		phb = 3 * pl.partTarget // the spec's minimum
	}
	if pl.partTarget <= 0 {
		return 1
	}
	return max(int(math.Round(phb/pl.partTarget)), 1)
}

// startCursor picks where a viewer starts: PART-HOLD-BACK behind the last
// listed part, moved back to an independent part when the playlist marks
// any (hls.js starts at the live sync position and then at the
// independent part before it). A playlist without parts starts three
// segments back (hls.js liveSyncDurationCount). ok is false for an empty
// playlist.
func (pl *mediaPlaylist) startCursor() (c cursor, ok bool) {
	type ref struct {
		c     cursor
		indep bool
	}
	var parts []ref
	anyIndep := false
	for _, s := range pl.segments {
		for j, p := range s.parts {
			parts = append(parts, ref{cursor{s.msn, j}, p.independent})
			anyIndep = anyIndep || p.independent
		}
	}
	if len(parts) == 0 {
		n := len(pl.segments)
		if n == 0 {
			return cursor{}, false
		}
		return cursor{pl.segments[max(n-3, 0)].msn, 0}, true
	}
	i := max(len(parts)-pl.holdBackParts(), 0)
	if anyIndep && !parts[i].indep {
		j := i
		for j >= 0 && !parts[j].indep {
			j--
		}
		if j < 0 { // none before: the first one after
			for j = i; !parts[j].indep; j++ {
			}
		}
		i = j
	}
	return parts[i].c, true
}

// partsBetween counts the parts from a (included) to b (excluded), for
// the parts a viewer that fell behind skips. Segments no longer listed or
// listed without parts count as many parts as the listed complete
// segments hold, or TARGETDURATION / PART-TARGET.
func (pl *mediaPlaylist) partsBetween(a, b cursor) int {
	perSeg := 0
	for _, s := range pl.segments {
		if s.complete() {
			perSeg = max(perSeg, len(s.parts))
		}
	}
	if perSeg == 0 && pl.partTarget > 0 {
		perSeg = int(math.Round(pl.targetDuration / pl.partTarget))
	}
	perSeg = max(perSeg, 1)
	first := pl.firstMSN()
	n := 0
	for msn, idx := a.msn, a.idx; msn <= b.msn; msn, idx = msn+1, 0 {
		end := perSeg
		if msn >= first && msn-first < uint64(len(pl.segments)) {
			if s := &pl.segments[msn-first]; len(s.parts) > 0 {
				end = len(s.parts)
			} else if s.complete() && pl.partTarget > 0 {
				end = max(int(math.Round(s.duration/pl.partTarget)), 1)
			}
		}
		if msn == b.msn {
			end = b.idx
		}
		n += max(end-idx, 0)
	}
	return n
}

// eachAttr calls f with each KEY=VALUE of an attribute list, quotes
// removed; a malformed rest of the list is ignored.
func eachAttr(list string, f func(key, val string)) {
	m3u8attr.Each(list, f) //nolint:errcheck // lenient, like a player
}

func resolve(base *url.URL, ref string) (*url.URL, error) {
	r, err := url.Parse(ref)
	if err != nil {
		return nil, err
	}
	return base.ResolveReference(r), nil
}
