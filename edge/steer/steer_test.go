package steer

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// edge and origin build nodes for the tables: ready, with a URL.
func edge(name string, viewers, capacity int) Node {
	return Node{Name: name, URL: "http://" + name, Ready: true, Viewers: viewers, Capacity: capacity}
}

func origin(name string, viewers, capacity int) Node {
	n := edge(name, viewers, capacity)
	n.Origin = true
	return n
}

func with(n Node, f func(*Node)) Node { f(&n); return n }

func names(ns []Node) string {
	var s []string
	for _, n := range ns {
		s = append(s, n.Name)
	}
	return strings.Join(s, ",")
}

var offload = Policy{OriginOffload: true}

// TestRankRules has one row per rule of the package comment. first is the
// node the viewer must get; listed and absent constrain the rest.
func TestRankRules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		nodes  []Node
		who    Viewer
		p      Policy
		first  string
		absent []string // never listed
		order  string   // if set, the whole list
	}{
		{"warming is not listed", []Node{edge("a", 0, 10), with(edge("b", 0, 10), func(n *Node) { n.Ready = false })},
			Viewer{Session: "s"}, offload, "a", []string{"b"}, "a"},
		{"draining is not listed", []Node{edge("a", 5, 10), with(edge("b", 0, 10), func(n *Node) { n.Draining = true })},
			Viewer{Session: "s"}, offload, "a", []string{"b"}, "a"},
		{"full is not listed", []Node{edge("a", 9, 10), edge("b", 10, 10)},
			Viewer{Session: "s"}, offload, "a", []string{"b"}, "a"},
		{"pending viewers fill a node", []Node{edge("a", 9, 10), with(edge("b", 4, 10), func(n *Node) { n.Pending = 6 })},
			Viewer{Session: "s"}, offload, "a", []string{"b"}, "a"},
		{"over 95% CPU is not listed", []Node{edge("a", 5, 10), with(edge("b", 0, 10), func(n *Node) { n.CPU = 0.95 })},
			Viewer{Session: "s"}, offload, "a", []string{"b"}, "a"},
		{"no public URL is not listed", []Node{edge("a", 5, 10), with(edge("b", 0, 10), func(n *Node) { n.URL = "" })},
			Viewer{Session: "s"}, offload, "a", []string{"b"}, "a"},
		{"a name that is no PATHWAY-ID is not listed", []Node{edge("a", 5, 10), edge("b c", 0, 10)},
			Viewer{Session: "s"}, offload, "a", []string{"b c"}, "a"},
		{"a URL that cannot go in a playlist is not listed", []Node{edge("a", 5, 10),
			with(edge("b", 0, 10), func(n *Node) { n.URL = `http://b"x` })},
			Viewer{Session: "s"}, offload, "a", []string{"b"}, "a"},
		{"a counted viewer keeps a node at capacity", []Node{edge("a", 10, 10), edge("b", 9, 10)},
			Viewer{Session: "s", Current: "a", Counted: true}, offload, "a", nil, "a,b"},
		{"an arriving viewer does not", []Node{edge("a", 10, 10), edge("b", 9, 10)},
			Viewer{Session: "s", Current: "a"}, offload, "b", []string{"a"}, "b"},
		{"origins after edges", []Node{origin("o", 0, 0), edge("a", 9, 10)},
			Viewer{Session: "s"}, offload, "a", nil, "a,o"},
		{"origin's own arrival goes to an edge", []Node{origin("o", 0, 0), edge("a", 9, 10)},
			Viewer{Session: "s", Current: "o"}, offload, "a", nil, "a,o"},
		{"origin serves when no edge has room", []Node{origin("o", 0, 0), edge("a", 10, 10)},
			Viewer{Session: "s"}, offload, "o", []string{"a"}, "o"},
		{"without offload an origin is a node like others", []Node{origin("o", 0, 10), edge("a", 9, 10)},
			Viewer{Session: "s", Current: "o"}, Policy{}, "o", nil, "o,a"},
		{"viewer's region first", []Node{with(edge("a", 0, 10), func(n *Node) { n.Region = "us" }),
			with(edge("b", 9, 10), func(n *Node) { n.Region = "eu" })},
			Viewer{Session: "s", Region: "eu"}, offload, "b", nil, "b,a"},
		{"region first even over an origin? no: edges first", []Node{with(origin("o", 0, 0), func(n *Node) { n.Region = "eu" }),
			with(edge("a", 0, 10), func(n *Node) { n.Region = "us" })},
			Viewer{Session: "s", Region: "eu"}, offload, "a", nil, "a,o"},
		{"unknown region changes nothing", []Node{with(edge("a", 0, 10), func(n *Node) { n.Region = "us" })},
			Viewer{Session: "s", Region: "mars"}, offload, "a", nil, "a"},
		{"a nearer band first", []Node{with(edge("far", 0, 10), func(n *Node) { n.RTT = 60 * time.Millisecond }),
			with(edge("near", 8, 10), func(n *Node) { n.RTT = 2 * time.Millisecond })},
			Viewer{Session: "s"}, offload, "near", nil, "near,far"},
		{"within a band RTT does not matter", []Node{with(edge("a", 0, 10), func(n *Node) { n.RTT = 20 * time.Millisecond }),
			with(edge("b", 0, 10), func(n *Node) { n.RTT = 1 * time.Millisecond })},
			Viewer{Session: "s", Current: "a", Counted: true}, offload, "a", nil, "a,b"},
		{"sticky within slack", []Node{edge("a", 6, 10), edge("b", 5, 10)},
			Viewer{Session: "s", Current: "a", Counted: true}, offload, "a", nil, "a,b"},
		{"unknown current is an arrival", []Node{edge("a", 6, 10), edge("b", 5, 10)},
			Viewer{Session: "s", Current: "gone", Counted: true}, offload, "", []string{"gone"}, ""},
		{"at most MaxPathways", []Node{edge("a", 0, 10), edge("b", 0, 10), edge("c", 0, 10), edge("d", 0, 10)},
			Viewer{Session: "s"}, Policy{OriginOffload: true, MaxPathways: 2}, "", nil, ""},
		{"nobody has room", []Node{edge("a", 10, 10), with(edge("b", 0, 10), func(n *Node) { n.Draining = true })},
			Viewer{Session: "s"}, offload, "", []string{"a", "b"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Rank(View{Self: "x", Nodes: tc.nodes}, tc.who, tc.p)
			if tc.first != "" && (len(got) == 0 || got[0].Name != tc.first) {
				t.Fatalf("Rank = [%s], want %s first", names(got), tc.first)
			}
			if tc.order != "" && names(got) != tc.order {
				t.Fatalf("Rank = [%s], want [%s]", names(got), tc.order)
			}
			for _, a := range tc.absent {
				if strings.Contains(","+names(got)+",", ","+a+",") {
					t.Fatalf("Rank = [%s] lists %s", names(got), a)
				}
			}
			if max := tc.p.maxPathways(); len(got) > max {
				t.Fatalf("Rank lists %d nodes, want at most %d", len(got), max)
			}
		})
	}
}

// share runs f for n sessions and returns how often each node came first.
func share(n int, f func(session string) string) map[string]int {
	out := map[string]int{}
	for i := range n {
		out[f(fmt.Sprintf("%016x", i*7919))]++
	}
	return out
}

// TestArrivalsSpreadByRoom: rule 6, arrivals go to nodes in proportion to
// their room, not all to the emptiest.
func TestArrivalsSpreadByRoom(t *testing.T) {
	nodes := []Node{origin("o", 0, 0), edge("a", 0, 100), edge("b", 50, 100), edge("c", 100, 300)}
	// Mean load: 150/500 = 0.3. Deficits: a 30, b none, c 0 (load 1/3 is above the mean).
	got := share(3000, func(s string) string {
		return Rank(View{Self: "o", Nodes: nodes}, Viewer{Session: s, Current: "o"}, offload)[0].Name
	})
	if got["a"] != 3000 {
		t.Errorf("arrivals at the origin went %v; only a is below the mean load", got)
	}
	nodes = []Node{origin("o", 0, 0), edge("a", 0, 100), edge("b", 0, 100), edge("c", 0, 200)}
	got = share(4000, func(s string) string {
		return Rank(View{Self: "o", Nodes: nodes}, Viewer{Session: s, Current: "o"}, offload)[0].Name
	})
	// All at the mean: by headroom, 1:1:2.
	for name, want := range map[string]float64{"a": 1000, "b": 1000, "c": 2000} {
		if math.Abs(float64(got[name])-want) > want*0.1 {
			t.Errorf("arrivals by headroom: %v, want about a 1000 b 1000 c 2000", got)
			break
		}
	}
}

// TestRebalanceMovesJustEnough: rule 5. A new empty edge joins two edges at
// 100 of 150: a third of each one's viewers move, and the same ones
// whatever the counts that lag behind say.
func TestRebalanceMovesJustEnough(t *testing.T) {
	nodes := []Node{edge("a", 100, 150), edge("b", 100, 150), edge("new", 0, 150)}
	moved := 0
	const n = 3000
	moves := map[string]bool{}
	for i := range n {
		s := fmt.Sprintf("%016x", i)
		st := Steer(View{Self: "a", Nodes: nodes}, Viewer{Session: s, Current: "a"}, offload)
		if st.Priority[0].Name != "a" {
			moved++
			moves[s] = true
			if st.Priority[0].Name != "new" || st.Reason != ReasonMove {
				t.Fatalf("a viewer moved to %s (%s), want new", st.Priority[0].Name, st.Reason)
			}
		}
	}
	// Mean 200/450 = 0.444; a at 0.667: move (0.667-0.444)/0.667 = 1/3.
	if f := float64(moved) / n; f < 0.30 || f > 0.37 {
		t.Errorf("%.3f of a's viewers moved, want about 1/3", f)
	}
	// The new edge's count lags: a few more arrive, a's still shows 100. The
	// viewers chosen to move are a subset of those chosen before.
	nodes[2].Viewers = 40
	for i := range n {
		s := fmt.Sprintf("%016x", i)
		st := Steer(View{Self: "a", Nodes: nodes}, Viewer{Session: s, Current: "a"}, offload)
		if st.Priority[0].Name != "a" && !moves[s] {
			t.Fatalf("session %s moves now but did not before: moves would overshoot", s)
		}
	}
	// Once a is near the mean, within the slack, nobody moves.
	nodes = []Node{edge("a", 70, 150), edge("b", 67, 150), edge("new", 63, 150)}
	for i := range 500 {
		if st := Steer(View{Self: "new", Nodes: nodes}, Viewer{Session: fmt.Sprint(i), Current: "a"}, offload); st.Reason != ReasonStay {
			t.Fatalf("viewer moved off a balanced node: %+v", st)
		}
	}
}

// TestFallbacksSpread: rule 7, the second pathway differs between viewers,
// so a dead node's viewers do not all fail over to one node.
func TestFallbacksSpread(t *testing.T) {
	nodes := []Node{edge("a", 50, 100), edge("b", 50, 100), edge("c", 50, 100), edge("d", 50, 100)}
	second := share(2000, func(s string) string {
		st := Steer(View{Self: "a", Nodes: nodes}, Viewer{Session: s, Current: "a"}, offload)
		if st.Priority[0].Name != "a" {
			t.Fatalf("balanced viewer moved: %s", names(st.Priority))
		}
		return st.Priority[1].Name
	})
	if len(second) != 3 || second["b"] < 500 || second["c"] < 500 || second["d"] < 500 {
		t.Errorf("second pathways %v, want b, c and d about equally", second)
	}
}

func TestAdmit(t *testing.T) {
	for _, tc := range []struct {
		name       string
		self       string
		nodes      []Node
		maxViewers int
		region     string
		action     Action
		reason     Reason
		to         string
	}{
		{"an edge with room serves", "a", []Node{edge("a", 5, 10), edge("b", 5, 10)}, 0, "", Serve, ReasonHere, ""},
		{"draining redirects", "a", []Node{with(edge("a", 5, 10), func(n *Node) { n.Draining = true }), edge("b", 5, 10)},
			0, "", Redirect, ReasonDraining, "b"},
		{"warming redirects", "a", []Node{with(edge("a", 0, 10), func(n *Node) { n.Ready = false }), edge("b", 5, 10)},
			0, "", Redirect, ReasonNotReady, "b"},
		{"full redirects", "a", []Node{edge("a", 10, 10), edge("b", 9, 10)}, 0, "", Redirect, ReasonFull, "b"},
		{"busy CPU redirects", "a", []Node{with(edge("a", 0, 10), func(n *Node) { n.CPU = 0.97 }), edge("b", 9, 10)},
			0, "", Redirect, ReasonCPU, "b"},
		{"origin offloads", "o", []Node{origin("o", 0, 0), edge("b", 9, 10)}, 0, "", Redirect, ReasonOffload, "b"},
		{"region redirects", "a", []Node{with(edge("a", 0, 10), func(n *Node) { n.Region = "us" }),
			with(edge("b", 5, 10), func(n *Node) { n.Region = "eu" })}, 0, "eu", Redirect, ReasonRegion, "b"},
		{"far node redirects to a near one", "a", []Node{with(edge("a", 0, 10), func(n *Node) { n.RTT = 0 }),
			with(edge("b", 5, 10), func(n *Node) { n.RTT = 0 })}, 0, "", Serve, ReasonHere, ""},
		{"nobody has room: serve beyond capacity", "a", []Node{edge("a", 10, 10), edge("b", 10, 10)}, 20, "", Serve, ReasonNoRoom, ""},
		{"nobody has room and at max-viewers: shed", "a", []Node{edge("a", 20, 10), edge("b", 10, 10)}, 20, "", Shed, ReasonMaxViewers, ""},
		{"max-viewers binds without a capacity", "a", []Node{edge("a", 20, 0), edge("b", 3, 10)}, 20, "", Redirect, ReasonFull, "b"},
		{"max-viewers alone, nobody else", "a", []Node{edge("a", 20, 0)}, 20, "", Shed, ReasonMaxViewers, ""},
		{"draining and nobody else: serve", "a", []Node{with(edge("a", 5, 10), func(n *Node) { n.Draining = true })},
			0, "", Serve, ReasonNoRoom, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Admit(View{Self: tc.self, Nodes: tc.nodes}, Viewer{Session: "0123456789abcdef", Region: tc.region}, offload, tc.maxViewers)
			if d.Action != tc.action || d.Reason != tc.reason || d.To.Name != tc.to {
				t.Fatalf("Admit = %s %s to %q, want %s %s to %q", d.Action, d.Reason, d.To.Name, tc.action, tc.reason, tc.to)
			}
			if d.Action == Serve && (len(d.Pathways) == 0 || d.Pathways[0].Name != tc.self) {
				t.Fatalf("Serve lists [%s], want %s first", names(d.Pathways), tc.self)
			}
		})
	}
	// An edge above the mean redirects a share of its arrivals.
	nodes := []Node{edge("a", 90, 100), edge("b", 10, 100)}
	got := share(1000, func(s string) string {
		d := Admit(View{Self: "a", Nodes: nodes}, Viewer{Session: s}, offload, 0)
		if d.Action == Redirect && d.Reason != ReasonRebalance {
			t.Fatalf("redirect reason %s, want rebalance", d.Reason)
		}
		return d.Action.String()
	})
	// Mean 0.5, a at 0.9: (0.9-0.5)/0.9 = 44% go.
	if f := float64(got["redirect"]) / 1000; f < 0.38 || f > 0.50 {
		t.Errorf("%.2f of arrivals at a were redirected, want about 0.44", f)
	}
}

func TestSteer(t *testing.T) {
	nodes := []Node{edge("a", 5, 10), edge("b", 5, 10)}
	s := Steer(View{Self: "b", Nodes: nodes}, Viewer{Session: "x", Current: "a"}, offload)
	if names(s.Priority) != "a,b" || s.Reload.Name != "b" || s.Reason != ReasonStay {
		t.Fatalf("Steer = %+v, want a,b reloading from b", s)
	}
	// Alone: reload from the same node.
	s = Steer(View{Self: "a", Nodes: nodes[:1]}, Viewer{Session: "x", Current: "a"}, offload)
	if names(s.Priority) != "a" || s.Reload.Name != "a" {
		t.Fatalf("Steer = %+v, want a reloading from a", s)
	}
	// The current node drains and nobody has room: stay rather than list nothing.
	drained := []Node{with(edge("a", 5, 10), func(n *Node) { n.Draining = true }), edge("b", 10, 10)}
	s = Steer(View{Self: "a", Nodes: drained}, Viewer{Session: "x", Current: "a"}, offload)
	if names(s.Priority) != "a" || s.Reason != ReasonStay {
		t.Fatalf("Steer = %+v, want a kept", s)
	}
	// The current node drains: move.
	drained[1].Viewers = 3
	s = Steer(View{Self: "a", Nodes: drained}, Viewer{Session: "x", Current: "a"}, offload)
	if names(s.Priority) != "b" || s.Reason != ReasonMove || s.Reload.Name != "b" {
		t.Fatalf("Steer = %+v, want b", s)
	}
}

// TestHashIsStable pins the hash: nodes of different releases must agree
// on every viewer's choices.
func TestHashIsStable(t *testing.T) {
	for _, tc := range []struct {
		session, key string
		want         float64
	}{
		{"0123456789abcdef", "move", 0.71101136084672367},
		{"0123456789abcdef", "edge-1", 0.0035711736779474035},
		{"", "", 0.30929118745757572},
	} {
		if got := unit(tc.session, tc.key); got != tc.want {
			t.Errorf("unit(%q, %q) = %.17g, want %.17g", tc.session, tc.key, got, tc.want)
		}
	}
}

// TestSharesThatMove: a node above its capacity sheds its excess, and a
// node behind the best group (an origin while edges have room) lets go as
// many viewers as the best group has room for: hashed shares, so a node
// that just gained room is not flooded.
func TestSharesThatMove(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes []Node
		cur   string
		want  float64 // share of cur's viewers that move
	}{
		{"above capacity: the excess", []Node{edge("a", 150, 100), edge("b", 60, 100)}, "a", 50.0 / 150},
		{"at capacity, at the mean: nobody", []Node{edge("a", 100, 100), edge("b", 100, 100)}, "a", 0},
		{"origin, edges with room for a third", []Node{origin("o", 90, 0), edge("e", 90, 120)}, "o", 30.0 / 90},
		{"origin, edges with room for all", []Node{origin("o", 90, 0), edge("e", 0, 120), edge("f", 0, 120)}, "o", 1},
		{"origin, edges full", []Node{origin("o", 90, 0), edge("e", 120, 120)}, "o", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 4000
			moved := 0
			for i := range n {
				st := Steer(View{Self: "x", Nodes: tc.nodes}, Viewer{Session: fmt.Sprintf("%016x", i), Current: tc.cur}, offload)
				if st.Priority[0].Name != tc.cur {
					moved++
				}
			}
			if got := float64(moved) / n; math.Abs(got-tc.want) > 0.03 {
				t.Errorf("%.3f of %s's viewers moved, want %.3f", got, tc.cur, tc.want)
			}
		})
	}
}
