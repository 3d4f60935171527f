package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gohlslib/v2"
	"github.com/bluenviron/gohlslib/v2/pkg/codecparams"
	"github.com/bluenviron/gohlslib/v2/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
)

// ingestOrigin is a relaymesh origin with every encoder listener on.
type ingestOrigin struct {
	*daemon
	srtAddr  string // UDP
	rtspAddr string // TCP
	rtspUDP  string // UDP RTP port; RTCP is the next one
}

// freeUDPPair returns a loopback address whose port and the next one were
// free for UDP a moment ago, the first even (RTP, then RTCP).
func freeUDPPair(t *testing.T) string {
	t.Helper()
	for range 50 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		port &^= 1
		a, errA := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		b, errB := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port+1))
		for _, c := range []net.PacketConn{a, b} {
			if c != nil {
				c.Close()
			}
		}
		if errA == nil && errB == nil {
			return fmt.Sprintf("127.0.0.1:%d", port)
		}
	}
	t.Fatal("found no free UDP port pair")
	return ""
}

// startIngestOrigin runs `relaymesh origin` with RTMP, SRT and RTSP on free
// loopback ports, plus extra flags.
func startIngestOrigin(t *testing.T, extra ...string) *ingestOrigin {
	t.Helper()
	o := &ingestOrigin{}
	d := startNode(t, "relaymesh origin", true, func(h, r string) ([]string, []string) {
		o.srtAddr, o.rtspAddr, o.rtspUDP = freeUDPAddr(t), freeAddr(t), freeUDPPair(t)
		args := []string{
			"origin", "--http", h, "--rtmp", r, "--srt", o.srtAddr, "--rtsp", o.rtspAddr,
			"--rtsp-udp", o.rtspUDP, "--mesh", "", "--relay", "",
		}
		return append(args, extra...), nil
	})
	o.daemon = d
	return o
}

// encoding is a codec pair a test encoder sends.
type encoding struct {
	name  string
	video []string // ffmpeg video encoder options
	audio []string
}

var (
	h264AAC = encoding{"H.264+AAC",
		[]string{"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-bf", "2",
			"-g", "30", "-keyint_min", "30", "-sc_threshold", "0"},
		[]string{"-c:a", "aac", "-b:a", "64k", "-ar", "48000"}}
	h265Opus = encoding{"H.265+Opus",
		[]string{"-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
			"-x265-params", "log-level=error:keyint=30:min-keyint=30:scenecut=0:bframes=0"},
		[]string{"-c:a", "libopus", "-b:a", "64k", "-ar", "48000"}}
)

// encoderArgs is an ffmpeg command line sending a 320x240 test pattern and
// a tone in enc for seconds to dst in the given muxer and its options.
func encoderArgs(enc encoding, seconds int, muxer []string, dst string) []string {
	args := []string{
		"-hide_banner", "-nostdin", "-loglevel", "error",
		"-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds), "-map", "0:v:0", "-map", "1:a:0",
	}
	args = append(args, enc.video...)
	args = append(args, enc.audio...)
	args = append(args, muxer...)
	return append(args, dst)
}

func (o *ingestOrigin) srtURL(streamID string) string {
	return "srt://" + o.srtAddr + "?streamid=" + streamID
}

func (o *ingestOrigin) rtspURL(stream string) string {
	return "rtsp://" + o.rtspAddr + "/live/" + stream
}

// mediaStats is what gohlslib decoded from a stream of any supported codecs.
type mediaStats struct {
	codecs       []string // CODECS strings gohlslib derives from the init segment
	video        string   // "H264" or "H265"
	audio        string   // "MPEG4Audio" or "Opus"
	width        int
	height       int
	videoRate    int
	audioRate    int
	videoDTS     []int64
	audioPTS     []int64 // one per audio frame
	audioFrame   int64   // ticks per audio frame
	keyframes    int
	decodeErrors []string
}

func (s *mediaStats) span(ts []int64, rate int) time.Duration {
	if len(ts) < 2 || rate == 0 {
		return 0
	}
	return ticks(ts[len(ts)-1]-ts[0], rate)
}

// playMedia plays uri with gohlslib until it has want of both video and
// audio, failing the test if the client stops or limit passes.
func playMedia(t *testing.T, uri string, want, limit time.Duration) *mediaStats {
	t.Helper()
	var mu sync.Mutex
	st := &mediaStats{}
	c := &gohlslib.Client{
		URI:                       uri,
		HTTPClient:                &http.Client{Timeout: 20 * time.Second},
		OnDownloadPrimaryPlaylist: func(string) {},
		OnDownloadStreamPlaylist:  func(string) {},
		OnDownloadSegment:         func(string) {},
		OnDownloadPart:            func(string) {},
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
			st.codecs = append(st.codecs, codecparams.Marshal(tr.Codec))
			onVideo := func(random func([][]byte) bool) {
				st.videoRate = tr.ClockRate
				c.OnDataH26x(tr, func(_, dts int64, au [][]byte) {
					mu.Lock()
					defer mu.Unlock()
					st.videoDTS = append(st.videoDTS, dts)
					if random(au) {
						st.keyframes++
					}
				})
			}
			switch codec := tr.Codec.(type) {
			case *codecs.H264:
				var sps h264.SPS
				if err := sps.Unmarshal(codec.SPS); err != nil {
					return fmt.Errorf("H.264 SPS: %w", err)
				}
				st.video, st.width, st.height = "H264", sps.Width(), sps.Height()
				onVideo(h264.IsRandomAccess)
			case *codecs.H265:
				var sps h265.SPS
				if err := sps.Unmarshal(codec.SPS); err != nil {
					return fmt.Errorf("H.265 SPS: %w", err)
				}
				st.video, st.width, st.height = "H265", sps.Width(), sps.Height()
				onVideo(h265.IsRandomAccess)
			case *codecs.MPEG4Audio:
				st.audio, st.audioRate = "MPEG4Audio", tr.ClockRate
				st.audioFrame = int64(1024 * tr.ClockRate / codec.Config.SampleRate)
				c.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) {
					mu.Lock()
					defer mu.Unlock()
					for i := range aus {
						st.audioPTS = append(st.audioPTS, pts+int64(i)*st.audioFrame)
					}
				})
			case *codecs.Opus:
				st.audio, st.audioRate = "Opus", tr.ClockRate
				st.audioFrame = int64(tr.ClockRate / 50) // ffmpeg's libopus sends 20 ms packets
				c.OnDataOpus(tr, func(pts int64, packets [][]byte) {
					mu.Lock()
					defer mu.Unlock()
					for i := range packets {
						st.audioPTS = append(st.audioPTS, pts+int64(i)*st.audioFrame)
					}
				})
			}
		}
		return nil
	}
	snapshot := func() *mediaStats {
		mu.Lock()
		defer mu.Unlock()
		cp := *st
		cp.codecs = slices.Clone(st.codecs)
		cp.videoDTS = slices.Clone(st.videoDTS)
		cp.audioPTS = slices.Clone(st.audioPTS)
		cp.decodeErrors = slices.Clone(st.decodeErrors)
		return &cp
	}
	runGohlslib(t, c, limit, func() (bool, string) {
		s := snapshot()
		v, a := s.span(s.videoDTS, s.videoRate), s.span(s.audioPTS, s.audioRate)
		return v >= want && a >= want, fmt.Sprintf("%v video and %v audio", v, a)
	})
	return snapshot()
}

// mediaProblems lists what is wrong with a session: the codecs must be
// wantVideo/wantAudio at 320x240, and both timelines must advance without
// gaps.
func mediaProblems(s *mediaStats, wantVideo, wantAudio string, want time.Duration) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if s.video != wantVideo || s.audio != wantAudio {
		add("tracks %s+%s, want %s+%s", s.video, s.audio, wantVideo, wantAudio)
	}
	if s.width != 320 || s.height != 240 {
		add("video is %dx%d, want 320x240", s.width, s.height)
	}
	if len(s.decodeErrors) > 0 {
		add("gohlslib decode errors: %v", s.decodeErrors)
	}
	if n, min := len(s.videoDTS), int(want.Seconds()*30*0.9); n < min {
		add("%d video frames, want at least %d for %v", n, min, want)
	}
	if s.keyframes == 0 {
		add("no keyframe among %d frames", len(s.videoDTS))
	}
	const maxReports = 8
	for i := 1; i < len(s.videoDTS) && len(out) < maxReports; i++ {
		if d := s.videoDTS[i] - s.videoDTS[i-1]; d <= 0 || d > int64(s.videoRate)/10 {
			add("video DTS step %v at frame %d: want 0 < step <= 100ms", ticks(d, s.videoRate), i)
		}
	}
	for i := 1; i < len(s.audioPTS) && len(out) < maxReports; i++ {
		if d := s.audioPTS[i] - s.audioPTS[i-1]; d <= 0 || d > 2*s.audioFrame {
			add("audio PTS step %v at frame %d: want 0 < step <= 2 frames", ticks(d, s.audioRate), i)
		}
	}
	return out
}

var codecsAttr = regexp.MustCompile(`CODECS="([^"]*)"`)

// advertisedCodecs returns the CODECS attribute of a multivariant playlist.
func advertisedCodecs(t *testing.T, ctx context.Context, c *http.Client, url string) string {
	t.Helper()
	m := codecsAttr.FindSubmatch(mustGet(t, ctx, c, url))
	if m == nil {
		t.Fatalf("%s has no CODECS attribute", url)
	}
	return string(m[1])
}

// sameCodecs reports whether two CODECS lists name the same codecs, hex
// digits compared without case.
func sameCodecs(a string, b []string) bool {
	as := strings.Split(strings.ToLower(a), ",")
	bs := make([]string, len(b))
	for i, s := range b {
		bs[i] = strings.ToLower(s)
	}
	sort.Strings(as)
	sort.Strings(bs)
	return slices.Equal(as, bs)
}
