package main

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// lossyProxy relays UDP between one client and a server, dropping a share
// of the datagrams in each direction and delaying the rest, as a mobile
// uplink would. tc netem is not available here, so loss is made in user
// space.
type lossyProxy struct {
	addr string // where the client sends

	mu      sync.Mutex
	rng     *rand.Rand
	dropped int
	relayed int
}

// startLossyProxy relays to server, dropping loss (0..1) of the datagrams
// each way and delaying each by delay. It stops with the test.
func startLossyProxy(t *testing.T, server string, loss float64, delay time.Duration) *lossyProxy {
	t.Helper()
	front, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvAddr, err := net.ResolveUDPAddr("udp", server)
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.DialUDP("udp", nil, srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{addr: front.LocalAddr().String(), rng: rand.New(rand.NewPCG(1, 2))}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		front.Close()
		back.Close()
		wg.Wait()
	})
	var clientMu sync.Mutex
	var client net.Addr
	// send delivers b after the delay unless the dice drop it.
	send := func(b []byte, write func([]byte)) {
		p.mu.Lock()
		drop := p.rng.Float64() < loss
		if drop {
			p.dropped++
		} else {
			p.relayed++
		}
		p.mu.Unlock()
		if drop {
			return
		}
		wg.Add(1)
		time.AfterFunc(delay, func() {
			defer wg.Done()
			if ctx.Err() == nil {
				write(b)
			}
		})
	}
	wg.Add(2)
	go func() { // client -> server
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFrom(buf)
			if err != nil {
				return
			}
			clientMu.Lock()
			client = from
			clientMu.Unlock()
			send(append([]byte(nil), buf[:n]...), func(b []byte) { back.Write(b) }) //nolint:errcheck
		}
	}()
	go func() { // server -> client
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			clientMu.Lock()
			to := client
			clientMu.Unlock()
			if to != nil {
				send(append([]byte(nil), buf[:n]...), func(b []byte) { front.WriteTo(b, to) }) //nolint:errcheck
			}
		}
	}()
	return p
}

func (p *lossyProxy) counts() (relayed, dropped int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.relayed, p.dropped
}

// An encoder on a lossy uplink: SRT retransmits within its latency, so the
// LL-HLS output plays without gaps even with 5% of datagrams lost each way
// and 20 ms of delay.
func TestSRTOverLossyUplink(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 120*time.Second)
	o := startIngestOrigin(t, "--srt-latency", "300ms")
	proxy := startLossyProxy(t, o.srtAddr, 0.05, 20*time.Millisecond)
	enc := startProc(t, "ffmpeg over a lossy link", nil, "ffmpeg",
		encoderArgs(h264AAC, 60, []string{"-f", "mpegts"}, "srt://"+proxy.addr+"?streamid=publish:mobile&latency=300000")...)
	defer enc.kill()
	c := newHTTPClient(t)
	waitPlaylist(t, ctx, c, o.url("/live/mobile/media.m3u8"), "a complete segment", hasComplete(1))
	s := playMedia(t, o.url("/live/mobile/index.m3u8"), 6*time.Second, 40*time.Second)
	for _, p := range mediaProblems(s, "H264", "MPEG4Audio", 6*time.Second) {
		t.Error(p)
	}
	relayed, dropped := proxy.counts()
	if dropped < 20 {
		t.Fatalf("the proxy dropped only %d of %d datagrams: the link was not lossy", dropped, relayed+dropped)
	}
	m := mustScrape(t, ctx, c, &meshNode{daemon: o.daemon, nodeName: "origin"})
	t.Logf("proxy relayed %d datagrams and dropped %d; relaymesh dropped %g frames", relayed, dropped,
		m.value(`relaymesh_ingest_dropped_total{stream="mobile"}`))
	if enc.exited() {
		t.Fatalf("the encoder gave up: %s", enc.stderr.String())
	}
}
