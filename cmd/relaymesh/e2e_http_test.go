package main

// Tests of the viewer listener's limits and of --debug-addr: the deadlines
// on a real net/http server in this process, then slowloris and idle
// floods, a long blocking reload and the pprof listener against real
// relaymesh processes.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testLimits are viewerLimits scaled down so that the deadline tests take
// seconds.
func testLimits() httpLimits {
	return httpLimits{Header: 500 * time.Millisecond, Body: time.Second, Idle: 5 * time.Second, Send: time.Second, MaxHeader: 16 << 10}
}

// startTestServer serves h on loopback with newHTTPServer and lim.
func startTestServer(t *testing.T, h http.Handler, lim httpLimits) string {
	t.Helper()
	srv := newHTTPServer(h, lim, slog.New(slog.NewTextHandler(io.Discard, nil)), context.Background())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln) //nolint:errcheck // ends with Close
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestHTTPDeadlines checks the deadlines of newHTTPServer on a real
// net/http server: a hold outlasts the header and read timeouts (which
// net/http lifts once a bodiless request is read), a client
// that stops reading is dropped after Send, a slow body after Body, and a
// keep-alive connection still works after Send has passed.
func TestHTTPDeadlines(t *testing.T) {
	t.Parallel()
	lim := testLimits()
	hold := lim.Body + 1500*time.Millisecond

	// holder answers after hold unless its request context ends first.
	holder := func(ended chan<- error) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-time.After(hold):
				ended <- nil
				w.Write([]byte("held")) //nolint:errcheck
			case <-r.Context().Done():
				ended <- r.Context().Err()
			}
		})
	}

	t.Run("a hold outlasts the read timeouts", func(t *testing.T) {
		t.Parallel()
		ended := make(chan error, 1)
		addr := startTestServer(t, holder(ended), lim)
		t0 := time.Now()
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("held request: %v after %v", err, time.Since(t0))
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := <-ended; err != nil || resp.StatusCode != http.StatusOK || string(body) != "held" {
			t.Fatalf("a %v hold with ReadTimeout %v: status %d %q, handler context %v; want 200 \"held\"", hold, lim.Body, resp.StatusCode, body, err)
		}
	})

	t.Run("a client that stops reading is dropped", func(t *testing.T) {
		t.Parallel()
		res := make(chan sendResult, 1)
		addr := startTestServer(t, streamer(res), lim)
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET /seg1.m4s HTTP/1.1\r\nHost: %s\r\n\r\n", addr) // and never read
		checkDropped(t, res, lim.Send)
	})

	t.Run("HTTP/2 too", func(t *testing.T) {
		t.Parallel()
		ended, res := make(chan error, 1), make(chan sendResult, 1)
		mux := http.NewServeMux()
		mux.Handle("/hold", holder(ended))
		mux.Handle("/seg1.m4s", streamer(res))
		ts := httptest.NewUnstartedServer(nil)
		ts.Config = newHTTPServer(mux, lim, slog.New(slog.NewTextHandler(io.Discard, nil)), context.Background())
		ts.EnableHTTP2 = true
		ts.StartTLS()
		defer ts.Close()
		c := ts.Client()
		resp, err := c.Get(ts.URL + "/hold")
		if err != nil {
			t.Fatalf("held request over HTTP/2: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := <-ended; err != nil || resp.ProtoMajor != 2 || resp.StatusCode != http.StatusOK || string(body) != "held" {
			t.Fatalf("a %v hold: %s %d %q, handler context %v; want HTTP/2 200 \"held\"", hold, resp.Proto, resp.StatusCode, body, err)
		}
		resp, err = c.Get(ts.URL + "/seg1.m4s") // its body is never read
		if err != nil {
			t.Fatalf("GET over HTTP/2: %v", err)
		}
		defer resp.Body.Close()
		checkDropped(t, res, lim.Send)
	})

	t.Run("a slow body is cut at Body", func(t *testing.T) {
		t.Parallel()
		addr := startTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("ok")) //nolint:errcheck // the body is left unread
		}), lim)
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		t0 := time.Now()
		fmt.Fprintf(conn, "POST /api/v1/drain HTTP/1.1\r\nHost: %s\r\nContent-Length: 100000\r\n\r\n", addr)
		closed := make(chan time.Duration, 1)
		go func() {
			io.Copy(io.Discard, conn) //nolint:errcheck // until the server hangs up
			closed <- time.Since(t0)
		}()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		limit := time.After(lim.Body + 5*time.Second)
		for {
			select {
			case d := <-closed:
				if d > lim.Body+time.Second {
					t.Fatalf("a body sent a byte per 100 ms held the connection %v; want it closed at ReadTimeout %v", d, lim.Body)
				}
				return
			case <-tick.C:
				conn.Write([]byte("x")) //nolint:errcheck // until the server hangs up
			case <-limit:
				t.Fatalf("a body sent a byte per 100 ms still holds the connection after %v", lim.Body+5*time.Second)
			}
		}
	})

	t.Run("a keep-alive connection outlives Send", func(t *testing.T) {
		t.Parallel()
		addr := startTestServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("ok")) //nolint:errcheck
		}), lim)
		tr := &http.Transport{MaxConnsPerHost: 1}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		for i := range 2 {
			reused := false
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused },
			})
			r, err := httpGet(ctx, c, "http://"+addr+"/")
			if err != nil || r.status != http.StatusOK {
				t.Fatalf("request %d on a keep-alive connection: status %d, %v", i+1, r.status, err)
			}
			if i == 1 && !reused {
				t.Fatalf("the second request did not reuse the connection: the test proves nothing")
			}
			time.Sleep(lim.Send + 500*time.Millisecond)
		}
	})
}

// sendResult is how the writes of a streamer ended.
type sendResult struct {
	sent int64
	took time.Duration // from the first write
	err  error
}

// streamer answers with up to 4 GiB, and reports on res how its writes
// ended.
func streamer(res chan<- sendResult) http.Handler {
	chunk := make([]byte, 256<<10)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sent int64
		t0 := time.Now()
		for sent < 4<<30 {
			n, err := w.Write(chunk)
			sent += int64(n)
			if err != nil {
				res <- sendResult{sent, time.Since(t0), err}
				return
			}
		}
		res <- sendResult{sent, time.Since(t0), nil}
	})
}

// checkDropped requires that a streamer whose client stopped reading fails
// to write send after its first write.
func checkDropped(t *testing.T, res <-chan sendResult, send time.Duration) {
	t.Helper()
	select {
	case r := <-res:
		if r.err == nil || r.took < send || r.took > send+2*time.Second {
			t.Fatalf("a stalled reader: the handler's writes ended after %v, %d bytes, with %v; want a timeout %v after the first byte",
				r.took, r.sent, r.err, send)
		}
		t.Logf("stalled reader dropped %v after the response started (%d KiB sent): %v", r.took.Round(10*time.Millisecond), r.sent>>10, r.err)
	case <-time.After(send + 5*time.Second):
		t.Fatalf("a client that stopped reading still pins its handler %v later", send+5*time.Second)
	}
}

// requireOpenFiles makes sure this process may open n files, raising its
// soft limit to the hard one if needed (the Go runtime normally has).
func requireOpenFiles(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max >= n {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil {
			return
		}
	}
	t.Fatalf("this test opens %d connections in this process and as many in relaymesh, but the open-file limit is %d (hard %d): "+
		"raise it (ulimit -n %d, or the CI runner's nofile limit)", n, lim.Cur, lim.Max, n)
}

// flood keeps bad connections open to an address, re-dialling each one
// the server closes, as an attacker would, and records how long the
// server let each live.
type flood struct {
	addr    string
	stopped atomic.Bool // no more re-dials
	open    atomic.Int64
	dialled atomic.Int64
	failed  atomic.Int64 // dials that failed
	mu      sync.Mutex
	lives   []time.Duration // from dial to the server's close
	wg      sync.WaitGroup
}

// start opens slow slowloris and idle idle connections. Slowloris ones send
// a request line and then a header one byte a second; idle ones send
// nothing. They are closed when ctx ends.
func (f *flood) start(ctx context.Context, slow, idle int) {
	for i := range slow + idle {
		f.wg.Go(func() {
			for ctx.Err() == nil && !f.stopped.Load() {
				f.hold(ctx, i < slow)
			}
		})
	}
}

// hold dials once and keeps the connection until the server closes it.
func (f *flood) hold(ctx context.Context, slowloris bool) {
	d := net.Dialer{Timeout: 5 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", f.addr)
	if err != nil {
		if ctx.Err() == nil {
			f.failed.Add(1)
			time.Sleep(100 * time.Millisecond)
		}
		return
	}
	t0 := time.Now()
	f.dialled.Add(1)
	f.open.Add(1)
	defer f.open.Add(-1)
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	if slowloris {
		fmt.Fprintf(conn, "GET /live/test/media.m3u8 HTTP/1.1\r\nHost: %s\r\nX-Slow: ", f.addr) //nolint:errcheck // a closed connection shows below
	}
	buf := make([]byte, 512)
	for {
		if slowloris {
			conn.SetReadDeadline(time.Now().Add(time.Second)) //nolint:errcheck
		}
		_, err := conn.Read(buf)
		var ne net.Error
		if slowloris && errors.As(err, &ne) && ne.Timeout() {
			if _, err := conn.Write([]byte("a")); err == nil {
				continue
			}
		}
		if err == nil {
			continue // the server answered something: keep holding
		}
		break
	}
	if ctx.Err() == nil {
		f.mu.Lock()
		f.lives = append(f.lives, time.Since(t0))
		f.mu.Unlock()
	}
}

// lifetimes returns the recorded lifetimes, sorted.
func (f *flood) lifetimes() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.lives)
	slices.Sort(out)
	return out
}

// procSample is what a relaymesh process holds at one moment, and the
// CPU time it has used.
type procSample struct {
	at                      time.Time
	rssKiB, fds, goroutines int
	cpu                     time.Duration
}

func (s procSample) String() string {
	return fmt.Sprintf("RSS %d MiB, %d fds, %d goroutines", s.rssKiB>>10, s.fds, s.goroutines)
}

// cpuShare is the share of one core a process used between two samples.
func cpuShare(from, to procSample) float64 {
	return float64(to.cpu-from.cpu) / float64(to.at.Sub(from.at))
}

// cpuTime is the user and system CPU time of a process, from /proc.
func cpuTime(t *testing.T, pid int) time.Duration {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatalf("read the stat of pid %d: %v", pid, err)
	}
	// Fields after the command (which may hold spaces): state is the
	// first, utime and stime the 12th and 13th (proc(5), from 1: 14, 15).
	_, rest, _ := strings.Cut(string(stat), ") ")
	f := strings.Fields(rest)
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}

// sampleProc reads a process's RSS and descriptors from /proc and its
// goroutine count from pprof on debugAddr.
func sampleProc(t *testing.T, ctx context.Context, c *http.Client, pid int, debugAddr string) procSample {
	t.Helper()
	s := procSample{at: time.Now(), cpu: cpuTime(t, pid)}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read the status of pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			s.rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("list the descriptors of pid %d: %v", pid, err)
	}
	s.fds = len(fds)
	body := mustGet(t, ctx, c, "http://"+debugAddr+"/debug/pprof/goroutine?debug=1")
	first, _, _ := strings.Cut(string(body), "\n")
	if _, err := fmt.Sscanf(first, "goroutine profile: total %d", &s.goroutines); err != nil {
		t.Fatalf("goroutine profile starts %q: %v", first, err)
	}
	return s
}

// openFileLimit is the soft RLIMIT_NOFILE of a process.
func openFileLimit(t *testing.T, pid int) uint64 {
	t.Helper()
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		t.Fatalf("read the limits of pid %d: %v", pid, err)
	}
	for _, line := range strings.Split(string(limits), "\n") {
		if rest, ok := strings.CutPrefix(line, "Max open files"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				n, err := strconv.ParseUint(f[0], 10, 64)
				if err == nil {
					return n
				}
			}
		}
	}
	t.Fatalf("no 'Max open files' in /proc/%d/limits:\n%s", pid, limits)
	return 0
}

// liveEdgeFollower plays like an LL-HLS player: a blocking reload for the
// part after the newest, then that part. It records the longest wait
// between one new part and the next.
type liveEdgeFollower struct {
	parts   int
	longest time.Duration
	problem string
}

func followLiveEdge(ctx context.Context, c *http.Client, media string) liveEdgeFollower {
	var v liveEdgeFollower
	base := media[:strings.LastIndexByte(media, '/')+1]
	url := media
	last := time.Now()
	for ctx.Err() == nil {
		r, err := httpGet(ctx, c, url)
		if ctx.Err() != nil {
			break
		}
		if err == nil && r.status != http.StatusOK {
			err = fmt.Errorf("status %d: %s", r.status, truncate(r.body, 80))
		}
		var pl *mediaPlaylist
		if err == nil {
			pl, err = parseMediaPlaylist(r.body)
		}
		if err != nil {
			v.problem = fmt.Sprintf("GET %s: %v", url, err)
			return v
		}
		ps := pl.parts()
		if len(ps) == 0 {
			v.problem = "playlist lists no parts:\n" + pl.Raw
			return v
		}
		if p, err := httpGet(ctx, c, base+ps[len(ps)-1].URI); ctx.Err() == nil && (err != nil || p.status != http.StatusOK) {
			v.problem = fmt.Sprintf("GET part %s: status %d, %v", ps[len(ps)-1].URI, p.status, err)
			return v
		}
		if v.parts > 0 {
			v.longest = max(v.longest, time.Since(last))
		}
		last = time.Now()
		v.parts++
		msn, part, _ := pl.nextPart()
		url = blockingURL(media, msn, part)
	}
	return v
}

// newcomers makes a viewer's first request, index.m3u8 on a new
// connection, every 250 ms until ctx ends, and returns the slowest and
// the first failure.
func newcomers(ctx context.Context, url string) (slowest time.Duration, n int, problem string) {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for ctx.Err() == nil {
		t0 := time.Now()
		r, err := httpGet(ctx, c, url)
		if ctx.Err() != nil {
			break
		}
		if err == nil && r.status != http.StatusOK {
			err = fmt.Errorf("status %d", r.status)
		}
		if err != nil {
			return slowest, n, fmt.Sprintf("GET %s on a new connection: %v", url, err)
		}
		slowest = max(slowest, time.Since(t0))
		n++
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
	return slowest, n, ""
}

// TestHTTPSlowlorisAndIdleFlood keeps 1,000 slowloris connections and
// 2,000 idle ones open to an origin, re-dialling each that the origin
// closes, while a gohlslib player, an LL-HLS live-edge follower and
// newcomers play: they must play on, every bad connection must be closed
// within the header timeout, and the origin must hold them cheaply.
// Not parallel: the flood loads both cores, and the figures are for
// docs/benchmarks.md.
func TestHTTPSlowlorisAndIdleFlood(t *testing.T) {
	requireE2E(t, "ffmpeg")
	const slow, idle = 1000, 2000
	requireOpenFiles(t, slow+idle+1024)
	ctx := testContext(t, 120*time.Second)
	dbg := freeAddr(t)
	o := startOrigin(t, "--debug-addr", dbg)
	if got := openFileLimit(t, o.pid); got < slow+idle+1024 {
		t.Fatalf("relaymesh runs with an open-file limit of %d, below the %d this test needs", got, slow+idle+1024)
	}
	startPublisher(t, "ffmpeg", o.rtmpURL("test"), 90)
	c := newHTTPClient(t)
	media := o.url("/live/test/media.m3u8")
	waitPlaylist(t, ctx, c, media, "two complete segments", hasComplete(2))
	before := sampleProc(t, ctx, c, o.pid, dbg)

	fctx, stopFlood := context.WithCancel(ctx)
	defer stopFlood()
	f := &flood{addr: o.httpAddr}
	t0 := time.Now()
	f.start(fctx, slow, idle)
	for f.open.Load() < slow+idle {
		if time.Since(t0) > 10*time.Second {
			t.Fatalf("only %d of %d flood connections open after 10 s (%d dials failed)", f.open.Load(), slow+idle, f.failed.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d bad connections open after %v", slow+idle, time.Since(t0).Round(time.Millisecond))
	peak := sampleProc(t, ctx, c, o.pid, dbg)

	// Viewers play while the flood goes on.
	const play = 15 * time.Second
	vctx, stopViewers := context.WithCancel(ctx)
	defer stopViewers()
	fc := newHTTPClient(t)
	var viewers sync.WaitGroup
	var follower liveEdgeFollower
	var slowest time.Duration
	var arrivals int
	var arrivalProblem string
	var openSum, openSamples int64
	viewers.Go(func() { follower = followLiveEdge(vctx, fc, media) })
	viewers.Go(func() { slowest, arrivals, arrivalProblem = newcomers(vctx, o.url("/live/test/index.m3u8")) })
	viewers.Go(func() {
		for vctx.Err() == nil {
			openSum += f.open.Load()
			openSamples++
			time.Sleep(100 * time.Millisecond)
		}
	})
	self0 := cpuTime(t, os.Getpid())
	s := playAndCheck(t, o.url("/live/test/index.m3u8"), play, play+15*time.Second)
	during := sampleProc(t, ctx, c, o.pid, dbg)
	self := float64(cpuTime(t, os.Getpid())-self0) / float64(during.at.Sub(peak.at))
	stopViewers()
	viewers.Wait()
	meanOpen := openSum / max(openSamples, 1)
	t.Logf("while viewers played: %d bad connections open on average; CPU: origin %.0f%%, this test process %.0f%% of a core",
		meanOpen, 100*cpuShare(peak, during), 100*self)
	t.Logf("gohlslib played %v of video (%d parts) during the flood", s.videoSpan(), len(s.parts))
	t.Logf("live-edge follower: %d parts, longest wait for a new part %v", follower.parts, follower.longest.Round(time.Millisecond))
	t.Logf("newcomers: %d first requests on new connections, slowest %v", arrivals, slowest.Round(time.Millisecond))
	if follower.problem != "" {
		t.Errorf("live-edge follower during the flood: %s", follower.problem)
	}
	if follower.longest > 1500*time.Millisecond {
		t.Errorf("live-edge follower waited %v for a part during the flood: a stall (parts are 200 ms)", follower.longest)
	}
	if arrivalProblem != "" {
		t.Errorf("newcomer during the flood: %s", arrivalProblem)
	}
	if slowest > 2*time.Second {
		t.Errorf("a newcomer's first request took %v during the flood", slowest)
	}
	// The flood must have been on all along, or the viewers prove nothing.
	if meanOpen < (slow+idle)*8/10 {
		t.Errorf("the flood held %d connections open on average while viewers played; want it near %d", meanOpen, slow+idle)
	}

	// No more re-dials: every connection left must be closed within the
	// header timeout.
	f.stopped.Store(true)
	header := viewerLimits().Header
	stopAt := time.Now()
	for f.open.Load() > 0 && time.Since(stopAt) < header+2*time.Second {
		time.Sleep(50 * time.Millisecond)
	}
	if n := f.open.Load(); n > 0 {
		t.Errorf("%d bad connections still open %v after the last was dialled; want all closed within the %v header timeout", n, time.Since(stopAt).Round(time.Millisecond), header)
	}
	drained := time.Since(stopAt)
	stopFlood()
	f.wg.Wait()
	lives := f.lifetimes()
	if len(lives) == 0 {
		t.Fatal("the server closed no flood connection")
	}
	longest, median := lives[len(lives)-1], lives[len(lives)/2]
	t.Logf("the server closed %d bad connections (%d dials, %d failed), each after %v to %v (median %v); all gone %v after the last dial",
		len(lives), f.dialled.Load(), f.failed.Load(), lives[0].Round(time.Millisecond), longest.Round(time.Millisecond),
		median.Round(time.Millisecond), drained.Round(time.Millisecond))
	if longest > header+2*time.Second {
		t.Errorf("a bad connection lived %v; want at most the %v header timeout (and 2 s of slack)", longest, header)
	}

	time.Sleep(time.Second) // let closed connections' goroutines finish
	after := sampleProc(t, ctx, c, o.pid, dbg)
	t.Logf("origin: before the flood %v; %d bad connections open %v; viewers playing %v; after %v", before, slow+idle, peak, during, after)
	if peak.fds < before.fds+slow+idle*9/10 {
		t.Errorf("origin had %d descriptors with %d bad connections open (%d before): the flood did not reach it", peak.fds, slow+idle, before.fds)
	}
	if after.fds > before.fds+50 {
		t.Errorf("origin still holds %d descriptors after the flood (%d before)", after.fds, before.fds)
	}
	o.requireAlive(t)
	o.stop(t)
}

// longGOPArgs is publisherArgs with a 6 s GOP, so that segments last 6 s
// and a blocking reload two segments ahead is held for about 12 s.
func longGOPArgs(dst string, seconds int) []string {
	args := publisherArgs(dst, seconds)
	for i := 1; i < len(args); i++ {
		if args[i-1] == "-g" || args[i-1] == "-keyint_min" {
			args[i] = "180"
		}
	}
	return args
}

// TestHTTPBlockingReloadOutlastsTimeouts makes a blocking playlist reload
// that the origin holds longer than the listener's header and read
// timeouts (6 s segments, two segments ahead: about 12 s): it must end in
// 200 with the segment, not a reset.
func TestHTTPBlockingReloadOutlastsTimeouts(t *testing.T) {
	t.Parallel()
	requireE2E(t, "ffmpeg")
	ctx := testContext(t, 90*time.Second)
	o := startOrigin(t)
	p := startProc(t, "ffmpeg (6 s GOP)", nil, "ffmpeg", longGOPArgs(o.rtmpURL("test"), 60)...)
	t.Cleanup(p.kill)
	c := newHTTPClient(t)
	media := o.url("/live/test/media.m3u8")
	pl := waitPlaylist(t, ctx, c, media, "a complete segment", hasComplete(1))
	if pl.TargetDuration < 5 {
		t.Fatalf("EXT-X-TARGETDURATION %d with a 6 s GOP: want 6\n%s", pl.TargetDuration, pl.Raw)
	}
	// Start the long hold right after a segment completes.
	last := pl.complete()[len(pl.complete())-1].MSN
	getPlaylist(t, ctx, c, fmt.Sprintf("%s?_HLS_msn=%d", media, last+1))
	url := fmt.Sprintf("%s?_HLS_msn=%d", media, last+3)
	t0 := time.Now()
	r, err := httpGet(ctx, c, url)
	held := time.Since(t0)
	if err != nil {
		t.Fatalf("blocking reload %s failed after %v: %v", url, held.Round(time.Millisecond), err)
	}
	if r.status != http.StatusOK {
		t.Fatalf("blocking reload %s: status %d after %v: %q", url, r.status, held.Round(time.Millisecond), truncate(r.body, 100))
	}
	got, err := parseMediaPlaylist(r.body)
	if err != nil {
		t.Fatalf("blocking reload %s: %v", url, err)
	}
	if n := len(got.complete()); n == 0 || got.complete()[n-1].MSN < last+3 {
		t.Fatalf("blocking reload %s answered without segment %d:\n%s", url, last+3, got.Raw)
	}
	lim := viewerLimits()
	t.Logf("blocking reload held %v (header timeout %v, read timeout %v)", held.Round(time.Millisecond), lim.Header, lim.Body)
	if held <= lim.Body {
		t.Errorf("the reload was held only %v, not beyond the %v read timeout: the test did not exercise it", held, lim.Body)
	}
	o.stop(t)
}

// TestHTTPDebugAddr checks --debug-addr: pprof answers there and not on
// the viewer port, the viewer paths do not answer there, and a busy or
// unusable address stops relaymesh at start with one line naming it.
func TestHTTPDebugAddr(t *testing.T) {
	t.Parallel()
	requireE2E(t)
	off := []string{"--rtmp", "", "--srt", "", "--rtsp", "", "--mesh", "", "--relay", ""}

	t.Run("pprof on its own listener", func(t *testing.T) {
		t.Parallel()
		ctx := testContext(t, 60*time.Second)
		dbg := freeAddr(t)
		o := startOrigin(t, "--debug-addr", dbg)
		c := newHTTPClient(t)
		if idx := string(mustGet(t, ctx, c, "http://"+dbg+"/debug/pprof/")); !strings.Contains(idx, "goroutine") {
			t.Errorf("/debug/pprof/ on %s does not list the goroutine profile:\n%s", dbg, truncate([]byte(idx), 300))
		}
		if g := mustGet(t, ctx, c, "http://"+dbg+"/debug/pprof/goroutine?debug=1"); !strings.HasPrefix(string(g), "goroutine profile: total ") {
			t.Errorf("goroutine profile: %q", truncate(g, 100))
		}
		if cl := mustGet(t, ctx, c, "http://"+dbg+"/debug/pprof/cmdline"); !strings.Contains(string(cl), "--debug-addr") {
			t.Errorf("cmdline: %q", truncate(cl, 200))
		}
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/cmdline"} {
			if r, err := httpGet(ctx, c, o.url(path)); err != nil || r.status != http.StatusNotFound {
				t.Errorf("GET %s on the viewer port: status %d, %v; want 404", path, r.status, err)
			}
		}
		for _, path := range []string{"/healthz", "/metrics", "/", "/live/test/index.m3u8"} {
			if r, err := httpGet(ctx, c, "http://"+dbg+path); err != nil || r.status != http.StatusNotFound {
				t.Errorf("GET %s on the debug port: status %d, %v; want 404", path, r.status, err)
			}
		}
		if lines := o.logLines(`msg="debug listening"`, "addr="+dbg); len(lines) != 1 {
			t.Errorf("want one 'debug listening addr=%s' log line, got %q", dbg, lines)
		}
		if lines := o.logLines("reachable from other hosts"); len(lines) != 0 {
			t.Errorf("a loopback --debug-addr was warned about: %q", lines)
		}
		o.stop(t)
	})

	t.Run("busy port", func(t *testing.T) {
		t.Parallel()
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		addr := busy.Addr().String()
		t0 := time.Now()
		code, _, stderr := runCLI(t, nil, append([]string{"origin", "--http", "127.0.0.1:0", "--debug-addr", addr}, off...)...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		last := lines[len(lines)-1]
		if code != 2 || !strings.HasPrefix(last, "relaymesh: --debug-addr "+addr+": ") || !strings.Contains(last, "address already in use") {
			t.Fatalf("a busy --debug-addr: exit %d, last line %q; want exit 2 and one line naming --debug-addr %s and the busy port", code, last, addr)
		}
		if n := len(slices.DeleteFunc(lines, func(l string) bool { return !strings.Contains(l, "debug-addr") })); n != 1 {
			t.Errorf("want one line about --debug-addr, got %d:\n%s", n, stderr)
		}
		t.Logf("exited in %v: %s", time.Since(t0).Round(time.Millisecond), last)
	})

	t.Run("bad flags", func(t *testing.T) {
		t.Parallel()
		for _, args := range [][]string{
			{"--http", "127.0.0.1:0", "--debug-addr", "6060"},
			{"--http", "127.0.0.1:0", "--debug-addr", "127.0.0.1:99999"},
		} {
			code, _, stderr := runCLI(t, nil, append(append([]string{"origin"}, off...), args...)...)
			msg := strings.TrimSpace(stderr)
			if code != 2 || strings.Contains(msg, "\n") || !strings.Contains(msg, "--debug-addr") {
				t.Errorf("relaymesh origin %q: exit %d, stderr %q; want 2 and one line naming --debug-addr", args, code, stderr)
			}
		}
	})
}

// TestHTTPDebugAddrLoopback lists the addresses --debug-addr is not warned
// about.
func TestHTTPDebugAddrLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:6060": true,
		"[::1]:6060":     true,
		"0.0.0.0:6060":   false,
		"[::]:6060":      false,
		"10.1.2.3:6060":  false,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}
