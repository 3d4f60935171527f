package steer

import (
	"slices"
	"time"
)

// Action is what a node does with a new session's first request.
type Action uint8

// Actions.
const (
	Serve    Action = iota // answer the multivariant playlist here
	Redirect               // 302 to another node's multivariant playlist
	Shed                   // 503 with Retry-After: no node has room
)

func (a Action) String() string {
	switch a {
	case Serve:
		return "serve"
	case Redirect:
		return "redirect"
	case Shed:
		return "shed"
	}
	return "unknown"
}

// Reason says why a decision was taken. Each is counted in
// relaymesh_viewer_decisions_total{decision, reason}.
type Reason string

// Reasons.
const (
	ReasonHere       Reason = "here"        // served here: this node is the viewer's best
	ReasonNoRoom     Reason = "no_room"     // served here beyond capacity: no node has room
	ReasonMaxViewers Reason = "max_viewers" // shed: at --max-viewers and no node has room
	ReasonDraining   Reason = "draining"    // this node is draining
	ReasonNotReady   Reason = "not_ready"   // this node is still starting
	ReasonFull       Reason = "full"        // this node is at capacity
	ReasonCPU        Reason = "cpu"         // this node is above 95% CPU
	ReasonOffload    Reason = "offload"     // an origin, and an edge has room
	ReasonRegion     Reason = "region"      // a node in the viewer's region has room
	ReasonNearer     Reason = "nearer"      // a nearer node has room
	ReasonRebalance  Reason = "rebalance"   // this node is above the mesh's mean load
	ReasonStay       Reason = "stay"        // steering: the viewer keeps its node
	ReasonMove       Reason = "move"        // steering: the viewer is sent to another node
)

// Decision is Admit's answer.
type Decision struct {
	Action Action
	Reason Reason
	// To is where a Redirect goes.
	To Node
	// Pathways are what a Serve lists, best first; the answering node
	// first.
	Pathways []Node
}

// Admit decides what the answering node does with a new session's first
// request (its multivariant playlist), as rules 1-6 rank the nodes for a
// viewer arriving there. The node serves when it ranks first. It redirects
// to the node that ranks first otherwise. When no node has room it serves
// anyway, beyond its capacity, unless it holds maxViewers viewers or more
// (0: no hard limit); then it sheds.
func Admit(v View, who Viewer, p Policy, maxViewers int) Decision {
	who.Current, who.Counted = v.Self, false
	self, known := v.Node(v.Self)
	if known && maxViewers > 0 && self.Viewers+self.Pending >= maxViewers && (self.Capacity == 0 || self.Capacity > maxViewers) {
		// The hard limit binds before the soft one: rank this node as full.
		self.Capacity = maxViewers
		v.Nodes = slices.Clone(v.Nodes)
		for i := range v.Nodes {
			if v.Nodes[i].Name == v.Self {
				v.Nodes[i] = self
			}
		}
	}
	ranked := Rank(v, who, p)
	if len(ranked) == 0 {
		if known && maxViewers > 0 && self.Viewers+self.Pending >= maxViewers {
			return Decision{Action: Shed, Reason: ReasonMaxViewers}
		}
		return Decision{Action: Serve, Reason: ReasonNoRoom, Pathways: []Node{self}}
	}
	if ranked[0].Name == v.Self {
		return Decision{Action: Serve, Reason: ReasonHere, Pathways: ranked}
	}
	return Decision{Action: Redirect, Reason: whyNotHere(v, self, known, ranked[0], who, p), To: ranked[0]}
}

// whyNotHere names the rule that put best before the answering node.
func whyNotHere(v View, self Node, known bool, best Node, who Viewer, p Policy) Reason {
	switch {
	case known && self.Draining:
		return ReasonDraining
	case !known || !self.Ready || self.URL == "":
		return ReasonNotReady
	case self.CPU >= maxCPU:
		return ReasonCPU
	case !hasRoom(self, false):
		return ReasonFull
	case p.OriginOffload && self.Origin && !best.Origin:
		return ReasonOffload
	case who.Region != "" && best.Region == who.Region && self.Region != who.Region:
		return ReasonRegion
	case best.RTT/rttBand < self.RTT/rttBand:
		return ReasonNearer
	}
	return ReasonRebalance
}

// Steering is what a steering manifest tells a playing viewer.
type Steering struct {
	// Priority lists the viewer's pathways, best first. It is never
	// empty: with no node that has room, it names the viewer's current
	// node (or the answering one), so the player stays where it is.
	Priority []Node
	// Reload is the node whose steering server the viewer asks next: the
	// viewer's first fallback, so that losing the node it plays from does
	// not also lose its steering; or its only node.
	Reload Node
	Reason Reason // ReasonStay or ReasonMove
}

// Steer decides a playing viewer's pathways: who.Current is the pathway it
// plays from, counted in that node's viewers.
func Steer(v View, who Viewer, p Policy) Steering {
	who.Counted = true
	ranked := Rank(v, who, p)
	if len(ranked) == 0 {
		n, ok := v.Node(who.Current)
		if !ok || n.URL == "" {
			n, _ = v.Node(v.Self)
		}
		return Steering{Priority: []Node{n}, Reload: n, Reason: ReasonStay}
	}
	s := Steering{Priority: ranked, Reload: ranked[0], Reason: ReasonStay}
	if len(ranked) > 1 {
		s.Reload = ranked[1]
	}
	if ranked[0].Name != who.Current {
		s.Reason = ReasonMove
	}
	return s
}

// TTL is the TTL, in whole seconds, of one steering answer for a viewer
// whose steering TTL is ttl. A viewer's first answer has a TTL from 1 s to
// the full TTL, picked by its session: viewers who arrived in the same
// second then reload at spread phases, so the viewers of a node that
// starts draining move over the TTL, not all in one second. A busy
// answering node stretches the TTL fourfold to shed steering load, rather
// than answer 429: hls.js 1.7 stops reloading the steering manifest for
// good after a 429 (content-steering-controller.ts schedules no refresh).
func TTL(ttl time.Duration, session string, first, busy bool) int {
	secs := max(int((ttl+time.Second-1)/time.Second), 1)
	switch {
	case busy:
		return 4 * secs
	case first && secs > 1:
		return 1 + int(unit(session, "phase")*float64(secs))
	}
	return secs
}

// Totals is the mesh's load, for autoscalers and people.
type Totals struct {
	Nodes    int // alive
	Ready    int // ready and not draining: taking new viewers
	Viewers  int // on every node
	Capacity int // of ready nodes that have one
	// Headroom is the viewers ready nodes with a capacity can still take.
	Headroom int
	// Unlimited counts ready nodes without a capacity, whose room is not
	// in Capacity or Headroom.
	Unlimited int
}

// Sum adds up nodes.
func Sum(nodes []Node) Totals {
	var t Totals
	for _, n := range nodes {
		t.Nodes++
		t.Viewers += n.Viewers
		if !n.Ready || n.Draining {
			continue
		}
		t.Ready++
		if n.Capacity <= 0 {
			t.Unlimited++
			continue
		}
		t.Capacity += n.Capacity
		t.Headroom += max(n.Capacity-n.Viewers, 0)
	}
	return t
}

// Utilization is the share of capacity in use on ready nodes with a
// capacity, or 0 when none has one.
func (t Totals) Utilization() float64 {
	if t.Capacity == 0 {
		return 0
	}
	return float64(t.Capacity-t.Headroom) / float64(t.Capacity)
}
