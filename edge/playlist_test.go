package edge

import (
	"fmt"
	"math"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/relay"
)

const testPartTarget = 200 * time.Millisecond

var testEpoch = time.Date(2026, 5, 1, 12, 0, 0, 123_000_000, time.UTC)

// builder writes a relay.Stream through its writer API, as a packager
// would, keeping wall clock and media time in step.
type builder struct {
	epoch  time.Time // PROGRAM-DATE-TIME of media time 0; testEpoch if zero
	st     *relay.Stream
	init   *relay.Init
	inits  uint64
	media  time.Duration // media time of the next part
	nparts int
}

func newBuilder(partTarget time.Duration, w relay.Window) *builder {
	return builderFor(relay.NewStream("cam", partTarget, w))
}

// builderFor writes into st, e.g. a registry publication's stream.
func builderFor(st *relay.Stream) *builder {
	b := &builder{st: st}
	b.newInit()
	return b
}

func (b *builder) newInit() *relay.Init {
	b.inits++
	b.init = &relay.Init{
		ID: b.inits, Data: []byte(fmt.Sprintf("init-%d", b.inits)),
		Codecs: "avc1.64001f,mp4a.40.2", Width: 1280, Height: 720, FrameRate: 30,
	}
	return b.init
}

// open completes the open segment (if any) and opens a new one.
func (b *builder) open(disc bool) {
	epoch := b.epoch
	if epoch.IsZero() {
		epoch = testEpoch
	}
	b.st.Cut(nil, &relay.SegmentHeader{Start: epoch.Add(b.media), Discontinuity: disc, Init: b.init})
}

// part appends a part; the first part of a segment is independent.
func (b *builder) part(d time.Duration) *relay.Part {
	open := b.st.Snapshot().Open()
	p := &relay.Part{
		Duration:    d,
		Independent: open != nil && len(open.Parts) == 0,
		Data:        []byte(fmt.Sprintf("part-%d-payload", b.nparts)),
	}
	b.nparts++
	b.media += d
	b.st.Cut(p, nil)
	return p
}

// fill appends parts adding up to d to the open segment.
func (b *builder) fill(d time.Duration) {
	pt := b.st.PartTarget
	for d > 0 {
		n := min(d, pt)
		b.part(n)
		d -= n
	}
}

// segment appends parts adding up to d and opens the next segment.
func (b *builder) segment(d time.Duration, disc bool) {
	b.fill(d)
	b.open(disc)
}

// republish completes the open segment as a publisher leaving would, and
// opens a segment for a new publisher with a new init segment.
func (b *builder) republish() {
	b.st.EndPublish()
	b.newInit()
	b.open(true)
}

// plPart, plSegment and mediaPlaylist are a parsed media playlist.
type plPart struct {
	duration    float64
	uri         string
	independent bool
}

type plSegment struct {
	discontinuity bool
	mapURI        string // EXT-X-MAP applied right before this segment
	pdt           time.Time
	hasPDT        bool
	parts         []plPart
	duration      float64
	uri           string // "" for the open segment, listed by its parts only
}

type mediaPlaylist struct {
	raw            string
	version        int
	targetDuration int
	mediaSequence  uint64
	discSeq        uint64
	serverControl  map[string]string
	partTarget     float64
	skipped        int
	hasSkip        bool
	segments       []*plSegment
	hints          []map[string]string
	ended          bool // EXT-X-ENDLIST
	tagCount       map[string]int
}

// parseAttrs splits an attribute list, unquoting quoted values.
func parseAttrs(t *testing.T, s string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for s != "" {
		k, rest, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			t.Fatalf("bad attribute list %q", s)
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.Index(rest[1:], `"`)
			if end < 0 {
				t.Fatalf("unterminated quoted string in %q", s)
			}
			v, rest = rest[1:end+1], rest[end+2:]
		} else {
			v, rest, _ = strings.Cut(rest, ",")
			rest = "," + rest
			if rest == "," {
				rest = ""
			}
		}
		if _, dup := out[k]; dup {
			t.Fatalf("attribute %s twice in %q", k, s)
		}
		out[k] = v
		if rest != "" {
			if rest[0] != ',' {
				t.Fatalf("junk after attribute %s in %q", k, s)
			}
			rest = rest[1:]
		}
		s = rest
	}
	return out
}

func atof(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("not a decimal: %q", s)
	}
	return f
}

// parseMedia parses a media playlist strictly: unknown tags, header tags
// after the first segment and misplaced tags fail the test.
func parseMedia(t *testing.T, body []byte) *mediaPlaylist {
	t.Helper()
	pl := &mediaPlaylist{raw: string(body), tagCount: map[string]int{}}
	text := string(body)
	if !strings.HasSuffix(text, "\n") {
		t.Fatalf("playlist does not end with a newline:\n%s", text)
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if lines[0] != "#EXTM3U" {
		t.Fatalf("first line %q", lines[0])
	}
	cur := &plSegment{}
	inMedia := false // a media segment tag or URI has been seen
	header := func(tag string) {
		if inMedia {
			t.Fatalf("header tag %s after the first media segment tag:\n%s", tag, text)
		}
	}
	var pendingMap string
	for i := 1; i < len(lines); i++ {
		line := lines[i]
		tag, val, _ := strings.Cut(line, ":")
		if strings.HasPrefix(line, "#") {
			pl.tagCount[tag]++
		}
		switch tag {
		case "#EXT-X-VERSION":
			header(tag)
			pl.version, _ = strconv.Atoi(val)
		case "#EXT-X-TARGETDURATION":
			header(tag)
			pl.targetDuration, _ = strconv.Atoi(val)
		case "#EXT-X-SERVER-CONTROL":
			header(tag)
			pl.serverControl = parseAttrs(t, val)
		case "#EXT-X-PART-INF":
			header(tag)
			pl.partTarget = atof(t, parseAttrs(t, val)["PART-TARGET"])
		case "#EXT-X-MEDIA-SEQUENCE":
			header(tag)
			pl.mediaSequence, _ = strconv.ParseUint(val, 10, 64)
		case "#EXT-X-DISCONTINUITY-SEQUENCE":
			header(tag)
			pl.discSeq, _ = strconv.ParseUint(val, 10, 64)
		case "#EXT-X-SKIP":
			header(tag)
			pl.hasSkip = true
			pl.skipped, _ = strconv.Atoi(parseAttrs(t, val)["SKIPPED-SEGMENTS"])
		case "#EXT-X-DISCONTINUITY":
			inMedia = true
			if len(cur.parts) > 0 || cur.hasPDT || pendingMap != "" {
				t.Fatalf("EXT-X-DISCONTINUITY after other tags of its segment (line %d):\n%s", i+1, text)
			}
			cur.discontinuity = true
		case "#EXT-X-MAP":
			inMedia = true
			if len(cur.parts) > 0 {
				t.Fatalf("EXT-X-MAP after the segment's first EXT-X-PART (line %d)", i+1)
			}
			pendingMap = parseAttrs(t, val)["URI"]
			cur.mapURI = pendingMap
		case "#EXT-X-PROGRAM-DATE-TIME":
			inMedia = true
			if len(cur.parts) > 0 {
				t.Fatalf("EXT-X-PROGRAM-DATE-TIME after the segment's first EXT-X-PART (line %d)", i+1)
			}
			ts, err := time.Parse("2006-01-02T15:04:05.000Z07:00", val)
			if err != nil {
				t.Fatalf("PROGRAM-DATE-TIME %q: %v", val, err)
			}
			cur.pdt, cur.hasPDT = ts, true
		case "#EXT-X-PART":
			inMedia = true
			a := parseAttrs(t, val)
			p := plPart{duration: atof(t, a["DURATION"]), uri: a["URI"]}
			switch a["INDEPENDENT"] {
			case "":
			case "YES":
				p.independent = true
			default:
				t.Fatalf("INDEPENDENT=%s", a["INDEPENDENT"])
			}
			if p.uri == "" {
				t.Fatalf("EXT-X-PART without URI: %s", line)
			}
			cur.parts = append(cur.parts, p)
		case "#EXTINF":
			inMedia = true
			d, _, ok := strings.Cut(val, ",")
			if !ok || i+1 >= len(lines) || strings.HasPrefix(lines[i+1], "#") {
				t.Fatalf("EXTINF without URI at line %d", i+1)
			}
			cur.duration = atof(t, d)
			i++
			cur.uri = lines[i]
			pl.segments = append(pl.segments, cur)
			cur, pendingMap = &plSegment{}, ""
		case "#EXT-X-PRELOAD-HINT":
			pl.hints = append(pl.hints, parseAttrs(t, val))
		case "#EXT-X-ENDLIST":
			if i != len(lines)-1 || len(pl.hints) > 0 {
				t.Fatalf("EXT-X-ENDLIST not last, or with a preload hint:\n%s", text)
			}
			pl.ended = true
		default:
			t.Fatalf("unexpected line %d %q in:\n%s", i+1, line, text)
		}
		if len(pl.hints) > 0 && tag != "#EXT-X-PRELOAD-HINT" {
			t.Fatalf("%s after EXT-X-PRELOAD-HINT", tag)
		}
	}
	if len(cur.parts) > 0 || cur.hasPDT || cur.discontinuity || cur.mapURI != "" {
		pl.segments = append(pl.segments, cur)
	}
	for _, tag := range []string{"#EXT-X-VERSION", "#EXT-X-TARGETDURATION", "#EXT-X-SERVER-CONTROL", "#EXT-X-PART-INF", "#EXT-X-MEDIA-SEQUENCE", "#EXT-X-DISCONTINUITY-SEQUENCE"} {
		if pl.tagCount[tag] != 1 {
			t.Fatalf("%s appears %d times, want once:\n%s", tag, pl.tagCount[tag], text)
		}
	}
	if pl.tagCount["#EXT-X-SKIP"] > 1 {
		t.Fatal("EXT-X-SKIP more than once")
	}
	return pl
}

// allParts lists the playlist's parts in order.
func (pl *mediaPlaylist) allParts() []plPart {
	var ps []plPart
	for _, s := range pl.segments {
		ps = append(ps, s.parts...)
	}
	return ps
}

func render(t *testing.T, s *relay.Snapshot, pt time.Duration, skip bool) *mediaPlaylist {
	t.Helper()
	return parseMedia(t, RenderMedia(s, pt, skip))
}

func pdtOf(tm time.Time) string { return tm.UTC().Format("2006-01-02T15:04:05.000Z") }

func TestRenderMediaHeader(t *testing.T) {
	for _, tc := range []struct {
		name       string
		partTarget time.Duration
		segment    time.Duration
		skip       bool
		wantTD     int
		wantVer    int
	}{
		{"200ms parts 2s segments", 200 * time.Millisecond, 2 * time.Second, false, 2, 6},
		{"200ms parts delta", 200 * time.Millisecond, 2 * time.Second, true, 2, 9},
		{"333ms parts 1s segments", 333 * time.Millisecond, time.Second, false, 2, 6},
		{"1s parts 4s segments", time.Second, 4 * time.Second, false, 4, 6},
		{"500ms parts 6s segments delta", 500 * time.Millisecond, 6 * time.Second, true, 6, 9},
		{"2.4s segments round down", 200 * time.Millisecond, 2400 * time.Millisecond, false, 2, 6},
		{"2.5s segments round up", 250 * time.Millisecond, 2500 * time.Millisecond, false, 3, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBuilder(tc.partTarget, relay.Window{Segments: 30})
			b.open(false)
			for range 20 {
				b.segment(tc.segment, false)
			}
			b.part(tc.partTarget)
			pl := render(t, b.st.Snapshot(), tc.partTarget, tc.skip)
			if tc.skip && !pl.hasSkip {
				t.Fatal("no EXT-X-SKIP in a delta update of a long window")
			}
			if pl.version != tc.wantVer {
				t.Errorf("EXT-X-VERSION %d, want %d", pl.version, tc.wantVer)
			}
			if pl.targetDuration != tc.wantTD {
				t.Errorf("EXT-X-TARGETDURATION %d, want %d", pl.targetDuration, tc.wantTD)
			}
			td := float64(pl.targetDuration)
			sc := pl.serverControl
			if sc["CAN-BLOCK-RELOAD"] != "YES" {
				t.Errorf("CAN-BLOCK-RELOAD=%q", sc["CAN-BLOCK-RELOAD"])
			}
			pt := tc.partTarget.Seconds()
			if math.Abs(pl.partTarget-pt) > 0.0005 {
				t.Errorf("PART-TARGET %v, want %v", pl.partTarget, pt)
			}
			if v := atof(t, sc["PART-HOLD-BACK"]); v < 3*pl.partTarget-1e-9 {
				t.Errorf("PART-HOLD-BACK %v < 3 x PART-TARGET %v", v, pl.partTarget)
			}
			if v := atof(t, sc["HOLD-BACK"]); v < 3*td {
				t.Errorf("HOLD-BACK %v < 3 x TARGETDURATION %v", v, td)
			}
			if v := atof(t, sc["CAN-SKIP-UNTIL"]); v < 6*td {
				t.Errorf("CAN-SKIP-UNTIL %v < 6 x TARGETDURATION %v", v, td)
			}
			for _, seg := range pl.segments {
				if seg.uri != "" && int(math.Round(seg.duration)) > pl.targetDuration {
					t.Errorf("EXTINF %v rounds above TARGETDURATION %d", seg.duration, pl.targetDuration)
				}
				for _, p := range seg.parts {
					if p.duration > pl.partTarget {
						t.Errorf("EXT-X-PART DURATION %v > PART-TARGET %v", p.duration, pl.partTarget)
					}
				}
			}
			if first := b.st.Snapshot().Segments[0].MSN; pl.mediaSequence != first {
				t.Errorf("MEDIA-SEQUENCE %d, window starts at %d", pl.mediaSequence, first)
			}
		})
	}
}

func TestRenderMediaSegmentsAndParts(t *testing.T) {
	b := newBuilder(testPartTarget, relay.Window{Segments: 12})
	b.open(false)
	for range 5 {
		b.segment(2*time.Second, false)
	}
	for range 3 {
		b.part(testPartTarget)
	}
	s := b.st.Snapshot()
	pl := render(t, s, testPartTarget, false)

	if len(pl.segments) != len(s.Segments) {
		t.Fatalf("%d segments listed, window has %d", len(pl.segments), len(s.Segments))
	}
	if pl.tagCount["#EXT-X-MAP"] != 1 || pl.segments[0].mapURI != "init1.mp4" {
		t.Errorf("EXT-X-MAP: %d tags, first segment's %q", pl.tagCount["#EXT-X-MAP"], pl.segments[0].mapURI)
	}
	for i, seg := range s.Segments {
		got := pl.segments[i]
		if !got.hasPDT || pdtOf(got.pdt) != pdtOf(seg.Start) {
			t.Errorf("segment %d PROGRAM-DATE-TIME %v, want %v", seg.MSN, got.pdt, pdtOf(seg.Start))
		}
		if seg.Complete {
			if want := fmt.Sprintf("seg%d.m4s", seg.MSN); got.uri != want {
				t.Errorf("segment %d URI %q, want %q", seg.MSN, got.uri, want)
			}
			if math.Abs(got.duration-seg.Duration.Seconds()) > 0.0005 {
				t.Errorf("segment %d EXTINF %v, want %v", seg.MSN, got.duration, seg.Duration.Seconds())
			}
		} else if got.uri != "" {
			t.Errorf("open segment %d has URI %q", seg.MSN, got.uri)
		}
		if len(got.parts) == 0 {
			continue
		}
		if len(got.parts) != len(seg.Parts) {
			t.Fatalf("segment %d lists %d of its %d parts", seg.MSN, len(got.parts), len(seg.Parts))
		}
		for j, p := range seg.Parts {
			gp := got.parts[j]
			if gp.uri != fmt.Sprintf("part%d.m4s", p.N) || gp.independent != p.Independent ||
				math.Abs(gp.duration-p.Duration.Seconds()) > 0.0005 {
				t.Errorf("segment %d part %d listed as %+v, want N=%d %v independent %v", seg.MSN, j, gp, p.N, p.Duration, p.Independent)
			}
		}
		if !got.parts[0].independent {
			t.Errorf("segment %d's first part is not INDEPENDENT=YES", seg.MSN)
		}
	}
	// The open segment's parts are listed; the hint names the next part.
	open := pl.segments[len(pl.segments)-1]
	if open.uri != "" || len(open.parts) != 3 {
		t.Fatalf("open segment listed as %+v", open)
	}
	if len(pl.hints) != 1 || pl.hints[0]["TYPE"] != "PART" || pl.hints[0]["URI"] != fmt.Sprintf("part%d.m4s", s.NextPart) {
		t.Fatalf("preload hints %v, want one TYPE=PART for part%d.m4s", pl.hints, s.NextPart)
	}
	parts := pl.allParts()
	if last := parts[len(parts)-1].uri; last != fmt.Sprintf("part%d.m4s", s.NextPart-1) {
		t.Fatalf("last listed part %s, hint part%d", last, s.NextPart)
	}

	// Right after a segment boundary the new segment has no parts: it is
	// not listed, and the hint names its first part.
	b.segment(time.Second, false)
	s = b.st.Snapshot()
	pl = render(t, s, testPartTarget, false)
	if pl.segments[len(pl.segments)-1].uri == "" {
		t.Error("an empty open segment is listed")
	}
	if len(pl.hints) != 1 || pl.hints[0]["URI"] != fmt.Sprintf("part%d.m4s", s.NextPart) {
		t.Errorf("hints %v, want part%d.m4s", pl.hints, s.NextPart)
	}

	// While the publisher is gone, within the grace period, the hint
	// stays: a reconnect delivers that part, and players that follow hints
	// give up on a playlist that loses its hint.
	b.part(testPartTarget)
	b.st.EndPublish()
	pl = render(t, b.st.Snapshot(), testPartTarget, false)
	if len(pl.hints) != 1 || pl.hints[0]["URI"] != fmt.Sprintf("part%d.m4s", b.st.Snapshot().NextPart) {
		t.Errorf("preload hints %v while the publisher may come back, want the next part", pl.hints)
	}
	if last := pl.segments[len(pl.segments)-1]; last.uri == "" {
		t.Error("the last segment is still open after EndPublish")
	}
	// Once the show has ended there is nothing to hint, and it says so.
	b.st.End()
	pl = render(t, b.st.Snapshot(), testPartTarget, false)
	if len(pl.hints) != 0 || !pl.ended {
		t.Errorf("preload hints %v, EXT-X-ENDLIST %v in an ended show; want none, and the tag", pl.hints, pl.ended)
	}
}

func TestRenderMediaPreloadMapHint(t *testing.T) {
	b := newBuilder(testPartTarget, relay.Window{Segments: 12})
	b.open(false)
	b.segment(2*time.Second, false)
	b.part(testPartTarget)
	// A new publication opens a segment with a new init segment.
	b.republish()
	s := b.st.Snapshot()
	pl := render(t, s, testPartTarget, false)
	want := map[string]string{"MAP": "init2.mp4", "PART": fmt.Sprintf("part%d.m4s", s.NextPart)}
	if len(pl.hints) != 2 {
		t.Fatalf("hints %v, want a MAP and a PART hint", pl.hints)
	}
	for _, h := range pl.hints {
		if want[h["TYPE"]] != h["URI"] {
			t.Errorf("hint %v, want %v", h, want)
		}
	}
	// With the first part in, the segment is listed with its MAP.
	b.part(testPartTarget)
	pl = render(t, b.st.Snapshot(), testPartTarget, false)
	last := pl.segments[len(pl.segments)-1]
	if !last.discontinuity || last.mapURI != "init2.mp4" || len(pl.hints) != 1 {
		t.Errorf("new publication's segment: discontinuity %v map %q hints %v", last.discontinuity, last.mapURI, pl.hints)
	}
}

// RFC 8216bis 6.2.2: EXT-X-PART tags SHOULD be removed once they are more
// than three target durations from the end of the playlist. The spec's own
// example (TARGETDURATION 4, 9 s of parts listed) keeps only parent
// segments that fit in that span, and lists all of them.
func TestRenderMediaPartsOnlyNearLiveEdge(t *testing.T) {
	for _, segDur := range []time.Duration{2 * time.Second, time.Second, 1500 * time.Millisecond} {
		for openParts := 0; openParts < int(segDur/testPartTarget); openParts++ {
			t.Run(fmt.Sprintf("seg%v/open%d", segDur, openParts), func(t *testing.T) {
				b := newBuilder(testPartTarget, relay.Window{Segments: 12})
				b.open(false)
				for range 12 {
					b.segment(segDur, false)
				}
				for range openParts {
					b.part(testPartTarget)
				}
				s := b.st.Snapshot()
				pl := render(t, s, testPartTarget, false)
				td := time.Duration(pl.targetDuration) * time.Second

				// Media time from each segment's start to the end of the playlist.
				var total time.Duration
				for _, seg := range s.Segments {
					total += seg.Duration
				}
				listedFrom := -1
				var start time.Duration
				for i, seg := range s.Segments {
					listed := i < len(pl.segments) && len(pl.segments[i].parts) > 0
					if listed && listedFrom < 0 {
						listedFrom = i
					}
					if !listed && listedFrom >= 0 && len(seg.Parts) > 0 {
						t.Fatalf("segment %d lists no parts but an older one does", seg.MSN)
					}
					fromEnd := total - start
					if listed && fromEnd > 3*td {
						t.Errorf("segment %d lists parts starting %v before the end of the playlist (> 3 x TARGETDURATION = %v)", seg.MSN, fromEnd, 3*td)
					}
					if !listed && len(seg.Parts) > 0 && fromEnd <= 3*td {
						t.Errorf("segment %d within the last 3 x TARGETDURATION (%v from the end) lists no parts", seg.MSN, fromEnd)
					}
					start += seg.Duration
				}
			})
		}
	}
}

// discSeqOf computes each listed segment's discontinuity sequence number.
func (pl *mediaPlaylist) discSeqOf() map[string]uint64 {
	out := map[string]uint64{}
	n := pl.discSeq
	for _, s := range pl.segments {
		if s.discontinuity {
			n++
		}
		if s.uri != "" {
			out[s.uri] = n
		}
	}
	return out
}

func TestRenderMediaDiscontinuities(t *testing.T) {
	b := newBuilder(testPartTarget, relay.Window{Segments: 3})
	b.open(false)
	// Publishers change at segments 2, 4 and 5 (each a new init).
	changes := map[int]bool{2: true, 4: true, 5: true}
	dsn := map[string]uint64{}
	var disc uint64
	for i := 0; i < 10; i++ {
		b.fill(2 * time.Second)
		if changes[i+1] {
			b.republish()
		} else {
			b.open(false)
		}
		if changes[i] {
			disc++
		}
		dsn[fmt.Sprintf("seg%d.m4s", i)] = disc

		s := b.st.Snapshot()
		pl := render(t, s, testPartTarget, false)
		if pl.discSeq != s.DiscSeq {
			t.Fatalf("DISCONTINUITY-SEQUENCE %d, snapshot DiscSeq %d", pl.discSeq, s.DiscSeq)
		}
		// Every segment keeps its discontinuity sequence number as older
		// ones are pruned (RFC 8216bis 6.2.2).
		for uri, n := range pl.discSeqOf() {
			if dsn[uri] != n {
				t.Fatalf("after segment %d: %s has discontinuity sequence %d, want %d\n%s", i, uri, n, dsn[uri], pl.raw)
			}
		}
		// EXT-X-DISCONTINUITY exactly where a publisher changed, and an
		// EXT-X-MAP wherever the init segment changes.
		prevMap := ""
		for j, seg := range s.Segments {
			if j == len(pl.segments) {
				if len(seg.Parts) > 0 {
					t.Fatalf("segment %d with parts is not listed", seg.MSN)
				}
				break
			}
			got := pl.segments[j]
			if got.discontinuity != seg.Discontinuity {
				t.Fatalf("segment %d: EXT-X-DISCONTINUITY %v, want %v", seg.MSN, got.discontinuity, seg.Discontinuity)
			}
			wantMap := fmt.Sprintf("init%d.mp4", seg.Init.ID)
			if (got.mapURI != "") != (wantMap != prevMap) || got.mapURI != "" && got.mapURI != wantMap {
				t.Fatalf("segment %d: EXT-X-MAP %q, init in effect should be %s (previous %s)", seg.MSN, got.mapURI, wantMap, prevMap)
			}
			prevMap = wantMap
			if seg.Discontinuity && !got.hasPDT {
				t.Fatalf("discontinuity segment %d without PROGRAM-DATE-TIME", seg.MSN)
			}
		}
	}
	if b.st.Snapshot().DiscSeq != 3 {
		t.Fatalf("DiscSeq %d after pruning three discontinuities", b.st.Snapshot().DiscSeq)
	}
}

// skippable returns how many leading segments a delta update may replace:
// those that end more than the Skip Boundary before the end of the last
// complete segment (RFC 8216bis 6.2.5.1).
func skippable(s *relay.Snapshot, boundary time.Duration) int {
	var ends []time.Duration
	var t time.Duration
	last := -1
	for i, seg := range s.Segments {
		t += seg.Duration
		ends = append(ends, t)
		if seg.Complete {
			last = i
		}
	}
	if last < 0 {
		return 0
	}
	n := 0
	for i := 0; i <= last; i++ {
		if ends[last]-ends[i] > boundary {
			n = i + 1
		}
	}
	return n
}

func TestRenderMediaDeltaUpdate(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct {
		name      string
		durations []time.Duration
		disc      map[int]bool // segment index -> new publisher (new init)
		openParts int
		want      int // expected SKIPPED-SEGMENTS, -1: compute
	}{
		// 9 x 2 s: segments 0 and 1 end 16 s and 14 s before the end of
		// the last complete one; segment 2 ends exactly 12 s before.
		{"exact boundary", repeat(2*time.Second, 9), nil, 0, 2},
		{"with open segment", repeat(2*time.Second, 9), nil, 4, 2},
		{"too short to skip", repeat(2*time.Second, 6), nil, 3, 0},
		{"uneven", []time.Duration{2000 * ms, 1800 * ms, 2200 * ms, 1600 * ms, 2000 * ms, 1400 * ms, 2200 * ms, 2000 * ms, 1800 * ms, 2000 * ms, 1600 * ms, 2200 * ms}, nil, 5, -1},
		{"map and discontinuity in skipped range", repeat(2*time.Second, 12), map[int]bool{2: true}, 1, -1},
		{"discontinuity at first kept segment", repeat(2*time.Second, 9), map[int]bool{2: true}, 1, 2},
		{"discontinuity right after skipped range", repeat(2*time.Second, 10), map[int]bool{2: true, 3: true}, 1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBuilder(testPartTarget, relay.Window{Segments: 30})
			b.open(false)
			for i, d := range tc.durations {
				b.fill(d)
				if tc.disc[i+1] {
					b.republish()
				} else {
					b.open(false)
				}
			}
			for range tc.openParts {
				b.part(testPartTarget)
			}
			s := b.st.Snapshot()
			full := render(t, s, testPartTarget, false)
			delta := render(t, s, testPartTarget, true)

			skipUntil := time.Duration(atof(t, full.serverControl["CAN-SKIP-UNTIL"]) * float64(time.Second))
			want := tc.want
			if want < 0 {
				want = skippable(s, skipUntil)
			}
			if want != skippable(s, skipUntil) {
				t.Fatalf("test case expects %d, reference computes %d", want, skippable(s, skipUntil))
			}
			if want == 0 {
				if delta.hasSkip {
					t.Fatalf("EXT-X-SKIP:SKIPPED-SEGMENTS=%d although nothing is further than %v from the end", delta.skipped, skipUntil)
				}
				return
			}
			if !delta.hasSkip || delta.skipped != want {
				t.Fatalf("SKIPPED-SEGMENTS=%d (tag present %v), want %d\n%s", delta.skipped, delta.hasSkip, want, delta.raw)
			}
			if delta.version < 9 {
				t.Errorf("delta update with EXT-X-SKIP has EXT-X-VERSION %d < 9", delta.version)
			}
			if delta.mediaSequence != full.mediaSequence || delta.discSeq != full.discSeq {
				t.Errorf("delta MEDIA-SEQUENCE %d DISCONTINUITY-SEQUENCE %d, full %d %d", delta.mediaSequence, delta.discSeq, full.mediaSequence, full.discSeq)
			}
			if delta.targetDuration != full.targetDuration || fmt.Sprint(delta.serverControl) != fmt.Sprint(full.serverControl) || delta.partTarget != full.partTarget {
				t.Error("delta header differs from the full playlist's")
			}
			// What follows the skip is the full playlist minus the skipped
			// segments, with the init segment in effect re-declared.
			rest := full.segments[want:]
			if len(delta.segments) != len(rest) {
				t.Fatalf("delta lists %d segments, full lists %d of which %d skipped", len(delta.segments), len(full.segments), want)
			}
			inEffect := ""
			for _, seg := range full.segments[:want+1] {
				if seg.mapURI != "" {
					inEffect = seg.mapURI
				}
			}
			if delta.segments[0].mapURI != inEffect {
				t.Errorf("first segment after EXT-X-SKIP has EXT-X-MAP %q, want %q re-declared", delta.segments[0].mapURI, inEffect)
			}
			for i, ds := range delta.segments {
				fs := rest[i]
				if ds.uri != fs.uri || ds.duration != fs.duration || ds.discontinuity != fs.discontinuity ||
					ds.pdt != fs.pdt || fmt.Sprint(ds.parts) != fmt.Sprint(fs.parts) || i > 0 && ds.mapURI != fs.mapURI {
					t.Errorf("delta segment %d %+v differs from full %+v", i, ds, fs)
				}
			}
			if fmt.Sprint(delta.hints) != fmt.Sprint(full.hints) {
				t.Errorf("delta hints %v, full %v", delta.hints, full.hints)
			}
			// Discontinuity sequence numbers of the remaining segments are
			// those of the full playlist: DISCONTINUITY-SEQUENCE is unchanged
			// and a client counts the skipped segments' discontinuities from
			// its own copy of them (4.4.5.2).
			fd := full.discSeqOf()
			var skippedDisc uint64
			for _, seg := range full.segments[:want] {
				if seg.discontinuity {
					skippedDisc++
				}
			}
			for uri, n := range delta.discSeqOf() {
				if n += skippedDisc; fd[uri] != n {
					t.Errorf("%s: discontinuity sequence %d in the delta, %d in the full playlist", uri, n, fd[uri])
				}
			}
		})
	}
}

func repeat(d time.Duration, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = d
	}
	return out
}

func TestRenderMultivariant(t *testing.T) {
	t.Run("no media yet", func(t *testing.T) {
		st := relay.NewStream("cam", testPartTarget, relay.Window{})
		got := string(RenderMultivariant(st.Snapshot(), mediaPlaylistName))
		if !strings.HasPrefix(got, "#EXTM3U\n") || !strings.Contains(got, "BANDWIDTH=") || strings.Contains(got, "CODECS") ||
			!strings.HasSuffix(got, "\nmedia.m3u8\n") {
			t.Fatalf("multivariant playlist without media:\n%s", got)
		}
	})
	t.Run("video and audio", func(t *testing.T) {
		st := relay.NewStream("cam", testPartTarget, relay.Window{})
		in := &relay.Init{ID: 1, Codecs: "avc1.64001f,mp4a.40.2", Width: 1280, Height: 720, FrameRate: 30}
		st.Cut(nil, &relay.SegmentHeader{Start: testEpoch, Init: in})
		// 2 s of 500 kB: 2 Mbit/s; then 1 s of 400 kB: 3.2 Mbit/s.
		for range 10 {
			st.Cut(&relay.Part{Duration: 200 * time.Millisecond, Data: make([]byte, 50_000)}, nil)
		}
		st.Cut(nil, &relay.SegmentHeader{Start: testEpoch.Add(2 * time.Second), Init: in})
		for range 5 {
			st.Cut(&relay.Part{Duration: 200 * time.Millisecond, Data: make([]byte, 80_000)}, nil)
		}
		st.Cut(nil, &relay.SegmentHeader{Start: testEpoch.Add(3 * time.Second), Init: in})
		got := string(RenderMultivariant(st.Snapshot(), mediaPlaylistName))
		lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
		if lines[0] != "#EXTM3U" || lines[len(lines)-1] != "media.m3u8" {
			t.Fatalf("multivariant playlist:\n%s", got)
		}
		var inf map[string]string
		for i, l := range lines {
			if v, ok := strings.CutPrefix(l, "#EXT-X-STREAM-INF:"); ok {
				inf = parseAttrs(t, v)
				if lines[i+1] != "media.m3u8" {
					t.Fatalf("EXT-X-STREAM-INF not followed by the media playlist URI")
				}
			}
		}
		want := map[string]string{
			"BANDWIDTH": "3200000", "AVERAGE-BANDWIDTH": "2400000", "CODECS": "avc1.64001f,mp4a.40.2",
			"RESOLUTION": "1280x720", "FRAME-RATE": "30.000",
		}
		for k, v := range want {
			if inf[k] != v {
				t.Errorf("%s=%q, want %q", k, inf[k], v)
			}
		}
		if !strings.Contains(got, "#EXT-X-INDEPENDENT-SEGMENTS\n") {
			t.Error("no EXT-X-INDEPENDENT-SEGMENTS")
		}
	})
	t.Run("audio only", func(t *testing.T) {
		st := relay.NewStream("cam", testPartTarget, relay.Window{})
		st.Cut(nil, &relay.SegmentHeader{Start: testEpoch, Init: &relay.Init{ID: 1, Codecs: "mp4a.40.2"}})
		got := string(RenderMultivariant(st.Snapshot(), mediaPlaylistName))
		if !strings.Contains(got, `CODECS="mp4a.40.2"`) || strings.Contains(got, "RESOLUTION") || strings.Contains(got, "FRAME-RATE") {
			t.Fatalf("audio-only multivariant playlist:\n%s", got)
		}
	})
}

func TestParseDirectives(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  Directives
		err   bool
	}{
		{"", Directives{}, false},
		{"_HLS_msn=5", Directives{MSN: 5, HasMSN: true}, false},
		{"_HLS_msn=0", Directives{MSN: 0, HasMSN: true}, false},
		{"_HLS_msn=5&_HLS_part=2", Directives{MSN: 5, Part: 2, HasMSN: true, HasPart: true}, false},
		{"_HLS_part=2&_HLS_msn=5", Directives{MSN: 5, Part: 2, HasMSN: true, HasPart: true}, false},
		{"a=1&_HLS_msn=7&zzz&_HLS_part=0&b=%20", Directives{MSN: 7, Part: 0, HasMSN: true, HasPart: true}, false},
		{"_HLS_msn=3&_HLS_skip=YES", Directives{MSN: 3, HasMSN: true, Skip: true}, false},
		{"_HLS_skip=YES", Directives{Skip: true}, false},
		{"_HLS_skip=v2", Directives{Skip: true}, false},
		{"_HLS_skip=", Directives{}, false},
		{"_hls_msn=3", Directives{}, false}, // not a directive: names are case-sensitive
		{"_HLS_msn=9007199254740992", Directives{MSN: 1 << 53, HasMSN: true}, false},
		{"_HLS_msn=05", Directives{MSN: 5, HasMSN: true}, false},

		{"_HLS_part=2", Directives{}, true},
		{"_HLS_part=0&_HLS_skip=YES", Directives{}, true},
		{"_HLS_msn=-1", Directives{}, true},
		{"_HLS_msn=1&_HLS_part=-1", Directives{}, true},
		{"_HLS_msn=abc", Directives{}, true},
		{"_HLS_msn=", Directives{}, true},
		{"_HLS_msn", Directives{}, true},
		{"_HLS_msn=1.5", Directives{}, true},
		{"_HLS_msn=+1", Directives{}, true},
		{"_HLS_msn=0x10", Directives{}, true},
		{"_HLS_msn=%201", Directives{}, true},
		{"_HLS_msn=1e3", Directives{}, true},
		{"_HLS_msn=9007199254740993", Directives{}, true},
		{"_HLS_msn=18446744073709551615", Directives{}, true},
		{"_HLS_msn=99999999999999999999999", Directives{}, true},
		{"_HLS_msn=1&_HLS_msn=2", Directives{}, true},
		{"_HLS_msn=1&_HLS_msn=1", Directives{}, true},
		{"_HLS_msn=1&_HLS_part=1&_HLS_part=2", Directives{}, true},
		{"_HLS_skip=NO", Directives{}, true},
		{"_HLS_skip=yes", Directives{}, true},
		{"_HLS_skip=v3", Directives{}, true},
	} {
		t.Run(tc.query, func(t *testing.T) {
			q, err := url.ParseQuery(tc.query)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseDirectives(q)
			if (err != nil) != tc.err {
				t.Fatalf("ParseDirectives(%q) = %+v, %v; want error %v", tc.query, got, err, tc.err)
			}
			if !tc.err && got != tc.want {
				t.Fatalf("ParseDirectives(%q) = %+v, want %+v", tc.query, got, tc.want)
			}
			if got.Blocking() != got.HasMSN {
				t.Fatalf("Blocking %v with HasMSN %v", got.Blocking(), got.HasMSN)
			}
		})
	}
}

// satisfiedStream: segments 5 (5 parts, complete), 6 (4 parts, complete),
// 7 (open with 2 parts); 0-4 were pruned.
func satisfiedStream(openParts int, nextOpen bool) *relay.Snapshot {
	b := newBuilder(testPartTarget, relay.Window{Segments: 2})
	b.open(false)
	for range 6 {
		b.segment(time.Second, false)
	}
	b.segment(800*time.Millisecond, false)
	for range openParts {
		b.part(testPartTarget)
	}
	if nextOpen {
		b.open(false)
	}
	return b.st.Snapshot()
}

func TestSatisfied(t *testing.T) {
	d := func(msn uint64, part ...uint64) Directives {
		dd := Directives{MSN: msn, HasMSN: true}
		if len(part) > 0 {
			dd.Part, dd.HasPart = part[0], true
		}
		return dd
	}
	live := satisfiedStream(2, false) // segment 7 open with parts 0 and 1
	if live.Segments[0].MSN != 5 || len(live.Segments) != 3 {
		t.Fatalf("fixture: window %d segments from %d", len(live.Segments), live.Segments[0].MSN)
	}
	boundary := satisfiedStream(0, false) // 7 open without parts, 6 complete
	closed := satisfiedStream(3, true)    // 7 complete (3 parts), 8 open without parts
	empty := relay.NewStream("cam", testPartTarget, relay.Window{}).Snapshot()
	for _, tc := range []struct {
		name string
		s    *relay.Snapshot
		d    Directives
		want bool
	}{
		{"no directive", live, Directives{}, true},
		{"msn only: complete segment", live, d(6), true},
		{"msn only: open segment with parts is not enough", live, d(7), false},
		{"msn only: future", live, d(8), false},
		{"msn only: removed segment", live, d(2), true},
		{"msn only: segment just completed", closed, d(7), true},
		{"msn only: empty stream", empty, d(0), false},
		{"part exists in open segment", live, d(7, 1), true},
		{"first part of open segment", live, d(7, 0), true},
		{"next part of open segment", live, d(7, 2), false},
		{"part of complete segment", live, d(6, 3), true},
		{"part of removed segment", live, d(1, 9), true},
		{"past the end of a complete segment means next segment part 0: present", live, d(6, 4), true},
		{"past the end, far: present", live, d(6, 100), true},
		{"past the end of a complete segment, next not started", boundary, d(6, 4), false},
		{"past the end far, next not started", boundary, d(6, 50), false},
		{"last part of the just-completed segment", boundary, d(6, 3), true},
		{"part past the end of just-completed segment", closed, d(7, 3), false},
		{"next segment part 0 not there yet", closed, d(8, 0), false},
		{"future segment", live, d(9, 0), false},
		{"empty stream part", empty, d(0, 0), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.d.Satisfied(tc.s); got != tc.want {
				t.Fatalf("Satisfied(%+v) = %v, want %v", tc.d, got, tc.want)
			}
		})
	}
}

func TestTooFarAhead(t *testing.T) {
	d := func(msn uint64, part ...uint64) Directives {
		dd := Directives{MSN: msn, HasMSN: true}
		if len(part) > 0 {
			dd.Part, dd.HasPart = part[0], true
		}
		return dd
	}
	// 2 s segments of ten 200 ms parts: 0-2 complete, 3 open with parts
	// 0-3. The Advance Part Limit is 3 / 0.2 = 15 parts.
	b := newBuilder(testPartTarget, relay.Window{Segments: 12})
	b.open(false)
	for range 3 {
		b.segment(2*time.Second, false)
	}
	for range 4 {
		b.part(testPartTarget)
	}
	live := b.st.Snapshot()

	// The same with 1 s parts: the limit is 3 parts.
	b1 := newBuilder(time.Second, relay.Window{Segments: 12})
	b1.open(false)
	for range 3 {
		b1.segment(4*time.Second, false)
	}
	b1.part(time.Second)
	slow := b1.st.Snapshot()

	// Right at a boundary: 0-2 complete, 3 open and empty.
	b2 := newBuilder(testPartTarget, relay.Window{Segments: 12})
	b2.open(false)
	for range 3 {
		b2.segment(2*time.Second, false)
	}
	edge := b2.st.Snapshot()

	empty := relay.NewStream("cam", testPartTarget, relay.Window{}).Snapshot()

	for _, tc := range []struct {
		name string
		s    *relay.Snapshot
		pt   time.Duration
		d    Directives
		want bool
	}{
		{"no directive", live, testPartTarget, Directives{}, false},
		{"msn last+2", live, testPartTarget, d(5), false},
		{"msn last+3", live, testPartTarget, d(6), true},
		{"msn huge", live, testPartTarget, d(1 << 53), true},
		{"msn old", live, testPartTarget, d(0), false},
		{"msn last complete+2 at boundary", edge, testPartTarget, d(4), false},
		{"msn last complete+3 at boundary", edge, testPartTarget, d(5), true},
		{"empty stream msn 2", empty, testPartTarget, d(2), false},
		{"empty stream msn 3", empty, testPartTarget, d(3), true},
		{"next part", live, testPartTarget, d(3, 4), false},
		{"14 parts ahead", live, testPartTarget, d(3, 17), false},
		{"15 parts ahead (the limit)", live, testPartTarget, d(3, 18), false},
		{"16 parts ahead", live, testPartTarget, d(3, 19), true},
		{"part in next segment within limit", live, testPartTarget, d(4, 0), false},
		{"part in next segment beyond limit", live, testPartTarget, d(4, 15), true},
		{"part two segments ahead beyond limit", live, testPartTarget, d(5, 5), true},
		{"huge part index", live, testPartTarget, d(3, 1<<53), true},
		{"old segment any part", live, testPartTarget, d(1, 1<<40), false},
		{"1s parts: 3 ahead", slow, time.Second, d(3, 3), false},
		{"1s parts: 4 ahead", slow, time.Second, d(3, 4), true},
		{"1s parts: next segment part 0 is 4 parts ahead", slow, time.Second, d(4, 0), true},
		{"1s parts: part 3 of open segment", slow, time.Second, d(3, 3), false},
		{"1s parts: next segment part 3", slow, time.Second, d(4, 3), true},
		{"boundary: next segment part 0", edge, testPartTarget, d(3, 0), false},
		{"boundary: next segment part 14", edge, testPartTarget, d(3, 14), false},
		{"boundary: next segment part 15", edge, testPartTarget, d(3, 15), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.d.TooFarAhead(tc.s, tc.pt); got != tc.want {
				t.Fatalf("TooFarAhead(%+v) = %v, want %v", tc.d, got, tc.want)
			}
		})
	}
}

func TestParseMediaFile(t *testing.T) {
	for _, tc := range []struct {
		file string
		kind byte
		n    uint64
		ok   bool
	}{
		{"init1.mp4", 'i', 1, true},
		{"init0.mp4", 'i', 0, true},
		{"part0.m4s", 'p', 0, true},
		{"part123.m4s", 'p', 123, true},
		{"seg7.m4s", 's', 7, true},
		{"seg9999999999999999999.m4s", 's', 9999999999999999999, true},
		{"seg18446744073709551616.m4s", 0, 0, false},
		{"part99999999999999999999.m4s", 0, 0, false},
		{"part.m4s", 0, 0, false},
		{"part-1.m4s", 0, 0, false},
		{"part+1.m4s", 0, 0, false},
		{"part 1.m4s", 0, 0, false},
		{"part1.mp4", 0, 0, false},
		{"init1.m4s", 0, 0, false},
		{"seg1.mp4", 0, 0, false},
		{"seg1.m4s.m4s", 0, 0, false},
		{"part1", 0, 0, false},
		{"PART1.m4s", 0, 0, false},
		{"part1.M4S", 0, 0, false},
		{"xpart1.m4s", 0, 0, false},
		{"part0x1.m4s", 0, 0, false},
		{"index.m3u8", 0, 0, false},
		{"media.m3u8", 0, 0, false},
		{"", 0, 0, false},
		{"..", 0, 0, false},
		{"part1.m4s\x00", 0, 0, false},
	} {
		got, ok := parseMediaFile(tc.file)
		if ok != tc.ok || ok && (got.kind != tc.kind || got.n != tc.n) {
			t.Errorf("parseMediaFile(%q) = %c %d %v, want %c %d %v", tc.file, got.kind, got.n, ok, tc.kind, tc.n, tc.ok)
		}
	}
}

func TestAcceptsGzip(t *testing.T) {
	for _, tc := range []struct {
		headers []string
		want    bool
	}{
		{nil, false},
		{[]string{""}, false},
		{[]string{"gzip"}, true},
		{[]string{"gzip, deflate, br"}, true},
		{[]string{"br,gzip"}, true},
		{[]string{"deflate", "gzip"}, true},
		{[]string{"gzip;q=0.5"}, true},
		{[]string{"gzip; q=1.0"}, true},
		{[]string{" gzip ;q=0.001"}, true},
		{[]string{"deflate, br"}, false},
		{[]string{"identity"}, false},
		{[]string{"gzipx"}, false},
		{[]string{"x-gzip2"}, false},
		{[]string{"gzip;q=0"}, false},
		{[]string{"gzip; q=0"}, false},
		{[]string{"gzip ; q=0 "}, false},
		{[]string{"br, gzip;q=0"}, false},
		// RFC 9110 12.4.2: qvalue = "0" [ "." 0*3DIGIT ]; the weight's "q"
		// is case-insensitive. All of these say "not acceptable".
		{[]string{"gzip;q=0.0"}, false},
		{[]string{"gzip;q=0.000"}, false},
		{[]string{"gzip;q=0."}, false},
		{[]string{"gzip;Q=0"}, false},
	} {
		r := httptest.NewRequest("GET", "/live/cam/media.m3u8", nil)
		for _, h := range tc.headers {
			r.Header.Add("Accept-Encoding", h)
		}
		if got := acceptsGzip(r); got != tc.want {
			t.Errorf("acceptsGzip(Accept-Encoding: %q) = %v, want %v", tc.headers, got, tc.want)
		}
	}
}
