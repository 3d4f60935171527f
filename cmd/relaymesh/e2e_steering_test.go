package main

// End-to-end tests of viewer routing: content steering with hls.js in
// Chromium, 302 redirects for players that do not steer (gohlslib,
// ffprobe), capacity, drain and the loss of an edge. Nodes are separate
// relaymesh processes on loopback, as in e2e_mesh_test.go.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// steeringTTL is the --steering-ttl of these tests' nodes.
const steeringTTL = 2 * time.Second

var steerFlags = []string{"--steering-ttl", steeringTTL.String()}

// steeringAnswer is a steering manifest as a player reads it.
type steeringAnswer struct {
	Version  int      `json:"VERSION"`
	TTL      int      `json:"TTL"`
	Reload   string   `json:"RELOAD-URI"`
	Priority []string `json:"PATHWAY-PRIORITY"`
	Clones   []struct {
		BaseID      string `json:"BASE-ID"`
		ID          string `json:"ID"`
		Replacement struct {
			Host       string            `json:"HOST"`
			PerVariant map[string]string `json:"PER-VARIANT-URIS"`
		} `json:"URI-REPLACEMENT"`
	} `json:"PATHWAY-CLONES"`
}

// steeringOf asks node n where a viewer playing from pathway should go.
func steeringOf(ctx context.Context, c *http.Client, n *meshNode, session, pathway string) (*steeringAnswer, error) {
	r, err := httpGet(ctx, c, n.url(fmt.Sprintf("/live/test/steering.json?rmsid=%s&_HLS_pathway=%s", session, pathway)))
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("steering.json: status %d: %s", r.status, truncate(r.body, 100))
	}
	var a steeringAnswer
	if err := json.Unmarshal(r.body, &a); err != nil {
		return nil, fmt.Errorf("steering.json: %v: %s", err, truncate(r.body, 200))
	}
	return &a, nil
}

// waitReadyz waits until n's /readyz answers 200.
func waitReadyz(t *testing.T, ctx context.Context, c *http.Client, n *meshNode) {
	t.Helper()
	eventually(t, ctx, 20*time.Second, n.nodeName+" /readyz 200", func() (bool, string) {
		r, err := httpGet(ctx, c, n.url("/readyz"))
		if err != nil {
			return false, err.Error()
		}
		return r.status == http.StatusOK, fmt.Sprintf("status %d %s", r.status, truncate(r.body, 40))
	})
}

// waitSteers waits until steering at n lists every node of want for a
// viewer on pathway (in any order).
func waitSteers(t *testing.T, ctx context.Context, c *http.Client, n *meshNode, pathway string, want ...string) {
	t.Helper()
	eventually(t, ctx, 20*time.Second, fmt.Sprintf("steering at %s to list %v", n.nodeName, want), func() (bool, string) {
		a, err := steeringOf(ctx, c, n, "00000000000000aa", pathway)
		if err != nil {
			return false, err.Error()
		}
		got := slices.Clone(a.Priority)
		slices.Sort(got)
		w := slices.Clone(want)
		slices.Sort(w)
		return slices.Equal(got, w), fmt.Sprintf("PATHWAY-PRIORITY %v", a.Priority)
	})
}

// exitedCleanly asserts that n exits 0 within limit without being told
// to, and that its log says why, and marks it stopped.
func (n *meshNode) exitedCleanly(t *testing.T, limit time.Duration, logged string) {
	t.Helper()
	n.stopOnce.Do(func() {
		if !n.waitExit(limit) {
			t.Errorf("%s did not exit within %v", n.nodeName, limit)
			n.kill()
			return
		}
		if code := n.exitCode(); code != 0 {
			t.Errorf("%s exited with status %d, want 0", n.nodeName, code)
		}
		if !strings.Contains(n.stderr.String(), logged) {
			t.Errorf("%s exited without logging %q", n.nodeName, logged)
		}
	})
}

// watchPlayer samples the page's stats every 100 ms until done says so or
// limit passes; it fails the test on a fatal player error.
func watchPlayer(t *testing.T, b *browser, limit time.Duration, done func(*playerStats) bool) *playerStats {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		s := b.mustStats(t)
		if len(s.FatalErrors) > 0 {
			t.Fatalf("fatal player error: %v", s)
		}
		if done(s) || time.Now().After(deadline) {
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSteeringBrowserDrainToNewEdge: hls.js in Chromium opens the player
// page on the origin, is sent to edge-1 (the origin offloads to edges) and
// plays there through steering. edge-2 starts while it plays, which the
// viewer's multivariant playlist never listed. edge-1 is then drained with
// `relaymesh drain`: the player moves to edge-2, which it learned of
// through a pathway clone, without a stall, and edge-1 exits 0 once its
// viewer has gone.
func TestSteeringBrowserDrainToNewEdge(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	requireChromium(t)
	ctx := testContext(t, 120*time.Second)
	c := newHTTPClient(t)
	o := startMeshOrigin(t, "origin", testClusterKey, steerFlags...)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 100)
	e1 := startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr, steerFlags...)
	b := startBrowser(t)
	waitMembers(t, ctx, c, 2, o, e1)
	waitReadyz(t, ctx, c, e1)
	waitSteers(t, ctx, c, o, "origin", "edge-1", "origin")
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment on the origin", hasComplete(1))

	p := playInBrowser(t, b, o.url("/live/test/"), browserStartLimit, 3*time.Second)
	logPlayback(t, "chromium steered from the origin", p)
	for _, problem := range browserProblems(p, "640x360") {
		t.Error(problem)
	}
	s := watchPlayer(t, b, 10*time.Second, func(s *playerStats) bool { return s.SteeringLoads > 0 })
	if s.Pathway != "edge-1" || s.Host != e1.httpAddr || s.SteeringLoads == 0 {
		t.Fatalf("the player should play from edge-1 (%s) through steering: %v", e1.httpAddr, s)
	}

	e2 := startMeshEdge(t, "edge-2", testClusterKey, o.meshAddr, steerFlags...)
	waitReadyz(t, ctx, c, e2)
	waitSteers(t, ctx, c, o, "edge-1", "edge-1", "edge-2", "origin")
	// Let the player load a steering manifest that names edge-2.
	loads := b.mustStats(t).SteeringLoads
	watchPlayer(t, b, 3*steeringTTL+2*time.Second, func(s *playerStats) bool { return s.SteeringLoads >= loads+1 })

	before := b.mustStats(t)
	code, out, errOut := runCLI(t, nil, "drain", "--api", e1.url(""))
	if code != 0 || !strings.Contains(out, "edge-1 draining") {
		t.Fatalf("relaymesh drain: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	t.Logf("relaymesh drain: %s", strings.TrimSpace(out))
	drained := time.Now()
	s = watchPlayer(t, b, 4*steeringTTL+10*time.Second, func(s *playerStats) bool {
		return s.Host == e2.httpAddr && s.Hosts[e2.httpAddr] >= 3
	})
	moved := time.Since(drained)
	if s.Host != e2.httpAddr || s.Pathway != "edge-2" {
		t.Fatalf("after draining edge-1 the player should play from edge-2 (%s): %v", e2.httpAddr, s)
	}
	t.Logf("the player fetched parts from edge-2 %v after the drain began (steering TTL %v)", moved.Round(10*time.Millisecond), steeringTTL)
	if r, _ := httpGet(ctx, c, e1.url("/readyz")); r.status != http.StatusServiceUnavailable {
		t.Errorf("edge-1 /readyz answered %d while draining, want 503", r.status)
	}
	e1.exitedCleanly(t, 20*time.Second, "drained: no viewers")
	s = watchPlayer(t, b, 3*time.Second, func(*playerStats) bool { return false })
	if s.Waiting != before.Waiting || !s.Playing || s.CurrentTime < before.CurrentTime+2 {
		t.Errorf("the player stalled or stopped while moving: before %v, after %v", before, s)
	}
	if s.Hosts[o.httpAddr] != 0 {
		t.Errorf("the player fetched media from the origin, which should have offloaded it: %v", s.Hosts)
	}
}

// TestSteeringBrowserEdgeKilled: hls.js plays edge-1 through steering and
// edge-1 is killed (SIGKILL). The player continues from its fallback
// pathway, edge-2, with at most one target duration of stall; the mesh
// drops edge-1 from every PATHWAY-PRIORITY once memberlist declares it
// dead.
func TestSteeringBrowserEdgeKilled(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	requireChromium(t)
	ctx := testContext(t, 120*time.Second)
	c := newHTTPClient(t)
	o := startMeshOrigin(t, "origin", testClusterKey, steerFlags...)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 100)
	e1 := startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr, steerFlags...)
	e2 := startMeshEdge(t, "edge-2", testClusterKey, o.meshAddr, steerFlags...)
	b := startBrowser(t)
	waitMembers(t, ctx, c, 3, o, e1, e2)
	waitSteers(t, ctx, c, o, "origin", "edge-1", "edge-2", "origin")
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment on the origin", hasComplete(1))

	// Enter at the edge that will die: it serves, being an edge with room.
	// ?debug keeps hls.js's log, printed if the test fails.
	p := playInBrowser(t, b, e1.url("/live/test/?debug"), browserStartLimit, 3*time.Second)
	for _, problem := range browserProblems(p, "640x360") {
		t.Error(problem)
	}
	s := watchPlayer(t, b, 10*time.Second, func(s *playerStats) bool { return s.SteeringLoads > 0 })
	if s.Pathway != "edge-1" || s.Host != e1.httpAddr {
		t.Fatalf("the player should play from edge-1 (%s): %v", e1.httpAddr, s)
	}
	before := s
	e1.crash()
	killed := time.Now()
	s = watchPlayer(t, b, 20*time.Second, func(s *playerStats) bool {
		return s.Host != e1.httpAddr && s.Hosts[s.Host] >= 3
	})
	if s.Host != e2.httpAddr {
		t.Fatalf("after edge-1 died the player should play from edge-2 (%s), the edge that has room: %v", e2.httpAddr, s)
	}
	t.Logf("the player fetched parts from %s %v after edge-1 was killed", s.Pathway, time.Since(killed).Round(10*time.Millisecond))

	// Steering forgets edge-1 once memberlist has declared it dead.
	eventually(t, ctx, 15*time.Second, "edge-1 gone from PATHWAY-PRIORITY", func() (bool, string) {
		a, err := steeringOf(ctx, c, o, "00000000000000bb", "edge-1")
		if err != nil {
			return false, err.Error()
		}
		return !slices.Contains(a.Priority, "edge-1"), fmt.Sprintf("PATHWAY-PRIORITY %v", a.Priority)
	})
	t.Logf("edge-1 left PATHWAY-PRIORITY %v after the kill", time.Since(killed).Round(10*time.Millisecond))

	s = watchPlayer(t, b, 3*time.Second, func(*playerStats) bool { return false })
	stall := time.Duration((s.StalledMs - before.StalledMs) * float64(time.Millisecond))
	t.Logf("stalled %v (%d waiting events) while failing over; player errors %q", stall.Round(time.Millisecond), s.Waiting-before.Waiting, s.Errors)
	if stall > 2*time.Second { // one target duration
		t.Errorf("the player stalled %v failing over, want at most one target duration (2 s): %v", stall, s)
	}
	if !s.Playing || s.CurrentTime < before.CurrentTime+2 {
		t.Errorf("the player does not play after the failover: before %v, after %v", before, s)
	}
}

// TestSteeringRedirectsPlayersThatDoNotSteer: gohlslib and ffprobe, which
// do not steer, arrive at the origin and are redirected (302) to an edge
// with room. A viewer playing on edge-1 (--capacity 1) fills it:
// newcomers at the origin or at edge-1 are redirected to edge-2, and the
// playing viewer is never redirected mid-session.
func TestSteeringRedirectsPlayersThatDoNotSteer(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg", "ffprobe")
	ctx := testContext(t, 120*time.Second)
	c := newHTTPClient(t)
	o := startMeshOrigin(t, "origin", testClusterKey, steerFlags...)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 100)
	e1 := startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr, append([]string{"--capacity", "1"}, steerFlags...)...)
	e2 := startMeshEdge(t, "edge-2", testClusterKey, o.meshAddr, append([]string{"--capacity", "10"}, steerFlags...)...)
	waitMembers(t, ctx, c, 3, o, e1, e2)
	waitSteers(t, ctx, c, o, "origin", "edge-1", "edge-2", "origin")
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment on the origin", hasComplete(1))
	edges := map[string]*meshNode{e1.httpAddr: e1, e2.httpAddr: e2}

	// gohlslib plays through the origin's 302, from an edge.
	st := playGohlslib(t, o.url("/live/test/index.m3u8"), 4*time.Second, 45*time.Second)
	for _, problem := range playbackProblems(st, 4*time.Second) {
		t.Errorf("gohlslib via the origin: %s", problem)
	}
	if hosts := partHosts(st.parts); len(hosts) != 1 || edges[hosts[0]] == nil {
		t.Errorf("gohlslib fetched parts from %v, want one edge", hosts)
	}
	// Its session ends a few seconds after its last request.
	waitViewers := func(n *meshNode, want float64) {
		t.Helper()
		eventually(t, ctx, 15*time.Second, fmt.Sprintf("%s to count %g viewers", n.nodeName, want), func() (bool, string) {
			v := mustScrape(t, ctx, c, n).value("relaymesh_node_viewers")
			return v == want, fmt.Sprintf("%g viewers", v)
		})
	}
	waitViewers(e1, 0)
	waitViewers(e2, 0)

	// A viewer that enters at edge-1 plays there for 15 s and fills it. Its
	// client follows a redirect of index.m3u8 only: a redirect of anything
	// later would show as a failure.
	vc := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if !strings.HasSuffix(via[0].URL.Path, "/index.m3u8") {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	window, stopViewer := context.WithTimeout(ctx, 15*time.Second)
	defer stopViewer()
	viewer := make(chan fanOutViewer, 1)
	go func() { viewer <- runFanOutViewer(ctx, window, vc, e1.url("/live/test/"), 20) }()
	waitViewers(e1, 1)
	// Gossip brings viewer counts every second: wait until the origin sees
	// edge-1 full.
	eventually(t, ctx, 10*time.Second, "the origin to see edge-1 full", func() (bool, string) {
		nodes, err := meshView(ctx, c, o)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range nodes {
			if n.Name == "edge-1" {
				return n.Viewers >= 1, fmt.Sprintf("edge-1 has %d viewers", n.Viewers)
			}
		}
		return false, "edge-1 is not in the mesh view"
	})

	// Newcomers, at the origin or at the full edge-1, go to edge-2.
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	for _, entry := range []*meshNode{o, e1} {
		resp, err := noFollow.Get(entry.url("/live/test/index.m3u8"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, e2.url("/live/test/index.m3u8")) {
			t.Errorf("%s index.m3u8 while edge-1 is full: %s Location %q, want a 302 to edge-2", entry.nodeName, resp.Status, loc)
		}
		checkProbe(t, ffprobe(t, ctx, entry.url("/live/test/index.m3u8")))
	}
	st = playGohlslib(t, e1.url("/live/test/index.m3u8"), 3*time.Second, 45*time.Second)
	if hosts := partHosts(st.parts); len(hosts) != 1 || hosts[0] != e2.httpAddr {
		t.Errorf("gohlslib arriving at the full edge-1 fetched parts from %v, want edge-2 (%s) only", hosts, e2.httpAddr)
	}

	v := <-viewer
	if v.problem != "" || v.parts < 20 {
		t.Errorf("the viewer on edge-1: %d parts, problem %q; want 20 parts and no redirect mid-session", v.parts, v.problem)
	}
	m := mustScrape(t, ctx, c, e1)
	if got := m.value(`relaymesh_viewer_decisions_total{decision="redirect",reason="full"}`); got < 3 {
		t.Errorf("edge-1 counted %g redirects for being full, want at least 3: %v", got, m.prefixed("relaymesh_viewer_decisions_total"))
	}
	if got := mustScrape(t, ctx, c, o).value(`relaymesh_viewer_decisions_total{decision="redirect",reason="offload"}`); got < 3 {
		t.Errorf("the origin counted %g offload redirects, want at least 3", got)
	}
}

// partHosts lists the host:port of every part URL, each once, sorted.
func partHosts(urls []string) []string {
	var out []string
	for _, u := range urls {
		rest, ok := strings.CutPrefix(u, "http://")
		if !ok {
			continue
		}
		host, _, _ := strings.Cut(rest, "/")
		if !slices.Contains(out, host) {
			out = append(out, host)
		}
	}
	slices.Sort(out)
	return out
}

// TestDrainOnSIGTERM: SIGTERM drains a node: it says so at once (readyz,
// the mesh view), redirects new viewers, and exits 0 once it has no
// viewers left. A second SIGTERM stops a draining node at once. The drain
// API refuses a wrong token.
func TestDrainOnSIGTERM(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 90*time.Second)
	c := newHTTPClient(t)
	o := startMeshOrigin(t, "origin", testClusterKey, steerFlags...)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 80)
	e1 := startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr, append([]string{"--api-token", "s3cret"}, steerFlags...)...)
	e2 := startMeshEdge(t, "edge-2", testClusterKey, o.meshAddr, steerFlags...)
	waitMembers(t, ctx, c, 3, o, e1, e2)
	waitReadyz(t, ctx, c, e1)
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment on the origin", hasComplete(1))

	// The control API wants the token.
	for _, tok := range []string{"", "wrong"} {
		code, _, errOut := runCLI(t, nil, "drain", "--api", e1.url(""), "--api-token", tok)
		if code == 0 || !strings.Contains(errOut, "401") {
			t.Errorf("drain with token %q: exit %d, stderr %q; want a refusal naming 401", tok, code, errOut)
		}
	}
	if r, _ := httpGet(ctx, c, e1.url("/readyz")); r.status != http.StatusOK {
		t.Fatalf("edge-1 /readyz %d after refused drains, want 200", r.status)
	}

	// SIGTERM: edge-1 drains, tells the mesh, and exits 0 with nobody on it.
	if err := e1.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, 5*time.Second, "the origin to see edge-1 draining", func() (bool, string) {
		nodes, err := meshView(ctx, c, o)
		if err != nil {
			return false, err.Error()
		}
		for _, n := range nodes {
			if n.Name == "edge-1" {
				return n.State == "draining", "edge-1 is " + string(n.State)
			}
		}
		return false, "edge-1 not in the mesh view"
	})
	e1.exitedCleanly(t, 15*time.Second, "drained: no viewers")

	// A second SIGTERM stops a draining node at once, though a viewer is on it.
	r, err := httpGet(ctx, c, e2.url("/live/test/index.m3u8"))
	if err != nil || r.status != http.StatusOK {
		t.Fatalf("edge-2 index.m3u8: %d %v", r.status, err)
	}
	if _, err := httpGet(ctx, c, e2.url("/live/test/media.m3u8?rmsid=00000000000000cc")); err != nil {
		t.Fatal(err)
	}
	if err := e2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	e2.waitLog(t, 5*time.Second, "draining", func(line string) bool { return strings.Contains(line, "draining: new viewers") })
	// New viewers at a draining edge are sent elsewhere.
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := noFollow.Get(e2.url("/live/test/index.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), o.url("/")) {
		t.Errorf("draining edge-2 index.m3u8: %s Location %q, want a 302 to the origin, the only node left", resp.Status, resp.Header.Get("Location"))
	}
	if err := e2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	e2.exitedCleanly(t, 5*time.Second, "signal=terminated")
}

// viewersBin builds scripts/viewers, the steering-aware viewer swarm of
// the surge drill, once per test binary.
var viewersBin = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "relaymesh-viewers-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "viewers")
	out, err := exec.Command("go", "build", "-o", bin, "../../scripts/viewers").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build scripts/viewers: %v: %s", err, out)
	}
	return bin, nil
})

// swarmResult is the final report of scripts/viewers.
type swarmResult struct {
	Final       bool           `json:"final"`
	Viewers     int            `json:"viewers"`
	Stalls      int64          `json:"stalls"`
	Redirects   int64          `json:"redirects"`
	Switches    int64          `json:"switches"`
	MediaErrors int64          `json:"media_errors"`
	Skipped     int64          `json:"skipped_parts"`
	PeakHosts   map[string]int `json:"peak_hosts"`
}

// TestSteeringNewEdgeTakesShare: 40 steered viewers (scripts/viewers,
// which follows redirects and steering as hls.js does) arrive at the
// origin and play on edge-1. A fresh edge-2 starts: steering sends it a
// share of them, through a pathway clone, and none reloads its
// multivariant playlist (edge-2 never serves one) or stalls.
func TestSteeringNewEdgeTakesShare(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	bin, err := viewersBin()
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, 120*time.Second)
	c := newHTTPClient(t)
	capacity := append([]string{"--capacity", "100"}, steerFlags...)
	o := startMeshOrigin(t, "origin", testClusterKey, steerFlags...)
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 100)
	e1 := startMeshEdge(t, "edge-1", testClusterKey, o.meshAddr, capacity...)
	waitMembers(t, ctx, c, 2, o, e1)
	waitReadyz(t, ctx, c, e1)
	waitSteers(t, ctx, c, o, "origin", "edge-1", "origin")
	waitPlaylist(t, ctx, c, o.url("/live/test/media.m3u8"), "a complete segment on the origin", hasComplete(1))

	const viewers = 40
	out := filepath.Join(t.TempDir(), "viewers.jsonl")
	swarm := startProc(t, "viewers", nil, bin, "-entry", o.url("/live/test/index.m3u8"),
		"-start", strconv.Itoa(viewers), "-viewers", strconv.Itoa(viewers), "-ramp", "0s", "-duration", "35s", "-out", out)
	t.Cleanup(swarm.kill)
	eventually(t, ctx, 20*time.Second, "the viewers playing on edge-1", func() (bool, string) {
		v := mustScrape(t, ctx, c, e1).value("relaymesh_node_viewers")
		return v == viewers, fmt.Sprintf("%g viewers", v)
	})

	e2 := startMeshEdge(t, "edge-2", testClusterKey, o.meshAddr, capacity...)
	waitReadyz(t, ctx, c, e2)
	ready := time.Now()
	var first time.Duration
	eventually(t, ctx, 20*time.Second, "edge-2 to take a share of the viewers", func() (bool, string) {
		v := mustScrape(t, ctx, c, e2).value("relaymesh_node_viewers")
		if v > 0 && first == 0 {
			first = time.Since(ready)
		}
		return v >= viewers/5, fmt.Sprintf("%g viewers on edge-2", v)
	})
	t.Logf("edge-2's first steered viewer %v after it was ready; a fifth of them after %v (steering TTL %v)",
		first.Round(10*time.Millisecond), time.Since(ready).Round(10*time.Millisecond), steeringTTL)

	if !swarm.waitExit(60 * time.Second) {
		t.Fatal("scripts/viewers did not finish")
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	var res swarmResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil || !res.Final {
		t.Fatalf("scripts/viewers final report %q: %v", lines[len(lines)-1], err)
	}
	t.Logf("viewers: %+v", res)
	if res.Viewers != viewers || res.Stalls != 0 || res.MediaErrors != 0 || res.Skipped != 0 || res.Switches == 0 {
		t.Errorf("viewers: %+v; want %d viewers, no stall, error or skipped part, and some switches", res, viewers)
	}
	// Every viewer loaded one multivariant playlist, at the origin, which
	// redirected it; edge-2 served none: its viewers came by steering.
	if res.Redirects != viewers {
		t.Errorf("%d redirects, want one per viewer (%d)", res.Redirects, viewers)
	}
	m := mustScrape(t, ctx, c, e2)
	if d := m.prefixed(`relaymesh_viewer_decisions_total{decision="serve"`); len(d) != 0 {
		t.Errorf("edge-2 served multivariant playlists %v: a viewer reloaded one", d)
	}
}
