package main

// End-to-end tests of the end of a show: once the publisher has gone and
// --grace has passed, every node's playlist ends (EXT-X-ENDLIST), players
// stop cleanly, and a node never serves a stale window for ever.

import (
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2"
)

// endGrace is the --grace of these tests' nodes.
const endGrace = 2 * time.Second

// TestShowEndsEverywhere: an encoder publishes to the origin of a chain
// origin <- edge-1 <- edge-2 and stops. After the grace period every
// node's media playlist carries EXT-X-ENDLIST within about a second, hls.js
// on edge-2 plays to the end and the page says the show has ended, and
// gohlslib stops. (It cannot end cleanly: its low-latency loop, in 2.2.5
// and still in 2.4.3, has no way out but an error: it waits on each
// preload hint, and a hinted part of an ended show never comes (404);
// given a playlist without a hint it reports "preload hint disappeared".
// It must stop rather than hang.) ffmpeg opens the ended show,
// reads it to its end and exits 0.
// A new show under the same name is a new playlist, and the page starts it.
func TestShowEndsEverywhere(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	requireChromium(t)
	ctx := testContext(t, 120*time.Second)
	c := newHTTPClient(t)
	grace := []string{"--grace", endGrace.String()}
	o := startMeshOrigin(t, "origin", testClusterKey, grace...)
	enc := startPublisher(t, "ffmpeg", o.rtmpURL("test"), 14)
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment on the origin", hasComplete(1))
	e1 := startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr, grace...)
	waitPlaylist(t, ctx, c, e1.url("/live/test/media.m3u8"), "a complete segment on edge-1", hasComplete(1))
	waitHolders(t, ctx, c, o, "test", "origin", "edge-1")
	e2 := startMeshEdge(t, "edge-2", testClusterKey, o.meshAddr, append([]string{"--parent", "edge-1"}, grace...)...)
	waitPlaylist(t, ctx, c, e2.url("/live/test/media.m3u8"), "a complete segment on edge-2", hasComplete(1))
	nodes := []*meshNode{o, e1, e2}

	b := startBrowser(t)
	p := playInBrowser(t, b, e2.url("/live/test/"), browserStartLimit, 2*time.Second)
	for _, problem := range browserProblems(p, "640x360") {
		t.Error(problem)
	}

	var gmu sync.Mutex
	var fetched []string // what gohlslib downloaded, for the failure message
	seen := func(u string) {
		gmu.Lock()
		defer gmu.Unlock()
		fetched = append(fetched, u)
	}
	g := &gohlslib.Client{
		URI: e1.url("/live/test/index.m3u8"), HTTPClient: &http.Client{Timeout: 20 * time.Second},
		OnDownloadStreamPlaylist: seen, OnDownloadSegment: seen, OnDownloadPart: seen,
	}
	g.OnTracks = func([]*gohlslib.Track) error { return nil }
	if err := g.Start(); err != nil {
		t.Fatalf("gohlslib: %v", err)
	}
	defer g.Close()
	gohlsDone := make(chan error, 1)
	go func() { gohlsDone <- g.Wait2() }()

	if !enc.waitExit(30 * time.Second) {
		t.Fatal("the encoder did not finish")
	}
	stopped := time.Now()
	var wg sync.WaitGroup
	ended := make([]time.Duration, len(nodes))
	for i, n := range nodes {
		wg.Go(func() {
			for time.Since(stopped) < 15*time.Second {
				if r, err := httpGet(ctx, c, n.url("/live/test/media.m3u8")); err == nil &&
					r.status == http.StatusOK && strings.HasSuffix(string(r.body), "#EXT-X-ENDLIST\n") {
					ended[i] = time.Since(stopped)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	var got []string
	for i, n := range nodes {
		got = append(got, fmt.Sprintf("%s %v", n.nodeName, ended[i].Round(10*time.Millisecond)))
		// The grace period counts from the publisher's last frame; allow
		// for ffmpeg's exit after it and for a loaded machine.
		if ended[i] == 0 || ended[i] > endGrace+3*time.Second {
			t.Errorf("%s: EXT-X-ENDLIST %v after the encoder stopped, want within the %v grace + about a second",
				n.nodeName, ended[i], endGrace)
		}
	}
	t.Logf("EXT-X-ENDLIST after the encoder stopped (grace %v): %s", endGrace, strings.Join(got, ", "))

	s := watchPlayer(t, b, 20*time.Second, func(s *playerStats) bool { return s.Ended })
	if !s.Ended || len(s.FatalErrors) > 0 {
		t.Errorf("the page should say the show ended, without a fatal error: %v", s)
	}
	if !strings.Contains(s.Status, "the show has ended") {
		t.Errorf("status line %q does not say the show has ended", s.Status)
	}
	select {
	case err := <-gohlsDone:
		gmu.Lock()
		last := fetched[max(len(fetched)-4, 0):]
		gmu.Unlock()
		t.Logf("gohlslib playing the live edge stopped with %q; its last downloads: %q", err, last)
	case <-time.After(20 * time.Second):
		t.Error("gohlslib playing the live edge did not stop after the show ended")
	}
	// ffmpeg, a player that does not follow hints, opens the ended show,
	// reads it to its end and exits 0.
	out, err := exec.CommandContext(ctx, "ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin",
		"-i", e2.url("/live/test/index.m3u8"), "-map", "0", "-c", "copy", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Errorf("ffmpeg reading the ended show: %v: %s", err, out)
	}
	// A new show under the same name is a new playlist, not the old one's
	// continuation, and the page picks it up.
	startPublisher(t, "ffmpeg again", o.rtmpURL("test"), 30)
	pl := waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "the new show on the origin", func(pl *mediaPlaylist) bool {
		return !strings.Contains(pl.Raw, "#EXT-X-ENDLIST") && hasComplete(1)(pl)
	})
	if strings.Contains(pl.Raw, "#EXT-X-ENDLIST") || strings.Contains(pl.Raw, "#EXT-X-DISCONTINUITY\n") {
		t.Errorf("the new show's playlist continues the old one:\n%s", pl.Raw)
	}
	s = watchPlayer(t, b, 30*time.Second, func(s *playerStats) bool { return !s.Ended && s.Playing })
	if s.Ended || !s.Playing {
		t.Errorf("the page did not pick up the new show: %v", s)
	}
}

// TestOrphanedEdgeEnds: the origin is killed (SIGKILL), so no end of show
// ever reaches the edge, and no other node holds the stream. The edge keeps
// its window for the grace period, in case the stream comes back, then ends
// the playlist itself rather than serve a stale window for ever.
func TestOrphanedEdgeEnds(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 90*time.Second)
	c := newHTTPClient(t)
	grace := []string{"--grace", endGrace.String()}
	o := startMeshOrigin(t, "origin", testClusterKey, grace...)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 60)
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment on the origin", hasComplete(1))
	e := startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr, grace...)
	waitPlaylist(t, ctx, c, e.url("/live/test/media.m3u8"), "a complete segment on the edge", hasComplete(1))

	o.crash()
	killed := time.Now()
	pl := waitPlaylist(t, ctx, c, e.url("/live/test/media.m3u8"), "EXT-X-ENDLIST on the orphaned edge", func(pl *mediaPlaylist) bool {
		return strings.HasSuffix(pl.Raw, "#EXT-X-ENDLIST\n")
	})
	el := time.Since(killed)
	t.Logf("the orphaned edge ended its playlist %v after the origin was killed (grace %v)", el.Round(10*time.Millisecond), endGrace)
	if el < endGrace {
		t.Errorf("the edge ended the playlist %v after losing the origin, before the %v grace", el, endGrace)
	}
	if len(pl.complete()) == 0 {
		t.Errorf("the ended playlist lists no segment:\n%s", pl.Raw)
	}
	e.requireAlive(t)
}
