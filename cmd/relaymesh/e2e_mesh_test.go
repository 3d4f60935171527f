package main

// End-to-end tests of the mesh: an origin and edges run as separate
// relaymesh processes on loopback, join over memberlist (--mesh, --join,
// --cluster-key) and relay a real ffmpeg stream over QUIC (--relay). Viewers
// play from the edges as an LL-HLS player would. See e2e_test.go for how the
// binary is built and e2e_mesh_helpers_test.go for the helpers.

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testClusterKey = "e2e-mesh-secret"

// startChain runs origin <- edge-1 <- edge-2 (edge-2 with --parent edge-1)
// with an encoder publishing "test" to the origin, and returns once each
// node serves the stream and edge-2 relays it from edge-1.
func startChain(t *testing.T, ctx context.Context, c *http.Client, seconds int) (o, e1, e2 *meshNode) {
	t.Helper()
	o = startMeshOrigin(t, "origin", testClusterKey)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), seconds)
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment on the origin", hasComplete(1))

	e1 = startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr)
	waitPlaylist(t, ctx, c, e1.url("/live/test/media.m3u8"), "a complete segment on edge-1", hasComplete(1))
	// edge-2 must learn that edge-1 holds the stream when it joins.
	waitHolders(t, ctx, c, o, "test", "origin", "edge-1")

	e2 = startMeshEdge(t, "edge-2", testClusterKey, o.meshAddr, "--parent", "edge-1")
	waitPlaylist(t, ctx, c, e2.url("/live/test/media.m3u8"), "a complete segment on edge-2", hasComplete(1))
	if lines := e2.logLines("relaying stream", "stream=test"); len(lines) == 0 || !strings.Contains(lines[0], "upstream=edge-1") {
		t.Fatalf("edge-2 (--parent edge-1) should relay test from edge-1; its log says %q", lines)
	}
	return o, e1, e2
}

// TestMeshTwoHopChain relays a stream origin -> edge-1 -> edge-2 and plays
// it from edge-2: every node serves the same playlist and the same bytes,
// each hop carries one copy, and every node sees the whole mesh.
func TestMeshTwoHopChain(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	c := newHTTPClient(t)
	o, e1, e2 := startChain(t, ctx, c, 90)
	nodes := []*meshNode{o, e1, e2}

	// A player on the far edge gets H.264 and AAC, continuously.
	s := playAndCheck(t, e2.url("/live/test/index.m3u8"), 6*time.Second, 45*time.Second)
	t.Logf("gohlslib on edge-2: %d video frames over %v, %d audio AUs over %v, %d parts",
		len(s.videoDTS), s.videoSpan(), len(s.audioPTS), s.audioSpan(), len(s.parts))

	// The three media playlists of one moment agree.
	pls := sameMomentPlaylists(t, ctx, c, nodes)
	ref := pls[0]
	refDates := programDates(ref)
	for i, pl := range pls[1:] {
		n := nodes[i+1]
		if pl.MediaSequence != ref.MediaSequence || pl.DiscSequence != ref.DiscSequence || pl.TargetDuration != ref.TargetDuration {
			t.Errorf("%s: MEDIA-SEQUENCE %d DISCONTINUITY-SEQUENCE %d TARGETDURATION %d; origin: %d %d %d",
				n.nodeName, pl.MediaSequence, pl.DiscSequence, pl.TargetDuration, ref.MediaSequence, ref.DiscSequence, ref.TargetDuration)
		}
		dates := programDates(pl)
		refSegs := map[uint64]*hlsSegment{}
		for _, seg := range ref.Segments {
			refSegs[seg.MSN] = seg
		}
		shared := 0
		for _, seg := range pl.Segments {
			r := refSegs[seg.MSN]
			if r == nil {
				continue
			}
			shared++
			if seg.URI != r.URI || seg.Duration != r.Duration || seg.Map != r.Map || seg.Discontinuity != r.Discontinuity ||
				!slices.Equal(seg.Parts, r.Parts) {
				t.Errorf("%s lists segment %d as %+v; the origin as %+v", n.nodeName, seg.MSN, *seg, *r)
			}
			if dates[seg.MSN] == "" || dates[seg.MSN] != refDates[seg.MSN] {
				t.Errorf("%s: segment %d PROGRAM-DATE-TIME %q, origin %q", n.nodeName, seg.MSN, dates[seg.MSN], refDates[seg.MSN])
			}
		}
		if shared < 2 || shared != len(ref.Segments) || shared != len(pl.Segments) {
			t.Errorf("%s lists %d segments, the origin %d, %d shared\n%s:\n%s\norigin:\n%s",
				n.nodeName, len(pl.Segments), len(ref.Segments), shared, n.nodeName, pl.Raw, ref.Raw)
		}
		if pl.Raw != ref.Raw {
			t.Logf("note: %s's playlist text differs from the origin's\n%s:\n%s\norigin:\n%s", n.nodeName, n.nodeName, pl.Raw, ref.Raw)
		}
	}

	// Parts and complete segments are the same bytes on every node: the
	// newest complete segment's parts, and every complete segment the
	// three windows share.
	complete := ref.complete()
	last := complete[len(complete)-1]
	if len(last.Parts) == 0 {
		t.Fatalf("segment %d lists no parts:\n%s", last.MSN, ref.Raw)
	}
	var uris []string
	for _, p := range last.Parts {
		uris = append(uris, p.URI)
	}
	for _, seg := range complete {
		uris = append(uris, seg.URI)
	}
	for _, uri := range uris {
		want := mustGet(t, ctx, c, o.url("/live/test/"+uri))
		for _, n := range nodes[1:] {
			if got := mustGet(t, ctx, c, n.url("/live/test/"+uri)); !bytes.Equal(got, want) {
				t.Errorf("%s serves %s as %d bytes that differ from the origin's %d", n.nodeName, uri, len(got), len(want))
			}
		}
	}
	t.Logf("%d parts and %d segments are byte-identical on the three nodes", len(last.Parts), len(complete))

	// Every hop carries one copy: the origin feeds edge-1 only, edge-1
	// feeds edge-2.
	waitMembers(t, ctx, c, 3, nodes...)
	feeds := map[string]string{"origin": "edge-1", "edge-1": "edge-2", "edge-2": ""}
	for _, n := range nodes {
		m := mustScrape(t, ctx, c, n)
		subs := m.labelled("relaymesh_relay_subscribers", "stream")
		egress := m.labelled("relaymesh_relay_egress_bytes_total", "peer")
		var peers []string
		for p, v := range egress {
			if v > 0 {
				peers = append(peers, p)
			}
		}
		if want := feeds[n.nodeName]; want != "" {
			if subs["test"] != 1 || len(subs) != 1 {
				t.Errorf("%s: relaymesh_relay_subscribers %v, want {test: 1}", n.nodeName, subs)
			}
			if !slices.Equal(peers, []string{want}) {
				t.Errorf("%s: relay egress to %v (%v), want to %s only", n.nodeName, peers, egress, want)
			}
		} else if len(subs) != 0 || len(peers) != 0 {
			t.Errorf("%s feeds nobody, yet its metrics show subscribers %v and egress %v", n.nodeName, subs, egress)
		}
		if v := m.value("relaymesh_mesh_members"); v != 3 {
			t.Errorf("%s: relaymesh_mesh_members %g, want 3", n.nodeName, v)
		}
	}
	if lines := o.logLines("relay subscriber attached", "stream=test"); len(lines) != 1 || !strings.Contains(lines[0], "peer=edge-1") {
		t.Errorf("origin: want one relay subscriber (edge-1), log says %q", lines)
	}

	// relaymesh status shows the three nodes, each holding the stream.
	for _, n := range nodes {
		waitHolders(t, ctx, c, n, "test", "origin", "edge-1", "edge-2")
	}
	for _, n := range []*meshNode{o, e2} {
		code, stdout, stderr := runCLI(t, nil, "status", "--api", "http://"+n.httpAddr)
		if code != 0 {
			t.Fatalf("relaymesh status --api %s exited %d: %s", n.httpAddr, code, stderr)
		}
		table, total, _ := strings.Cut(strings.TrimSpace(stdout), "\n\n")
		rows := strings.Split(table, "\n")
		if len(rows) != 4 || !strings.HasPrefix(rows[0], "NODE") || !strings.HasPrefix(total, "mesh: 3 nodes, 3 taking viewers;") {
			t.Errorf("relaymesh status --api %s: want a header, 3 rows and the mesh's total:\n%s", n.httpAddr, stdout)
			continue
		}
		var listed []string
		for _, row := range rows[1:] {
			f := strings.Fields(row)
			listed = append(listed, f[0])
			if !strings.Contains(row, "test(") {
				t.Errorf("relaymesh status --api %s: %s does not list stream test: %q", n.httpAddr, f[0], row)
			}
		}
		slices.Sort(listed)
		if !slices.Equal(listed, []string{"edge-1", "edge-2", "origin"}) {
			t.Errorf("relaymesh status --api %s lists nodes %v, want edge-1, edge-2, origin:\n%s", n.httpAddr, listed, stdout)
		}
	}

	// On loopback, with one subscriber per node, no relay subscriber may
	// ever fall behind or lose a segment.
	for _, n := range nodes {
		requireNoRelayDrops(t, n, "")
	}

	e2.stop(t)
	e1.stop(t)
	o.stop(t)
}

// requireNoRelayDrops fails the test if n logged that it dropped or skipped
// a segment for a relay subscriber (peer, or any peer if "").
func requireNoRelayDrops(t *testing.T, n *meshNode, peer string) {
	t.Helper()
	var drops []string
	for _, what := range []string{"relay subscriber fell behind", "relay subscriber too slow"} {
		if peer != "" {
			drops = append(drops, n.logLines(what, "peer="+peer+" ")...)
		} else {
			drops = append(drops, n.logLines(what)...)
		}
	}
	if len(drops) > 0 {
		t.Errorf("%s cut short segments it was relaying to a downstream node on loopback:\n%s", n.nodeName, strings.Join(drops, "\n"))
	}
}

// sameMomentPlaylists fetches the media playlists of every node for the
// same update: a blocking request for the part after the origin's newest,
// sent to all at once, answered by each once it has that part. It retries
// when a node's answer already lists a later part.
func sameMomentPlaylists(t *testing.T, ctx context.Context, c *http.Client, nodes []*meshNode) []*mediaPlaylist {
	t.Helper()
	for attempt := 1; ; attempt++ {
		cur := getPlaylist(t, ctx, c, nodes[0].url("/live/test/media.m3u8"))
		msn, part, ok := cur.nextPart()
		if !ok {
			t.Fatalf("origin playlist lists no parts:\n%s", cur.Raw)
		}
		out := make([]*mediaPlaylist, len(nodes))
		errs := make([]error, len(nodes))
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Go(func() {
				url := blockingURL(n.url("/live/test/media.m3u8"), msn, part)
				r, err := httpGet(ctx, c, url)
				if err == nil && r.status != http.StatusOK {
					err = fmt.Errorf("GET %s: status %d: %s", url, r.status, truncate(r.body, 100))
				}
				if err == nil {
					out[i], err = parseMediaPlaylist(r.body)
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("%s: %v", nodes[i].nodeName, err)
			}
		}
		last := func(pl *mediaPlaylist) string { ps := pl.parts(); return ps[len(ps)-1].URI }
		same := true
		for _, pl := range out[1:] {
			same = same && last(pl) == last(out[0])
		}
		if same {
			return out
		}
		if attempt == 10 {
			var got []string
			for i, pl := range out {
				got = append(got, nodes[i].nodeName+": "+last(pl))
			}
			t.Fatalf("in 10 tries, never got the three playlists of one moment: newest parts %v", got)
		}
	}
}

// TestMeshFailoverKillMiddle SIGKILLs the middle of origin <- edge-1 <-
// edge-2 while a viewer follows edge-2's live edge: edge-2 must move to the
// origin without the viewer seeing an error, a missing or repeated part, or
// a jump in decode time.
func TestMeshFailoverKillMiddle(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	c := newHTTPClient(t)
	o, e1, e2 := startChain(t, ctx, c, 90)
	media := e2.url("/live/test/media.m3u8")
	pl := getPlaylist(t, ctx, c, media)
	tracks := parseInit(t, mustGet(t, ctx, c, e2.url("/live/test/"+pl.complete()[0].Map)))
	videoID, audioID := videoAudioIDs(t, tracks)

	type gotPart struct {
		n     int64
		at    time.Time // when it arrived
		spans map[int]*trackSpan
	}
	var seq []gotPart
	var crashNanos atomic.Int64
	crashedAt := func() time.Time {
		if n := crashNanos.Load(); n != 0 {
			return time.Unix(0, n)
		}
		return time.Time{}
	}
	// take fetches the parts pl lists after the last one taken.
	take := func(pl *mediaPlaylist) int {
		all := pl.parts()
		from := 0
		if len(seq) > 0 {
			from = -1
			lastURI := fmt.Sprintf("part%d.m4s", seq[len(seq)-1].n)
			for i, p := range all {
				if p.URI == lastURI {
					from = i + 1
				}
			}
			if from < 0 {
				t.Fatalf("part %s, taken last, is no longer listed: the playlist skipped parts\n%s", lastURI, pl.Raw)
			}
		}
		for _, p := range all[from:] {
			r, err := httpGet(ctx, c, e2.url("/live/test/"+p.URI))
			if err != nil || r.status != http.StatusOK {
				t.Fatalf("GET %s on edge-2 (%s): status %d, err %v", p.URI, sinceCrash(crashedAt()), r.status, err)
			}
			sp, _, err := spans(r.body)
			if err != nil {
				t.Fatalf("part %s: %v", p.URI, err)
			}
			seq = append(seq, gotPart{n: partNum(p.URI), at: time.Now(), spans: sp})
		}
		return len(all) - from
	}
	// Start with the parts listed, then follow the live edge.
	take(pl)

	// Crash edge-1 while the viewer waits in a blocking reload.
	crashDone := make(chan struct{})
	go func() {
		defer close(crashDone)
		time.Sleep(3 * time.Second)
		crashNanos.Store(time.Now().UnixNano())
		e1.crash()
	}()
	t.Cleanup(func() { <-crashDone })
	blocked := 0
	var maxWait time.Duration // of the reloads that ended after the crash
	for crashedAt().IsZero() || time.Since(crashedAt()) < 8*time.Second {
		msn, part, _ := pl.nextPart()
		url := blockingURL(media, msn, part)
		start := time.Now()
		r, err := httpGet(ctx, c, url)
		wait := time.Since(start)
		if err != nil {
			t.Fatalf("GET %s (%s): %v", url, sinceCrash(crashedAt()), err)
		}
		if r.status != http.StatusOK {
			t.Fatalf("GET %s (%s, after %v): status %d: %s", url, sinceCrash(crashedAt()), wait, r.status, truncate(r.body, 100))
		}
		next, err := parseMediaPlaylist(r.body)
		if err != nil {
			t.Fatalf("GET %s: %v\n%s", url, err, r.body)
		}
		if take(next) == 0 {
			t.Fatalf("blocking reload %s answered without the requested part:\n%s", url, next.Raw)
		}
		if !crashedAt().IsZero() {
			maxWait = max(maxWait, wait)
		}
		blocked++
		pl = next
	}
	crash := crashedAt()
	t.Logf("SIGKILLed edge-1 (pid %d); followed %d parts through %d blocking reloads; the longest reload that ended after the crash took %v",
		e1.pid, len(seq), blocked, maxWait)

	// Every part, in order, none missing or repeated; each track's decode
	// time runs on across the crash.
	after := 0
	var stall time.Duration // longest wait between parts after the crash
	ends := map[int]uint64{}
	for i, p := range seq {
		if i > 0 && p.at.After(crash) {
			after++
			from := seq[i-1].at
			if from.Before(crash) {
				from = crash
			}
			stall = max(stall, p.at.Sub(from))
		}
		if i > 0 && p.n != seq[i-1].n+1 {
			t.Errorf("viewer got part %d after part %d (%s)", p.n, seq[i-1].n, sinceCrashAt(crash, p.at))
		}
		for _, id := range []int{videoID, audioID} {
			sp := p.spans[id]
			if sp == nil {
				t.Errorf("part %d has no track %d", p.n, id)
				continue
			}
			if end, ok := ends[id]; ok && sp.start != end {
				t.Errorf("part %d (%s): track %d starts at %d, the previous part ended at %d (%+.1f ms)",
					p.n, sinceCrashAt(crash, p.at), id, sp.start, end,
					float64(int64(sp.start)-int64(end))*1000/float64(tracks[id].TimeScale))
			}
			ends[id] = sp.end
		}
	}
	t.Logf("%d parts arrived in the 8 s after the crash; the longest wait for one was %v", after, stall)
	if after < 25 {
		t.Errorf("only %d parts arrived in the 8 s after the crash, want at least 25", after)
	}

	m := mustScrape(t, ctx, c, e2)
	if v := m.value(`relaymesh_upstream_switches_total{stream="test"}`); v < 1 {
		t.Errorf(`edge-2: relaymesh_upstream_switches_total{stream="test"} = %g, want >= 1`, v)
	}
	var moved bool
	for _, l := range e2.logLines("relaying stream", "stream=test") {
		moved = moved || strings.Contains(l, "upstream=origin")
	}
	if !moved {
		t.Errorf("edge-2's log does not name its new upstream, origin: %q", e2.logLines("stream=test"))
	}
	if lines := e2.logLines("upstream lost", "upstream=edge-1"); len(lines) == 0 {
		t.Errorf("edge-2 did not log losing edge-1")
	}
	// Whatever happened to edge-1's own feed, edge-2's feeds never dropped
	// a segment.
	requireNoRelayDrops(t, e1, "edge-2")
	requireNoRelayDrops(t, o, "edge-2")
	e2.stop(t)
	o.stop(t)
}

func sinceCrash(at time.Time) string { return sinceCrashAt(at, time.Now()) }

func sinceCrashAt(crash, t time.Time) string {
	switch {
	case crash.IsZero():
		return "before the crash"
	case t.Before(crash):
		return fmt.Sprintf("%.1f s before the crash", crash.Sub(t).Seconds())
	}
	return fmt.Sprintf("%.1f s after the crash", t.Sub(crash).Seconds())
}

// TestMeshWrongClusterKey starts an edge with another cluster key that
// joins the origin: it must stay alone, never serve the origin's stream, and
// never subscribe to it.
func TestMeshWrongClusterKey(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 90*time.Second)
	c := newHTTPClient(t)
	o := startMeshOrigin(t, "origin", testClusterKey)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 60)
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment on the origin", hasComplete(1))
	// A rightful edge joins and relays, so that the origin has a count of
	// members and subscribers to keep.
	good := startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr)
	waitHolders(t, ctx, c, o, "test", "origin", "edge-1")
	waitMembers(t, ctx, c, 2, o, good)

	bad := startMeshEdge(t, "edge-bad", "another-secret", o.meshAddr)
	// memberlist's first join and Run's retries (2 s, then 4 s) all fail.
	deadline := time.Now().Add(7 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		nodes, err := meshView(ctx, c, bad)
		if err != nil {
			t.Fatalf("edge-bad: %v", err)
		}
		if names := nodeNames(nodes); !slices.Equal(names, []string{"edge-bad"}) {
			t.Fatalf("edge-bad's /api/mesh lists %v: it joined with the wrong cluster key", names)
		}
		if nodes, err = meshView(ctx, c, o); err != nil {
			t.Fatalf("origin: %v", err)
		}
		if names := nodeNames(nodes); !slices.Equal(names, []string{"edge-1", "origin"}) {
			t.Fatalf("origin's /api/mesh lists %v, want edge-1 and origin only", names)
		}
		for _, n := range []*meshNode{bad, o} {
			want := map[*meshNode]float64{bad: 1, o: 2}[n]
			if v := mustScrape(t, ctx, c, n).value("relaymesh_mesh_members"); v != want {
				t.Fatalf("%s: relaymesh_mesh_members %g, want %g", n.nodeName, v, want)
			}
		}
		if i%3 == 0 {
			r, err := httpGet(ctx, c, bad.url("/live/test/index.m3u8"))
			if err != nil {
				t.Fatalf("edge-bad: GET index.m3u8: %v", err)
			}
			if r.status != http.StatusNotFound {
				t.Fatalf("edge-bad: GET /live/test/index.m3u8: status %d, want 404: %q", r.status, truncate(r.body, 100))
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, path := range []string{"/live/test/media.m3u8", "/live/test/index.m3u8"} {
		if r, err := httpGet(ctx, c, bad.url(path)); err != nil || r.status != http.StatusNotFound {
			t.Errorf("edge-bad: GET %s: status %d, err %v, want 404", path, r.status, err)
		}
	}
	m := mustScrape(t, ctx, c, o)
	if subs := m.labelled("relaymesh_relay_subscribers", "stream"); subs["test"] != 1 || len(subs) != 1 {
		t.Errorf("origin: relaymesh_relay_subscribers %v, want {test: 1} (edge-1 only)", subs)
	}
	if egress := m.labelled("relaymesh_relay_egress_bytes_total", "peer"); len(egress) != 1 || egress["edge-1"] <= 0 {
		t.Errorf("origin: relay egress %v, want to edge-1 only", egress)
	}
	if lines := o.logLines("edge-bad"); len(lines) > 0 {
		t.Errorf("origin's log names edge-bad, which should never have reached it: %q", lines)
	}
	if lines := bad.logLines("relaying stream"); len(lines) > 0 {
		t.Errorf("edge-bad relays: %q", lines)
	}
	bad.waitLog(t, 5*time.Second, "about failing to join", func(l string) bool {
		return strings.Contains(l, "could not join the mesh")
	})
	bad.stop(t)
	good.stop(t)
	o.stop(t)
}

// TestMeshNonLoopbackNeedsKey: an edge whose mesh listener is reachable
// from other hosts refuses to start without a cluster key.
func TestMeshNonLoopbackNeedsKey(t *testing.T) {
	t.Parallel()
	requireE2E(t)
	for _, args := range [][]string{
		// --http and --relay on free loopback ports, so that the outcome
		// cannot depend on the defaults (:8080, :7947) being free.
		{"edge", "--mesh", "0.0.0.0:0", "--join", "127.0.0.1:1", "--http", "127.0.0.1:0", "--relay", "127.0.0.1:0"},
		{"edge", "--mesh", "0.0.0.0:0", "--http", "127.0.0.1:0", "--relay", "127.0.0.1:0"},
	} {
		code, stdout, stderr := runCLI(t, nil, args...)
		if code == 0 {
			t.Errorf("relaymesh %q exited 0, want non-zero", args)
		}
		msg := strings.TrimSpace(stderr)
		if strings.Contains(msg, "\n") || !strings.Contains(msg, "--cluster-key") {
			t.Errorf("relaymesh %q: want one line mentioning --cluster-key, got %q", args, stderr)
		}
		if stdout != "" {
			t.Errorf("relaymesh %q: stdout should stay empty, got %q", args, stdout)
		}
		t.Logf("relaymesh %q: exit %d: %s", args, code, msg)
	}
}

// fanOutViewer is what one lightweight viewer saw.
type fanOutViewer struct {
	playlists, parts int
	plTime, partTime time.Duration
	problem          string // the first failure, if any
}

// runFanOutViewer plays base (…/live/test/) like an LL-HLS player: the
// multivariant playlist once, then blocking media playlist reloads for the
// next part, fetching each new newest part. It plays until window ends, and
// beyond it until it has fetched minParts parts or ctx ends: how fast a
// loaded machine serves is for the benchmarks, that every viewer progresses
// is for this test.
func runFanOutViewer(ctx, window context.Context, c *http.Client, base string, minParts int) fanOutViewer {
	var v fanOutViewer
	get := func(url string) (fetched, bool) {
		r, err := httpGet(ctx, c, url)
		if ctx.Err() != nil {
			return r, false
		}
		if err == nil && r.status != http.StatusOK {
			err = fmt.Errorf("status %d: %s", r.status, truncate(r.body, 80))
		}
		if err != nil {
			v.problem = fmt.Sprintf("GET %s: %v", url, err)
			return r, false
		}
		return r, true
	}
	r, ok := get(base + "index.m3u8")
	if !ok {
		return v
	}
	// The first variant is the node that answered: in a mesh, the others
	// are its fallback pathways, on other nodes.
	var media string
	for _, line := range strings.Split(string(r.body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		media = line
		if !strings.Contains(line, "://") {
			media = base + line
		}
		break
	}
	base = media[:strings.LastIndexByte(strings.Split(media, "?")[0], '/')+1] // parts are beside it
	if media == "" {
		v.problem = fmt.Sprintf("multivariant playlist names no media playlist: %q", r.body)
		return v
	}
	url := media
	lastURI := ""
	for ctx.Err() == nil && (window.Err() == nil || v.parts < minParts) {
		t0 := time.Now()
		r, ok := get(url)
		if !ok {
			return v
		}
		v.plTime += time.Since(t0)
		v.playlists++
		msn, idx, uri, ok := liveEdge(r.body)
		if !ok {
			v.problem = fmt.Sprintf("playlist lists no parts: %q", truncate(r.body, 200))
			return v
		}
		if uri != lastURI {
			t0 := time.Now()
			if _, ok := get(base + uri); !ok {
				return v
			}
			v.partTime += time.Since(t0)
			v.parts++
			lastURI = uri
		}
		url = fmt.Sprintf("%s&_HLS_msn=%d&_HLS_part=%d", media, msn, idx+1)
	}
	return v
}

// TestMeshFanOut puts 150 viewers on each of two edges: each edge counts
// them, and the origin sends each edge about one copy of the stream, never
// one per viewer.
func TestMeshFanOut(t *testing.T) {
	// Not parallel: 300 viewers and three daemons keep two cores busy.
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	c := newHTTPClient(t)
	o := startMeshOrigin(t, "origin", testClusterKey)
	// The edges start before the stream exists, so that neither pre-warms
	// it, and both are asked for it at once below: each then finds only the
	// origin holding it. (An edge that finds the other edge holding it
	// relays through that edge, by design: the origin loses ties.)
	var e1, e2 *meshNode
	var wg sync.WaitGroup
	wg.Go(func() { e1 = startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr) })
	wg.Go(func() { e2 = startMeshEdge(t, "edge-2", testClusterKey, o.meshAddr) })
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	edges := []*meshNode{e1, e2}
	waitMembers(t, ctx, c, 3, o, e1, e2)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 60)
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment on the origin", hasComplete(1))
	release := make(chan struct{})
	for _, e := range edges {
		wg.Go(func() {
			<-release
			r, err := httpGet(ctx, c, e.url("/live/test/index.m3u8"))
			if err != nil || r.status != http.StatusOK {
				t.Errorf("%s: first GET index.m3u8: status %d, err %v", e.nodeName, r.status, err)
			}
		})
	}
	close(release)
	wg.Wait()
	waitHolders(t, ctx, c, o, "test", "origin", "edge-1", "edge-2")
	for _, e := range edges {
		if lines := e.logLines("relaying stream", "stream=test"); len(lines) != 1 || !strings.Contains(lines[0], "upstream=origin") {
			t.Fatalf("%s should relay test from the origin; its log says %q", e.nodeName, lines)
		}
	}

	// 150 viewers per edge for 10 s, on one shared transport. A viewer
	// that has fetched fewer than minParts parts by then goes on until it
	// has, within the test's deadline.
	const perEdge, minParts = 150, 5
	tr := &http.Transport{
		MaxIdleConns: 2 * perEdge * 2, MaxIdleConnsPerHost: 2 * perEdge,
		DisableCompression: true, ResponseHeaderTimeout: 20 * time.Second,
	}
	t.Cleanup(tr.CloseIdleConnections)
	vc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	vctx, stopViewers := context.WithTimeout(ctx, 10*time.Second)
	defer stopViewers()
	results := make([][]fanOutViewer, len(edges))
	var started atomic.Int64
	var vwg sync.WaitGroup
	for i, e := range edges {
		results[i] = make([]fanOutViewer, perEdge)
		for j := range perEdge {
			vwg.Go(func() {
				// Arrive over the first second, not all at once.
				select {
				case <-time.After(time.Duration(j) * time.Second / perEdge):
				case <-vctx.Done():
					return
				}
				started.Add(1)
				results[i][j] = runFanOutViewer(ctx, vctx, vc, e.url("/live/test/"), minParts)
			})
		}
	}

	// While they watch: each edge counts its viewers, and the origin's
	// egress to each edge over a few seconds is about one copy of what the
	// stream carried meanwhile.
	time.Sleep(3 * time.Second)
	for _, e := range edges {
		v := mustScrape(t, ctx, c, e).value(`relaymesh_viewers{stream="test"}`)
		if v < 140 || v > 160 {
			t.Errorf(`%s: relaymesh_viewers{stream="test"} = %g with %d viewers, want 140..160`, e.nodeName, v, perEdge)
		}
	}
	media := o.url("/live/test/media.m3u8")
	pl := getPlaylist(t, ctx, c, media)
	pl = nextPlaylist(t, ctx, c, media, pl)
	before := mustScrape(t, ctx, c, o)
	ps := pl.parts()
	first := partNum(ps[len(ps)-1].URI) // parts after this one are in the window
	windowStart := time.Now()
	for time.Since(windowStart) < 4*time.Second {
		pl = nextPlaylist(t, ctx, c, media, pl)
	}
	after := mustScrape(t, ctx, c, o)
	window := time.Since(windowStart)
	ps = pl.parts()
	last := partNum(ps[len(ps)-1].URI)
	var streamBytes int
	for n := first + 1; n <= last; n++ {
		streamBytes += len(mustGet(t, ctx, c, o.url(fmt.Sprintf("/live/test/part%d.m4s", n))))
	}
	t.Logf("window %.1f s: parts %d..%d, %d bytes of media", window.Seconds(), first+1, last, streamBytes)
	if subs := after.labelled("relaymesh_relay_subscribers", "stream"); subs["test"] != 2 || len(subs) != 1 {
		t.Errorf("origin: relaymesh_relay_subscribers %v, want {test: 2}", subs)
	}
	egB, egA := before.labelled("relaymesh_relay_egress_bytes_total", "peer"), after.labelled("relaymesh_relay_egress_bytes_total", "peer")
	if len(egA) != 2 {
		t.Errorf("origin: relay egress to %v, want edge-1 and edge-2", egA)
	}
	for _, e := range edges {
		sent := egA[e.nodeName] - egB[e.nodeName]
		ratio := sent / float64(streamBytes)
		t.Logf("origin -> %s: %.0f bytes in the window, %.2f copies of the stream", e.nodeName, sent, ratio)
		if ratio < 0.5 || ratio > 1.5 {
			t.Errorf("origin sent %s %.0f bytes while the stream carried %d: %.2f copies, want 0.5..1.5 (one per edge, not per viewer)",
				e.nodeName, sent, streamBytes, ratio)
		}
	}

	vwg.Wait()
	for i, e := range edges {
		var playlists, parts, failed, few int
		var plT, paT time.Duration
		fewest := -1
		var problems []string
		for _, v := range results[i] {
			playlists += v.playlists
			plT += v.plTime
			paT += v.partTime
			parts += v.parts
			if v.problem != "" {
				failed++
				if len(problems) < 5 {
					problems = append(problems, v.problem)
				}
			}
			if v.parts < minParts {
				few++
			}
			if fewest < 0 || v.parts < fewest {
				fewest = v.parts
			}
		}
		t.Logf("%s: %d viewers made %d playlist requests (%v each on average) and fetched %d parts (%v each), %d at least",
			e.nodeName, perEdge, playlists, plT/time.Duration(max(playlists, 1)), parts, paT/time.Duration(max(parts, 1)), fewest)
		if failed > 0 {
			t.Errorf("%s: %d of %d viewers failed, e.g. %q", e.nodeName, failed, perEdge, problems)
		}
		if few > 0 {
			t.Errorf("%s: %d of %d viewers fetched fewer than %d parts before the test's deadline", e.nodeName, few, perEdge, minParts)
		}
	}
	for _, e := range edges {
		e.stop(t)
	}
	o.stop(t)
}

// TestShieldPullsThroughParent: edge-2 has --parent edge-1, and neither
// holds the stream when edge-2 gets a viewer. edge-2 subscribes to edge-1
// anyway, which pulls the stream from the origin: the shield tier stands
// between its children and the origin, which feeds one node.
func TestShieldPullsThroughParent(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 90*time.Second)
	c := newHTTPClient(t)
	o := startMeshOrigin(t, "origin", testClusterKey)
	e1 := startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr, "--prewarm", "0")
	e2 := startMeshEdge(t, "edge-2", testClusterKey, o.meshAddr, "--prewarm", "0", "--parent", "edge-1")
	waitMembers(t, ctx, c, 3, o, e1, e2)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 60)
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment on the origin", hasComplete(1))
	waitHolders(t, ctx, c, e2, "test", "origin")

	waitPlaylist(t, ctx, c, e2.url("/live/test/media.m3u8"), "a complete segment on edge-2", hasComplete(1))
	if lines := e2.logLines("relaying stream", "stream=test"); len(lines) != 1 || !strings.Contains(lines[0], "upstream=edge-1") {
		t.Errorf("edge-2 should relay test through its parent edge-1; its log says %q", lines)
	}
	if lines := e1.logLines("relaying stream", "stream=test"); len(lines) != 1 || !strings.Contains(lines[0], "upstream=origin") {
		t.Errorf("edge-1 should relay test from the origin; its log says %q", lines)
	}
	m := mustScrape(t, ctx, c, o)
	if subs := m.labelled("relaymesh_relay_subscribers", "stream"); subs["test"] != 1 {
		t.Errorf("origin: relaymesh_relay_subscribers %v, want {test: 1} (edge-1 only)", subs)
	}
	if egress := m.labelled("relaymesh_relay_egress_bytes_total", "peer"); len(egress) != 1 || egress["edge-1"] == 0 {
		t.Errorf("origin: relay egress %v, want to edge-1 only", egress)
	}
	s := playAndCheck(t, e2.url("/live/test/index.m3u8"), 4*time.Second, 45*time.Second)
	t.Logf("gohlslib on edge-2 through the shield: %d parts", len(s.parts))
}
