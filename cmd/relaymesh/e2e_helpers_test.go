package main

// Helpers for the end-to-end tests in e2e_test.go: child processes
// (relaymesh, ffmpeg, ffprobe), HTTP fetches, an LL-HLS media playlist
// parser written from the spec, and a gohlslib player.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/relaymesh/relaymesh/internal/logbuf"
	"github.com/relaymesh/relaymesh/internal/m3u8attr"
)

// stopTimeout bounds how long relaymesh may take to exit after SIGINT.
const stopTimeout = 8 * time.Second

// requireE2E skips the calling test under -short (a quick local loop) and
// fails it when the media tools the suite drives are missing: the suite's
// point is to run real encoders and players.
func requireE2E(t *testing.T, tools ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	if relaymeshBin == "" {
		t.Fatal("TestMain did not build the relaymesh binary")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install ffmpeg): %v", tool, err)
		}
	}
}

// cleanEnv is the test's environment without RELAYMESH_* variables, so
// that a developer's settings cannot leak into the daemon under test.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "RELAYMESH_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// proc is a child process started by a test. Its output is kept and
// printed when the test fails.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout logbuf.Buffer
	stderr logbuf.Buffer
	done   chan struct{} // closed when the process has exited
	state  *os.ProcessState
}

func startProc(t *testing.T, name string, env []string, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = cleanEnv(env...)
	p.cmd.Stdout = &p.stdout
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait() //nolint:errcheck // the exit status is read from ProcessState
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- %s (pid %d) %s\n---- stderr:\n%s---- stdout:\n%s", name, p.cmd.Process.Pid,
				strings.Join(p.cmd.Args, " "), p.stderr.String(), p.stdout.String())
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to d for the process to exit.
func (p *proc) waitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// exitCode is the exit status, or -1 when a signal ended the process.
// Call it only after the process exited.
func (p *proc) exitCode() int { return p.state.ExitCode() }

// kill SIGKILLs this process (by its own PID) unless it has already
// exited, and reaps it.
func (p *proc) kill() {
	if !p.exited() {
		p.cmd.Process.Kill() //nolint:errcheck // it may exit on its own meanwhile
	}
	<-p.done
}

// daemon is a running relaymesh process.
type daemon struct {
	*proc
	httpAddr string // host:port of the viewer listener
	rtmpAddr string // host:port of RTMP ingest, "" if disabled
	pid      int
	stopOnce sync.Once
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// nodeArgs gives the command line and extra environment for a relaymesh
// process that should serve HTTP on httpAddr and RTMP on rtmpAddr.
type nodeArgs func(httpAddr, rtmpAddr string) (args, env []string)

// originArgs is `relaymesh origin` on the given addresses with every other
// listener disabled, plus extra flags.
func originArgs(extra ...string) nodeArgs {
	return func(h, r string) ([]string, []string) {
		args := []string{"origin", "--http", h, "--rtmp", r, "--srt", "", "--rtsp", "", "--mesh", "", "--relay", ""}
		return append(args, extra...), nil
	}
}

// startOrigin runs `relaymesh origin` on free loopback ports and waits
// until it answers /healthz. Cleanup stops it with SIGINT and asserts a
// clean exit.
func startOrigin(t *testing.T, extra ...string) *daemon {
	t.Helper()
	return startNode(t, "relaymesh origin", true, originArgs(extra...))
}

// startNode starts relaymesh with spec and waits for /healthz. Ports are
// picked free, closed and reused, so another process may grab one first:
// a start that fails with "address already in use" is retried on new ports.
func startNode(t *testing.T, name string, withRTMP bool, spec nodeArgs) *daemon {
	t.Helper()
	for attempt := 1; ; attempt++ {
		h, r := freeAddr(t), ""
		if withRTMP {
			r = freeAddr(t)
		}
		args, env := spec(h, r)
		p := startProc(t, name, env, relaymeshBin, args...)
		n := &daemon{proc: p, httpAddr: h, rtmpAddr: r, pid: p.cmd.Process.Pid}
		err := waitHealthy(p, h, 20*time.Second)
		if err == nil {
			t.Cleanup(func() { n.stop(t) })
			return n
		}
		p.kill()
		if attempt < 3 && strings.Contains(p.stderr.String(), "address already in use") {
			t.Logf("%s: port taken by someone else, retrying: %s", name, strings.TrimSpace(p.stderr.String()))
			continue
		}
		t.Fatalf("%s did not become healthy on %s: %v", name, h, err)
	}
}

// waitHealthy polls http://addr/healthz until it answers 200.
func waitHealthy(p *proc, addr string, limit time.Duration) error {
	c := &http.Client{Timeout: 2 * time.Second}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("process exited with status %d", p.exitCode())
		}
		resp, err := c.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("timed out after %v: %v", limit, last)
}

// stop sends SIGINT, which stops a node at once (SIGTERM drains it first,
// see TestDrain*), and asserts that the process exits 0 within
// stopTimeout, after logging that it stopped. It runs once.
func (n *daemon) stop(t *testing.T) {
	t.Helper()
	n.stopOnce.Do(func() {
		if n.exited() {
			t.Errorf("%s (pid %d) had already exited with status %d before it was told to stop", n.name, n.pid, n.exitCode())
			return
		}
		if err := n.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Errorf("SIGINT %s: %v", n.name, err)
		}
		if !n.waitExit(stopTimeout) {
			t.Errorf("%s (pid %d) did not exit within %v of SIGINT", n.name, n.pid, stopTimeout)
			n.kill()
			return
		}
		if code := n.exitCode(); code != 0 {
			t.Errorf("%s exited with status %d after SIGINT, want 0 (clean shutdown)", n.name, code)
		}
		stderr := n.stderr.String()
		if !strings.Contains(stderr, "msg=stopped") {
			t.Errorf("%s exited without logging msg=stopped", n.name)
		}
		if strings.Contains(stderr, "DATA RACE") {
			t.Errorf("%s reported a data race", n.name)
		}
	})
}

// requireAlive fails the test if the daemon has exited.
func (n *daemon) requireAlive(t *testing.T) {
	t.Helper()
	if n.exited() {
		t.Fatalf("%s (pid %d) exited unexpectedly with status %d", n.name, n.pid, n.exitCode())
	}
	if err := waitHealthy(n.proc, n.httpAddr, 5*time.Second); err != nil {
		t.Fatalf("%s (pid %d) no longer answers /healthz: %v", n.name, n.pid, err)
	}
}

func (n *daemon) url(path string) string { return "http://" + n.httpAddr + path }

func (n *daemon) rtmpURL(stream string) string { return "rtmp://" + n.rtmpAddr + "/live/" + stream }

// waitLog waits until the daemon's stderr has a line for which match is
// true, and returns it.
func (n *daemon) waitLog(t *testing.T, limit time.Duration, what string, match func(line string) bool) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		for _, line := range strings.Split(n.stderr.String(), "\n") {
			if match(line) {
				return line
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no log line %s within %v", n.name, what, limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// logLines returns the daemon's stderr lines that contain every one of subs.
func (n *daemon) logLines(subs ...string) []string {
	return n.stderr.Lines(subs...)
}

// publisherArgs is the ffmpeg command line of a test encoder: lavfi test
// pattern and tone, H.264 (2 s GOP, B-frames, no scene cuts) and AAC at
// real-time pace, pushed as FLV to dst for at most seconds.
func publisherArgs(dst string, seconds int) []string {
	return []string{
		"-hide_banner", "-nostdin", "-loglevel", "error",
		"-re", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds),
		"-map", "0:v:0", "-map", "1:a:0",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-bf", "2",
		"-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-x264-params", "scenecut=0",
		"-c:a", "aac", "-b:a", "64k", "-ar", "48000",
		"-f", "flv", dst,
	}
}

// startPublisher runs ffmpeg pushing the test stream to rtmpURL. Cleanup
// SIGKILLs it by its PID.
func startPublisher(t *testing.T, name, rtmpURL string, seconds int) *proc {
	t.Helper()
	p := startProc(t, name, nil, "ffmpeg", publisherArgs(rtmpURL, seconds)...)
	t.Cleanup(p.kill)
	return p
}

// fetched is one HTTP response, read whole.
type fetched struct {
	status int
	header http.Header
	body   []byte
}

func httpGet(ctx context.Context, c *http.Client, url string) (fetched, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fetched{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fetched{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fetched{}, fmt.Errorf("GET %s: read body: %w", url, err)
	}
	return fetched{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// mustGet fetches url and fails the test unless it answers 200.
func mustGet(t *testing.T, ctx context.Context, c *http.Client, url string) []byte {
	t.Helper()
	r, err := httpGet(ctx, c, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if r.status != http.StatusOK {
		t.Fatalf("GET %s: status %d, want 200: %q", url, r.status, truncate(r.body, 200))
	}
	return r.body
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// newHTTPClient returns a client whose idle connections are closed when
// the test ends. Its timeout outlasts a blocking playlist reload (three
// target durations).
func newHTTPClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 8, ResponseHeaderTimeout: 20 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// hlsPart is one EXT-X-PART.
type hlsPart struct {
	URI         string
	Duration    float64
	Independent bool
}

// hlsSegment is a media segment, or the open segment at the live edge
// whose parts are listed but which has no URI yet.
type hlsSegment struct {
	MSN           uint64
	URI           string // "" for the open segment
	Duration      float64
	Discontinuity bool
	Map           string
	Parts         []hlsPart
}

// mediaPlaylist is what the tests read out of a media playlist.
type mediaPlaylist struct {
	Raw            string
	TargetDuration int
	PartTarget     float64
	MediaSequence  uint64
	DiscSequence   uint64
	Skipped        uint64
	ServerControl  string
	Segments       []*hlsSegment
	PreloadPart    string
	PreloadMap     string
	Endlist        bool
}

// attrs parses an attribute list (RFC 8216 4.2), strictly.
func attrs(s string) (map[string]string, error) { return m3u8attr.Parse(s) }

// parseMediaPlaylist parses an LL-HLS media playlist, checking the rules a
// player relies on.
func parseMediaPlaylist(body []byte) (*mediaPlaylist, error) {
	pl := &mediaPlaylist{Raw: string(body)}
	lines := strings.Split(strings.TrimRight(string(body), "\n"), "\n")
	if len(lines) == 0 || lines[0] != "#EXTM3U" {
		return nil, fmt.Errorf("playlist does not start with #EXTM3U: %q", truncate(body, 80))
	}
	cur := &hlsSegment{}
	var curMap string
	var haveTD, haveMSN bool
	for _, line := range lines[1:] {
		tag, val, _ := strings.Cut(line, ":")
		var err error
		switch {
		case line == "":
		case tag == "#EXT-X-TARGETDURATION":
			pl.TargetDuration, err = strconv.Atoi(val)
			haveTD = true
		case tag == "#EXT-X-MEDIA-SEQUENCE":
			pl.MediaSequence, err = strconv.ParseUint(val, 10, 64)
			haveMSN = true
		case tag == "#EXT-X-DISCONTINUITY-SEQUENCE":
			pl.DiscSequence, err = strconv.ParseUint(val, 10, 64)
		case tag == "#EXT-X-SERVER-CONTROL":
			pl.ServerControl = val
		case tag == "#EXT-X-PART-INF":
			var a map[string]string
			if a, err = attrs(val); err == nil {
				pl.PartTarget, err = strconv.ParseFloat(a["PART-TARGET"], 64)
			}
		case tag == "#EXT-X-SKIP":
			var a map[string]string
			if a, err = attrs(val); err == nil {
				pl.Skipped, err = strconv.ParseUint(a["SKIPPED-SEGMENTS"], 10, 64)
			}
		case tag == "#EXT-X-MAP":
			var a map[string]string
			if a, err = attrs(val); err == nil {
				curMap = a["URI"]
			}
		case line == "#EXT-X-DISCONTINUITY":
			cur.Discontinuity = true
		case tag == "#EXT-X-PART":
			var a map[string]string
			if a, err = attrs(val); err == nil {
				p := hlsPart{URI: a["URI"], Independent: a["INDEPENDENT"] == "YES"}
				p.Duration, err = strconv.ParseFloat(a["DURATION"], 64)
				if p.URI == "" {
					err = errors.New("EXT-X-PART without URI")
				}
				cur.Parts = append(cur.Parts, p)
			}
		case tag == "#EXTINF":
			d, _, _ := strings.Cut(val, ",")
			cur.Duration, err = strconv.ParseFloat(d, 64)
		case tag == "#EXT-X-PRELOAD-HINT":
			var a map[string]string
			if a, err = attrs(val); err == nil {
				switch a["TYPE"] {
				case "PART":
					pl.PreloadPart = a["URI"]
				case "MAP":
					pl.PreloadMap = a["URI"]
				default:
					err = fmt.Errorf("preload hint of type %q", a["TYPE"])
				}
			}
		case line == "#EXT-X-ENDLIST":
			pl.Endlist = true
		case strings.HasPrefix(line, "#"):
			// other tags (version, date-time, ...) are not needed here
		default:
			cur.URI = line
			cur.Map = curMap
			cur.MSN = pl.MediaSequence + pl.Skipped + uint64(len(pl.Segments))
			pl.Segments = append(pl.Segments, cur)
			cur = &hlsSegment{}
		}
		if err != nil {
			return nil, fmt.Errorf("line %q: %w", line, err)
		}
	}
	if len(cur.Parts) > 0 || cur.Discontinuity {
		cur.Map = curMap
		cur.MSN = pl.MediaSequence + pl.Skipped + uint64(len(pl.Segments))
		pl.Segments = append(pl.Segments, cur)
	}
	if !haveTD || !haveMSN {
		return nil, errors.New("playlist lacks EXT-X-TARGETDURATION or EXT-X-MEDIA-SEQUENCE")
	}
	for _, s := range pl.Segments {
		if s.URI != "" && int(s.Duration+0.5) > pl.TargetDuration {
			return nil, fmt.Errorf("segment %d lasts %.3fs, beyond EXT-X-TARGETDURATION %d", s.MSN, s.Duration, pl.TargetDuration)
		}
		if s.URI != "" && s.Map == "" {
			return nil, fmt.Errorf("segment %d has no EXT-X-MAP", s.MSN)
		}
	}
	return pl, nil
}

// complete returns the complete segments (those with a URI).
func (pl *mediaPlaylist) complete() []*hlsSegment {
	var out []*hlsSegment
	for _, s := range pl.Segments {
		if s.URI != "" {
			out = append(out, s)
		}
	}
	return out
}

// lastMSN is the media sequence number of the newest segment listed,
// complete or open.
func (pl *mediaPlaylist) lastMSN() uint64 {
	if len(pl.Segments) == 0 {
		return pl.MediaSequence
	}
	return pl.Segments[len(pl.Segments)-1].MSN
}

// partRef is a part and where the playlist lists it.
type partRef struct {
	hlsPart
	MSN   uint64
	Index int
}

// parts lists every EXT-X-PART in order.
func (pl *mediaPlaylist) parts() []partRef {
	var out []partRef
	for _, s := range pl.Segments {
		for i, p := range s.Parts {
			out = append(out, partRef{p, s.MSN, i})
		}
	}
	return out
}

// nextPart is the _HLS_msn/_HLS_part pair of the part after the last one
// listed (RFC 8216bis 6.2.5.2: a part index past a segment's last part
// means the next segment's first).
func (pl *mediaPlaylist) nextPart() (msn uint64, part int, ok bool) {
	ps := pl.parts()
	if len(ps) == 0 {
		return 0, 0, false
	}
	last := ps[len(ps)-1]
	return last.MSN, last.Index + 1, true
}

func blockingURL(base string, msn uint64, part int) string {
	return fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=%d", base, msn, part)
}

// getPlaylist fetches and parses a media playlist, requiring 200.
func getPlaylist(t *testing.T, ctx context.Context, c *http.Client, url string) *mediaPlaylist {
	t.Helper()
	body := mustGet(t, ctx, c, url)
	pl, err := parseMediaPlaylist(body)
	if err != nil {
		t.Fatalf("GET %s: %v\n%s", url, err, body)
	}
	return pl
}

// waitPlaylist polls the media playlist (non-blocking requests) until ready
// accepts it. Non-200 answers are tolerated while waiting: the stream may
// not exist yet.
func waitPlaylist(t *testing.T, ctx context.Context, c *http.Client, url, what string, ready func(*mediaPlaylist) bool) *mediaPlaylist {
	t.Helper()
	var last string
	for {
		r, err := httpGet(ctx, c, url)
		switch {
		case err != nil:
			last = err.Error()
		case r.status != http.StatusOK:
			last = fmt.Sprintf("status %d: %s", r.status, truncate(r.body, 100))
		default:
			pl, err := parseMediaPlaylist(r.body)
			if err != nil {
				t.Fatalf("GET %s: %v\n%s", url, err, r.body)
			}
			if ready(pl) {
				return pl
			}
			last = "playlist not ready:\n" + pl.Raw
		}
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s at %s: %v; last answer: %s", what, url, ctx.Err(), last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// hasComplete is a waitPlaylist condition: at least n complete segments.
func hasComplete(n int) func(*mediaPlaylist) bool {
	return func(pl *mediaPlaylist) bool { return len(pl.complete()) >= n }
}

// parseInit reads the track IDs and time scales of an init segment.
func parseInit(t *testing.T, data []byte) map[int]*fmp4.InitTrack {
	t.Helper()
	var in fmp4.Init
	if err := in.Unmarshal(bytes.NewReader(data)); err != nil {
		t.Fatalf("parse init segment: %v", err)
	}
	tracks := map[int]*fmp4.InitTrack{}
	for _, tr := range in.Tracks {
		tracks[tr.ID] = tr
	}
	return tracks
}

// videoAudioIDs finds the H.264 and AAC tracks of an init segment.
func videoAudioIDs(t *testing.T, tracks map[int]*fmp4.InitTrack) (video, audio int) {
	t.Helper()
	for id, tr := range tracks {
		switch tr.Codec.(type) {
		case *mp4codecs.H264:
			video = id
		case *mp4codecs.MPEG4Audio:
			audio = id
		}
	}
	if video == 0 || audio == 0 || len(tracks) != 2 {
		t.Fatalf("init segment tracks %v: want one H.264 and one AAC track", tracks)
	}
	return video, audio
}

// trackSpan is the decode-time extent of one track in a part or segment.
type trackSpan struct {
	start, end uint64 // BaseTime of the first fragment, end of the last sample
	samples    int
	firstSync  bool
}

// spans parses CMAF fragments and returns each track's decode-time span,
// checking that fragments within data are themselves contiguous.
func spans(data []byte) (map[int]*trackSpan, fmp4.Parts, error) {
	var ps fmp4.Parts
	if err := ps.Unmarshal(data); err != nil {
		return nil, nil, err
	}
	out := map[int]*trackSpan{}
	for _, p := range ps {
		for _, pt := range p.Tracks {
			var dur uint64
			for _, s := range pt.Samples {
				dur += uint64(s.Duration)
			}
			sp := out[pt.ID]
			if sp == nil {
				sp = &trackSpan{start: pt.BaseTime, end: pt.BaseTime}
				if len(pt.Samples) > 0 {
					sp.firstSync = !pt.Samples[0].IsNonSyncSample
				}
				out[pt.ID] = sp
			}
			if pt.BaseTime != sp.end {
				return nil, nil, fmt.Errorf("track %d: fragment at %d, previous ended at %d", pt.ID, pt.BaseTime, sp.end)
			}
			sp.end = pt.BaseTime + dur
			sp.samples += len(pt.Samples)
		}
	}
	return out, ps, nil
}

// playStats is what a gohlslib client received.
type playStats struct {
	videoRate, audioRate int // track clock rates
	sampleRate           int // AAC sample rate
	width, height        int
	videoDTS, videoPTS   []int64
	audioPTS             []int64
	keyframes            int
	codecs               []string
	decodeErrors         []string
	parts                []string // URLs of the parts gohlslib downloaded, in order
}

func (s *playStats) videoSpan() time.Duration {
	if len(s.videoDTS) < 2 || s.videoRate == 0 {
		return 0
	}
	return ticks(s.videoDTS[len(s.videoDTS)-1]-s.videoDTS[0], s.videoRate)
}

func (s *playStats) audioSpan() time.Duration {
	if len(s.audioPTS) < 2 || s.audioRate == 0 {
		return 0
	}
	return ticks(s.audioPTS[len(s.audioPTS)-1]-s.audioPTS[0], s.audioRate)
}

func ticks(n int64, rate int) time.Duration {
	return time.Duration(n * int64(time.Second) / int64(rate))
}

// playGohlslib plays uri with gohlslib until it has received want of both
// video and audio, failing the test if the client errors or limit passes.
func playGohlslib(t *testing.T, uri string, want, limit time.Duration) *playStats {
	t.Helper()
	var mu sync.Mutex
	st := &playStats{}
	c := &gohlslib.Client{
		URI:                       uri,
		HTTPClient:                &http.Client{Timeout: 20 * time.Second},
		OnDownloadPrimaryPlaylist: func(string) {},
		OnDownloadStreamPlaylist:  func(string) {},
		OnDownloadSegment:         func(string) {},
		OnDownloadPart: func(u string) {
			mu.Lock()
			defer mu.Unlock()
			st.parts = append(st.parts, u)
		},
		OnDecodeError: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			st.decodeErrors = append(st.decodeErrors, err.Error())
		},
	}
	c.OnTracks = func(tracks []*gohlslib.Track) error {
		mu.Lock()
		defer mu.Unlock()
		for _, tr := range tracks {
			st.codecs = append(st.codecs, fmt.Sprintf("%T", tr.Codec))
			switch codec := tr.Codec.(type) {
			case *codecs.H264:
				var sps h264.SPS
				if err := sps.Unmarshal(codec.SPS); err != nil {
					return fmt.Errorf("H.264 SPS from the init segment: %w", err)
				}
				st.width, st.height, st.videoRate = sps.Width(), sps.Height(), tr.ClockRate
				c.OnDataH26x(tr, func(pts, dts int64, au [][]byte) {
					mu.Lock()
					defer mu.Unlock()
					st.videoDTS = append(st.videoDTS, dts)
					st.videoPTS = append(st.videoPTS, pts)
					if h264.IsRandomAccess(au) {
						st.keyframes++
					}
				})
			case *codecs.MPEG4Audio:
				st.audioRate, st.sampleRate = tr.ClockRate, codec.Config.SampleRate
				c.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) {
					mu.Lock()
					defer mu.Unlock()
					for i := range aus {
						// each AAC-LC access unit is 1024 samples
						st.audioPTS = append(st.audioPTS, pts+int64(i)*1024*int64(st.audioRate)/int64(st.sampleRate))
					}
				})
			}
		}
		return nil
	}
	snapshot := func() *playStats {
		mu.Lock()
		defer mu.Unlock()
		cp := *st
		cp.videoDTS = slices.Clone(st.videoDTS)
		cp.videoPTS = slices.Clone(st.videoPTS)
		cp.audioPTS = slices.Clone(st.audioPTS)
		cp.codecs = slices.Clone(st.codecs)
		cp.decodeErrors = slices.Clone(st.decodeErrors)
		cp.parts = slices.Clone(st.parts)
		return &cp
	}
	runGohlslib(t, c, limit, func() (bool, string) {
		s := snapshot()
		return s.videoSpan() >= want && s.audioSpan() >= want,
			fmt.Sprintf("%v video (%d frames) and %v audio (%d AUs)", s.videoSpan(), len(s.videoDTS), s.audioSpan(), len(s.audioPTS))
	})
	return snapshot()
}

// runGohlslib starts c and polls progress every 100 ms until it reports
// done, failing the test if the client stops or limit passes; progress
// also says how much has been played, for the failure message.
func runGohlslib(t *testing.T, c *gohlslib.Client, limit time.Duration, progress func() (done bool, got string)) {
	t.Helper()
	if err := c.Start(); err != nil {
		t.Fatalf("gohlslib start %s: %v", c.URI, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- c.Wait2() }()
	defer c.Close()
	deadline := time.After(limit)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-errc:
			_, got := progress()
			t.Fatalf("gohlslib stopped playing %s after %s: %v", c.URI, got, err)
		case <-deadline:
			_, got := progress()
			t.Fatalf("gohlslib got only %s of %s within %v", got, c.URI, limit)
		case <-tick.C:
			if done, _ := progress(); done {
				return
			}
		}
	}
}

// playbackProblems lists what is wrong with a gohlslib session: it must
// have H.264 640x360 and AAC 48 kHz, and both timelines must advance
// without gaps.
func playbackProblems(s *playStats, want time.Duration) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	codecs := slices.Clone(s.codecs)
	slices.Sort(codecs)
	if !slices.Equal(codecs, []string{"*codecs.H264", "*codecs.MPEG4Audio"}) {
		add("tracks %v, want H.264 and MPEG-4 Audio", s.codecs)
	}
	if s.width != 640 || s.height != 360 {
		add("video is %dx%d, want 640x360", s.width, s.height)
	}
	if s.sampleRate != 48000 {
		add("audio sample rate %d, want 48000", s.sampleRate)
	}
	if len(s.decodeErrors) > 0 {
		add("gohlslib decode errors: %v", s.decodeErrors)
	}
	// 30 fps and 48000/1024 AAC frames per second, with 10% slack for the
	// first and last frame of the span.
	if n, min := len(s.videoDTS), int(want.Seconds()*30*0.9); n < min {
		add("%d video frames, want at least %d for %v", n, min, want)
	}
	if n, min := len(s.audioPTS), int(want.Seconds()*48000/1024*0.9); n < min {
		add("%d audio AUs, want at least %d for %v", n, min, want)
	}
	if s.keyframes == 0 {
		add("no H.264 keyframe among %d frames (GOP is 2 s)", len(s.videoDTS))
	}
	const maxReports = 8
	maxVideoGap := int64(s.videoRate) / 10 // 100 ms
	for i := 1; i < len(s.videoDTS) && len(out) < maxReports; i++ {
		if d := s.videoDTS[i] - s.videoDTS[i-1]; d <= 0 || d > maxVideoGap {
			add("video DTS step %d -> %d (%v) at frame %d: want 0 < step <= 100ms",
				s.videoDTS[i-1], s.videoDTS[i], ticks(d, s.videoRate), i)
		}
	}
	for i := 0; i < len(s.videoDTS) && len(out) < maxReports; i++ {
		if s.videoPTS[i] < s.videoDTS[i] {
			add("frame %d: PTS %d before DTS %d", i, s.videoPTS[i], s.videoDTS[i])
		}
	}
	pts := slices.Clone(s.videoPTS)
	slices.Sort(pts)
	for i := 1; i < len(pts) && len(out) < maxReports; i++ {
		if d := pts[i] - pts[i-1]; d <= 0 || d > maxVideoGap {
			add("video PTS (presentation order) step %d -> %d (%v): want 0 < step <= 100ms",
				pts[i-1], pts[i], ticks(d, s.videoRate))
		}
	}
	maxAudioGap := int64(2 * 1024 * s.audioRate / max(s.sampleRate, 1)) // two AAC frames
	for i := 1; i < len(s.audioPTS) && len(out) < maxReports; i++ {
		if d := s.audioPTS[i] - s.audioPTS[i-1]; d <= 0 || d > maxAudioGap {
			add("audio PTS step %d -> %d (%v) at AU %d: want 0 < step <= 2 AAC frames",
				s.audioPTS[i-1], s.audioPTS[i], ticks(d, s.audioRate), i)
		}
	}
	return out
}

var partNumber = regexp.MustCompile(`/part(\d+)\.m4s$`)

// skippedParts lists part numbers gohlslib never downloaded between the
// first and last part it did. gohlslib follows the live edge by fetching
// the preload-hinted part, then reloading the playlist (without blocking)
// for the next hint; when two or more parts complete in between (an
// encoder catching up after a stall sends a burst), the later hint skips
// the parts in between and the client never asks for them. Parts are
// numbered consecutively by relaymesh, which is how the gap is seen here.
func skippedParts(urls []string) []int {
	var out []int
	prev := -1
	for _, u := range urls {
		m := partNumber.FindStringSubmatch(u)
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		for k := prev + 1; prev >= 0 && k < n; k++ {
			out = append(out, k)
		}
		prev = n
	}
	return out
}

// playAndCheck plays uri with gohlslib and asserts continuous H.264 and AAC
// (see playbackProblems). A session in which gohlslib itself skipped parts
// (see skippedParts) shows gaps that are the client's, not the server's: it
// is logged and played again, up to three times. Gaps with no skipped part
// fail at once.
func playAndCheck(t *testing.T, uri string, want, limit time.Duration) *playStats {
	t.Helper()
	const attempts = 3
	for attempt := 1; ; attempt++ {
		s := playGohlslib(t, uri, want, limit)
		problems := playbackProblems(s, want)
		if len(problems) == 0 {
			return s
		}
		skipped := skippedParts(s.parts)
		if len(skipped) == 0 || attempt == attempts {
			for _, p := range problems {
				t.Error(p)
			}
			if len(skipped) > 0 {
				t.Errorf("in each of %d sessions gohlslib skipped parts (this time %v): parts keep completing in bursts", attempts, skipped)
			}
			t.Logf("gohlslib downloaded parts %v", s.parts)
			return s
		}
		t.Logf("session %d: gohlslib skipped parts %v, so its media has gaps (%s); playing again", attempt, skipped, problems[0])
	}
}

// ffprobeStream is one stream of `ffprobe -show_streams -of json`.
type ffprobeStream struct {
	CodecType  string `json:"codec_type"`
	CodecName  string `json:"codec_name"`
	Width      int    `json:"width"`
	Height     int    `json:"height"`
	SampleRate string `json:"sample_rate"`
}

// ffprobe runs ffprobe on url and returns its streams.
func ffprobe(t *testing.T, ctx context.Context, url string) []ffprobeStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ffprobe", "-hide_banner", "-v", "error", "-rw_timeout", "15000000",
		"-show_streams", "-of", "json", url)
	cmd.Env = cleanEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", url, err, stderr.String())
	}
	var out struct {
		Streams []ffprobeStream `json:"streams"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("ffprobe %s: output is not JSON: %v\n%s", url, err, stdout.String())
	}
	return out.Streams
}

// checkProbe asserts ffprobe saw H.264 640x360 and AAC.
func checkProbe(t *testing.T, streams []ffprobeStream) {
	t.Helper()
	var video, audio bool
	for _, s := range streams {
		switch {
		case s.CodecType == "video" && s.CodecName == "h264":
			video = true
			if s.Width != 640 || s.Height != 360 {
				t.Errorf("ffprobe: h264 stream is %dx%d, want 640x360", s.Width, s.Height)
			}
		case s.CodecType == "audio" && s.CodecName == "aac":
			audio = true
			if s.SampleRate != "48000" {
				t.Errorf("ffprobe: aac stream at %s Hz, want 48000", s.SampleRate)
			}
		}
	}
	if !video || !audio {
		t.Errorf("ffprobe streams %+v: want an h264 and an aac stream", streams)
	}
}

// rawGet sends a hand-written GET request line, so that the target reaches
// the server exactly as written (Go's client would clean "..").
func rawGet(addr, target string) (status int, header http.Header, body string, err error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, nil, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second)) //nolint:errcheck
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, addr); err != nil {
		return 0, nil, "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return resp.StatusCode, resp.Header, string(b), nil
}

// nextPlaylist makes a blocking reload for the part after the last one
// prev lists, and requires that the answer lists it.
func nextPlaylist(t *testing.T, ctx context.Context, c *http.Client, media string, prev *mediaPlaylist) *mediaPlaylist {
	t.Helper()
	msn, part, ok := prev.nextPart()
	if !ok {
		t.Fatalf("playlist lists no parts:\n%s", prev.Raw)
	}
	url := blockingURL(media, msn, part)
	next := getPlaylist(t, ctx, c, url)
	ps := next.parts()
	if len(ps) == 0 {
		t.Fatalf("%s lists no parts:\n%s", url, next.Raw)
	}
	last := ps[len(ps)-1]
	if last.MSN < msn || (last.MSN == msn && last.Index < part) {
		t.Fatalf("blocking reload %s answered before the part was there:\n%s", url, next.Raw)
	}
	return next
}

// checkDeltaUpdate compares a Playlist Delta Update (_HLS_skip=YES) with
// the full playlist of the same moment: same header values, and the same
// segments once the skipped ones are taken off the front. Only segments
// further than CAN-SKIP-UNTIL from the end may be skipped.
// It returns how many segments the delta update skipped.
func checkDeltaUpdate(t *testing.T, ctx context.Context, c *http.Client, media string) (skipped uint64) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		cur := getPlaylist(t, ctx, c, media)
		ps := cur.parts()
		if len(ps) == 0 {
			t.Fatalf("playlist lists no parts:\n%s", cur.Raw)
		}
		// Blocking requests for a part that exists answer at once; asking
		// both for the same part makes a changed window visible.
		last := ps[len(ps)-1]
		url := blockingURL(media, last.MSN, last.Index)
		full := getPlaylist(t, ctx, c, url)
		delta := getPlaylist(t, ctx, c, url+"&_HLS_skip=YES")
		fp, dp := full.parts(), delta.parts()
		if fp[len(fp)-1].URI != dp[len(dp)-1].URI || full.MediaSequence != delta.MediaSequence {
			if attempt < 5 {
				continue // a part arrived between the two requests
			}
			t.Fatalf("could not get a full and a delta playlist of the same moment")
		}
		if full.Skipped != 0 {
			t.Errorf("full playlist has EXT-X-SKIP:\n%s", full.Raw)
		}
		if delta.DiscSequence != full.DiscSequence {
			t.Errorf("delta update has discontinuity sequence %d, full playlist %d", delta.DiscSequence, full.DiscSequence)
		}
		if delta.Skipped > uint64(len(full.Segments)) {
			t.Fatalf("delta update skips %d of %d segments", delta.Skipped, len(full.Segments))
		}
		if delta.Skipped > 0 && !strings.Contains(delta.Raw, "#EXT-X-VERSION:9") && !strings.Contains(delta.Raw, "#EXT-X-VERSION:1") {
			t.Errorf("delta update with EXT-X-SKIP must declare EXT-X-VERSION 9 or later:\n%s", delta.Raw)
		}
		tail := full.Segments[delta.Skipped:]
		if len(tail) != len(delta.Segments) {
			t.Fatalf("delta update lists %d segments after skipping %d; the full playlist has %d\nfull:\n%s\ndelta:\n%s",
				len(delta.Segments), delta.Skipped, len(full.Segments), full.Raw, delta.Raw)
		}
		for i, s := range delta.Segments {
			f := tail[i]
			if s.MSN != f.MSN || s.URI != f.URI || s.Discontinuity != f.Discontinuity || s.Map != f.Map || !slices.Equal(s.Parts, f.Parts) {
				t.Errorf("delta update segment %d (%+v) differs from the full playlist's (%+v)", s.MSN, *s, *f)
			}
		}
		var sw string
		for _, kv := range strings.Split(full.ServerControl, ",") {
			if v, ok := strings.CutPrefix(kv, "CAN-SKIP-UNTIL="); ok {
				sw = v
			}
		}
		skipUntil, err := strconv.ParseFloat(sw, 64)
		if err != nil {
			t.Fatalf("EXT-X-SERVER-CONTROL %q has no CAN-SKIP-UNTIL", full.ServerControl)
		}
		kept := 0.0
		for _, s := range tail {
			kept += s.Duration
		}
		if delta.Skipped > 0 && kept < skipUntil {
			t.Errorf("delta update skipped segments closer than CAN-SKIP-UNTIL=%gs to the end: only %.3fs kept", skipUntil, kept)
		}
		t.Logf("delta update skips %d of %d segments, keeps %.3fs", delta.Skipped, len(full.Segments), kept)
		return delta.Skipped
	}
}
