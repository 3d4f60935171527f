package peer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/relay"
	"github.com/relaymesh/relaymesh/relay/peertls"
)

const partTarget = 50 * time.Millisecond

type testNode struct {
	name   string
	reg    *relay.Registry
	ep     *Endpoint
	cancel context.CancelFunc
	done   chan error
}

func startNode(t *testing.T, name, key string) *testNode {
	t.Helper()
	tc, err := peertls.FromClusterKey(key, name)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	reg := relay.NewRegistry(relay.RegistryConfig{PartTarget: partTarget, Logger: log, Window: relay.Window{Segments: 6}})
	ep, err := Listen(Config{Node: name, TLS: tc, Registry: reg, Logger: log}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{name: name, reg: reg, ep: ep, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- ep.Serve(ctx) }()
	t.Cleanup(n.stop)
	return n
}

func (n *testNode) stop() {
	n.cancel()
	<-n.done
	n.reg.Close()
	n.done <- nil // later stops return at once
}

// publish cuts parts into a stream on n until ctx ends: 5 parts a segment.
func publish(ctx context.Context, t *testing.T, n *testNode, name string) *sync.WaitGroup {
	t.Helper()
	pub, err := n.reg.Publish(name)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		defer pub.Close()
		in := &relay.Init{ID: 1, Codecs: "avc1.64001f", Data: []byte("init")}
		pub.Stream.Cut(nil, &relay.SegmentHeader{Start: time.Now(), Init: in})
		tick := time.NewTicker(partTarget / 5)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			var next *relay.SegmentHeader
			if i%5 == 0 {
				next = &relay.SegmentHeader{Start: time.Now(), Init: in}
			}
			pub.Stream.Cut(&relay.Part{Duration: partTarget, Independent: i%5 == 1, Data: []byte(fmt.Sprintf("part-%d", i))}, next)
		}
	})
	return &wg
}

// pull subscribes dst to stream on src in the background.
func subscribeBG(ctx context.Context, t *testing.T, dst, src *testNode, pub *relay.Publication, from uint64) (ready chan struct{}, done chan error) {
	ready, done = make(chan struct{}), make(chan error, 1)
	go func() {
		done <- dst.ep.Subscribe(ctx, src.name, src.ep.Addr().String(), pub, from, func() { close(ready) })
	}()
	return ready, done
}

// checkSame asserts that every part the replica holds is byte-identical
// to the upstream's and that the replica's numbering has no gap.
func checkSame(t *testing.T, replica, upstream *relay.Snapshot) {
	t.Helper()
	var prev uint64
	first := true
	for _, seg := range replica.Segments {
		useg := upstream.Segment(seg.MSN)
		if useg != nil && !useg.Start.Equal(seg.Start) {
			t.Errorf("segment %d starts %v on the replica, %v upstream", seg.MSN, seg.Start, useg.Start)
		}
		for _, p := range seg.Parts {
			if !first && p.N != prev+1 {
				t.Fatalf("replica jumps from part %d to %d", prev, p.N)
			}
			first, prev = false, p.N
			if up := upstream.Part(p.N); up != nil && !bytes.Equal(up.Data, p.Data) {
				t.Fatalf("part %d differs", p.N)
			}
		}
	}
	if first {
		t.Fatal("replica holds no parts")
	}
}

func TestSubscribeReplicatesWindowAndLiveParts(t *testing.T) {
	origin, edge := startNode(t, "origin", "k"), startNode(t, "edge", "k")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := publish(ctx, t, origin, "cam")
	defer wg.Wait()
	defer cancel()
	time.Sleep(4 * partTarget * 5) // a window of a few segments

	pub, err := edge.reg.Publish("cam")
	if err != nil {
		t.Fatal(err)
	}
	ready, done := subscribeBG(ctx, t, edge, origin, pub, 0)
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("subscribe: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("window did not arrive")
	}
	// The window is there at once, then live parts follow.
	if n := len(pub.Stream.Snapshot().Segments); n < 3 {
		t.Fatalf("ready with %d segments", n)
	}
	want := origin.reg.Get("cam").Snapshot().NextPart + 10
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	snap, err := pub.Stream.Wait(wctx, func(s *relay.Snapshot) bool { return s.NextPart >= want })
	wcancel()
	if err != nil {
		t.Fatalf("live parts stopped at %d, want %d", snap.NextPart, want)
	}
	checkSame(t, snap, origin.reg.Get("cam").Snapshot())
	if edge.ep.Subscribers("cam") != 0 || origin.ep.Subscribers("cam") != 1 {
		t.Errorf("subscribers: origin %d, edge %d", origin.ep.Subscribers("cam"), edge.ep.Subscribers("cam"))
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("subscription ended with %v after its context", err)
	}
}

func TestSubscribeUnknownStream(t *testing.T) {
	origin, edge := startNode(t, "origin", "k"), startNode(t, "edge", "k")
	pub, _ := edge.reg.Publish("nope")
	err := edge.ep.Subscribe(context.Background(), origin.name, origin.ep.Addr().String(), pub, 0, nil)
	if !errors.Is(err, ErrNotHeld) {
		t.Fatalf("subscribe to a stream the upstream lacks: %v", err)
	}
}

func TestWrongClusterKeyGetsNothing(t *testing.T) {
	origin, stranger := startNode(t, "origin", "k"), startNode(t, "stranger", "other")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := publish(ctx, t, origin, "cam")
	defer wg.Wait()
	defer cancel()
	pub, _ := stranger.reg.Publish("cam")
	sctx, scancel := context.WithTimeout(ctx, 5*time.Second)
	defer scancel()
	if err := stranger.ep.Subscribe(sctx, origin.name, origin.ep.Addr().String(), pub, 0, nil); err == nil {
		t.Fatal("a node with another cluster key subscribed")
	}
	if n := pub.Stream.Snapshot().NextPart; n != 0 {
		t.Fatalf("the stranger received %d parts", n)
	}
}

// When the upstream dies, the subscription ends within a second, and a
// subscription to another holder from the next part continues with no gap
// and no duplicate.
func TestFailoverResumesAtNextPart(t *testing.T) {
	origin, mid, edge := startNode(t, "origin", "k"), startNode(t, "mid", "k"), startNode(t, "edge", "k")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := publish(ctx, t, origin, "cam")
	defer wg.Wait()
	defer cancel()

	midPub, _ := mid.reg.Publish("cam")
	midReady, _ := subscribeBG(ctx, t, mid, origin, midPub, 0)
	<-midReady
	edgePub, _ := edge.reg.Publish("cam")
	edgeReady, edgeDone := subscribeBG(ctx, t, edge, mid, edgePub, 0)
	<-edgeReady
	time.Sleep(10 * partTarget)

	killed := time.Now()
	mid.stop() // the middle relay goes away
	select {
	case err := <-edgeDone:
		if err == nil {
			t.Fatal("subscription to a dead upstream ended without an error")
		}
		t.Logf("upstream loss noticed after %v: %v", time.Since(killed), err)
	case <-time.After(3 * time.Second):
		t.Fatal("subscription to a dead upstream did not end")
	}
	from := edgePub.Stream.Snapshot().NextPart
	_, done := subscribeBG(ctx, t, edge, origin, edgePub, from)
	want := origin.reg.Get("cam").Snapshot().NextPart + 10
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	snap, err := edgePub.Stream.Wait(wctx, func(s *relay.Snapshot) bool { return s.NextPart >= want })
	wcancel()
	if err != nil {
		t.Fatalf("after failover parts stopped at %d, want %d", snap.NextPart, want)
	}
	checkSame(t, snap, origin.reg.Get("cam").Snapshot())
	cancel()
	<-done
}
