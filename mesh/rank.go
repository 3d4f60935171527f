package mesh

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"time"
)

// Scoring for Rank and PickEdge.
const (
	// unknownRTT stands in for a node without an RTT estimate yet, so it
	// ranks behind every node with a plausible one.
	unknownRTT = time.Second
	// loadStep is added per full 10% of capacity in use.
	loadStep = 10 * time.Millisecond
	// busyCPU and cpuPenalty: a node above this CPU share is penalized.
	busyCPU    = 0.8
	cpuPenalty = 50 * time.Millisecond
	// originBias makes an origin lose ties within 1 ms to any other holder,
	// so the origin's egress stays for nodes that have nowhere else to go.
	originBias = time.Millisecond
	// edgeSlack: PickEdge treats edges within this much of the nearest as
	// equally near and prefers the least loaded of them.
	edgeSlack = time.Millisecond
	// overloadedCPU: PickEdge sends no viewer to an edge at or above it.
	overloadedCPU = 0.95
)

// Rank orders candidate upstreams for a stream, best first. holders are the
// nodes that hold the stream (Holders); parents are configured preferred
// upstreams; rtt estimates the round-trip time from this node (Mesh.RTT).
//
//  1. Holders named in parents come first, in parents' order.
//  2. Then the other holders, by score: estimated RTT (1 s if unknown) plus
//     10 ms per full 10% of capacity used (Viewers/Capacity; Capacity 0 is
//     unlimited), plus 50 ms if CPU > 0.8, plus 1 ms for an origin, so an
//     origin wins only if it is more than 1 ms better and stays protected.
//     Equal scores go by name.
//  3. Draining nodes come last, parents among them first, whatever their
//     score: they are shutting down and would only have to be replaced.
//
// Rank does not modify holders; a name listed twice is kept once.
func Rank(holders []NodeState, parents []string, rtt func(name string) (time.Duration, bool)) []NodeState {
	parentIdx := make(map[string]int, len(parents))
	for i, p := range parents {
		if _, dup := parentIdx[p]; !dup {
			parentIdx[p] = i
		}
	}
	type cand struct {
		n      NodeState
		group  int // 0 parent, 1 other, 2 draining
		parent int // index in parents, or len(parents)
		score  time.Duration
	}
	seen := make(map[string]bool, len(holders))
	cands := make([]cand, 0, len(holders))
	for _, h := range holders {
		if seen[h.Name] {
			continue
		}
		seen[h.Name] = true
		c := cand{n: h, group: 1, parent: len(parents), score: score(h, rtt)}
		if i, ok := parentIdx[h.Name]; ok {
			c.group, c.parent = 0, i
		}
		if h.State == StateDraining {
			c.group = 2
		}
		cands = append(cands, c)
	}
	slices.SortFunc(cands, func(a, b cand) int {
		return cmp.Or(
			cmp.Compare(a.group, b.group),
			cmp.Compare(a.parent, b.parent),
			cmp.Compare(a.score, b.score),
			strings.Compare(a.n.Name, b.n.Name),
		)
	})
	out := make([]NodeState, len(cands))
	for i, c := range cands {
		out[i] = c.n
	}
	return out
}

// maxVias bounds how far RelaysFrom follows a chain of Vias: further than
// any tier of shields goes, and finite when gossip briefly shows a loop.
const maxVias = 16

// RelaysFrom reports whether holder's copy of stream comes, through its
// chain of Vias (StreamLoad.Via, looked up with node), from the node named
// self: subscribing to it would make a loop, in which both copies starve.
func RelaysFrom(holder NodeState, stream, self string, node func(name string) (NodeState, bool)) bool {
	n := holder
	for range maxVias {
		via := ""
		for _, s := range n.Streams {
			if s.Name == stream {
				via = s.Via
				break
			}
		}
		if via == "" {
			return false
		}
		if via == self {
			return true
		}
		var ok bool
		if n, ok = node(via); !ok {
			return false
		}
	}
	return false
}

// score is a holder's cost as an upstream (lower is better).
func score(n NodeState, rtt func(string) (time.Duration, bool)) time.Duration {
	d := estimate(n.Name, rtt)
	if n.Capacity > 0 {
		// Full 10% steps, capped so absurd counts cannot overflow.
		steps := min(math.Floor(10*float64(max(n.Viewers, 0))/float64(n.Capacity)), 1000)
		d += time.Duration(steps) * loadStep
	}
	if n.CPU > busyCPU {
		d += cpuPenalty
	}
	if n.Role == RoleOrigin {
		d += originBias
	}
	return d
}

func estimate(name string, rtt func(string) (time.Duration, bool)) time.Duration {
	if rtt == nil {
		return unknownRTT
	}
	d, ok := rtt(name)
	if !ok || d < 0 || d > unknownRTT {
		return unknownRTT
	}
	return d
}

// PickEdge returns the edge a viewer near this node should use: among edges
// that are ready, gossip an HTTP address, are below capacity (Viewers <
// Capacity, or Capacity 0) and below 95% CPU, the nearest by rtt (Mesh.RTT, so this node itself is at 0);
// edges within 1 ms of the nearest count as equally near, and the least
// loaded of those wins (load: the larger of Viewers/Capacity and CPU), then
// the nearer, then the name. It returns false if no edge qualifies.
func PickEdge(nodes []NodeState, rtt func(string) (time.Duration, bool)) (NodeState, bool) {
	type cand struct {
		n    NodeState
		rtt  time.Duration
		load float64
	}
	var cands []cand
	nearest := time.Duration(-1)
	for _, n := range nodes {
		if n.Role != RoleEdge || n.State != StateReady || n.HTTPAddr == "" || n.CPU >= overloadedCPU {
			continue
		}
		load := n.CPU
		if n.Capacity > 0 {
			if n.Viewers >= n.Capacity {
				continue
			}
			load = max(load, float64(n.Viewers)/float64(n.Capacity))
		}
		c := cand{n: n, rtt: estimate(n.Name, rtt), load: load}
		if nearest < 0 || c.rtt < nearest {
			nearest = c.rtt
		}
		cands = append(cands, c)
	}
	if len(cands) == 0 {
		return NodeState{}, false
	}
	var best *cand
	for i := range cands {
		c := &cands[i]
		if c.rtt > nearest+edgeSlack {
			continue
		}
		if best == nil || cmp.Or(
			cmp.Compare(c.load, best.load),
			cmp.Compare(c.rtt, best.rtt),
			strings.Compare(c.n.Name, best.n.Name),
		) < 0 {
			best = c
		}
	}
	return best.n, true
}
