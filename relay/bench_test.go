package relay

// Benchmarks of the stream's hot paths: the writer's cut (one per part),
// the shared per-snapshot memo, and waking readers blocked on a cut.
//
//	go test -run '^$' -bench . -benchmem ./relay/

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchPartBytes is a 200 ms part of a 0.7 Mbit/s stream.
const benchPartBytes = 0.7e6 / 8 / 5

// benchCut cuts one 200 ms part into st, the tenth of a segment with the
// next segment's header, as the packager does at a keyframe.
func benchCut(st *Stream, data []byte, init *Init) {
	open := st.Snapshot().Open()
	var h *SegmentHeader
	if open != nil && len(open.Parts) == 9 {
		h = &SegmentHeader{Start: testEpoch, Init: init}
	}
	st.Cut(&Part{Duration: testPartTarget, Data: data}, h)
}

func newBenchStream() (*Stream, []byte, *Init) {
	st := NewStream("cam", testPartTarget, Window{})
	init := &Init{ID: 1, Data: make([]byte, 800), Codecs: "avc1.64001f,mp4a.40.2"}
	data := make([]byte, benchPartBytes)
	st.Cut(nil, &SegmentHeader{Start: testEpoch, Init: init})
	for range 150 { // a full window
		benchCut(st, data, init)
	}
	return st, data, init
}

func BenchmarkCut(b *testing.B) {
	st, data, init := newBenchStream()
	b.ReportAllocs()
	for b.Loop() {
		benchCut(st, data, init)
	}
}

// BenchmarkMemo is a viewer finding a snapshot's rendered playlist.
func BenchmarkMemo(b *testing.B) {
	st, _, _ := newBenchStream()
	snap := st.Snapshot()
	type key struct{ skip bool }
	snap.Memo(key{}, func() any { return new(int) })
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if snap.Memo(key{}, func() any { panic("computed twice") }) == nil {
				panic("no value")
			}
		}
	})
}

// BenchmarkWake measures readers blocked on the next part, woken by one
// cut: per op, N readers wait, the writer cuts, all N return. ctx-timeout
// waits as the edge did, with a context.WithTimeout per wait; waitfor uses
// WaitFor. ns/waiter and allocs/waiter divide the op by N.
func BenchmarkWake(b *testing.B) {
	modes := []struct {
		name string
		wait func(st *Stream, ready func(*Snapshot) bool)
	}{
		{"ctx-timeout", func(st *Stream, ready func(*Snapshot) bool) {
			ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
			st.Wait(ctx, ready) //nolint:errcheck // ready is checked by the caller
			cancel()
		}},
		{"waitfor", func(st *Stream, ready func(*Snapshot) bool) {
			st.WaitFor(context.Background(), 6*time.Second, ready) //nolint:errcheck // as above
		}},
	}
	for _, m := range modes {
		for _, n := range []int{1, 100, 1000} {
			b.Run(m.name+"/waiters="+strconv.Itoa(n), func(b *testing.B) {
				st, data, init := newBenchStream()
				var (
					want    atomic.Uint64
					waiting atomic.Int64
					done    sync.WaitGroup
				)
				gos := make([]chan struct{}, n)
				for i := range gos {
					gos[i] = make(chan struct{})
					go func(c chan struct{}) {
						for range c {
							waiting.Add(1)
							target := want.Load()
							m.wait(st, func(s *Snapshot) bool { return s.NextPart >= target })
							done.Done()
						}
					}(gos[i])
				}
				defer func() {
					for _, c := range gos {
						close(c)
					}
				}()
				round := func() {
					want.Store(st.Snapshot().NextPart + 1)
					waiting.Store(0)
					done.Add(n)
					for _, c := range gos {
						c <- struct{}{}
					}
					for waiting.Load() < int64(n) {
						runtime.Gosched()
					}
					runtime.Gosched()
					benchCut(st, data, init)
					done.Wait()
				}
				round()
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
				b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/perWaiter, "allocs/waiter")
			})
		}
	}
}
