package rtsp

import (
	"context"
	"errors"
	"fmt"
	"github.com/relaymesh/relaymesh/internal/logbuf"
	"log/slog"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/ingest"
	"github.com/relaymesh/relaymesh/relay"
)

// count reports how many log lines contain s.

func newLogger(t *testing.T) (*slog.Logger, *logbuf.Buffer) {
	logs := &logbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("---- logs:\n%s", logs.String())
		}
	})
	return slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), logs
}

func newRegistry(log *slog.Logger) *relay.Registry {
	return relay.NewRegistry(relay.RegistryConfig{
		PartTarget: 200 * time.Millisecond,
		Window:     relay.Window{Segments: 100},
		Grace:      time.Minute,
		Logger:     log,
	})
}

func newGate(reg *relay.Registry, log *slog.Logger) *ingest.Gate {
	return &ingest.Gate{
		Registry: reg,
		Packager: ingest.PackagerConfig{PartTarget: 200 * time.Millisecond, MinSegment: time.Second},
		Logger:   log,
	}
}

// freeUDPPair finds an even UDP port on 127.0.0.1 whose successor is free
// too, as RTP and RTCP need.
func freeUDPPair(t *testing.T) (rtpAddr, rtcpAddr string) {
	t.Helper()
	for range 200 {
		a, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := a.LocalAddr().(*net.UDPAddr).Port
		if port%2 != 0 || port >= 65535 {
			a.Close()
			continue
		}
		b, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port+1))
		a.Close()
		if err != nil {
			continue
		}
		b.Close()
		return "127.0.0.1:" + strconv.Itoa(port), "127.0.0.1:" + strconv.Itoa(port+1)
	}
	t.Fatal("no free even/odd UDP port pair")
	return "", ""
}

type testServer struct {
	addr     string // host:port of the RTSP listener
	rtp      string // UDP RTP address, "" without UDP
	rtcp     string
	reg      *relay.Registry
	gate     *ingest.Gate
	logs     *logbuf.Buffer
	stopOnce sync.Once
	stopErr  error
	cancel   context.CancelFunc
	done     chan error
}

type serverOptions struct {
	udp      bool
	timeout  time.Duration
	keys     *ingest.Keys
	takeover bool
}

func startServer(t *testing.T, o serverOptions) *testServer {
	t.Helper()
	log, logs := newLogger(t)
	reg := newRegistry(log)
	gate := newGate(reg, log)
	gate.Keys = o.keys
	gate.Takeover = o.takeover
	srv := &Server{Gate: gate, Logger: log, Timeout: o.timeout, NoUDP: !o.udp}
	ts := &testServer{reg: reg, gate: gate, logs: logs, done: make(chan error, 1)}
	if o.udp {
		ts.rtp, ts.rtcp = freeUDPPair(t)
		srv.UDPRTPAddress, srv.UDPRTCPAddress = ts.rtp, ts.rtcp
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		if err := ts.stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

// stop ends Serve and waits for it.
func (ts *testServer) stop() error {
	ts.stopOnce.Do(func() {
		ts.cancel()
		select {
		case ts.stopErr = <-ts.done:
		case <-time.After(15 * time.Second):
			ts.stopErr = errors.New("Serve did not return after its context ended")
		}
		ts.reg.Close()
	})
	return ts.stopErr
}

func (ts *testServer) url(path string) string {
	return "rtsp://" + ts.addr + path
}

// requireFFmpeg skips under -short (project convention for tests that
// run encoders) and fails when ffmpeg is missing: these tests exist to
// run a real encoder.
func requireFFmpeg(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs ffmpeg: skipped with -short")
	}
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Fatalf("ffmpeg is not installed (apt-get install ffmpeg): %v", err)
	}
}

// proc is an ffmpeg started by a test.
type proc struct {
	cmd    *exec.Cmd
	stderr logbuf.Buffer
	done   chan struct{}
	err    error // Wait's result, once done is closed
}

type encoder struct {
	video, audio string // "h264", "h264-bframes", "h265"; "aac", "opus"
	transport    string // "tcp", "udp"
	seconds      int
}

func ffmpegArgs(e encoder, dst string) []string {
	args := []string{
		"-hide_banner", "-nostdin", "-loglevel", "error",
		"-re", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-map", "0:v:0", "-map", "1:a:0",
		"-t", strconv.Itoa(e.seconds), "-pix_fmt", "yuv420p", "-g", "30",
	}
	switch e.video {
	case "h264":
		args = append(args, "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency")
	case "h264-bframes":
		args = append(args, "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2")
	case "h265":
		args = append(args, "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error")
	}
	switch e.audio {
	case "aac":
		args = append(args, "-c:a", "aac", "-b:a", "64k")
	case "opus":
		args = append(args, "-c:a", "libopus", "-b:a", "64k")
	}
	return append(args, "-f", "rtsp", "-rtsp_transport", e.transport, dst)
}

func startFFmpeg(t *testing.T, e encoder, dst string) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command("ffmpeg", ffmpegArgs(e, dst)...)
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start ffmpeg: %v", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("---- ffmpeg %s\n---- stderr:\n%s", strings.Join(p.cmd.Args[1:], " "), p.stderr.String())
		}
	})
	return p
}

// kill stops this ffmpeg (by its own PID) and waits for it.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Kill() //nolint:errcheck // it may have exited meanwhile
	<-p.done
}

// interrupt asks ffmpeg to stop cleanly (it sends TEARDOWN) and waits.
func (p *proc) interrupt(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGINT) //nolint:errcheck // it may have exited meanwhile
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("ffmpeg did not stop after SIGINT")
		p.kill()
	}
}

// wait waits for ffmpeg to exit on its own and returns its error.
func (p *proc) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		t.Fatalf("ffmpeg still running after %s", within)
		return nil
	}
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// parts counts the parts a stream holds, 0 if there is no such stream.
func parts(reg *relay.Registry, name string) int {
	s := reg.Get(name)
	if s == nil {
		return 0
	}
	n := 0
	for _, seg := range s.Snapshot().Segments {
		n += len(seg.Parts)
	}
	return n
}

// completeSegments counts the complete segments of a stream that have
// parts.
func completeSegments(reg *relay.Registry, name string) int {
	s := reg.Get(name)
	if s == nil {
		return 0
	}
	n := 0
	for _, seg := range s.Snapshot().Segments {
		if seg.Complete && len(seg.Parts) > 0 {
			n++
		}
	}
	return n
}

func discontinuities(reg *relay.Registry, name string) int {
	s := reg.Get(name)
	if s == nil {
		return 0
	}
	n := 0
	for _, seg := range s.Snapshot().Segments {
		if seg.Discontinuity {
			n++
		}
	}
	return n
}

var (
	avcAAC   = regexp.MustCompile(`^avc1\.[0-9a-f]{6},mp4a\.40\.2$`)
	hevcOpus = regexp.MustCompile(`^hvc1\.[0-9A-Z.]+,opus$`)
)

// checkStream asserts that a stream was packaged with the codecs wanted.
func checkStream(t *testing.T, reg *relay.Registry, name string, codecs *regexp.Regexp) {
	t.Helper()
	s := reg.Get(name)
	if s == nil {
		t.Fatalf("no stream %q in the registry", name)
	}
	snap := s.Snapshot()
	init := snap.LatestInit()
	if init == nil {
		t.Fatalf("stream %q has no init segment", name)
	}
	if !codecs.MatchString(init.Codecs) {
		t.Errorf("stream %q CODECS = %q, want %s", name, init.Codecs, codecs)
	}
	if init.Width != 320 || init.Height != 240 {
		t.Errorf("stream %q is %dx%d, want 320x240", name, init.Width, init.Height)
	}
	if n := completeSegments(reg, name); n < 1 {
		t.Errorf("stream %q has %d complete segments with parts, want some", name, n)
	}
}

func describe(p *proc) string {
	return fmt.Sprintf("ffmpeg: %v: %s", p.err, strings.TrimSpace(p.stderr.String()))
}
