package edge

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/relaymesh/relaymesh/relay"
)

// fixture is an LL-HLS server over a real registry with one publication,
// "cam", whose stream the test writes through b.
type fixture struct {
	reg *relay.Registry
	pub *relay.Publication
	b   *builder
	srv *Server
	ts  *httptest.Server
	hc  *http.Client
}

func newFixture(t *testing.T, cfg relay.RegistryConfig) *fixture {
	t.Helper()
	if cfg.PartTarget == 0 {
		cfg.PartTarget = testPartTarget
	}
	if cfg.Grace == 0 {
		cfg.Grace = time.Minute
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	reg := relay.NewRegistry(cfg)
	pub, err := reg.Publish("cam")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{reg: reg, pub: pub, b: builderFor(pub.Stream)}
	f.srv = &Server{Streams: reg, Logger: slog.New(slog.DiscardHandler)}
	f.ts = httptest.NewServer(f.srv)
	// No transparent decompression: the tests look at what is sent.
	f.hc = &http.Client{Transport: &http.Transport{DisableCompression: true}, Timeout: 20 * time.Second}
	t.Cleanup(func() {
		f.ts.Close()
		reg.Close()
	})
	return f
}

type response struct {
	status  int
	header  http.Header
	body    []byte
	elapsed time.Duration
	err     error
}

func (f *fixture) do(method, path string, hdr ...string) response {
	return f.doCtx(context.Background(), method, path, hdr...)
}

func (f *fixture) doCtx(ctx context.Context, method, path string, hdr ...string) response {
	req, err := http.NewRequestWithContext(ctx, method, f.ts.URL+path, nil)
	if err != nil {
		return response{err: err}
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	start := time.Now()
	res, err := f.hc.Do(req)
	if err != nil {
		return response{err: err}
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: body, elapsed: time.Since(start), err: err}
}

func (f *fixture) get(t *testing.T, path string, hdr ...string) response {
	t.Helper()
	r := f.do(http.MethodGet, path, hdr...)
	if r.err != nil {
		t.Fatalf("GET %s: %v", path, r.err)
	}
	return r
}

// async starts a GET and returns the channel its response arrives on.
func (f *fixture) async(path string, hdr ...string) <-chan response {
	ch := make(chan response, 1)
	go func() { ch <- f.do(http.MethodGet, path, hdr...) }()
	return ch
}

// pending asserts that no response arrives for d.
func pending(t *testing.T, ch <-chan response, d time.Duration, what string) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("%s answered early: %d after %v\n%s", what, r.status, r.elapsed, r.body)
	case <-time.After(d):
	}
}

func await(t *testing.T, ch <-chan response, d time.Duration, what string) response {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r
	case <-time.After(d):
		t.Fatalf("%s: no response within %v", what, d)
	}
	return response{}
}

// liveFixture: segment 0 complete (ten 200 ms parts, 0-9), segment 1 open
// with parts 10 and 11.
func liveFixture(t *testing.T, cfg relay.RegistryConfig) *fixture {
	f := newFixture(t, cfg)
	f.b.open(false)
	f.b.segment(2*time.Second, false)
	f.b.part(testPartTarget)
	f.b.part(testPartTarget)
	return f
}

const mediaPath = "/live/cam/media.m3u8"

func hasPart(pl *mediaPlaylist, n uint64) bool {
	for _, p := range pl.allParts() {
		if p.uri == fmt.Sprintf("part%d.m4s", n) {
			return true
		}
	}
	return false
}

func TestServeBlockingReload(t *testing.T) {
	t.Parallel()
	f := liveFixture(t, relay.RegistryConfig{})

	// Already there: answered at once, with the blocking cache lifetime.
	for _, q := range []string{"_HLS_msn=1&_HLS_part=1", "_HLS_msn=1&_HLS_part=0", "_HLS_msn=0", "_HLS_msn=0&_HLS_part=9", "_HLS_msn=0&_HLS_part=10"} {
		r := f.get(t, mediaPath+"?"+q)
		if r.status != http.StatusOK || r.elapsed > time.Second {
			t.Fatalf("%s: %d after %v", q, r.status, r.elapsed)
		}
		if cc := r.header.Get("Cache-Control"); cc != "max-age=12" {
			t.Errorf("%s: Cache-Control %q, want max-age=12 (6 x TARGETDURATION)", q, cc)
		}
		parseMedia(t, r.body)
	}

	// The next part: held until it exists, then answered at once.
	ch := f.async(mediaPath + "?_HLS_msn=1&_HLS_part=2")
	pending(t, ch, 200*time.Millisecond, "request for part 1.2")
	f.b.part(testPartTarget) // part 12 = 1.2
	cut := time.Now()
	r := await(t, ch, 2*time.Second, "request for part 1.2")
	if r.status != http.StatusOK {
		t.Fatalf("status %d", r.status)
	}
	if lag := time.Since(cut); lag > time.Second {
		t.Errorf("answered %v after the part was cut", lag)
	}
	pl := parseMedia(t, r.body)
	if !hasPart(pl, 12) || pl.hints[0]["URI"] != "part13.m4s" {
		t.Fatalf("playlist lacks part12 or hints %v:\n%s", pl.hints, r.body)
	}

	// _HLS_msn alone waits for the whole segment, not for its parts.
	ch = f.async(mediaPath + "?_HLS_msn=1")
	pending(t, ch, 150*time.Millisecond, "request for segment 1")
	f.b.part(testPartTarget)
	pending(t, ch, 150*time.Millisecond, "request for segment 1 after a part of it")
	f.b.open(false)
	r = await(t, ch, 2*time.Second, "request for segment 1")
	pl = parseMedia(t, r.body)
	if r.status != http.StatusOK || pl.segments[1].uri != "seg1.m4s" {
		t.Fatalf("status %d, playlist:\n%s", r.status, r.body)
	}

	// Part index past the end of segment 1 (parts 0-3) means part 0 of
	// segment 2.
	ch = f.async(mediaPath + "?_HLS_msn=1&_HLS_part=4")
	pending(t, ch, 150*time.Millisecond, "request for part 1.4 = 2.0")
	f.b.part(testPartTarget)
	r = await(t, ch, 2*time.Second, "request for part 1.4 = 2.0")
	if pl = parseMedia(t, r.body); !hasPart(pl, 14) {
		t.Fatalf("playlist lacks part 2.0 (part14):\n%s", r.body)
	}

	// Combined with _HLS_skip the answer is a delta update.
	r = f.get(t, mediaPath+"?_HLS_msn=2&_HLS_part=0&_HLS_skip=YES")
	if r.status != http.StatusOK || parseMedia(t, r.body).version != 9 {
		t.Fatalf("blocking delta request: %d\n%s", r.status, r.body)
	}
}

func TestServeBadDirectives(t *testing.T) {
	t.Parallel()
	f := liveFixture(t, relay.RegistryConfig{})
	for _, tc := range []struct {
		query string
		cache string
	}{
		{"_HLS_part=1", "max-age=2"},
		{"_HLS_part=0&_HLS_skip=YES", "max-age=2"},
		{"_HLS_msn=abc", "max-age=2"},
		{"_HLS_msn=-1", "max-age=2"},
		{"_HLS_msn=1&_HLS_part=1.5", "max-age=2"},
		{"_HLS_msn=1&_HLS_msn=2", "max-age=2"},
		{"_HLS_msn=99999999999999999999", "max-age=2"},
		{"_HLS_skip=maybe", "max-age=2"},
		// Too far ahead: msn > last + 2, or beyond the Advance Part Limit.
		{"_HLS_msn=4", "max-age=8"},
		{"_HLS_msn=1000000", "max-age=8"},
		{"_HLS_msn=1&_HLS_part=17", "max-age=8"},
		{"_HLS_msn=1&_HLS_part=16", "max-age=8"},
		{"_HLS_msn=2&_HLS_part=6", "max-age=8"},
		{"_HLS_msn=3&_HLS_part=0", "max-age=8"},
	} {
		r := f.get(t, mediaPath+"?"+tc.query)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", tc.query, r.status)
			continue
		}
		if r.elapsed > time.Second {
			t.Errorf("%s: 400 took %v; it must be immediate", tc.query, r.elapsed)
		}
		if cc := r.header.Get("Cache-Control"); cc != tc.cache {
			t.Errorf("%s: Cache-Control %q, want %q", tc.query, cc, tc.cache)
		}
		if r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%s: no CORS header on the error", tc.query)
		}
	}
	// Within the limits: not rejected but held (the client gives up here).
	// The stream advertises PART-TARGET 0.202, so the Advance Part Limit is
	// 3/0.202 = 14.85 parts beyond the newest one (segment 1, part 1).
	for _, q := range []string{"_HLS_msn=3", "_HLS_msn=1&_HLS_part=15", "_HLS_msn=2&_HLS_part=5"} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		r := f.doCtx(ctx, http.MethodGet, mediaPath+"?"+q)
		cancel()
		if r.err == nil {
			t.Errorf("%s answered %d at once; it is within the limits and must block", q, r.status)
		}
	}
}

// With no media arriving, blocking requests give up after three target
// durations (RFC 8216bis 6.2.5.2) with 503. TARGETDURATION is 2, so each
// takes 6 s; they are sent concurrently so the test takes 6 s whatever
// -parallel is.
func TestServeBlockingTimesOut(t *testing.T) {
	t.Parallel()
	f := liveFixture(t, relay.RegistryConfig{})
	// A published stream with no media at all yet.
	if _, err := f.reg.Publish("empty"); err != nil {
		t.Fatal(err)
	}
	td := 2 * time.Second
	cases := []struct{ name, path string }{
		{"playlist part", mediaPath + "?_HLS_msn=1&_HLS_part=2"},
		{"playlist segment", mediaPath + "?_HLS_msn=2"},
		{"hinted part", "/live/cam/part12.m4s"},
		{"multivariant without media", "/live/empty/index.m3u8"},
		{"media playlist without media", "/live/empty/media.m3u8"},
	}
	chans := make([]<-chan response, len(cases))
	for i, tc := range cases {
		chans[i] = f.async(tc.path)
	}
	for i, tc := range cases {
		r := await(t, chans[i], 3*td+5*time.Second, tc.name)
		if r.status != http.StatusServiceUnavailable {
			t.Errorf("%s: status %d after %v, want 503", tc.name, r.status, r.elapsed)
			continue
		}
		if r.elapsed < 3*td-100*time.Millisecond || r.elapsed > 3*td+2*time.Second {
			t.Errorf("%s: 503 after %v, want after 3 x TARGETDURATION = %v", tc.name, r.elapsed, 3*td)
		}
		if cc := r.header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s: Cache-Control %q on 503, want no-store", tc.name, cc)
		}
	}
}

// A stream that has just started has no segment to list: a plain playlist
// request waits for the first complete one rather than returning a
// playlist that players cannot start from.
func TestServeMediaWaitsForFirstSegment(t *testing.T) {
	t.Parallel()
	f := newFixture(t, relay.RegistryConfig{})
	ch := f.async(mediaPath)
	pending(t, ch, 200*time.Millisecond, "playlist of a stream without parts")
	f.b.open(false)
	pending(t, ch, 100*time.Millisecond, "playlist of a stream with an empty segment")
	f.b.part(testPartTarget)
	pending(t, ch, 100*time.Millisecond, "playlist of a stream with one part")
	f.b.open(false)
	r := await(t, ch, 2*time.Second, "playlist after the first segment")
	pl := parseMedia(t, r.body)
	if r.status != http.StatusOK || !hasPart(pl, 0) || len(pl.segments) != 1 || r.header.Get("Cache-Control") != "max-age=1" {
		t.Fatalf("%d %q\n%s", r.status, r.header.Get("Cache-Control"), r.body)
	}
}

// A viewer's first playlist is served at once, except near the end of the
// open segment (judged by the segment before it), where it waits for the
// boundary, and in a stream's first segments, where it waits for the open
// segment to hold PART-HOLD-BACK (see startable); if neither comes, it is
// served anyway. Blocking reloads and the session's later requests never
// wait.
func TestServeMediaStartsAwayFromSegmentEnd(t *testing.T) {
	t.Parallel()
	f := newFixture(t, relay.RegistryConfig{})
	quick := func(path, what string) *mediaPlaylist {
		t.Helper()
		r := await(t, f.async(path), 300*time.Millisecond, what)
		if r.status != http.StatusOK {
			t.Fatalf("%s: %d\n%s", what, r.status, r.body)
		}
		return parseMedia(t, r.body)
	}

	// The stream's start: segment 0 complete, segment 1 open and empty.
	f.b.open(false)
	f.b.segment(time.Second, false)
	ch := f.async(mediaPath + "?rmsid=0000000000000000")
	pending(t, ch, 150*time.Millisecond, "first playlist at the stream's start")
	f.b.fill(holdBackParts * testPartTarget)
	if r := await(t, ch, time.Second, "first playlist once the open segment holds PART-HOLD-BACK"); !hasPart(parseMedia(t, r.body), 7) {
		t.Fatalf("%d\n%s", r.status, r.body)
	}
	f.b.fill(2 * testPartTarget)
	f.b.open(false)
	f.b.segment(time.Second, false) // segments 0-2 complete (parts 0-14), 3 open

	quick(mediaPath+"?rmsid=aaaaaaaaaaaaaaaa", "first playlist at the start of a segment")
	f.b.fill((holdBackParts - 1) * testPartTarget) // parts 15, 16
	quick(mediaPath+"?rmsid=bbbbbbbbbbbbbbbb", "first playlist in the middle of a segment")

	f.b.part(testPartTarget) // part 17: two parts short of segment 2's five
	ch = f.async(mediaPath + "?rmsid=cccccccccccccccc")
	pending(t, ch, 150*time.Millisecond, "first playlist near the end of a segment")
	if pl := quick(mediaPath+"?rmsid=aaaaaaaaaaaaaaaa", "the session's next request"); !hasPart(pl, 17) {
		t.Fatalf("the session's next request lacks part 17:\n%s", pl.raw)
	}
	quick(mediaPath+"?rmsid=dddddddddddddddd&_HLS_msn=3&_HLS_part=2", "blocking reload as a first request")
	quick(mediaPath+"?rmsid=9999999999999999&"+moveParam+"=1", "first request of a player moving here (steering)")
	f.b.fill(2 * testPartTarget)
	f.b.open(false) // segment 3 complete, segment 4 open
	r := await(t, ch, time.Second, "first playlist after the boundary")
	if pl := parseMedia(t, r.body); r.status != http.StatusOK || !hasPart(pl, 19) {
		t.Fatalf("%d\n%s", r.status, r.body)
	}

	// A long segment: three parts in, the open one is far from its end.
	f.b.segment(2*time.Second, false) // segment 4: 10 parts
	f.b.fill(holdBackParts * testPartTarget)
	quick(mediaPath+"?rmsid=eeeeeeeeeeeeeeee", "first playlist early in a long segment")

	// A publisher that stalls near a segment's end does not turn a first
	// request into an error: it is served when the wait runs out.
	f.b.fill(6 * testPartTarget) // 9 of the 10 parts
	ch = f.async(mediaPath + "?rmsid=ffffffffffffffff")
	pending(t, ch, 150*time.Millisecond, "first playlist near the end of a long segment")
	if r := await(t, ch, 2*time.Second, "first playlist while the publisher stalls"); r.status != http.StatusOK {
		t.Fatalf("first request during a stall: %d", r.status)
	}
}

// A viewer's first playlist whose newest part is more than half a part
// old waits for the next part, so players do not start a part further
// behind than PART-HOLD-BACK; but not for a publisher that is late with it.
// A part's age is the longer of the time since it was added and since its
// media end by PROGRAM-DATE-TIME, which is all a fresh replica knows of the
// parts it receives at once. (1 s parts here, for wide timing margins.)
func TestServeMediaFirstPlaylistIsFresh(t *testing.T) {
	t.Parallel()
	const pt = time.Second
	f := newFixture(t, relay.RegistryConfig{PartTarget: pt})
	// Part 40's media ends 0.6 s before now by PROGRAM-DATE-TIME, as if
	// replayed to a replica that has just added parts 0-40. Long segments
	// keep the segment's end away (startable).
	f.b.epoch = time.Now().Add(-41*pt - 6*pt/10)
	f.b.open(false)
	for range 4 {
		f.b.segment(10*pt, false) // parts 0-39
	}
	f.b.part(pt) // part 40 opens segment 4
	first := func(session string) <-chan response {
		return f.async(mediaPath + "?rmsid=" + session)
	}
	served := func(ch <-chan response, what string, part uint64) {
		t.Helper()
		r := await(t, ch, 400*time.Millisecond, what)
		if pl := parseMedia(t, r.body); r.status != http.StatusOK || !hasPart(pl, part) || hasPart(pl, part+1) {
			t.Fatalf("%s: %d, want part %d newest\n%s", what, r.status, part, r.body)
		}
	}

	ch := first("aaaaaaaaaaaaaaaa")
	pending(t, ch, pt/5, "first playlist of a replayed part 0.6 s old")
	f.b.part(pt)
	added := time.Now()
	served(ch, "first playlist once the next part is in", 41)
	served(first("bbbbbbbbbbbbbbbb"), "first playlist of a fresh part", 41)

	time.Sleep(time.Until(added.Add(pt/2 + pt/10)))
	ch = first("cccccccccccccccc")
	pending(t, ch, pt/5, "first playlist of a part over half a part old")
	f.b.part(pt)
	added = time.Now()
	served(ch, "first playlist once the next part is in", 42)

	time.Sleep(time.Until(added.Add(pt + pt/2 + pt/10)))
	served(first("dddddddddddddddd"), "first playlist while the publisher is late", 42)

	// Segment 4 completes with five parts; in segment 5 the third part
	// would bring the segment's end near (startable), so a first playlist
	// does not wait for it, however old the second is.
	f.b.fill(2 * pt) // parts 43, 44
	f.b.open(false)
	f.b.fill(2 * pt) // parts 45, 46
	added = time.Now()
	time.Sleep(time.Until(added.Add(pt/2 + pt/10)))
	served(first("eeeeeeeeeeeeeeee"), "first playlist when the next part brings the segment's end near", 46)
}

func TestServeHintedPart(t *testing.T) {
	t.Parallel()
	f := liveFixture(t, relay.RegistryConfig{})
	s := f.pub.Stream.Snapshot()
	hint := fmt.Sprintf("/live/cam/part%d.m4s", s.NextPart)

	ch := f.async(hint)
	pending(t, ch, 200*time.Millisecond, "hinted part")
	p := f.b.part(testPartTarget)
	r := await(t, ch, 2*time.Second, "hinted part")
	if r.status != http.StatusOK || !bytes.Equal(r.body, p.Data) {
		t.Fatalf("hinted part: %d %q, want 200 %q", r.status, r.body, p.Data)
	}
	if r.header.Get("Content-Length") != fmt.Sprint(len(p.Data)) || r.header.Get("Content-Type") != "video/mp4" {
		t.Errorf("headers %v", r.header)
	}
	if cc := r.header.Get("Cache-Control"); cc != "max-age=12" {
		t.Errorf("Cache-Control %q, want max-age=12", cc)
	}

	// The publisher leaves: within the grace period a reconnect would
	// still deliver the hinted part, so the request waits. When the show
	// ends it never will: 404.
	next := fmt.Sprintf("/live/cam/part%d.m4s", f.pub.Stream.Snapshot().NextPart)
	ch = f.async(next)
	pending(t, ch, 150*time.Millisecond, "hinted part before the publisher leaves")
	f.pub.Close()
	pending(t, ch, 300*time.Millisecond, "hinted part while the publisher may come back")
	f.pub.Stream.End()
	r = await(t, ch, 2*time.Second, "hinted part of an ended show")
	if r.status != http.StatusNotFound {
		t.Fatalf("hinted part of an ended show: %d, want 404", r.status)
	}
	// And an ended show has no hint to wait for.
	if r := f.get(t, next); r.status != http.StatusNotFound || r.elapsed > time.Second {
		t.Fatalf("part after the show ended: %d after %v", r.status, r.elapsed)
	}
}

func TestServeMediaFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, relay.RegistryConfig{Window: relay.Window{Segments: 2}})
	f.b.open(false)
	for range 4 {
		f.b.segment(time.Second, false)
	}
	f.b.part(testPartTarget)
	s := f.pub.Stream.Snapshot()
	if s.Segments[0].MSN != 2 {
		t.Fatalf("fixture window starts at %d", s.Segments[0].MSN)
	}

	ok := func(path string, want []byte) {
		t.Helper()
		r := f.get(t, path)
		if r.status != http.StatusOK || !bytes.Equal(r.body, want) {
			t.Errorf("GET %s: %d %q, want 200 %q", path, r.status, r.body, want)
			return
		}
		if r.header.Get("Content-Type") != "video/mp4" || r.header.Get("Content-Length") != fmt.Sprint(len(want)) ||
			r.header.Get("Cache-Control") != "max-age=12" || r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("GET %s headers %v", path, r.header)
		}
	}
	notFound := func(path string) {
		t.Helper()
		r := f.get(t, path)
		if r.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, r.status)
		}
		if r.elapsed > time.Second {
			t.Errorf("GET %s: 404 took %v; it must be immediate", path, r.elapsed)
		}
		if cc := r.header.Get("Cache-Control"); cc != "max-age=2" {
			t.Errorf("GET %s: Cache-Control %q on 404, want max-age=2 (one TARGETDURATION)", path, cc)
		}
	}

	ok("/live/cam/init1.mp4", f.b.init.Data)
	seg := s.Segment(3)
	var whole []byte
	for _, p := range seg.Parts {
		whole = append(whole, p.Data...)
	}
	ok("/live/cam/seg3.m4s", whole)
	first := seg.Parts[0]
	ok(fmt.Sprintf("/live/cam/part%d.m4s", first.N), first.Data)
	last := s.Part(s.NextPart - 1)
	ok(fmt.Sprintf("/live/cam/part%d.m4s", last.N), last.Data)

	notFound("/live/cam/seg4.m4s")                              // open
	notFound("/live/cam/seg1.m4s")                              // pruned
	notFound("/live/cam/seg5.m4s")                              // future
	notFound(fmt.Sprintf("/live/cam/part%d.m4s", 3))            // pruned
	notFound(fmt.Sprintf("/live/cam/part%d.m4s", s.NextPart+1)) // beyond the hint
	notFound(fmt.Sprintf("/live/cam/part%d.m4s", s.NextPart+1000))
	notFound("/live/cam/init2.mp4")
	notFound("/live/cam/init0.mp4")
	notFound("/live/cam/foo.m4s")
	notFound("/live/cam/part-1.m4s")
	notFound("/live/cam/seg2.mp4")

	if r := f.get(t, "/live/nope/media.m3u8"); r.status != http.StatusNotFound {
		t.Errorf("unknown stream: %d", r.status)
	}
	if r := f.get(t, "/live/nope/index.m3u8"); r.status != http.StatusNotFound {
		t.Errorf("unknown stream: %d", r.status)
	}
}

func TestServePlaylists(t *testing.T) {
	t.Parallel()
	f := newFixture(t, relay.RegistryConfig{})
	f.b.open(false)
	for range 10 {
		f.b.segment(2*time.Second, false)
	}
	f.b.part(testPartTarget)

	r := f.get(t, mediaPath)
	full := parseMedia(t, r.body)
	if r.status != http.StatusOK || full.hasSkip || full.version != 6 {
		t.Fatalf("media playlist: %d\n%s", r.status, r.body)
	}
	want := map[string]string{
		"Content-Type":                "application/vnd.apple.mpegurl",
		"Cache-Control":               "max-age=1", // half a target duration
		"Access-Control-Allow-Origin": "*",
		"Content-Length":              fmt.Sprint(len(r.body)),
	}
	for k, v := range want {
		if got := r.header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	if !strings.Contains(strings.Join(r.header.Values("Vary"), ","), "Accept-Encoding") {
		t.Errorf("Vary %q lacks Accept-Encoding", r.header.Values("Vary"))
	}
	if !bytes.Equal(r.body, RenderMedia(f.pub.Stream.Snapshot(), f.pub.Stream.PartTarget, false)) {
		t.Error("served playlist differs from RenderMedia of the current snapshot")
	}

	// Delta update.
	r = f.get(t, mediaPath+"?_HLS_skip=YES")
	delta := parseMedia(t, r.body)
	// Ten 2 s segments: 0-2 end more than 12 s before the end of the last.
	if r.status != http.StatusOK || !delta.hasSkip || delta.version != 9 || delta.skipped != 3 {
		t.Fatalf("delta update: %d skip %v (%d) version %d\n%s", r.status, delta.hasSkip, delta.skipped, delta.version, r.body)
	}
	if r := f.get(t, mediaPath+"?_HLS_skip=v2"); r.status != http.StatusOK || !parseMedia(t, r.body).hasSkip {
		t.Errorf("_HLS_skip=v2: %d", r.status)
	}

	// Multivariant.
	r = f.get(t, "/live/cam/index.m3u8")
	if r.status != http.StatusOK || !bytes.HasPrefix(r.body, []byte("#EXTM3U\n")) || !bytes.Contains(r.body, []byte("\nmedia.m3u8?rmsid=")) ||
		!bytes.Contains(r.body, []byte(`CODECS="avc1.64001f,mp4a.40.2"`)) {
		t.Fatalf("multivariant: %d\n%s", r.status, r.body)
	}
	// Each viewer gets its own session in the media URI: not cacheable.
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("multivariant Cache-Control %q", cc)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/vnd.apple.mpegurl" {
		t.Errorf("multivariant Content-Type %q", ct)
	}
}

func TestServeGzip(t *testing.T) {
	t.Parallel()
	f := liveFixture(t, relay.RegistryConfig{})
	for _, q := range []string{"", "?_HLS_msn=1&_HLS_part=1", "?_HLS_skip=YES"} {
		plain := f.get(t, mediaPath+q)
		if plain.header.Get("Content-Encoding") != "" {
			t.Fatalf("%s: Content-Encoding %q without Accept-Encoding", q, plain.header.Get("Content-Encoding"))
		}
		gz := f.get(t, mediaPath+q, "Accept-Encoding", "gzip, deflate, br")
		if gz.status != http.StatusOK || gz.header.Get("Content-Encoding") != "gzip" {
			t.Fatalf("%s: status %d Content-Encoding %q", q, gz.status, gz.header.Get("Content-Encoding"))
		}
		if gz.header.Get("Content-Length") != fmt.Sprint(len(gz.body)) {
			t.Errorf("%s: Content-Length %s for %d bytes", q, gz.header.Get("Content-Length"), len(gz.body))
		}
		zr, err := gzip.NewReader(bytes.NewReader(gz.body))
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		body, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if !bytes.Equal(body, plain.body) {
			t.Fatalf("%s: gzip body decompresses to\n%s\nwant\n%s", q, body, plain.body)
		}
		no := f.get(t, mediaPath+q, "Accept-Encoding", "gzip;q=0, identity")
		if no.header.Get("Content-Encoding") != "" || !bytes.Equal(no.body, plain.body) {
			t.Errorf("%s: gzip sent although refused with q=0", q)
		}
	}
}

func TestServeHEAD(t *testing.T) {
	t.Parallel()
	f := liveFixture(t, relay.RegistryConfig{})
	for _, tc := range []struct {
		path string
		hdr  []string
	}{
		{mediaPath, nil},
		{mediaPath, []string{"Accept-Encoding", "gzip"}},
		{mediaPath + "?_HLS_msn=0", nil},
		{"/live/cam/index.m3u8", nil},
		{"/live/cam/init1.mp4", nil},
		{"/live/cam/seg0.m4s", nil},
		{"/live/cam/part3.m4s", nil},
	} {
		get := f.get(t, tc.path, tc.hdr...)
		head := f.do(http.MethodHead, tc.path, tc.hdr...)
		if head.err != nil || head.status != http.StatusOK || len(head.body) != 0 {
			t.Errorf("HEAD %s: %v %d with %d body bytes", tc.path, head.err, head.status, len(head.body))
			continue
		}
		if head.header.Get("Content-Length") != fmt.Sprint(len(get.body)) {
			t.Errorf("HEAD %s: Content-Length %q, GET body is %d bytes", tc.path, head.header.Get("Content-Length"), len(get.body))
		}
		for _, k := range []string{"Content-Type", "Cache-Control", "Content-Encoding"} {
			if head.header.Get(k) != get.header.Get(k) {
				t.Errorf("HEAD %s: %s %q, GET has %q", tc.path, k, head.header.Get(k), get.header.Get(k))
			}
		}
	}
	if r := f.do(http.MethodHead, "/live/cam/part999.m4s"); r.status != http.StatusNotFound {
		t.Errorf("HEAD of a missing part: %d", r.status)
	}
}

func TestServeCORSAndMethods(t *testing.T) {
	t.Parallel()
	f := liveFixture(t, relay.RegistryConfig{})
	for _, path := range []string{mediaPath, "/live/cam/index.m3u8", "/live/cam/part0.m4s", "/live/cam/part999.m4s", "/live/nope/media.m3u8", "/elsewhere"} {
		r := f.get(t, path, "Origin", "https://player.example")
		if r.header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("GET %s (%d): Access-Control-Allow-Origin %q", path, r.status, r.header.Get("Access-Control-Allow-Origin"))
		}
	}
	r := f.do(http.MethodOptions, mediaPath, "Origin", "https://player.example", "Access-Control-Request-Method", "GET")
	if r.err != nil || r.status != http.StatusNoContent {
		t.Fatalf("OPTIONS: %v %d", r.err, r.status)
	}
	if r.header.Get("Access-Control-Allow-Origin") != "*" || !strings.Contains(r.header.Get("Access-Control-Allow-Methods"), "GET") {
		t.Errorf("OPTIONS headers %v", r.header)
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		r := f.do(m, mediaPath)
		if r.err != nil || r.status != http.StatusMethodNotAllowed || !strings.Contains(r.header.Get("Allow"), "GET") {
			t.Errorf("%s: %v %d Allow %q", m, r.err, r.status, r.header.Get("Allow"))
		}
	}
}

// rawGet sends path as the request target byte for byte, without the
// cleaning an HTTP client would do.
func rawGet(t *testing.T, addr, path string) int {
	t.Helper()
	code, _ := rawGetLocation(t, addr, path)
	return code
}

func rawGetLocation(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", path)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	res.Body.Close()
	return res.StatusCode, res.Header.Get("Location")
}

func TestServeMalformedPaths(t *testing.T) {
	t.Parallel()
	f := liveFixture(t, relay.RegistryConfig{})
	addr := f.ts.Listener.Addr().String()
	if got := rawGet(t, addr, mediaPath); got != http.StatusOK {
		t.Fatalf("control request: %d", got)
	}
	// /live/{stream} is the player page's canonical URL without its slash.
	if got, loc := rawGetLocation(t, addr, "/live/cam"); got != http.StatusMovedPermanently || loc != "/live/cam/" {
		t.Errorf("GET /live/cam: %d Location %q, want 301 to /live/cam/", got, loc)
	}
	if got := rawGet(t, addr, "/live/cam/"); got != http.StatusOK {
		t.Errorf("GET /live/cam/ (player page): %d", got)
	}
	for _, path := range []string{
		"/live/../live/cam/media.m3u8",
		"/live/cam/../cam/media.m3u8",
		"/live/cam/./media.m3u8",
		"/live/./cam/media.m3u8",
		"/live/cam//media.m3u8",
		"/live//cam/media.m3u8",
		"//live/cam/media.m3u8",
		"/live/cam/media.m3u8/",
		"/live/cam/media.m3u8/..",
		"/live/cam/x/media.m3u8",
		"/live/",
		"/live",
		"/",
		"/LIVE/cam/media.m3u8",
		"/live/%2e%2e/cam/media.m3u8",
		"/live/%2e%2e/",
		"/live/cam/%2e%2e/cam/media.m3u8",
		"/live/cam/..%2fcam%2fmedia.m3u8",
		"/live/cam/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
		"/live/cam/part0.m4s%00",
		"/live/cam/part0.m4s%2f",
		"/live/cam/..",
		"/live/..",
		"/live/../../etc/passwd",
		"/live/cam/media.m3u8%20",
		"/live/cam/%6dedia.m3u8x",
		"/live/.cam/media.m3u8",
		"/live/cam/part0.m4s/..",
		"/live/cam/part00000000000000000000000000000.m4s",
		"/live/" + strings.Repeat("a", 129) + "/media.m3u8",
	} {
		if got := rawGet(t, addr, path); got != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, got)
		}
	}
	// An escaped slash is data within a path segment (RFC 3986 2.2), not
	// a separator: /live/cam%2Fmedia.m3u8 names one element,
	// "cam/media.m3u8", which is not a stream.
	for _, path := range []string{"/live/cam%2fmedia.m3u8", "/live/cam%2Fpart0.m4s", "/live/cam%2F"} {
		if got := rawGet(t, addr, path); got != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404 (escaped slash treated as a path separator)", path, got)
		}
	}
	// The handler itself, with targets no client would send.
	for _, target := range []string{"/live/cam/..%5cmedia.m3u8", "/live/cam/media.m3u8?%zz", "/live/cam/part1.m4s?_HLS_msn=1"} {
		rec := httptest.NewRecorder()
		f.srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		if rec.Code >= 300 && rec.Code < 400 || rec.Code >= 500 {
			t.Errorf("%s: %d", target, rec.Code)
		}
	}
}

// A live writer cuts a part every few milliseconds while a client follows
// the live edge the way an LL-HLS player does: blocking reload for the
// next part, then the hinted part.
func TestServeFollowsPacedWriter(t *testing.T) {
	t.Parallel()
	f := newFixture(t, relay.RegistryConfig{})
	st := f.pub.Stream
	f.b.open(false)
	f.b.part(testPartTarget)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the writer: owns f.b from here on
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			f.b.part(testPartTarget)
			if n%10 == 9 {
				f.b.open(false)
			}
		}
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()

	r := f.get(t, mediaPath)
	pl := parseMedia(t, r.body)
	seen := uint64(0)
	for i := 0; i < 60; i++ {
		// The next part after the last one listed.
		lastSeg := len(pl.segments) - 1
		last := pl.segments[lastSeg]
		msn := pl.mediaSequence + uint64(lastSeg)
		idx := len(last.parts)
		if len(last.parts) == 0 {
			t.Fatalf("last listed segment has no parts:\n%s", pl.raw)
		}
		hint := pl.hints[0]["URI"]

		var hintBody []byte
		var hr response
		var hwg sync.WaitGroup
		hwg.Add(1)
		go func() {
			defer hwg.Done()
			hr = f.do(http.MethodGet, "/live/cam/"+hint)
			hintBody = hr.body
		}()

		r := f.get(t, fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=%d", mediaPath, msn, idx))
		if r.status != http.StatusOK {
			t.Fatalf("blocking reload %d.%d: %d %s", msn, idx, r.status, r.body)
		}
		next := parseMedia(t, r.body)
		var n uint64
		if _, err := fmt.Sscanf(hint, "part%d.m4s", &n); err != nil {
			t.Fatal(err)
		}
		if !hasPart(next, n) {
			t.Fatalf("reload for %d.%d does not list the hinted part %s:\n%s", msn, idx, hint, r.body)
		}
		if n <= seen && i > 0 {
			t.Fatalf("part %d after %d", n, seen)
		}
		seen = n
		hwg.Wait()
		if hr.err != nil || hr.status != http.StatusOK {
			t.Fatalf("hinted %s: %v %d", hint, hr.err, hr.status)
		}
		if p := st.Snapshot().Part(n); p != nil && !bytes.Equal(hintBody, p.Data) {
			t.Fatalf("hinted %s: %q, the part is %q", hint, hintBody, p.Data)
		}
		pl = next
	}
}

// The server caches rendered playlists per stream. A stream the registry
// removed must not be kept alive by that cache: it holds the whole window.
func TestServeForgetsRemovedStreams(t *testing.T) {
	t.Parallel()
	reg := relay.NewRegistry(relay.RegistryConfig{PartTarget: testPartTarget, Grace: 20 * time.Millisecond,
		Linger: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	defer reg.Close()
	srv := &Server{Streams: reg, Logger: slog.New(slog.DiscardHandler)}

	var wp weak.Pointer[relay.Stream]
	func() {
		pub, err := reg.Publish("short")
		if err != nil {
			t.Fatal(err)
		}
		b := builderFor(pub.Stream)
		b.open(false)
		for range 5 {
			b.st.Cut(&relay.Part{Duration: testPartTarget, Data: make([]byte, 1<<20)}, nil)
		}
		b.open(false) // completes the segment, so playlists are served at once
		for _, target := range []string{"/live/short/media.m3u8", "/live/short/media.m3u8?_HLS_skip=YES"} {
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
			if rec.Code != http.StatusOK {
				t.Fatalf("%s: %d", target, rec.Code)
			}
		}
		wp = weak.Make(pub.Stream)
		pub.Close()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for reg.Get("short") != nil {
		if time.Now().After(deadline) {
			t.Fatal("stream not removed after its grace and linger periods")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Later requests for the name get 404 and change nothing.
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/live/short/media.m3u8", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("removed stream: %d", rec.Code)
	}

	// A real server lives as long as the process: keep this one alive
	// while looking for what it retains.
	defer runtime.KeepAlive(srv)
	deadline = time.Now().Add(2 * time.Second)
	for wp.Value() != nil {
		if time.Now().After(deadline) {
			t.Errorf("2 s after its removal the removed stream (5 MiB of parts) is still reachable after GC")
			return
		}
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
}

// An ended show's playlist carries EXT-X-ENDLIST and no preload hint, and
// a blocking reload for what will never come is answered with it at once.
func TestEndedShow(t *testing.T) {
	t.Parallel()
	reg := relay.NewRegistry(relay.RegistryConfig{PartTarget: testPartTarget, Grace: 10 * time.Millisecond,
		Linger: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	defer reg.Close()
	srv := &Server{Streams: reg, Logger: slog.New(slog.DiscardHandler)}
	pub, _ := reg.Publish("show")
	b := builderFor(pub.Stream)
	b.open(false)
	b.fill(2 * time.Second)
	b.open(false)
	b.fill(400 * time.Millisecond)
	pub.Close()
	if _, err := pub.Stream.Wait(t.Context(), func(s *relay.Snapshot) bool { return s.Ended }); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{
		"/live/show/media.m3u8",
		"/live/show/media.m3u8?_HLS_msn=1&_HLS_part=5",
		"/live/show/media.m3u8?_HLS_msn=9",
	} {
		rec := httptest.NewRecorder()
		start := time.Now()
		srv.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
		body := rec.Body.String()
		if rec.Code != http.StatusOK || !strings.HasSuffix(body, "#EXT-X-ENDLIST\n") || strings.Contains(body, "PRELOAD-HINT") {
			t.Errorf("%s: %d\n%s\nwant 200 ending with EXT-X-ENDLIST, no preload hint", target, rec.Code, body)
		}
		if el := time.Since(start); el > time.Second {
			t.Errorf("%s took %v: an ended playlist is final and answered at once", target, el)
		}
		if strings.Count(body, "#EXTINF:") != 2 {
			t.Errorf("%s: want both segments complete:\n%s", target, body)
		}
	}
}
