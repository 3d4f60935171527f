package edge

// Benchmarks of the viewer hot paths: media playlists (plain, gzip, delta),
// blocking reloads and hinted parts woken by a new part, parts, segments
// and the multivariant playlist. They call Server.ServeHTTP directly, so
// B/op and allocs/op are the handler's own. Each request gets a fresh
// cancelable context, as net/http gives it one: that is 2 allocations
// (about 300 B) of every figure, made by the harness (see BenchmarkHarness).
//
//	go test -run '^$' -bench . -benchmem ./edge/

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/relay"
)

// benchPartBytes is a 200 ms part of a 0.7 Mbit/s stream.
const benchPartBytes = 0.7e6 / 8 / 5

// benchStream is a live stream in a registry, fed as a packager feeds it:
// 2 s segments of ten 200 ms parts, a full window of complete segments and
// an open one.
type benchStream struct {
	reg   *relay.Registry
	st    *relay.Stream
	srv   *Server
	init  *relay.Init
	start time.Time
	media time.Duration
	data  []byte
}

func newBenchStream(b *testing.B) *benchStream {
	b.Helper()
	reg := relay.NewRegistry(relay.RegistryConfig{PartTarget: testPartTarget, Grace: time.Minute, Logger: slog.New(slog.DiscardHandler)})
	pub, err := reg.Publish("cam")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(reg.Close)
	bs := &benchStream{
		reg: reg, st: pub.Stream,
		srv:   &Server{Streams: reg, Logger: slog.New(slog.DiscardHandler)},
		init:  &relay.Init{ID: 1, Data: make([]byte, 800), Codecs: "avc1.64001f,mp4a.40.2", Width: 640, Height: 360, FrameRate: 30},
		start: time.Now().Add(-time.Hour),
		data:  make([]byte, benchPartBytes),
	}
	bs.st.Cut(nil, &relay.SegmentHeader{Start: bs.start, Init: bs.init})
	for range 14*10 + 5 { // more than the window (12 segments), then 5 parts of the open one
		bs.next()
	}
	return bs
}

// next cuts one part; the tenth part of a segment completes it and opens
// the next, as the packager does at a keyframe.
func (bs *benchStream) next() {
	open := bs.st.Snapshot().Open()
	p := &relay.Part{Duration: testPartTarget, Independent: len(open.Parts) == 0, Data: bs.data}
	bs.media += testPartTarget
	var h *relay.SegmentHeader
	if len(open.Parts) == 9 {
		h = &relay.SegmentHeader{Start: bs.start.Add(bs.media), Init: bs.init}
	}
	bs.st.Cut(p, h)
}

// nextAsk is the blocking reload that the next part satisfies:
// _HLS_msn and _HLS_part of the open segment's next part.
func (bs *benchStream) nextAsk() string {
	open := bs.st.Snapshot().Open()
	return "_HLS_msn=" + strconv.FormatUint(open.MSN, 10) + "&_HLS_part=" + strconv.Itoa(len(open.Parts))
}

// benchWriter is a ResponseWriter that keeps nothing but the status and
// the byte count. reset clears its header map, whose storage it keeps: the
// header values the handler sets are what is measured.
type benchWriter struct {
	h    http.Header
	code int
	n    int
}

func newBenchWriter() *benchWriter { return &benchWriter{h: http.Header{}} }

func (w *benchWriter) Header() http.Header { return w.h }
func (w *benchWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *benchWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.n += len(p)
	return len(p), nil
}

func (w *benchWriter) reset() {
	clear(w.h)
	w.code, w.n = 0, 0
}

// serve runs one request through h with a fresh request context, as
// net/http would, and checks that it was answered with want.
func serve(b *testing.B, h http.Handler, w *benchWriter, tmpl *http.Request, want int) {
	ctx, cancel := context.WithCancel(context.Background())
	w.reset()
	h.ServeHTTP(w, tmpl.WithContext(ctx))
	cancel()
	if w.code != want || (want == http.StatusOK && w.n == 0 && tmpl.Method == http.MethodGet) {
		b.Errorf("%s %s: status %d, %d bytes", tmpl.Method, tmpl.URL, w.code, w.n)
	}
}

// BenchmarkHarness is the harness alone, for a handler that does nothing:
// what every other figure includes besides the handler's own work.
func BenchmarkHarness(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	r := httptest.NewRequest(http.MethodGet, mediaPath, nil)
	w := newBenchWriter()
	b.ReportAllocs()
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		w.reset()
		h.ServeHTTP(w, r.WithContext(ctx))
		cancel()
	}
}

func BenchmarkMediaPlaylist(b *testing.B) {
	for _, c := range []struct {
		name, query, enc string
	}{
		{"plain", "", ""},
		{"gzip", "", "gzip, deflate, br"},
		{"session", "?rmsid=0123456789abcdef", "gzip, deflate, br"},
		{"skip", "?_HLS_skip=YES", "gzip, deflate, br"},
	} {
		b.Run(c.name, func(b *testing.B) {
			bs := newBenchStream(b)
			r := httptest.NewRequest(http.MethodGet, mediaPath+c.query, nil)
			if c.enc != "" {
				r.Header.Set("Accept-Encoding", c.enc)
			}
			w := newBenchWriter()
			serve(b, bs.srv, w, r, http.StatusOK) // the viewer's first request, and the render
			b.ReportAllocs()
			for b.Loop() {
				serve(b, bs.srv, w, r, http.StatusOK)
			}
		})
	}
}

// BenchmarkMediaPlaylistBlocking measures blocking reloads woken by a new
// part: per op, N viewers ask for the next part, the writer cuts it, and
// all N are answered. ns/op and allocs/op are per op (one cut, its render
// and N responses); ns/waiter, B/waiter and allocs/waiter divide them by N.
func BenchmarkMediaPlaylistBlocking(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		b.Run("waiters="+strconv.Itoa(n), func(b *testing.B) {
			benchWake(b, n, func(r *http.Request, bs *benchStream) {
				r.URL.RawQuery = bs.nextAsk()
			})
		})
	}
}

// BenchmarkPartBlocking measures requests for the hinted part, held until
// it is cut: as BenchmarkMediaPlaylistBlocking, for part{N}.m4s.
func BenchmarkPartBlocking(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run("waiters="+strconv.Itoa(n), func(b *testing.B) {
			benchWake(b, n, func(r *http.Request, bs *benchStream) {
				r.URL.Path = "/live/cam/" + partURI(bs.st.Snapshot().NextPart)
			})
		})
	}
}

// countingStreams counts lookups: a request that looked its stream up is
// about to wait.
type countingStreams struct {
	Streams
	n atomic.Int64
}

func (c *countingStreams) Lookup(ctx context.Context, name string) (*relay.Stream, error) {
	c.n.Add(1)
	return c.Streams.Lookup(ctx, name)
}

// benchWake runs n viewers, each with its own connection (RemoteAddr) and
// gzip. Per op, aim sets up one request for the next part, which all n
// viewers send; once all are in the server and parked, the writer cuts the
// part, and the op ends when all are answered.
func benchWake(b *testing.B, n int, aim func(r *http.Request, bs *benchStream)) {
	bs := newBenchStream(b)
	streams := &countingStreams{Streams: bs.srv.Streams}
	bs.srv.Streams = streams
	tmpl := httptest.NewRequest(http.MethodGet, mediaPath, nil)
	tmpl.Header.Set("Accept-Encoding", "gzip, deflate, br")
	var done sync.WaitGroup
	gos := make([]chan *http.Request, n)
	for i := range n {
		gos[i] = make(chan *http.Request)
		go func(c chan *http.Request, addr string) {
			w := newBenchWriter()
			r := tmpl.Clone(context.Background())
			r.RemoteAddr = addr
			for next := range c {
				r.URL.Path, r.URL.RawQuery = next.URL.Path, next.URL.RawQuery
				serve(b, bs.srv, w, r, http.StatusOK)
				done.Done()
			}
		}(gos[i], "192.0.2.1:"+strconv.Itoa(10000+i))
	}
	defer func() {
		for _, c := range gos {
			close(c)
		}
	}()
	round := func() {
		next := tmpl.Clone(context.Background())
		aim(next, bs)
		streams.n.Store(0)
		done.Add(n)
		for _, c := range gos {
			c <- next
		}
		for streams.n.Load() < int64(n) {
			runtime.Gosched()
		}
		// Let the last ones reach their wait. On a busy machine a few may
		// still find the part already cut, which costs less, not more.
		runtime.Gosched()
		bs.next()
		done.Wait()
	}
	round() // each viewer's first request, and warm maps
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		round()
	}
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	perWaiter := float64(b.N * n)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/perWaiter, "ns/waiter")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/perWaiter, "B/waiter")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/perWaiter, "allocs/waiter")
}

func BenchmarkPart(b *testing.B) {
	bs := newBenchStream(b)
	n := bs.st.Snapshot().NextPart - 2
	r := httptest.NewRequest(http.MethodGet, "/live/cam/"+partURI(n), nil)
	w := newBenchWriter()
	b.ReportAllocs()
	for b.Loop() {
		serve(b, bs.srv, w, r, http.StatusOK)
	}
	b.SetBytes(int64(w.n))
}

func BenchmarkSegment(b *testing.B) {
	bs := newBenchStream(b)
	seg := bs.st.Snapshot().LastComplete()
	r := httptest.NewRequest(http.MethodGet, "/live/cam/"+segURI(seg), nil)
	w := newBenchWriter()
	b.ReportAllocs()
	for b.Loop() {
		serve(b, bs.srv, w, r, http.StatusOK)
	}
	b.SetBytes(int64(w.n))
}

func BenchmarkMultivariant(b *testing.B) {
	bs := newBenchStream(b)
	r := httptest.NewRequest(http.MethodGet, "/live/cam/index.m3u8", nil)
	r.Header.Set("Accept-Encoding", "gzip, deflate, br")
	w := newBenchWriter()
	b.ReportAllocs()
	for b.Loop() {
		serve(b, bs.srv, w, r, http.StatusOK)
	}
}

// BenchmarkRender is the work done once per snapshot and shared by all
// its viewers: the media playlist, plain and gzipped.
func BenchmarkRender(b *testing.B) {
	bs := newBenchStream(b)
	snap := bs.st.Snapshot()
	b.ReportAllocs()
	for b.Loop() {
		out := bs.srv.renderUncached(bs.st, snap, false)
		if len(out.gz) == 0 {
			b.Fatal("no gzipped playlist")
		}
	}
}
