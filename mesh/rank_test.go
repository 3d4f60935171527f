package mesh

import (
	"slices"
	"testing"
	"time"
)

func rttTable(ms map[string]float64) func(string) (time.Duration, bool) {
	return func(name string) (time.Duration, bool) {
		v, ok := ms[name]
		return time.Duration(v * float64(time.Millisecond)), ok
	}
}

func names(ns []NodeState) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.Name
	}
	return out
}

func edge(name string) NodeState {
	return NodeState{Name: name, Role: RoleEdge, State: StateReady, HTTPAddr: name + ":8080"}
}
func origin(name string) NodeState { return NodeState{Name: name, Role: RoleOrigin, State: StateReady} }

func with(n NodeState, f func(*NodeState)) NodeState { f(&n); return n }

func TestRank(t *testing.T) {
	for _, tc := range []struct {
		name    string
		holders []NodeState
		parents []string
		rtt     map[string]float64 // ms; missing = unknown
		want    []string
	}{
		{"empty", nil, nil, nil, []string{}},
		{"by rtt", []NodeState{edge("a"), edge("b"), edge("c")}, nil,
			map[string]float64{"a": 30, "b": 10, "c": 20}, []string{"b", "c", "a"}},
		{"parents first in their order, even when far",
			[]NodeState{edge("a"), edge("b"), edge("c"), edge("d")}, []string{"c", "x", "a"},
			map[string]float64{"a": 30, "b": 10, "c": 50, "d": 5}, []string{"c", "a", "d", "b"}},
		{"parent that does not hold the stream is ignored",
			[]NodeState{edge("a"), edge("b")}, []string{"z"},
			map[string]float64{"a": 2, "b": 1}, []string{"b", "a"}},
		{"duplicate parents and holders",
			[]NodeState{edge("a"), edge("b"), edge("a")}, []string{"b", "a", "b"},
			map[string]float64{"a": 1, "b": 2}, []string{"b", "a"}},
		{"load: 90% used costs 90 ms",
			[]NodeState{with(edge("near"), func(n *NodeState) { n.Viewers, n.Capacity = 900, 1000 }), edge("far")}, nil,
			map[string]float64{"near": 5, "far": 60}, []string{"far", "near"}},
		{"load: 30% used costs 30 ms, not enough to lose",
			[]NodeState{with(edge("near"), func(n *NodeState) { n.Viewers, n.Capacity = 300, 1000 }), edge("far")}, nil,
			map[string]float64{"near": 5, "far": 60}, []string{"near", "far"}},
		{"load counts full 10% steps only",
			[]NodeState{with(edge("a"), func(n *NodeState) { n.Viewers, n.Capacity = 199, 1000 }), edge("b")}, nil,
			map[string]float64{"a": 1, "b": 11.5}, []string{"a", "b"}},
		{"capacity 0 is unlimited",
			[]NodeState{with(edge("a"), func(n *NodeState) { n.Viewers = 1e6 }), edge("b")}, nil,
			map[string]float64{"a": 1, "b": 2}, []string{"a", "b"}},
		{"over capacity is penalized, not excluded",
			[]NodeState{with(edge("a"), func(n *NodeState) { n.Viewers, n.Capacity = 50, 10 })}, nil,
			map[string]float64{"a": 1}, []string{"a"}},
		{"busy CPU costs 50 ms",
			[]NodeState{with(edge("hot"), func(n *NodeState) { n.CPU = 0.85 }), edge("cool")}, nil,
			map[string]float64{"hot": 1, "cool": 40}, []string{"cool", "hot"}},
		{"CPU at 0.8 is fine",
			[]NodeState{with(edge("warm"), func(n *NodeState) { n.CPU = 0.8 }), edge("cool")}, nil,
			map[string]float64{"warm": 1, "cool": 40}, []string{"warm", "cool"}},
		{"draining last, even nearest",
			[]NodeState{with(edge("d"), func(n *NodeState) { n.State = StateDraining }), edge("a"), edge("b")}, nil,
			map[string]float64{"d": 1, "a": 50, "b": 40}, []string{"b", "a", "d"}},
		{"draining parent after everyone else, before other draining",
			[]NodeState{
				with(edge("dp"), func(n *NodeState) { n.State = StateDraining }),
				with(edge("dx"), func(n *NodeState) { n.State = StateDraining }),
				edge("a"), edge("p"),
			}, []string{"dp", "p"},
			map[string]float64{"dp": 1, "dx": 0.5, "a": 50, "p": 90}, []string{"p", "a", "dp", "dx"}},
		{"tie within 1 ms prefers non-origin",
			[]NodeState{origin("o"), edge("e")}, nil,
			map[string]float64{"o": 9.2, "e": 10}, []string{"e", "o"}},
		{"exact tie prefers non-origin",
			[]NodeState{origin("a-origin"), edge("z-edge")}, nil,
			map[string]float64{"a-origin": 10, "z-edge": 10}, []string{"z-edge", "a-origin"}},
		{"origin more than 1 ms nearer wins",
			[]NodeState{origin("o"), edge("e")}, nil,
			map[string]float64{"o": 8.5, "e": 10}, []string{"o", "e"}},
		{"origin as parent stays first",
			[]NodeState{edge("e"), origin("o")}, []string{"o"},
			map[string]float64{"o": 100, "e": 1}, []string{"o", "e"}},
		{"unknown rtt after known",
			[]NodeState{edge("u"), edge("k")}, nil,
			map[string]float64{"k": 300}, []string{"k", "u"}},
		{"equal scores by name",
			[]NodeState{edge("c"), edge("a"), edge("b")}, nil, nil, []string{"a", "b", "c"}},
		{"warming holders rank like ready ones",
			[]NodeState{with(edge("w"), func(n *NodeState) { n.State = StateWarming }), edge("r")}, nil,
			map[string]float64{"w": 1, "r": 2}, []string{"w", "r"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.holders)
			got := names(Rank(tc.holders, tc.parents, rttTable(tc.rtt)))
			if !slices.Equal(got, tc.want) {
				t.Errorf("Rank = %v, want %v", got, tc.want)
			}
			if !slices.EqualFunc(in, tc.holders, func(a, b NodeState) bool { return a.Name == b.Name }) {
				t.Error("Rank modified its input")
			}
		})
	}
	// A nil rtt function means nothing is known.
	if got := names(Rank([]NodeState{edge("b"), origin("a")}, nil, nil)); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("Rank with nil rtt = %v", got)
	}
}

func TestPickEdge(t *testing.T) {
	for _, tc := range []struct {
		name  string
		nodes []NodeState
		rtt   map[string]float64
		want  string // "" = none
	}{
		{"none", nil, nil, ""},
		{"nearest", []NodeState{edge("a"), edge("b"), edge("c")},
			map[string]float64{"a": 30, "b": 10, "c": 20}, "b"},
		{"self at 0 wins", []NodeState{edge("self"), edge("b")},
			map[string]float64{"self": 0, "b": 0.5 + 1}, "self"},
		{"origins are not edges", []NodeState{origin("o"), edge("e")},
			map[string]float64{"o": 1, "e": 50}, "e"},
		{"only origins", []NodeState{origin("o")}, map[string]float64{"o": 1}, ""},
		{"warming and draining skipped", []NodeState{
			with(edge("w"), func(n *NodeState) { n.State = StateWarming }),
			with(edge("d"), func(n *NodeState) { n.State = StateDraining }),
			with(edge("x"), func(n *NodeState) { n.State = "" }),
			edge("r"),
		}, map[string]float64{"w": 1, "d": 1, "x": 1, "r": 80}, "r"},
		{"at capacity skipped", []NodeState{
			with(edge("full"), func(n *NodeState) { n.Viewers, n.Capacity = 100, 100 }),
			with(edge("room"), func(n *NodeState) { n.Viewers, n.Capacity = 99, 100 }),
		}, map[string]float64{"full": 1, "room": 30}, "room"},
		{"all full", []NodeState{with(edge("full"), func(n *NodeState) { n.Viewers, n.Capacity = 101, 100 })},
			map[string]float64{"full": 1}, ""},
		{"no HTTP address skipped", []NodeState{with(edge("noaddr"), func(n *NodeState) { n.HTTPAddr = "" }), edge("ok")},
			map[string]float64{"noaddr": 1, "ok": 30}, "ok"},
		{"CPU-saturated skipped", []NodeState{with(edge("hot"), func(n *NodeState) { n.CPU = 0.97 }), edge("ok")},
			map[string]float64{"hot": 1, "ok": 30}, "ok"},
		{"within 1 ms: least loaded", []NodeState{
			with(edge("a"), func(n *NodeState) { n.Viewers, n.Capacity = 80, 100 }),
			with(edge("b"), func(n *NodeState) { n.Viewers, n.Capacity = 10, 100 }),
			edge("far"),
		}, map[string]float64{"a": 5, "b": 5.8, "far": 20}, "b"},
		{"beyond 1 ms: nearest, however loaded", []NodeState{
			with(edge("a"), func(n *NodeState) { n.Viewers, n.Capacity = 80, 100 }),
			with(edge("b"), func(n *NodeState) { n.Viewers, n.Capacity = 10, 100 }),
		}, map[string]float64{"a": 5, "b": 6.5}, "a"},
		{"CPU counts as load in ties", []NodeState{
			with(edge("a"), func(n *NodeState) { n.CPU = 0.7 }),
			with(edge("b"), func(n *NodeState) { n.CPU = 0.2 }),
		}, map[string]float64{"a": 5, "b": 5}, "b"},
		{"unknown rtt after known", []NodeState{edge("u"), edge("k")}, map[string]float64{"k": 400}, "k"},
		{"all unknown: by name", []NodeState{edge("z"), edge("m")}, nil, "m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := PickEdge(tc.nodes, rttTable(tc.rtt))
			if tc.want == "" {
				if ok {
					t.Errorf("PickEdge = %q, want none", got.Name)
				}
				return
			}
			if !ok || got.Name != tc.want {
				t.Errorf("PickEdge = %q, %v; want %q", got.Name, ok, tc.want)
			}
		})
	}
}

func TestRelaysFrom(t *testing.T) {
	relayed := func(name, via string) NodeState {
		return NodeState{Name: name, Streams: []StreamLoad{{Name: "other", Via: "x"}, {Name: "show", Via: via}}}
	}
	nodes := map[string]NodeState{}
	for _, n := range []NodeState{
		{Name: "origin", Streams: []StreamLoad{{Name: "show", Origin: true}}},
		relayed("edge-1", "origin"),
		relayed("edge-2", "edge-1"),
		relayed("edge-3", "edge-2"),
		relayed("loop-a", "loop-b"),
		relayed("loop-b", "loop-a"),
	} {
		nodes[n.Name] = n
	}
	node := func(name string) (NodeState, bool) { n, ok := nodes[name]; return n, ok }
	for _, tc := range []struct {
		name   string
		holder NodeState
		self   string
		want   bool
	}{
		{"the origin relays from nobody", nodes["origin"], "edge-1", false},
		{"a holder fed by this node", nodes["edge-2"], "edge-1", true},
		{"a holder fed through another from this node", nodes["edge-3"], "edge-1", true},
		{"a holder fed from the origin, not through this node", nodes["edge-1"], "edge-2", false},
		{"a holder of a different chain", nodes["edge-2"], "edge-9", false},
		{"a chain through a node this one does not know", relayed("edge-9", "gone"), "edge-1", false},
		{"another stream's via does not count", NodeState{Name: "e", Streams: []StreamLoad{{Name: "other", Via: "edge-1"}}}, "edge-1", false},
		{"a loop elsewhere in gossip ends", nodes["loop-a"], "edge-1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RelaysFrom(tc.holder, "show", tc.self, node); got != tc.want {
				t.Fatalf("RelaysFrom(%s, show, %s) = %v, want %v", tc.holder.Name, tc.self, got, tc.want)
			}
		})
	}
}
