package main

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/relaymesh/relaymesh/ingest/rtsp/rtsptest"
)

// Every encoder protocol with both codec pairs: ffmpeg publishes, gohlslib
// plays the LL-HLS output continuously, and the multivariant playlist
// advertises exactly the codecs of the init segment.
func TestIngestProtocolsAndCodecs(t *testing.T) {
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 300*time.Second)
	o := startIngestOrigin(t)
	c := newHTTPClient(t)
	for _, tc := range []struct {
		proto string
		enc   encoding
		video string
		audio string
	}{
		{"srt", h264AAC, "H264", "MPEG4Audio"},
		{"srt", h265Opus, "H265", "Opus"},
		{"rtsp-tcp", h264AAC, "H264", "MPEG4Audio"},
		{"rtsp-tcp", h265Opus, "H265", "Opus"},
		{"rtsp-udp", h264AAC, "H264", "MPEG4Audio"},
		{"rtsp-udp", h265Opus, "H265", "Opus"},
	} {
		stream := strings.NewReplacer("+", "-", ".", "").Replace(tc.proto + "-" + tc.enc.name)
		t.Run(stream, func(t *testing.T) {
			var args []string
			switch tc.proto {
			case "srt":
				args = encoderArgs(tc.enc, 40, []string{"-f", "mpegts"}, o.srtURL("publish:"+stream))
			case "rtsp-tcp":
				args = encoderArgs(tc.enc, 40, []string{"-f", "rtsp", "-rtsp_transport", "tcp"}, o.rtspURL(stream))
			case "rtsp-udp":
				args = encoderArgs(tc.enc, 40, []string{"-f", "rtsp", "-rtsp_transport", "udp"}, o.rtspURL(stream))
			}
			enc := startProc(t, "ffmpeg "+stream, nil, "ffmpeg", args...)
			defer enc.kill()
			media := o.url("/live/" + stream + "/media.m3u8")
			waitPlaylist(t, ctx, c, media, "a complete segment", hasComplete(1))
			s := playMedia(t, o.url("/live/"+stream+"/index.m3u8"), 4*time.Second, 30*time.Second)
			for _, p := range mediaProblems(s, tc.video, tc.audio, 4*time.Second) {
				t.Error(p)
			}
			if got := advertisedCodecs(t, ctx, c, o.url("/live/"+stream+"/index.m3u8")); !sameCodecs(got, s.codecs) {
				t.Errorf("multivariant CODECS=%q, the init segment says %v", got, s.codecs)
			}
			if enc.exited() {
				t.Errorf("ffmpeg exited early with status %d: %s", enc.exitCode(), enc.stderr.String())
			}
			if lines := o.logLines("publisher started", "stream="+stream); len(lines) == 0 {
				t.Errorf("no log line naming the stream when it started")
			}
		})
	}
	o.requireAlive(t)
}

// With --publish-key, a wrong key is refused on every protocol: ffmpeg
// exits with an error and nothing is served under the name. The right key
// publishes.
func TestPublishKeyRefusesWrongKey(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 180*time.Second)
	o := startIngestOrigin(t, "--publish-key", "sesame-1234")
	c := newHTTPClient(t)
	for _, tc := range []struct {
		name  string
		args  func(stream, key string) []string
		nokey func(stream string) []string
	}{
		{"rtmp", func(s, k string) []string {
			return encoderArgs(h264AAC, 20, []string{"-f", "flv"}, o.rtmpURL(s)+"?key="+k)
		}, func(s string) []string { return encoderArgs(h264AAC, 20, []string{"-f", "flv"}, o.rtmpURL(s)) }},
		{"srt", func(s, k string) []string {
			return encoderArgs(h264AAC, 20, []string{"-f", "mpegts"}, o.srtURL("publish:"+s+":"+k))
		}, func(s string) []string {
			return encoderArgs(h264AAC, 20, []string{"-f", "mpegts"}, o.srtURL("publish:"+s))
		}},
		{"rtsp", func(s, k string) []string {
			return encoderArgs(h264AAC, 20, []string{"-f", "rtsp", "-rtsp_transport", "tcp"}, o.rtspURL(s)+"?key="+k)
		}, func(s string) []string {
			return encoderArgs(h264AAC, 20, []string{"-f", "rtsp", "-rtsp_transport", "tcp"}, o.rtspURL(s))
		}},
		{"rtsp-password", func(s, k string) []string {
			return encoderArgs(h264AAC, 20, []string{"-f", "rtsp", "-rtsp_transport", "tcp"},
				"rtsp://studio:"+k+"@"+o.rtspAddr+"/live/"+s)
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stream := "keyed-" + tc.name
			refused := [][]string{tc.args(stream, "wrong-key")}
			if tc.nokey != nil {
				refused = append(refused, tc.nokey(stream))
			}
			for _, args := range refused {
				p := startProc(t, "ffmpeg "+tc.name+" (wrong key)", nil, "ffmpeg", args...)
				if !p.waitExit(15 * time.Second) {
					p.kill()
					t.Fatalf("ffmpeg with a wrong key was still publishing after 15 s")
				}
				if p.exitCode() == 0 {
					t.Fatalf("ffmpeg with a wrong key exited 0")
				}
				if r, err := httpGet(ctx, c, o.url("/live/"+stream+"/index.m3u8")); err != nil || r.status != http.StatusNotFound {
					t.Fatalf("after a refused publish: %d %v, want 404", r.status, err)
				}
			}
			if lines := o.logLines("refused", stream); len(lines) == 0 {
				t.Errorf("no refusal logged for %s", stream)
			}
			ok := startProc(t, "ffmpeg "+tc.name+" (right key)", nil, "ffmpeg", tc.args(stream, "sesame-1234")...)
			defer ok.kill()
			waitPlaylist(t, ctx, c, o.url("/live/"+stream+"/media.m3u8"), "a complete segment", hasComplete(1))
			m := mustScrape(t, ctx, c, &meshNode{daemon: o.daemon, nodeName: "origin"})
			if v := m.value(`relaymesh_ingest_bytes_total{stream="` + stream + `"}`); v <= 0 {
				t.Errorf("relaymesh_ingest_bytes_total for %s is %g", stream, v)
			}
		})
	}
	m := mustScrape(t, ctx, c, &meshNode{daemon: o.daemon, nodeName: "origin"})
	for proto, least := range map[string]float64{"rtmp": 2, "srt": 2, "rtsp": 2} {
		if v := m.value(`relaymesh_ingest_refused_total{proto="` + proto + `",reason="unauthorized"}`); v < least {
			t.Errorf("relaymesh_ingest_refused_total for %s is %g, want at least %g", proto, v, least)
		}
	}
}

// Random bytes at the SRT, RTSP (TCP and UDP) and RTMP ports leave the
// other streams playing.
func TestGarbageOnIngestPorts(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	o := startIngestOrigin(t)
	c := newHTTPClient(t)
	srt := startProc(t, "ffmpeg srt", nil, "ffmpeg",
		encoderArgs(h264AAC, 60, []string{"-f", "mpegts"}, o.srtURL("publish:good-srt"))...)
	defer srt.kill()
	rtsp := startProc(t, "ffmpeg rtsp", nil, "ffmpeg",
		encoderArgs(h264AAC, 60, []string{"-f", "rtsp", "-rtsp_transport", "udp"}, o.rtspURL("good-rtsp"))...)
	defer rtsp.kill()
	for _, s := range []string{"good-srt", "good-rtsp"} {
		waitPlaylist(t, ctx, c, o.url("/live/"+s+"/media.m3u8"), "a complete segment", hasComplete(1))
	}

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		junk := make([]byte, 1500)
		rtpPort := o.rtspUDP
		host, p, _ := net.SplitHostPort(rtpPort)
		port, _ := strconv.Atoi(p)
		rtcp := net.JoinHostPort(host, strconv.Itoa(port+1))
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, addr := range []string{o.srtAddr, rtpPort, rtcp} {
				if conn, err := net.Dial("udp", addr); err == nil {
					for range 20 {
						rand.Read(junk)
						conn.Write(junk[:1+int(junk[0])*5]) //nolint:errcheck
					}
					conn.Close()
				}
			}
			for _, addr := range []string{o.rtspAddr, o.rtmpAddr} {
				if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
					rand.Read(junk)
					conn.SetDeadline(time.Now().Add(500 * time.Millisecond)) //nolint:errcheck
					if addr == o.rtspAddr {
						// A request line, then noise where headers belong.
						conn.Write([]byte("ANNOUNCE rtsp://" + addr + "/live/good-rtsp RTSP/1.0\r\nCSeq: 1\r\n")) //nolint:errcheck
					}
					conn.Write(junk) //nolint:errcheck
					conn.Close()
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for _, s := range []string{"good-srt", "good-rtsp"} {
		st := playMedia(t, o.url("/live/"+s+"/index.m3u8"), 4*time.Second, 30*time.Second)
		for _, p := range mediaProblems(st, "H264", "MPEG4Audio", 4*time.Second) {
			t.Errorf("%s while under garbage: %s", s, p)
		}
	}
	close(stop)
	<-done
	o.requireAlive(t)
	if srt.exited() || rtsp.exited() {
		t.Fatalf("a good publisher was disconnected: srt exited %v, rtsp exited %v", srt.exited(), rtsp.exited())
	}
}

// --pull reads an RTSP server the test runs (standing in for a camera):
// an always-on pull serves at once, an on-demand one when a viewer asks.
func TestRTSPPull(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 180*time.Second)
	camAddr := freeAddr(t)
	cam := &rtsptest.Server{Addr: camAddr, User: "admin", Pass: "cam-pw-77"}
	if err := cam.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cam.Close)
	enc := startProc(t, "ffmpeg to camera", nil, "ffmpeg",
		encoderArgs(h265Opus, 90, []string{"-f", "rtsp", "-rtsp_transport", "tcp"}, "rtsp://"+camAddr+"/stream1")...)
	defer enc.kill()
	src := "rtsp://admin:cam-pw-77@" + camAddr + "/stream1"
	o := startIngestOrigin(t, "--pull", "cam="+src, "--pull", "lazy=ondemand:"+src, "--publish-key", "k-123456")
	c := newHTTPClient(t)

	waitPlaylist(t, ctx, c, o.url("/live/cam/media.m3u8"), "a complete segment", hasComplete(1))
	s := playMedia(t, o.url("/live/cam/index.m3u8"), 4*time.Second, 40*time.Second)
	for _, p := range mediaProblems(s, "H265", "Opus", 4*time.Second) {
		t.Error(p)
	}
	if got := advertisedCodecs(t, ctx, c, o.url("/live/cam/index.m3u8")); !sameCodecs(got, s.codecs) {
		t.Errorf("CODECS=%q, init segment says %v", got, s.codecs)
	}

	// Nobody has asked for the on-demand stream: it is not pulled.
	if lines := o.logLines("rtsp pull started", "stream=lazy"); len(lines) != 0 {
		t.Fatalf("on-demand pull started without a viewer: %v", lines)
	}
	s = playMedia(t, o.url("/live/lazy/index.m3u8"), 3*time.Second, 40*time.Second)
	for _, p := range mediaProblems(s, "H265", "Opus", 3*time.Second) {
		t.Error(p)
	}
	if strings.Contains(o.stderr.String(), "cam-pw-77") {
		t.Error("the camera password is in the log")
	}
}

// An encoder that changes resolution mid-stream (new SPS in-band over SRT)
// gets a new init segment after a discontinuity; playback goes on.
func TestResolutionChangeOverSRT(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	dir := t.TempDir()
	var clip []byte
	for _, size := range []string{"320x240", "640x360"} {
		out := filepath.Join(dir, size+".ts")
		p := startProc(t, "ffmpeg clip "+size, nil, "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
			"-f", "lavfi", "-i", "testsrc2=size="+size+":rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
			"-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-c:a", "aac", "-f", "mpegts", out)
		if !p.waitExit(60*time.Second) || p.exitCode() != 0 {
			t.Fatalf("making the %s clip failed: %s", size, p.stderr.String())
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		clip = append(clip, b...)
	}
	both := filepath.Join(dir, "both.ts")
	if err := os.WriteFile(both, clip, 0o600); err != nil {
		t.Fatal(err)
	}
	o := startIngestOrigin(t)
	c := newHTTPClient(t)
	enc := startProc(t, "ffmpeg srt", nil, "ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
		"-re", "-i", both, "-c", "copy", "-f", "mpegts", o.srtURL("publish:switch"))
	defer enc.kill()

	media := o.url("/live/switch/media.m3u8")
	pl := waitPlaylist(t, ctx, c, media, "a second init segment after a discontinuity", func(pl *mediaPlaylist) bool {
		return strings.Count(pl.Raw, "#EXT-X-MAP:") >= 2 && strings.Contains(pl.Raw, "#EXT-X-DISCONTINUITY\n")
	})
	maps := regexp.MustCompile(`#EXT-X-MAP:URI="([^"]+)"`).FindAllStringSubmatch(pl.Raw, -1)
	var sizes []string
	for _, m := range maps {
		tracks := parseInit(t, mustGet(t, ctx, c, o.url("/live/switch/"+m[1])))
		for _, tr := range tracks {
			if h, ok := tr.Codec.(*mp4codecs.H264); ok {
				var sps h264.SPS
				if err := sps.Unmarshal(h.SPS); err != nil {
					t.Fatal(err)
				}
				sizes = append(sizes, fmt.Sprintf("%dx%d", sps.Width(), sps.Height()))
			}
		}
	}
	if len(sizes) != 2 || sizes[0] != "320x240" || sizes[1] != "640x360" {
		t.Fatalf("init segments are %v, want 320x240 then 640x360\n%s", sizes, pl.Raw)
	}
	if lines := o.logLines("new init segment after a discontinuity", "stream=switch"); len(lines) == 0 {
		t.Error("the change was not logged")
	}
}

// An on-demand camera behind an origin, watched through an edge: the
// origin offers it to the mesh before it runs, the edge's subscription
// wakes it, and once nobody watches the origin lets the camera go.
func TestOnDemandPullThroughEdge(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 180*time.Second)
	camAddr := freeAddr(t)
	cam := &rtsptest.Server{Addr: camAddr}
	if err := cam.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cam.Close)
	enc := startProc(t, "ffmpeg to camera", nil, "ffmpeg",
		encoderArgs(h264AAC, 120, []string{"-f", "rtsp", "-rtsp_transport", "tcp"}, "rtsp://"+camAddr+"/cam")...)
	defer enc.kill()

	const key = "on-demand-test-key"
	origin := startMeshOrigin(t, "origin", key, "--pull", "door=ondemand:rtsp://"+camAddr+"/cam", "--idle", "2s")
	edge := startMeshEdge(t, "edge-1", key, origin.meshAddr, "--idle", "2s", "--prewarm", "0")
	c := newHTTPClient(t)
	waitMembers(t, ctx, c, 2, origin, edge)
	if cam.Describes() != 0 {
		t.Fatal("the camera was read before anyone watched")
	}

	s := playMedia(t, edge.url("/live/door/index.m3u8"), 3*time.Second, 40*time.Second)
	for _, p := range mediaProblems(s, "H264", "MPEG4Audio", 3*time.Second) {
		t.Error(p)
	}
	if lines := origin.logLines("rtsp pull started", "stream=door"); len(lines) != 1 {
		t.Errorf("origin started the pull %d times, want once: %v", len(lines), lines)
	}
	if lines := edge.logLines("stream=door"); len(lines) == 0 {
		t.Error("the edge logged nothing about the stream")
	}
	// The viewer has gone: the edge drops its subscription after its idle
	// time, and the origin then stops pulling the camera.
	origin.waitLog(t, 60*time.Second, "about the idle pull stopping", func(line string) bool {
		return strings.Contains(line, "stream=door") && strings.Contains(line, "no demand")
	})
}

// --publish-keys is re-read on SIGHUP: a key taken out stops working, a
// new one starts, and a broken file keeps the keys in force.
func TestPublishKeysReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("# stream key\nshow old-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := startIngestOrigin(t, "--publish-keys", keys)
	c := newHTTPClient(t)
	publish := func(name, key string) *proc {
		return startProc(t, "ffmpeg "+name+" key "+key, nil, "ffmpeg",
			encoderArgs(h264AAC, 6, []string{"-f", "flv"}, o.rtmpURL(name)+"?key="+key)...)
	}
	refused := func(name, key string) {
		t.Helper()
		p := publish(name, key)
		if !p.waitExit(15*time.Second) || p.exitCode() == 0 {
			p.kill()
			t.Fatalf("publish %s with key %q was not refused", name, key)
		}
	}
	accepted := func(name, key string) {
		t.Helper()
		p := publish(name, key)
		defer p.kill()
		waitPlaylist(t, ctx, c, o.url("/live/"+name+"/media.m3u8"), "a complete segment", hasComplete(1))
	}
	hup := func() {
		t.Helper()
		n := len(o.logLines("publish keys"))
		if err := o.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		o.waitLog(t, 10*time.Second, "after SIGHUP", func(string) bool { return len(o.logLines("publish keys")) > n })
	}
	accepted("show", "old-key")
	refused("other", "old-key") // not in the file, and no --publish-key

	if err := os.WriteFile(keys, []byte("show new-key\nother other-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup()
	refused("show2", "old-key")
	refused("show", "old-key")
	accepted("other", "other-key")

	if err := os.WriteFile(keys, []byte("show\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup()
	if lines := o.logLines("publish keys not reloaded", "line 1"); len(lines) != 1 {
		t.Fatalf("a broken keys file was not reported: %v", o.logLines("publish keys"))
	}
	accepted("other", "other-key") // the previous keys stay in force
	o.requireAlive(t)
}

// Limits: a stream above --max-bitrate is disconnected with a log line,
// and a stream beyond --max-streams is refused.
func TestIngestLimits(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	c := newHTTPClient(t)

	o := startIngestOrigin(t, "--max-bitrate", "100k")
	p := startProc(t, "ffmpeg (too fast)", nil, "ffmpeg",
		encoderArgs(h264AAC, 60, []string{"-b:v", "1M", "-f", "mpegts"}, o.srtURL("publish:fat"))...)
	defer p.kill()
	o.waitLog(t, 30*time.Second, "about the bitrate limit", func(line string) bool {
		return strings.Contains(line, "stream=fat") && strings.Contains(line, "above --max-bitrate")
	})
	if !p.waitExit(20 * time.Second) {
		t.Error("the encoder above --max-bitrate is still connected")
	}

	o2 := startIngestOrigin(t, "--max-streams", "1")
	first := startProc(t, "ffmpeg (first)", nil, "ffmpeg",
		encoderArgs(h264AAC, 60, []string{"-f", "mpegts"}, o2.srtURL("publish:first"))...)
	defer first.kill()
	waitPlaylist(t, ctx, c, o2.url("/live/first/media.m3u8"), "a complete segment", hasComplete(1))
	second := startProc(t, "ffmpeg (second)", nil, "ffmpeg",
		encoderArgs(h264AAC, 60, []string{"-f", "flv"}, o2.rtmpURL("second"))...)
	if !second.waitExit(15*time.Second) || second.exitCode() == 0 {
		second.kill()
		t.Fatal("a stream beyond --max-streams was not refused")
	}
	if lines := o2.logLines("refused", "stream=second", "max-streams"); len(lines) == 0 {
		t.Error("the refusal does not name --max-streams")
	}
	if first.exited() {
		t.Error("the first stream was disturbed")
	}
}

// --publish-takeover: a second encoder on a live stream wins, even over
// another protocol; the first is disconnected and the playlist continues
// after a discontinuity.
func TestPublishTakeover(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	o := startIngestOrigin(t, "--publish-takeover")
	c := newHTTPClient(t)
	first := startProc(t, "ffmpeg (first, SRT)", nil, "ffmpeg",
		encoderArgs(h264AAC, 60, []string{"-f", "mpegts"}, o.srtURL("publish:show"))...)
	defer first.kill()
	media := o.url("/live/show/media.m3u8")
	waitPlaylist(t, ctx, c, media, "a complete segment", hasComplete(1))

	second := startProc(t, "ffmpeg (second, RTMP)", nil, "ffmpeg",
		encoderArgs(h264AAC, 60, []string{"-f", "flv"}, o.rtmpURL("show"))...)
	defer second.kill()
	if !first.waitExit(20 * time.Second) {
		t.Fatal("the first encoder was not disconnected")
	}
	waitPlaylist(t, ctx, c, media, "a discontinuity and a segment after it", func(pl *mediaPlaylist) bool {
		i := strings.Index(pl.Raw, "#EXT-X-DISCONTINUITY\n")
		return i >= 0 && strings.Contains(pl.Raw[i:], "#EXTINF")
	})
	if second.exited() {
		t.Fatalf("the new encoder exited: %s", second.stderr.String())
	}
	if lines := o.logLines("taken over", "stream=show"); len(lines) == 0 {
		t.Error("the takeover was not logged")
	}
}
