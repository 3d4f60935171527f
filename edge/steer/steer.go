// Package steer decides where viewers are served. From the mesh as one
// node sees it (a View) and the facts of one request (a Viewer), it ranks
// the nodes a player should use, best first: the pathways of HLS Content
// Steering (RFC 8216bis 4.4.6.6), whose PATHWAY-ID is the node's name
// (Rank). It decides whether a new session's first request is served
// here, redirected to another node, or shed (Admit), and what a steering
// manifest tells a playing viewer (Steer).
//
// The decisions are pure functions of plain values, so they are tested
// from tables. Router wraps them for a node: a cached view of the mesh and
// a short ledger of the viewers the node has just sent to each other node,
// which gossip has not reported yet.
//
// The rules, in order:
//
//  1. A node is listed only if it will serve: ready, not draining, with a
//     public URL, under 95% CPU and with room (Viewers < Capacity, but a
//     node is never full for the viewers it already counts: see rule 5),
//     and if its name is a valid PATHWAY-ID.
//  2. Origins rank behind every edge when Policy.OriginOffload is set, so
//     an origin serves viewers only when no edge has room.
//  3. Nodes in the viewer's region rank first, when any is listed.
//  4. Nodes whose round-trip estimate from the answering node is more than
//     one band (25 ms) further rank after nearer ones.
//  5. A playing viewer stays on its current node unless a share of that
//     node's viewers must move, and its session hashes into the share
//     (see stay): above the first group's mean load plus 10% of capacity,
//     what brings it back to the mean; above its capacity, the excess;
//     for a node behind the first group (an origin while edges have
//     room), what the first group has room for. Because the choice is a
//     hash, not a coin toss, every node computing it agrees, and counts
//     that lag behind the moves do not move more viewers than needed.
//  6. A viewer that moves, or arrives, goes to one of the group's nodes by
//     weighted rendezvous hashing of its session: weighted by how far each
//     node is below the mean load, or by headroom when none is. Arrivals
//     spread over nodes in proportion to their room instead of all landing
//     on the emptiest one before its count is gossiped.
//  7. The other listed nodes follow as fallbacks, by group and then by
//     rendezvous weighted by headroom, so the viewers of a node that dies
//     spread over the others instead of all failing over to one.
package steer

import (
	"cmp"
	"math"
	"slices"
	"strings"
	"time"
)

// Node is what routing knows about one node of the mesh.
type Node struct {
	Name     string
	URL      string // base URL viewers use: scheme://host[:port][/prefix], no trailing slash
	Region   string
	Origin   bool
	Ready    bool // started and taking viewers
	Draining bool
	Viewers  int // as last gossiped
	// Pending counts viewers the answering node has sent here since
	// Viewers was gossiped (Router's ledger).
	Pending  int
	Capacity int     // soft limit on viewers; 0: unlimited
	CPU      float64 // share of its machine, 0..1
	// RTT is the round-trip estimate from the answering node; 0 when
	// unknown, and for the answering node itself.
	RTT time.Duration
	// Heard is when the answering node last heard this node's load; zero
	// for the answering node itself, whose count is always current.
	Heard time.Time
}

// View is the mesh as the answering node sees it.
type View struct {
	Self  string // the answering node's name
	Nodes []Node // every alive node, Self included
}

// Node returns the named node.
func (v View) Node(name string) (Node, bool) {
	for _, n := range v.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// Viewer is what a request tells about the viewer making it.
type Viewer struct {
	// Session identifies the viewer (its rmsid). Hashing it makes every
	// choice about the viewer deterministic.
	Session string
	Region  string // "" when unknown
	// Current is the node the viewer plays from now, or arrives at.
	Current string
	// Counted is true when Current's Viewers include this viewer: a
	// playing viewer asking for steering, not a new one arriving.
	Counted bool
}

// Policy holds the operator's routing choices.
type Policy struct {
	// OriginOffload ranks origins behind every edge with room.
	OriginOffload bool
	// MaxPathways bounds the nodes listed to one viewer (default 3).
	MaxPathways int
}

func (p Policy) maxPathways() int {
	if p.MaxPathways <= 0 {
		return 3
	}
	return p.MaxPathways
}

// Tuning of the rules above.
const (
	// maxCPU: a node at or above this share of its machine gets no
	// viewers.
	maxCPU = 0.95
	// rebalanceSlack is how far above the mean load a node may be before
	// viewers move off it.
	rebalanceSlack = 0.1
	// nominalCapacity is the capacity routing assumes for a node without
	// one, to weigh it against nodes with one.
	nominalCapacity = 1000
	// rttBand: nodes within one band of round-trip time count as equally
	// near.
	rttBand = 25 * time.Millisecond
)

// hasRoom reports whether n takes a viewer; counted says n's count already
// includes it: a node keeps its own viewers, even above its capacity,
// and sheds only its excess (see choose).
func hasRoom(n Node, counted bool) bool {
	return counted || n.Capacity <= 0 || n.Viewers+n.Pending < n.Capacity
}

// serves reports whether a viewer may be sent to n (rule 1).
func serves(n Node, counted bool) bool {
	return n.Ready && !n.Draining && n.CPU < maxCPU && hasRoom(n, counted) &&
		ValidPathwayID(n.Name) && validURL(n.URL)
}

// ValidPathwayID reports whether a node name can be a PATHWAY-ID, which
// RFC 8216bis limits to letters, digits, '.', '-' and '_'. Other nodes are
// never listed.
func ValidPathwayID(name string) bool {
	if name == "" || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validURL reports whether a gossiped base URL can be written into a
// playlist and a JSON string as it is.
func validURL(u string) bool {
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return false
	}
	for i := 0; i < len(u); i++ {
		if c := u[i]; c <= ' ' || c == '"' || c == '\\' || c >= 0x7f {
			return false
		}
	}
	return true
}

// load is n's share of its capacity in use. A node without a capacity
// counts as nominalCapacity: CPU, which swings with everything a node
// does, would move viewers back and forth.
func load(n Node) float64 {
	return float64(max(n.Viewers+n.Pending, 0)) / capacity(n)
}

func capacity(n Node) float64 {
	if n.Capacity > 0 {
		return float64(n.Capacity)
	}
	return nominalCapacity
}

// headroom is the room left on n in viewers, never quite zero so that a
// full group still has an order.
func headroom(n Node) float64 {
	return max((1-load(n))*capacity(n), 1e-3)
}

// group is a node's rank before load is considered (rules 2-4): lower is
// better.
type group struct {
	origin, away, band int
}

func (g group) compare(o group) int {
	return cmp.Or(cmp.Compare(g.origin, o.origin), cmp.Compare(g.away, o.away), cmp.Compare(g.band, o.band))
}

type cand struct {
	n Node
	g group
}

// Rank returns the nodes who should use, best first, at most
// Policy.MaxPathways of them. It is empty when no node has room.
func Rank(v View, who Viewer, p Policy) []Node {
	cands := candidates(v, who, p)
	if len(cands) == 0 {
		return nil
	}
	first := choose(cands, who)
	out := make([]Node, 0, min(len(cands), p.maxPathways()))
	out = append(out, first)
	rest := make([]cand, 0, len(cands)-1)
	for _, c := range cands {
		if c.n.Name != first.Name {
			rest = append(rest, c)
		}
	}
	slices.SortFunc(rest, func(a, b cand) int {
		return cmp.Or(a.g.compare(b.g), -cmp.Compare(
			rendezvous(who.Session, a.n.Name, headroom(a.n)), rendezvous(who.Session, b.n.Name, headroom(b.n))),
			cmp.Compare(a.n.Name, b.n.Name))
	})
	for _, c := range rest {
		if len(out) == cap(out) {
			break
		}
		out = append(out, c.n)
	}
	return out
}

// candidates lists the nodes who may be sent to, sorted by group.
func candidates(v View, who Viewer, p Policy) []cand {
	var cands []cand
	inRegion := false
	for _, n := range v.Nodes {
		if serves(n, who.Counted && n.Name == who.Current) {
			cands = append(cands, cand{n: n})
			inRegion = inRegion || (who.Region != "" && n.Region == who.Region)
		}
	}
	for i := range cands {
		c := &cands[i]
		if p.OriginOffload && c.n.Origin {
			c.g.origin = 1
		}
		if inRegion && c.n.Region != who.Region {
			c.g.away = 1
		}
		c.g.band = int(max(c.n.RTT, 0) / rttBand)
	}
	slices.SortStableFunc(cands, func(a, b cand) int { return a.g.compare(b.g) })
	return cands
}

// choose picks the first node among cands (sorted by group) for who: rules
// 5 and 6 over the best group.
func choose(cands []cand, who Viewer) Node {
	home := cands
	for i, c := range cands {
		if c.g.compare(cands[0].g) != 0 {
			home = cands[:i]
			break
		}
	}
	var used, total float64
	for _, c := range home {
		used += load(c.n) * capacity(c.n)
		total += capacity(c.n)
	}
	mean := used / total
	if n, stays := stay(cands, home, mean, who); stays {
		return n
	}
	// Arriving or moving: to the nodes below the mean, by how far below;
	// or, when none is, by headroom.
	deficit := func(n Node) float64 { return (mean - load(n)) * capacity(n) }
	below := false
	for _, c := range home {
		below = below || (c.n.Name != who.Current && deficit(c.n) > 1e-9)
	}
	var best Node
	bestScore := math.Inf(-1)
	for _, c := range home {
		if c.n.Name == who.Current && len(home) > 1 {
			continue
		}
		w := headroom(c.n)
		if below {
			if w = deficit(c.n); w <= 1e-9 {
				continue
			}
		}
		if s := rendezvous(who.Session, c.n.Name, w); s > bestScore {
			best, bestScore = c.n, s
		}
	}
	return best
}

// stay decides whether a viewer keeps its current node (returned with
// true). Which viewers of a node move is decided by hashing their
// sessions against a share: every node answering for a viewer agrees, and
// counts that lag behind the moves, which only shrink the share as they
// catch up, never move more viewers than the share.
//
//   - A node in the best group keeps its viewers while it is no fuller
//     than the group's mean load plus rebalanceSlack; above that, the
//     share that brings it back to the mean moves.
//   - A node that ranks behind the best group (an origin while edges have
//     room, another region, a farther band) lets go as many viewers as the
//     best group has room for, and no more: a node that has just joined
//     is not flooded before gossip shows it filling up.
//   - A node above its capacity sheds its excess.
//
// A node that no longer serves (draining, gone) keeps nobody, and a new
// viewer stays only with a node of the best group.
func stay(cands, home []cand, mean float64, who Viewer) (Node, bool) {
	var cur *cand
	inHome := false
	for i := range cands {
		if cands[i].n.Name == who.Current {
			cur, inHome = &cands[i], i < len(home)
		}
	}
	if cur == nil || (!inHome && !who.Counted) {
		return Node{}, false
	}
	own := cur.n
	if who.Counted {
		own.Pending = 0 // its count already includes whoever was sent there
	}
	share := 0.0
	if inHome {
		if over := load(own) - mean; over > rebalanceSlack {
			share = over / load(own)
		}
	} else {
		room := 0.0
		for _, c := range home {
			room += max((1-load(c.n))*capacity(c.n), 0)
		}
		share = min(1, room/max(float64(own.Viewers), 1))
	}
	if who.Counted && own.Capacity > 0 && own.Viewers > own.Capacity {
		share = max(share, float64(own.Viewers-own.Capacity)/float64(own.Viewers))
	}
	if unit(who.Session, "move") >= share {
		return cur.n, true
	}
	return Node{}, false
}
