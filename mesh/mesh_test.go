package mesh

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run real memberlist nodes on 127.0.0.1 with kernel-chosen
// ports. Set MESH_TEST_LOG=1 to see their logs.

const waitFor = 10 * time.Second // correctness bound, not a timing goal

type localState struct {
	mu sync.Mutex
	s  NodeState
}

func (l *localState) get() NodeState {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.s
	s.Streams = slices.Clone(s.Streams)
	return s
}

func (l *localState) set(f func(*NodeState)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(&l.s)
}

type testNode struct {
	*Mesh
	local    *localState
	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan error
}

func testLogger() *slog.Logger {
	if os.Getenv("MESH_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startNode(t *testing.T, name, key string) *testNode {
	t.Helper()
	l := &localState{s: NodeState{Role: RoleEdge, State: StateWarming}}
	m, err := New(Config{NodeName: name, Bind: "127.0.0.1:0", ClusterKey: key, Logger: testLogger(), Local: l.get})
	if err != nil {
		t.Fatalf("New(%s): %v", name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &testNode{Mesh: m, local: l, cancel: cancel, done: make(chan error, 1)}
	go func() { n.done <- m.Run(ctx) }()
	t.Cleanup(n.stop)
	return n
}

// stop ends Run, which leaves the mesh and shuts down.
func (n *testNode) stop() {
	n.stopOnce.Do(func() {
		n.cancel()
		select {
		case err := <-n.done:
			if err != nil {
				panic(fmt.Sprintf("Run returned %v", err))
			}
		case <-time.After(5 * time.Second):
			panic("Run did not return within 5 s of its context ending")
		}
	})
}

func join(t *testing.T, n *testNode, seeds ...*testNode) {
	t.Helper()
	var addrs []string
	for _, s := range seeds {
		addrs = append(addrs, s.Addr())
	}
	got, err := n.Join(context.Background(), addrs)
	if err != nil || got != len(seeds) {
		t.Fatalf("%s: Join = %d, %v; want %d, nil", n.LocalName(), got, err, len(seeds))
	}
}

// eventually polls cond until it holds or waitFor passes, and returns how
// long it took.
func eventually(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	return eventuallyWithin(t, waitFor, what, cond)
}

func eventuallyWithin(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("after %v: %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func nodeNames(m *Mesh) []string { return names(m.Nodes()) }

func TestMeshConvergesGossipsAndForgets(t *testing.T) {
	t.Parallel()
	a, b, c := startNode(t, "a", "k1"), startNode(t, "b", "k1"), startNode(t, "c", "k1")
	join(t, b, a)
	join(t, c, b) // c learns a through b
	all := []*testNode{a, b, c}
	took := eventually(t, "every node sees 3 members", func() bool {
		for _, n := range all {
			if n.Members() != 3 || !slices.Equal(nodeNames(n.Mesh), []string{"a", "b", "c"}) {
				return false
			}
		}
		return true
	})
	t.Logf("converged in %v", took)

	// Local state changes reach the others.
	a.local.set(func(s *NodeState) {
		*s = NodeState{
			Name: "ignored", Role: RoleOrigin, State: StateReady, Region: "eu-west",
			HTTPAddr: "127.0.0.1:8080", RelayAddr: "127.0.0.1:7947",
			Viewers: 12, EgressBps: 4_000_000, CPU: 0.25, Capacity: 500,
			Streams: []StreamLoad{{Name: "shop", Viewers: 12}},
		}
	})
	seesA := func(n *testNode, viewers int, streams []StreamLoad) func() bool {
		return func() bool {
			s, ok := n.Node("a")
			return ok && s.Name == "a" && s.Role == RoleOrigin && s.State == StateReady && s.Region == "eu-west" &&
				s.HTTPAddr == "127.0.0.1:8080" && s.RelayAddr == "127.0.0.1:7947" && s.Viewers == viewers &&
				s.EgressBps == 4_000_000 && s.CPU == 0.25 && s.Capacity == 500 && slices.Equal(s.Streams, streams)
		}
	}
	for _, n := range []*testNode{b, c} {
		took := eventually(t, n.LocalName()+" sees a's state", seesA(n, 12, []StreamLoad{{Name: "shop", Viewers: 12}}))
		t.Logf("%s saw a's new state after %v", n.LocalName(), took)
		if h := names(n.Holders("shop")); !slices.Equal(h, []string{"a"}) {
			t.Errorf("%s: Holders(shop) = %v, want [a]", n.LocalName(), h)
		}
	}
	if self, _ := a.Node("a"); self.Role != RoleOrigin || len(self.Streams) != 1 {
		t.Errorf("a's own entry = %+v", self)
	}

	// A new stream goes out at the next tick.
	a.local.set(func(s *NodeState) {
		s.Streams = []StreamLoad{{Name: "shop", Viewers: 12}, {Name: "auction", Viewers: 0}}
	})
	for _, n := range []*testNode{b, c} {
		took := eventually(t, n.LocalName()+" sees a hold auction", func() bool {
			return slices.Equal(names(n.Holders("auction")), []string{"a"})
		})
		t.Logf("%s saw a's new stream after %v", n.LocalName(), took)
	}
	// Load-only changes go out at most once a second.
	a.local.set(func(s *NodeState) {
		s.Viewers = 40
		s.Streams = []StreamLoad{{Name: "shop", Viewers: 30}, {Name: "auction", Viewers: 10}}
	})
	want := []StreamLoad{{Name: "auction", Viewers: 10}, {Name: "shop", Viewers: 30}} // sorted by name
	for _, n := range []*testNode{b, c} {
		took := eventually(t, n.LocalName()+" sees a's new load", seesA(n, 40, want))
		t.Logf("%s saw a's load change after %v", n.LocalName(), took)
	}

	// Holders excludes self.
	b.local.set(func(s *NodeState) { s.State = StateReady; s.Streams = []StreamLoad{{Name: "shop", Viewers: 1}} })
	eventually(t, "c sees a and b hold shop", func() bool {
		return slices.Equal(names(c.Holders("shop")), []string{"a", "b"})
	})
	if h := names(b.Holders("shop")); !slices.Equal(h, []string{"a"}) {
		t.Errorf("b: Holders(shop) = %v, want [a]", h)
	}

	// A node that dies without leaving disappears (a and c both suspect it
	// and confirm each other's suspicion).
	b.Mesh.stop(false)
	took = eventually(t, "a and c forget b after it died", func() bool {
		return slices.Equal(nodeNames(a.Mesh), []string{"a", "c"}) && slices.Equal(nodeNames(c.Mesh), []string{"a", "c"}) &&
			a.Members() == 2 && c.Members() == 2 && slices.Equal(names(c.Holders("shop")), []string{"a"})
	})
	t.Logf("dead node forgotten after %v", took)
	if _, ok := a.Node("b"); ok {
		t.Error("a: Node(b) still found")
	}

	// It restarts under its name on a new address, as a node restarted by
	// its supervisor does, and is admitted again.
	b2 := startNode(t, "b", "k1")
	join(t, b2, a)
	took = eventually(t, "a and c admit b back on its new address", func() bool {
		return slices.Equal(nodeNames(a.Mesh), []string{"a", "b", "c"}) && slices.Equal(nodeNames(c.Mesh), []string{"a", "b", "c"})
	})
	t.Logf("restarted node admitted after %v", took)
	b2.stop()
	eventually(t, "a and c forget b after it left", func() bool {
		return slices.Equal(nodeNames(a.Mesh), []string{"a", "c"}) && slices.Equal(nodeNames(c.Mesh), []string{"a", "c"})
	})

	// A node that leaves disappears at once.
	c.stop()
	took = eventually(t, "a forgets c after it left", func() bool {
		return slices.Equal(nodeNames(a.Mesh), []string{"a"}) && a.Members() == 1
	})
	t.Logf("left node forgotten after %v", took)
}

func TestJoinerLearnsStreamsDuringJoin(t *testing.T) {
	t.Parallel()
	a, b := startNode(t, "a", "k"), startNode(t, "b", "k")
	a.local.set(func(s *NodeState) { s.Streams = []StreamLoad{{Name: "live", Viewers: 5}} })
	b.local.set(func(s *NodeState) { s.Streams = []StreamLoad{{Name: "other", Viewers: 1}} })
	time.Sleep(2 * tickInterval) // let both publish their lists locally
	join(t, b, a)
	// No waiting: the join's push/pull carried a's list to b and b's to a.
	if h := names(b.Holders("live")); !slices.Equal(h, []string{"a"}) {
		t.Fatalf("b right after Join: Holders(live) = %v, want [a]", h)
	}
	// a merges b's state on its side of the same exchange (in another
	// goroutine), so it may trail Join's return by a moment.
	eventually(t, "a learns b's streams", func() bool { return slices.Equal(names(a.Holders("other")), []string{"b"}) })

	// A third node joining a learns b's list too, from a.
	c := startNode(t, "c", "k")
	join(t, c, a)
	if h := names(c.Holders("other")); !slices.Equal(h, []string{"b"}) {
		t.Fatalf("c right after Join: Holders(other) = %v, want [b]", h)
	}

}

// A list too long for a UDP broadcast still propagates, by push/pull. Each
// node starts one every 5 s, the first 5-10 s after it started (memberlist
// staggers them); with two nodes every push/pull is between them.
func TestLongStreamListByPushPull(t *testing.T) {
	t.Parallel()
	a, b := startNode(t, "a", "k"), startNode(t, "b", "k")
	join(t, b, a)
	var many []StreamLoad
	for i := range 200 {
		many = append(many, StreamLoad{Name: fmt.Sprintf("stream-with-a-long-name-%03d", i), Viewers: i})
	}
	if n := len(encodeStreams(streamEntry{Node: "a", Seq: 1, Streams: many})); n <= maxBroadcast {
		t.Fatalf("test list is %d bytes, want > %d", n, maxBroadcast)
	}
	a.local.set(func(s *NodeState) { s.Streams = many })
	took := eventuallyWithin(t, 15*time.Second, "b learns a's long list", func() bool {
		s, ok := b.Node("a")
		return ok && slices.Equal(s.Streams, many)
	})
	t.Logf("long list (push/pull only) propagated in %v", took)
	// A node joining later gets it in the join itself.
	c := startNode(t, "c", "k")
	join(t, c, b)
	if s, _ := c.Node("a"); !slices.Equal(s.Streams, many) {
		t.Errorf("c right after Join knows %d of a's %d streams", len(s.Streams), len(many))
	}
}

func TestWrongClusterKey(t *testing.T) {
	t.Parallel()
	a, b := startNode(t, "a", "right key"), startNode(t, "b", "right key")
	join(t, b, a)
	eventually(t, "a and b see each other", func() bool { return a.Members() == 2 && b.Members() == 2 })

	wrong := startNode(t, "wrong", "wrong key")
	if n, err := wrong.Join(context.Background(), []string{a.Addr(), b.Addr()}); err == nil || n != 0 {
		t.Errorf("node with another key: Join = %d, %v; want 0 and an error", n, err)
	} else if !strings.Contains(err.Error(), "--cluster-key") {
		t.Errorf("join error does not mention --cluster-key: %v", err)
	}
	keyless := startNode(t, "keyless", "")
	if n, err := keyless.Join(context.Background(), []string{a.Addr()}); err == nil || n != 0 {
		t.Errorf("node without a key: Join = %d, %v; want 0 and an error", n, err)
	}
	// Nor can a keyed node join a keyless one.
	c := startNode(t, "c", "right key")
	if n, err := c.Join(context.Background(), []string{keyless.Addr()}); err == nil || n != 0 {
		t.Errorf("keyed node joining a keyless one: Join = %d, %v; want 0 and an error", n, err)
	}

	// Over several probe and gossip rounds, nobody lists a foreign node.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		for _, n := range []*testNode{a, b} {
			if got := nodeNames(n.Mesh); !slices.Equal(got, []string{"a", "b"}) {
				t.Fatalf("%s lists %v, want [a b]", n.LocalName(), got)
			}
		}
		for _, n := range []*testNode{wrong, keyless, c} {
			if got := nodeNames(n.Mesh); len(got) != 1 {
				t.Fatalf("%s lists %v, want only itself", n.LocalName(), got)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRTTEstimates(t *testing.T) {
	t.Parallel()
	a, b, c := startNode(t, "a", "k"), startNode(t, "b", "k"), startNode(t, "c", "k")
	join(t, b, a)
	join(t, c, a)
	all := []*testNode{a, b, c}
	took := eventually(t, "every node has an RTT estimate for every peer", func() bool {
		for _, n := range all {
			for _, p := range all {
				if _, ok := n.RTT(p.LocalName()); !ok {
					return false
				}
			}
		}
		return true
	})
	t.Logf("RTT estimates for all pairs after %v", took)
	for _, n := range all {
		for _, p := range all {
			d, _ := n.RTT(p.LocalName())
			if p == n && d != 0 {
				t.Errorf("%s: RTT to itself = %v, want 0", n.LocalName(), d)
			}
			if p != n && (d <= 0 || d > 100*time.Millisecond) {
				t.Errorf("%s: RTT to %s = %v, want a small loopback estimate", n.LocalName(), p.LocalName(), d)
			}
		}
		for _, s := range n.Nodes() {
			if s.Coord == nil {
				t.Errorf("%s: Nodes() entry %s has no coordinate", n.LocalName(), s.Name)
			}
		}
	}
	if _, ok := a.RTT("nobody"); ok {
		t.Error("RTT to an unknown node reported as known")
	}

	// PickEdge from a's point of view, with a's estimates.
	b.local.set(func(s *NodeState) { s.State, s.HTTPAddr = StateReady, "127.0.0.1:8082" })
	eventually(t, "a sees b ready", func() bool { s, _ := a.Node("b"); return s.State == StateReady })
	if e, ok := PickEdge(a.Nodes(), a.RTT); !ok || e.Name != "b" {
		t.Errorf("PickEdge from a = %q, %v; want b (the only ready edge)", e.Name, ok)
	}
	a.local.set(func(s *NodeState) { s.State, s.HTTPAddr = StateReady, "127.0.0.1:8081" })
	eventually(t, "PickEdge from a picks a itself (RTT 0)", func() bool {
		e, ok := PickEdge(a.Nodes(), a.RTT)
		return ok && e.Name == "a"
	})
}

func TestNewRefuses(t *testing.T) {
	t.Parallel()
	var nonLoopback []string
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				nonLoopback = append(nonLoopback, net.JoinHostPort(ipn.IP.String(), "0"))
			}
		}
	}
	for _, bind := range append([]string{"0.0.0.0:0", ":0", "[::]:0"}, nonLoopback...) {
		_, err := New(Config{NodeName: "n", Bind: bind, Logger: testLogger()})
		if err == nil || !strings.Contains(err.Error(), "--cluster-key") {
			t.Errorf("bind %s without a key: err = %v, want one saying to set --cluster-key", bind, err)
		}
	}
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Bind: "127.0.0.1:0"}, "--node-name"},
		{Config{NodeName: strings.Repeat("n", 256), Bind: "127.0.0.1:0"}, "at most"},
		{Config{NodeName: "n"}, "bind address is empty"},
		{Config{NodeName: "n", Bind: "127.0.0.1"}, "host:port"},
		{Config{NodeName: "n", Bind: "127.0.0.1:http"}, "port"},
		{Config{NodeName: "n", Bind: "127.0.0.1:0", Advertise: ":0"}, "host is empty"},
		{Config{NodeName: "n", Bind: "127.0.0.1:0", Advertise: "0.0.0.0:7946"}, "unspecified"},
	} {
		if _, err := New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): err = %v, want it to mention %q", tc.cfg, err, tc.want)
		}
	}
	// Every interface with a key: needs --advertise, unless loopback is all
	// the machine has.
	m, err := New(Config{NodeName: "n", Bind: "0.0.0.0:0", ClusterKey: "k", Logger: testLogger()})
	if hasNonLoopbackAddr() {
		if err == nil || !strings.Contains(err.Error(), "--advertise") {
			t.Errorf("bind 0.0.0.0 without --advertise: err = %v, want one saying to set --advertise", err)
		}
		m, err = New(Config{NodeName: "n", Bind: "0.0.0.0:0", Advertise: "127.0.0.1:0", ClusterKey: "k", Logger: testLogger()})
	}
	if err != nil {
		t.Fatalf("bind 0.0.0.0 with key and advertise: %v", err)
	}
	if host, _, _ := net.SplitHostPort(m.Addr()); host != "127.0.0.1" {
		t.Errorf("Addr() = %s, want 127.0.0.1:port", m.Addr())
	}
	if err := m.Close(); err != nil {
		t.Error(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Run after Close returns at once.
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after Close = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Run after Close did not return")
	}
}

func TestJoinEdgeCases(t *testing.T) {
	t.Parallel()
	a := startNode(t, "a", "")
	if n, err := a.Join(context.Background(), nil); n != 0 || err != nil {
		t.Errorf("Join(nil) = %d, %v", n, err)
	}
	// Its own address (every node may get the same seed list) is skipped.
	if n, err := a.Join(context.Background(), []string{a.Addr(), " "}); n != 0 || err != nil {
		t.Errorf("Join(self) = %d, %v", n, err)
	}
	eventually(t, "a's Run started", a.running.Load)
	if err := a.Run(context.Background()); err == nil {
		t.Error("second Run did not fail")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := a.Join(ctx, []string{"127.0.0.1:1"}); err == nil {
		t.Error("Join with a cancelled context did not fail")
	}
	// One seed down, one up: joined, no error.
	b := startNode(t, "b", "")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	if n, err := b.Join(context.Background(), []string{dead, a.Addr()}); n != 1 || err != nil {
		t.Errorf("Join(dead, a) = %d, %v; want 1, nil", n, err)
	}
}

// A node whose seed is not up yet joins once it is: Run retries the seeds
// while the node is alone.
func TestRejoinWhenSeedComesUp(t *testing.T) {
	t.Parallel()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seedAddr := l.LocalAddr().String()
	l.Close()

	b := startNode(t, "b", "k")
	if n, err := b.Join(context.Background(), []string{seedAddr}); err == nil || n != 0 {
		t.Fatalf("Join to a seed that is down = %d, %v; want 0 and an error", n, err)
	}
	lo := &localState{}
	a, err := New(Config{NodeName: "a", Bind: seedAddr, ClusterKey: "k", Logger: testLogger(), Local: lo.get})
	if err != nil {
		t.Skipf("could not bind the seed's port again: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	took := eventually(t, "b joins a once a is up", func() bool { return b.Members() == 2 && a.Members() == 2 })
	t.Logf("rejoined after %v", took)
}

func TestLoadIntervalGrowsWithTheMesh(t *testing.T) {
	for _, c := range []struct {
		nodes int
		want  time.Duration
	}{
		{1, time.Second}, {loadBudget, time.Second}, {2 * loadBudget, 2 * time.Second},
		{100, 3125 * time.Millisecond}, {200, 6250 * time.Millisecond},
	} {
		if got := LoadInterval(c.nodes); got != c.want {
			t.Errorf("LoadInterval(%d) = %v, want %v", c.nodes, got, c.want)
		}
	}
}
