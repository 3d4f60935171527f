package rtsp

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/ingest/rtsp/rtsptest"
)

const (
	sourceUser = "viewer"
	sourcePass = "s3cr3t-pw"
)

// startSource starts a camera-like RTSP server on addr that readers must
// log in to; with udp it offers the UDP transport too. Cleanup stops it.
func startSource(t *testing.T, addr string, udp bool) *rtsptest.Server {
	t.Helper()
	src := &rtsptest.Server{Addr: addr, User: sourceUser, Pass: sourcePass}
	if udp {
		src.UDPRTP, src.UDPRTCP = freeUDPPair(t)
	}
	if err := src.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	return src
}

func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type runningPuller struct {
	p    *Puller
	stop func() error
}

func runPuller(t *testing.T, p *Puller) *runningPuller {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				t.Errorf("Run did not return after its context ended")
			}
		})
		return err
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &runningPuller{p: p, stop: stop}
}

// TestPull pulls a stream with credentials, survives the source's restart,
// and never logs the password.
func TestPull(t *testing.T) {
	requireFFmpeg(t)
	t.Parallel()
	addr := freeTCPAddr(t)
	src := startSource(t, addr, false)
	enc := encoder{video: "h264", audio: "aac", transport: "tcp", seconds: 60}
	ff := startFFmpeg(t, enc, "rtsp://"+addr+"/cam")

	log, logs := newLogger(t)
	reg := newRegistry(log)
	t.Cleanup(reg.Close)
	pl := runPuller(t, &Puller{
		Gate:       newGate(reg, log),
		Source:     Source{Stream: "cam", URL: "rtsp://" + sourceUser + ":" + sourcePass + "@" + addr + "/cam"},
		Logger:     log,
		MinBackoff: 100 * time.Millisecond,
		MaxBackoff: time.Second,
		Transport:  "tcp",
	})
	waitFor(t, 20*time.Second, "the pulled stream's first segment", func() bool { return completeSegments(reg, "cam") >= 1 })
	checkStream(t, reg, "cam", avcAAC)
	if !reg.HasPublisher("cam") {
		t.Fatal("pulled stream has no publisher")
	}
	if n := logs.Count("rtsp pull started"); n != 1 {
		t.Fatalf("%d pull connections, want 1", n)
	}

	// The source goes away and comes back: the puller reconnects and the
	// stream continues after a discontinuity.
	ff.kill()
	src.Close()
	waitFor(t, 15*time.Second, "the puller to notice the source is gone", func() bool { return !reg.HasPublisher("cam") })
	startSource(t, addr, false)
	startFFmpeg(t, enc, "rtsp://"+addr+"/cam")
	waitFor(t, 20*time.Second, "the puller to reconnect", func() bool {
		return logs.Count("rtsp pull started") >= 2 && discontinuities(reg, "cam") >= 1
	})
	n := parts(reg, "cam")
	waitFor(t, 10*time.Second, "parts after the reconnect", func() bool { return parts(reg, "cam") > n+2 })

	if err := pl.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if reg.HasPublisher("cam") {
		t.Errorf("stream still has a publisher after Run returned")
	}
	if strings.Contains(logs.String(), sourcePass) {
		t.Errorf("the source password is in the logs")
	}
}

// TestPullOnDemand pulls only while Demand is called.
func TestPullOnDemand(t *testing.T) {
	requireFFmpeg(t)
	t.Parallel()
	addr := freeTCPAddr(t)
	src := startSource(t, addr, true)
	startFFmpeg(t, encoder{video: "h265", audio: "opus", transport: "tcp", seconds: 60}, "rtsp://"+addr+"/cam")

	log, logs := newLogger(t)
	reg := newRegistry(log)
	t.Cleanup(reg.Close)
	const idle = time.Second
	pl := runPuller(t, &Puller{
		Gate:       newGate(reg, log),
		Source:     Source{Stream: "od", URL: "rtsp://" + sourceUser + ":" + sourcePass + "@" + addr + "/cam", OnDemand: true},
		Logger:     log,
		Idle:       idle,
		MinBackoff: 100 * time.Millisecond,
		MaxBackoff: time.Second,
	})
	time.Sleep(1500 * time.Millisecond)
	if reg.Get("od") != nil || src.Describes() != 0 {
		t.Fatalf("on-demand source pulled without demand")
	}

	// A viewer keeps asking, as playlist requests do.
	demand := func(stop <-chan struct{}) {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			pl.p.Demand()
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); demand(stop) }()
	waitFor(t, 20*time.Second, "the on-demand stream's first segment", func() bool { return completeSegments(reg, "od") >= 1 })
	checkStream(t, reg, "od", hevcOpus)
	close(stop)
	wg.Wait()

	waitFor(t, idle+5*time.Second, "the idle puller to disconnect", func() bool { return !reg.HasPublisher("od") })
	if logs.Count("rtsp pull stopped: no demand") != 1 {
		t.Errorf("no log line about the idle stop")
	}
	describes := src.Describes()
	time.Sleep(idle + 500*time.Millisecond)
	if src.Describes() != describes {
		t.Errorf("the puller reconnected without demand")
	}

	// Demand again: it comes back.
	stop = make(chan struct{})
	wg.Add(1)
	go func() { defer wg.Done(); demand(stop) }()
	waitFor(t, 10*time.Second, "the on-demand stream to come back", func() bool { return reg.HasPublisher("od") })
	close(stop)
	wg.Wait()
	if err := pl.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if reg.HasPublisher("od") {
		t.Errorf("stream still has a publisher after Run returned")
	}
}
