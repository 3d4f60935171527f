package peer

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/relay"
)

// holders is a Directory over test nodes, in preference order; a stopped
// node drops out as it would from the mesh.
type holders struct {
	mu    sync.Mutex
	nodes []*testNode
	down  map[string]bool
}

func (h *holders) Upstreams(stream string) []Upstream {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ups []Upstream
	for _, n := range h.nodes {
		if !h.down[n.name] && n.reg.Get(stream) != nil {
			ups = append(ups, Upstream{Name: n.name, Addr: n.ep.Addr().String()})
		}
	}
	return ups
}

func startPuller(t *testing.T, n *testNode, dir Directory, cfg PullerConfig) *Puller {
	t.Helper()
	cfg.Endpoint, cfg.Registry, cfg.Directory = n.ep, n.reg, dir
	cfg.Logger = slog.New(slog.DiscardHandler)
	p := NewPuller(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func TestPullerCoalescesAndFailsOver(t *testing.T) {
	origin, mid, edge := startNode(t, "origin", "k"), startNode(t, "mid", "k"), startNode(t, "edge", "k")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := publish(ctx, t, origin, "cam")
	defer wg.Wait()
	defer cancel()
	time.Sleep(10 * partTarget)

	midPuller := startPuller(t, mid, &holders{nodes: []*testNode{origin}}, PullerConfig{})
	if _, err := midPuller.Lookup(ctx, "cam"); err != nil {
		t.Fatal(err)
	}
	// The edge prefers the mid relay, so the origin serves one copy.
	dir := &holders{nodes: []*testNode{mid, origin}, down: map[string]bool{}}
	var switches atomic.Int32
	p := startPuller(t, edge, dir, PullerConfig{OnSwitch: func(string) { switches.Add(1) }, Viewers: func(string) int { return 1 }})
	var lookups sync.WaitGroup
	for range 20 {
		lookups.Go(func() {
			st, err := p.Lookup(ctx, "cam")
			if err != nil || st == nil || st.Snapshot().NextPart == 0 {
				t.Errorf("lookup: %v, stream %v", err, st)
			}
		})
	}
	lookups.Wait()
	if n := mid.ep.Subscribers("cam"); n != 1 {
		t.Fatalf("20 viewers made %d subscriptions to the upstream, want 1", n)
	}
	if n := origin.ep.Subscribers("cam"); n != 1 {
		t.Fatalf("origin feeds %d subscriptions, want 1 (the mid relay)", n)
	}

	// The mid relay dies: the edge moves to the origin from the next part.
	dir.mu.Lock()
	dir.down["mid"] = true
	dir.mu.Unlock()
	mid.stop()
	st := edge.reg.Get("cam")
	want := origin.reg.Get("cam").Snapshot().NextPart + 10
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	snap, err := st.Wait(wctx, func(s *relay.Snapshot) bool { return s.NextPart >= want })
	wcancel()
	if err != nil {
		t.Fatalf("after the upstream died, parts stopped at %d (want %d)", snap.NextPart, want)
	}
	checkSame(t, snap, origin.reg.Get("cam").Snapshot())
	if switches.Load() != 1 {
		t.Errorf("%d upstream switches, want 1", switches.Load())
	}
}

func TestPullerUnknownStreamAndIdleDrop(t *testing.T) {
	origin, edge := startNode(t, "origin", "k"), startNode(t, "edge", "k")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := publish(ctx, t, origin, "cam")
	defer wg.Wait()
	defer cancel()
	time.Sleep(5 * partTarget)

	p := startPuller(t, edge, &holders{nodes: []*testNode{origin}}, PullerConfig{Idle: 300 * time.Millisecond})
	if _, err := p.Lookup(ctx, "missing"); !errors.Is(err, relay.ErrNoStream) {
		t.Fatalf("lookup of a stream nobody holds: %v", err)
	}
	if _, err := p.Lookup(ctx, "cam"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for origin.ep.Subscribers("cam") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("a stream nobody watches is still relayed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A new viewer brings it back.
	st, err := p.Lookup(ctx, "cam")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Snapshot().Live {
		t.Error("stream pulled again is not live")
	}
}

// An origin whose encoder dropped keeps serving its window during the
// grace period: nobody else holds the stream, so there is nothing to pull.
func TestPullerServesLocalWindowWithoutPublisher(t *testing.T) {
	origin := startNode(t, "origin", "k")
	p := startPuller(t, origin, &holders{}, PullerConfig{})
	pub, err := origin.reg.Publish("cam")
	if err != nil {
		t.Fatal(err)
	}
	pub.Stream.Cut(nil, &relay.SegmentHeader{Start: time.Now(), Init: &relay.Init{ID: 1}})
	pub.Stream.Cut(&relay.Part{Duration: partTarget}, nil)
	pub.Close()
	st, err := p.Lookup(context.Background(), "cam")
	if err != nil || st == nil || st.Snapshot().NextPart != 1 {
		t.Fatalf("lookup during the grace period: %v, %v", st, err)
	}
}

// With no holder left the edge keeps serving its window; when the stream
// comes back from a restarted origin (numbering from zero), the edge drops
// its copy and the next viewer gets the new stream.
func TestPullerOriginRestart(t *testing.T) {
	first, edge := startNode(t, "origin-a", "k"), startNode(t, "edge", "k")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	aCtx, aStop := context.WithCancel(ctx)
	wgA := publish(aCtx, t, first, "cam")
	time.Sleep(10 * partTarget)
	dir := &holders{nodes: []*testNode{first}, down: map[string]bool{}}
	p := startPuller(t, edge, dir, PullerConfig{Viewers: func(string) int { return 1 }})
	st, err := p.Lookup(ctx, "cam")
	if err != nil {
		t.Fatal(err)
	}
	// The origin and its stream go away: the window stays servable.
	aStop()
	wgA.Wait()
	first.stop()
	dir.mu.Lock()
	dir.down["origin-a"] = true
	dir.mu.Unlock()
	time.Sleep(time.Second)
	if got, err := p.Lookup(ctx, "cam"); err != nil || got.Snapshot().NextPart == 0 {
		t.Fatalf("with no holder left the window is gone: %v", err)
	}
	old := st.Snapshot().NextPart

	second := startNode(t, "origin-b", "k")
	wgB := publish(ctx, t, second, "cam")
	defer wgB.Wait()
	defer cancel()
	dir.mu.Lock()
	dir.nodes = []*testNode{second}
	dir.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := p.Lookup(ctx, "cam")
		if err == nil && got != st && got.Snapshot().Live {
			if n := got.Snapshot().NextPart; n >= old {
				t.Fatalf("new stream's parts start at %d, not the restarted origin's numbering", n)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the edge never picked up the restarted stream: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A kept replica reports how long it has been cut from its upstream, and
// which upstream fed it: a standby promotes on a cut only from its partner.
func TestPullerCutNamesItsFeeder(t *testing.T) {
	origin, standby := startNode(t, "origin", "k"), startNode(t, "standby", "k")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wg := publish(ctx, t, origin, "cam")
	defer wg.Wait()
	defer cancel()
	time.Sleep(5 * partTarget)
	dir := &holders{nodes: []*testNode{origin}, down: map[string]bool{}}
	p := startPuller(t, standby, dir, PullerConfig{})
	if cut, from := p.Cut("cam"); cut != 0 || from != "" {
		t.Fatalf("before any pull: cut %v from %q", cut, from)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if !p.Keep("cam") && time.Now().After(deadline) {
			t.Fatal("the puller does not keep the stream")
		}
		if cut, from := p.Cut("cam"); cut == 0 && from == "origin" {
			break
		}
		if time.Now().After(deadline) {
			cut, from := p.Cut("cam")
			t.Fatalf("the replica is not fed by origin: cut %v from %q", cut, from)
		}
		time.Sleep(20 * time.Millisecond)
	}
	dir.mu.Lock()
	dir.down["origin"] = true
	dir.mu.Unlock()
	origin.stop()
	for {
		if cut, from := p.Cut("cam"); cut > 0 && from == "origin" {
			return
		}
		if time.Now().After(deadline.Add(5 * time.Second)) {
			cut, from := p.Cut("cam")
			t.Fatalf("after the origin died: cut %v from %q, want a cut from origin", cut, from)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
