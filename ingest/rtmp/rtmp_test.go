package rtmp

import (
	"context"
	"errors"
	"fmt"
	"github.com/relaymesh/relaymesh/internal/logbuf"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	rtmpcodecs "github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/handshake"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/relaymesh/relaymesh/ingest"
	"github.com/relaymesh/relaymesh/relay"
)

func TestStreamName(t *testing.T) {
	for _, tc := range []struct {
		path, name string
		ok         bool
	}{
		{"/live/cam", "cam", true},
		{"live/cam", "cam", true},
		{"/live/Cam_1.backup-2", "Cam_1.backup-2", true},
		{"/live/" + strings.Repeat("a", 128), strings.Repeat("a", 128), true},
		{"/live/" + strings.Repeat("a", 129), "", false},
		{"/live/", "", false},
		{"/live", "", false},
		{"/", "", false},
		{"", "", false},
		{"/other/cam", "", false},
		{"/LIVE/cam", "", false},
		{"//live/cam", "", false},
		{"/live/cam/extra", "", false},
		{"/live/../cam", "", false},
		{"/live/..", "", false},
		{"/live/.cam", "", false},
		{"/live/cam?key=1", "", false},
		{"/live/c am", "", false},
		{"/live/cam\x00", "", false},
		{"/live/kamera\u00e9", "", false},
	} {
		name, err := streamName(tc.path)
		if (err == nil) != tc.ok || name != tc.name {
			t.Errorf("streamName(%q) = %q, %v; want %q ok=%v", tc.path, name, err, tc.name, tc.ok)
		}
		if err != nil && strings.HasPrefix(tc.path, "/live/") && !strings.Contains(tc.path[6:], "/") && !errors.Is(err, relay.ErrBadStreamName) {
			t.Errorf("streamName(%q): %v is not ErrBadStreamName", tc.path, err)
		}
	}
}

func FuzzStreamName(f *testing.F) {
	for _, s := range []string{"/live/cam", "live/cam", "/live/", "/other/cam", "/live/a/b", "/live/..", "//live/x", "/live/" + strings.Repeat("z", 130)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		name, err := streamName(path)
		if err != nil {
			if name != "" {
				t.Fatalf("streamName(%q) = %q with error %v", path, name, err)
			}
			// Everything of the form /live/{valid name} must be accepted.
			if rest, ok := strings.CutPrefix(path, "/"+App+"/"); ok && relay.ValidName(rest) {
				t.Fatalf("streamName(%q) rejected valid stream %q: %v", path, rest, err)
			}
			return
		}
		if !relay.ValidName(name) {
			t.Fatalf("streamName(%q) = %q, not a valid name", path, name)
		}
		if path != "/"+App+"/"+name && path != App+"/"+name {
			t.Fatalf("streamName(%q) = %q: the name is not the whole rest of the path", path, name)
		}
	})
}

type testServer struct {
	addr string
	reg  *relay.Registry
	logs *logbuf.Buffer
	stop func() error
}

func startServer(t *testing.T, timeout time.Duration) *testServer {
	t.Helper()
	return startServerWith(t, timeout, nil)
}

// startServerWith lets a test set the gate's keys, limits and takeover.
func startServerWith(t *testing.T, timeout time.Duration, setup func(*ingest.Gate)) *testServer {
	t.Helper()
	logs := &logbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := relay.NewRegistry(relay.RegistryConfig{
		PartTarget: 200 * time.Millisecond,
		Window:     relay.Window{Segments: 100},
		Grace:      time.Minute,
		Logger:     log,
	})
	gate := &ingest.Gate{
		Registry: reg,
		Packager: ingest.PackagerConfig{PartTarget: 200 * time.Millisecond, MinSegment: time.Second},
		Logger:   log,
	}
	if setup != nil {
		setup(gate)
	}
	srv := &Server{Gate: gate, Logger: log, Timeout: timeout}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	ts := &testServer{addr: ln.Addr().String(), reg: reg, logs: logs}
	var once sync.Once
	var serveErr error
	ts.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case serveErr = <-done:
			case <-time.After(10 * time.Second):
				serveErr = errors.New("Serve did not return after its context ended")
			}
			reg.Close()
		})
		return serveErr
	}
	t.Cleanup(func() {
		if err := ts.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

// waitClosed reads from conn until the server closes it.
func waitClosed(conn net.Conn, within time.Duration) error {
	conn.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("server did not close the connection")
	}
	return nil
}

// A node must shrug off anything that connects to its RTMP port.
func TestServerSurvivesGarbage(t *testing.T) {
	const timeout = 500 * time.Millisecond
	ts := startServer(t, timeout)
	// Each connection gets its own deterministic garbage.
	var seq struct {
		sync.Mutex
		n uint64
	}
	garbage := func(n int) []byte {
		seq.Lock()
		seq.n++
		rng := rand.New(rand.NewPCG(seq.n, 42))
		seq.Unlock()
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		return b
	}

	type attempt struct {
		name string
		run  func(net.Conn) error
	}
	attempts := []attempt{
		{"connect and close", func(net.Conn) error { return nil }},
		{"random bytes", func(c net.Conn) error { _, err := c.Write(garbage(4096)); return err }},
		{"random bytes after C0", func(c net.Conn) error { _, err := c.Write(append([]byte{3}, garbage(5000)...)); return err }},
		{"truncated C1", func(c net.Conn) error { _, err := c.Write(append([]byte{3}, garbage(700)...)); return err }},
		{"truncated C1 then silence", func(c net.Conn) error {
			if _, err := c.Write(append([]byte{3}, garbage(100)...)); err != nil {
				return err
			}
			return waitClosed(c, 10*timeout)
		}},
		{"encrypted handshake garbage", func(c net.Conn) error { _, err := c.Write(append([]byte{6}, garbage(1536*2)...)); return err }},
		{"HTTP request", func(c net.Conn) error {
			_, err := c.Write([]byte("GET /live/cam HTTP/1.1\r\nHost: x\r\n\r\n"))
			return err
		}},
		{"handshake then garbage", func(c net.Conn) error {
			if _, _, err := handshake.DoClient(c, false, false); err != nil {
				return err
			}
			_, err := c.Write(garbage(8192))
			return err
		}},
		{"handshake then silence", func(c net.Conn) error {
			if _, _, err := handshake.DoClient(c, false, false); err != nil {
				return err
			}
			return waitClosed(c, 10*timeout)
		}},
		{"handshake then huge chunk header", func(c net.Conn) error {
			if _, _, err := handshake.DoClient(c, false, false); err != nil {
				return err
			}
			// Basic header fmt 0 on chunk stream 3 with a 16 MiB message.
			_, err := c.Write([]byte{0x03, 0, 0, 0, 0xff, 0xff, 0xff, 0x14, 0, 0, 0, 0, 1, 2, 3})
			return err
		}},
	}

	var wg sync.WaitGroup
	for round := range 3 {
		for _, a := range attempts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := net.Dial("tcp", ts.addr)
				if err != nil {
					t.Errorf("round %d %s: dial: %v", round, a.name, err)
					return
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(20 * timeout))
				if err := a.run(conn); err != nil && !errors.Is(err, io.EOF) && !isReset(err) {
					t.Errorf("round %d %s: %v", round, a.name, err)
				}
				if a.name != "connect and close" {
					if err := waitClosed(conn, 10*timeout); err != nil {
						t.Errorf("round %d %s: %v", round, a.name, err)
					}
				}
			}()
		}
	}
	wg.Wait()

	// The server still accepts and completes a handshake.
	conn, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatalf("dial after the garbage: %v", err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := handshake.DoClient(conn, false, false); err != nil {
		t.Fatalf("handshake after the garbage: %v", err)
	}
	conn.Close()

	if names := ts.reg.Names(); len(names) != 0 {
		t.Fatalf("garbage registered streams %v", names)
	}
	// Every bad connection is logged, with its peer; none panicked.
	want := 3 * len(attempts)
	deadline := time.Now().Add(5 * time.Second)
	for strings.Count(ts.logs.String(), "rtmp connection closed") < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	logs := ts.logs.String()
	if got := strings.Count(logs, "rtmp connection closed"); got < want {
		t.Errorf("%d \"rtmp connection closed\" log lines for %d bad connections; logs:\n%s", got, want, logs)
	}
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "rtmp connection closed") && (!strings.Contains(line, "peer=127.0.0.1:") || !strings.Contains(line, "err=")) {
			t.Errorf("log line lacks peer or error: %s", line)
		}
	}
	if strings.Contains(logs, "panicked") {
		t.Errorf("a connection handler panicked:\n%s", logs)
	}
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

var (
	testSPS = []byte{
		0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
		0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
	}
	testPPS = []byte{0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0}
)

func dialPublisher(ctx context.Context, addr, path string, publish bool) (*gortmplib.Client, error) {
	u, err := url.Parse("rtmp://" + addr + path)
	if err != nil {
		return nil, err
	}
	c := &gortmplib.Client{URL: u, Publish: publish}
	if err := c.Initialize(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// An encoder publishing H.264 and AAC over RTMP ends up as CMAF parts and
// segments in the registry; a second publisher, a bad name and playback
// are refused.
func TestServerPublish(t *testing.T) {
	ts := startServer(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c, err := dialPublisher(ctx, ts.addr, "/live/cam", true)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	defer c.Close()
	video := &gortmplib.Track{Codec: &rtmpcodecs.H264{SPS: testSPS, PPS: testPPS}}
	audio := &gortmplib.Track{Codec: &rtmpcodecs.MPEG4Audio{Config: &mpeg4audio.AudioSpecificConfig{
		Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelConfig: 2,
	}}}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{video, audio}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}

	// 5 s of 30 fps video with a 1 s GOP and 48 kHz AAC, interleaved by
	// timestamp, sent as fast as the connection takes it.
	const seconds = 5
	frame, aframe := 0, 0
	for {
		vt := time.Duration(frame) * time.Second / 30
		at := time.Duration(aframe) * 1024 * time.Second / 48000
		if vt >= seconds*time.Second && at >= seconds*time.Second {
			break
		}
		if vt <= at {
			au := [][]byte{{0x41, 0x9a, byte(frame)}}
			if frame%30 == 0 {
				au = [][]byte{testSPS, testPPS, {0x65, 0x88, 0x84, byte(frame)}}
			}
			vt = vt.Round(time.Millisecond)
			if err := w.WriteH264(video, vt, vt, au); err != nil {
				t.Fatal(err)
			}
			frame++
		} else {
			if err := w.WriteMPEG4Audio(audio, at.Round(time.Millisecond), []byte{0x21, 0x10, byte(aframe)}); err != nil {
				t.Fatal(err)
			}
			aframe++
		}
	}

	var st *relay.Stream
	deadline := time.Now().Add(10 * time.Second)
	for st == nil {
		if st = ts.reg.Get("cam"); st == nil && time.Now().After(deadline) {
			t.Fatalf("stream not registered; logs:\n%s", ts.logs)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A second publisher for the same stream, bad names, other
	// applications and playback are refused: gortmplib confirms the
	// publish or play command before relaymesh looks at it, so a refusal
	// shows as an error status and the server closing the connection.
	for _, tc := range []struct {
		path    string
		publish bool
		status  string
	}{
		{"/live/cam", true, "NetStream.Publish.BadName"},
		{"/live/.hidden", true, "NetStream.Publish.BadName"},
		{"/other/cam", true, "NetStream.Publish.BadName"},
		{"/live/cam", false, ""},
	} {
		c3, err := dialPublisher(ctx, ts.addr, tc.path, tc.publish)
		if err != nil {
			continue // refused during the handshake
		}
		c3.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second))
		var statuses []string
		closed := false
		for range 100 {
			msg, err := c3.Read()
			if err != nil {
				var ne net.Error
				closed = !errors.As(err, &ne) || !ne.Timeout()
				break
			}
			if cmd, ok := msg.(*message.CommandAMF0); ok && cmd.Name == "onStatus" {
				statuses = append(statuses, fmt.Sprint(cmd.Arguments))
			}
		}
		c3.Close()
		if !closed {
			t.Errorf("%s (publish %v): the server kept the connection open", tc.path, tc.publish)
		}
		if tc.status != "" && !strings.Contains(strings.Join(statuses, " "), tc.status) {
			t.Errorf("%s (publish %v): no %s status, got %v", tc.path, tc.publish, tc.status, statuses)
		}
	}

	// The publisher leaves: the stream stays, without a publisher.
	c.Close()
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	snap, err := st.Wait(wctx, func(s *relay.Snapshot) bool { return !s.Live && len(s.Segments) > 0 })
	if err != nil {
		t.Fatalf("publication did not end: %v; logs:\n%s", err, ts.logs)
	}
	if len(snap.Segments) < seconds-1 {
		t.Fatalf("%d segments from %d s of media with a 1 s GOP", len(snap.Segments), seconds)
	}
	in := snap.Segments[0].Init
	if in.Codecs != "avc1.64001f,mp4a.40.2" || in.Width != 1280 || in.Height != 720 {
		t.Errorf("init %q %dx%d", in.Codecs, in.Width, in.Height)
	}
	var videoSamples, audioSamples int
	for _, seg := range snap.Segments {
		if !seg.Complete || !seg.Parts[0].Independent {
			t.Errorf("segment %d complete %v independent start %v", seg.MSN, seg.Complete, seg.Parts[0].Independent)
		}
		for _, p := range seg.Parts {
			var ps fmp4.Parts
			if err := ps.Unmarshal(p.Data); err != nil {
				t.Fatalf("part %d: %v", p.N, err)
			}
			for _, tr := range ps[0].Tracks {
				if tr.ID == 1 {
					videoSamples += len(tr.Samples)
				} else {
					audioSamples += len(tr.Samples)
				}
			}
		}
	}
	if videoSamples != seconds*30 {
		t.Errorf("%d video samples, sent %d", videoSamples, seconds*30)
	}
	if audioSamples < aframe-3 || audioSamples > aframe {
		t.Errorf("%d audio samples, sent %d", audioSamples, aframe)
	}
	logs := ts.logs.String()
	for _, want := range []string{"rtmp publisher started", "rtmp publisher stopped", "rtmp publish refused", "already has a publisher", "RTMP playback is not offered"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %q in the logs:\n%s", want, logs)
		}
	}
	if names := ts.reg.Names(); len(names) != 1 || names[0] != "cam" {
		t.Errorf("registered streams %v, want [cam]", names)
	}
}
