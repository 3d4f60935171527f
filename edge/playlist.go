package edge

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/relaymesh/relaymesh/relay"
)

// Directives are the LL-HLS delivery directives of a media playlist request
// (RFC 8216bis 6.2.5).
type Directives struct {
	MSN     uint64
	Part    uint64
	HasMSN  bool
	HasPart bool
	Skip    bool
}

// Blocking reports whether the request must wait for a future update.
func (d Directives) Blocking() bool { return d.HasMSN }

var errBadDirective = errors.New("bad delivery directive")

// maxDirective bounds _HLS_msn and _HLS_part so that arithmetic on them
// cannot overflow; nothing real comes near it.
const maxDirective = 1 << 53

// ParseDirectives reads _HLS_msn, _HLS_part and _HLS_skip. Other query
// parameters are ignored, in any order.
func ParseDirectives(q url.Values) (Directives, error) {
	var d Directives
	num := func(key string) (uint64, bool, error) {
		vs, ok := q[key]
		if !ok {
			return 0, false, nil
		}
		if len(vs) != 1 {
			return 0, false, fmt.Errorf("%w: %s given %d times", errBadDirective, key, len(vs))
		}
		v := vs[0]
		if v == "" || len(v) > 16 || strings.TrimLeft(v, "0123456789") != "" {
			return 0, false, fmt.Errorf("%w: %s=%q is not a non-negative integer", errBadDirective, key, v)
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n > maxDirective {
			return 0, false, fmt.Errorf("%w: %s=%q is out of range", errBadDirective, key, v)
		}
		return n, true, nil
	}
	var err error
	if d.MSN, d.HasMSN, err = num("_HLS_msn"); err != nil {
		return d, err
	}
	if d.Part, d.HasPart, err = num("_HLS_part"); err != nil {
		return d, err
	}
	if d.HasPart && !d.HasMSN {
		return d, fmt.Errorf("%w: _HLS_part needs _HLS_msn", errBadDirective)
	}
	switch v := q.Get("_HLS_skip"); v {
	case "":
	case "YES", "v2": // relaymesh writes no date ranges, so v2 skips the same
		d.Skip = true
	default:
		return d, fmt.Errorf("%w: _HLS_skip=%q", errBadDirective, v)
	}
	return d, nil
}

// livePart is the newest part: its segment and index within it.
func livePart(s *relay.Snapshot) (seg *relay.Segment, idx int) {
	for i := len(s.Segments) - 1; i >= 0; i-- {
		if n := len(s.Segments[i].Parts); n > 0 {
			return s.Segments[i], n - 1
		}
	}
	return nil, -1
}

// Satisfied reports whether s holds what a blocking request waits for.
func (d Directives) Satisfied(s *relay.Snapshot) bool {
	if !d.HasMSN || s.Ended {
		return true // an ended playlist is final: answer it at once
	}
	if !d.HasPart {
		last := s.LastComplete()
		return last != nil && last.MSN >= d.MSN
	}
	seg, idx := livePart(s)
	switch {
	case seg == nil || seg.MSN < d.MSN:
		return false
	case seg.MSN > d.MSN:
		return true
	default:
		// A part index past the end of a complete segment means part 0 of
		// the next one, which livePart would have found.
		return uint64(idx) >= d.Part
	}
}

// TooFarAhead reports whether a request asks for media so far beyond the
// live edge that the spec says to answer 400 at once: more than two
// segments ahead, or more than the Advance Part Limit of parts.
func (d Directives) TooFarAhead(s *relay.Snapshot, partTarget time.Duration) bool {
	if !d.HasMSN || s.Ended {
		return false // the final playlist, with EXT-X-ENDLIST, is the answer
	}
	seg, idx := livePart(s)
	var lastMSN uint64
	if seg != nil {
		lastMSN = seg.MSN
	} else if n := len(s.Segments); n > 0 {
		lastMSN = s.Segments[n-1].MSN
	}
	if d.MSN > lastMSN+2 {
		return true
	}
	if !d.HasPart || d.MSN < lastMSN {
		return false
	}
	limit := 3.0
	if partTarget < time.Second {
		limit = 3 / partTarget.Seconds()
	}
	perSeg := uint64(partsPerSegment(s, partTarget))
	ahead := float64(0)
	if d.MSN == lastMSN {
		ahead = float64(d.Part) - float64(idx)
	} else {
		rest := int64(perSeg) - int64(idx) - 1
		ahead = float64(max(rest, 0)) + float64((d.MSN-lastMSN-1)*perSeg) + float64(d.Part) + 1
	}
	return ahead > limit
}

// partsPerSegment estimates how many parts a segment has.
func partsPerSegment(s *relay.Snapshot, partTarget time.Duration) int {
	n := 0
	for _, seg := range s.Segments {
		if seg.Complete {
			n = max(n, len(seg.Parts))
		}
	}
	if n == 0 && partTarget > 0 {
		n = int(math.Ceil(float64(time.Duration(s.TargetDuration)*time.Second) / float64(partTarget)))
	}
	return max(n, 1)
}

// Playlist URIs, relative to the playlist.
func initURI(in *relay.Init) string { return "init" + strconv.FormatUint(in.ID, 10) + ".mp4" }
func segURI(seg *relay.Segment) string {
	return "seg" + strconv.FormatUint(seg.MSN, 10) + ".m4s"
}
func partURI(n uint64) string { return "part" + strconv.FormatUint(n, 10) + ".m4s" }

const mediaPlaylistName = "media.m3u8"

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }

// RenderMedia writes the LL-HLS media playlist for s. With skip it writes
// a Playlist Delta Update (RFC 8216bis 6.2.5.1).
func RenderMedia(s *relay.Snapshot, partTarget time.Duration, skip bool) []byte {
	td := time.Duration(s.TargetDuration) * time.Second
	skipUntil := 6 * td

	// Skip only whole segments further than the Skip Boundary from the end
	// of the last complete segment.
	skipped := 0
	if skip {
		var after time.Duration
		for i := len(s.Segments) - 1; i >= 0; i-- {
			seg := s.Segments[i]
			if !seg.Complete {
				continue
			}
			if after > skipUntil {
				skipped = i + 1
				break
			}
			after += seg.Duration
		}
	}

	// Parts are listed only near the live edge (6.2.2: drop them after
	// three target durations).
	partsFrom := len(s.Segments)
	var fromEnd time.Duration
	for i := len(s.Segments) - 1; i >= 0; i-- {
		fromEnd += s.Segments[i].Duration
		if fromEnd > 3*td {
			break
		}
		partsFrom = i
	}

	var b strings.Builder
	b.Grow(256 + 96*len(s.Segments) + 64*len(s.Segments)*int(td/max(partTarget, time.Millisecond)))
	version := 6
	if skip {
		version = 9
	}
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:%d\n#EXT-X-TARGETDURATION:%d\n", version, s.TargetDuration)
	fmt.Fprintf(&b, "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=%s,PART-HOLD-BACK=%s,HOLD-BACK=%s\n",
		seconds(skipUntil), seconds(holdBackParts*partTarget), seconds(3*td))
	fmt.Fprintf(&b, "#EXT-X-PART-INF:PART-TARGET=%s\n", seconds(partTarget))
	var firstMSN uint64
	if len(s.Segments) > 0 {
		firstMSN = s.Segments[0].MSN
	}
	fmt.Fprintf(&b, "#EXT-X-MEDIA-SEQUENCE:%d\n#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", firstMSN, s.DiscSeq)
	if skipped > 0 {
		fmt.Fprintf(&b, "#EXT-X-SKIP:SKIPPED-SEGMENTS=%d\n", skipped)
	}

	var curInit *relay.Init
	for i := skipped; i < len(s.Segments); i++ {
		seg := s.Segments[i]
		if !seg.Complete && len(seg.Parts) == 0 {
			break // nothing to list yet; the preload hint names its first part
		}
		if seg.Discontinuity {
			b.WriteString("#EXT-X-DISCONTINUITY\n")
		}
		if seg.Init != curInit && seg.Init != nil {
			curInit = seg.Init
			fmt.Fprintf(&b, "#EXT-X-MAP:URI=\"%s\"\n", initURI(curInit))
		}
		fmt.Fprintf(&b, "#EXT-X-PROGRAM-DATE-TIME:%s\n", seg.Start.UTC().Format("2006-01-02T15:04:05.000Z"))
		if i >= partsFrom {
			for _, p := range seg.Parts {
				fmt.Fprintf(&b, "#EXT-X-PART:DURATION=%s,URI=\"%s\"", seconds(p.Duration), partURI(p.N))
				if p.Independent {
					b.WriteString(",INDEPENDENT=YES")
				}
				b.WriteByte('\n')
			}
		}
		if seg.Complete {
			fmt.Fprintf(&b, "#EXTINF:%s,\n%s\n", seconds(seg.Duration), segURI(seg))
		}
	}
	// The hint stays while a publisher may still come back (the grace
	// period): the next part keeps its number, and a player that follows
	// hints (gohlslib) gives up on a playlist that loses its hint.
	if !s.Ended {
		if open := s.Open(); open != nil && len(open.Parts) == 0 && open.Init != curInit && open.Init != nil {
			fmt.Fprintf(&b, "#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"%s\"\n", initURI(open.Init))
		}
		fmt.Fprintf(&b, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"%s\"\n", partURI(s.NextPart))
	}
	if s.Ended {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	return []byte(b.String())
}

// Bandwidth returns the peak and average bit rates of the window's
// segments, for the multivariant playlist.
func Bandwidth(s *relay.Snapshot) (peak, avg int) {
	var bytes int
	var dur time.Duration
	for _, seg := range s.Segments {
		if seg.Duration <= 0 {
			continue
		}
		peak = max(peak, int(float64(seg.Size*8)/seg.Duration.Seconds()))
		bytes += seg.Size
		dur += seg.Duration
	}
	if dur > 0 {
		avg = int(float64(bytes*8) / dur.Seconds())
	}
	return peak, avg
}

// RenderMultivariant writes the multivariant playlist: one variant, the
// media playlist at mediaURI, which carries audio and video muxed in each
// part.
func RenderMultivariant(s *relay.Snapshot, mediaURI string) []byte {
	return RenderSteered(s, "", []Pathway{{URI: mediaURI}})
}

// Pathway is one copy of the variant, on one node: HLS Content Steering's
// pathway, whose ID is the node's name.
type Pathway struct {
	ID  string // PATHWAY-ID; "" for none
	URI string // the media playlist on that node
}

// stableVariantID names the variant across pathways, so that a steering
// manifest's PATHWAY-CLONES can give its URI on a new node
// (PER-VARIANT-URIS).
const stableVariantID = "main"

// RenderSteered writes a multivariant playlist that lists the variant once
// per pathway, best first, under an EXT-X-CONTENT-STEERING tag naming the
// steering manifest at serverURI and the first pathway. With serverURI ""
// it writes no steering tag and no pathway attributes.
func RenderSteered(s *relay.Snapshot, serverURI string, pathways []Pathway) []byte {
	in := s.LatestInit()
	peak, avg := Bandwidth(s)
	if peak == 0 {
		peak, avg = 1_000_000, 1_000_000 // no media yet: a placeholder players accept
	}
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n")
	if serverURI != "" && len(pathways) > 0 {
		fmt.Fprintf(&b, "#EXT-X-CONTENT-STEERING:SERVER-URI=\"%s\",PATHWAY-ID=\"%s\"\n", serverURI, pathways[0].ID)
	}
	for _, p := range pathways {
		fmt.Fprintf(&b, "#EXT-X-STREAM-INF:BANDWIDTH=%d,AVERAGE-BANDWIDTH=%d", peak, avg)
		if in != nil {
			fmt.Fprintf(&b, ",CODECS=\"%s\"", in.Codecs)
			if in.Width > 0 && in.Height > 0 {
				fmt.Fprintf(&b, ",RESOLUTION=%dx%d", in.Width, in.Height)
			}
			if in.FrameRate > 0 {
				fmt.Fprintf(&b, ",FRAME-RATE=%.3f", in.FrameRate)
			}
		}
		if serverURI != "" {
			fmt.Fprintf(&b, ",PATHWAY-ID=\"%s\",STABLE-VARIANT-ID=\"%s\"", p.ID, stableVariantID)
		}
		b.WriteString("\n" + p.URI + "\n")
	}
	return []byte(b.String())
}
