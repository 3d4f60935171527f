package steer

import (
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Mesh is the view of the mesh a Router reads.
type Mesh interface {
	// Nodes returns every alive node as this node sees it, itself
	// included, with Pending zero and Heard set. The Router calls it at
	// most every refreshInterval and never concurrently, and keeps the
	// returned slice: it must not be modified afterwards.
	Nodes() []Node
	// LoadInterval is how often nodes gossip a change of load only: it
	// grows with the mesh.
	LoadInterval() time.Duration
}

// Timing of a Router.
const (
	// refreshInterval bounds how stale the Router's view of the mesh is.
	// Gossip brings load every second; this only saves copying it for
	// every request.
	refreshInterval = 100 * time.Millisecond
	// ledgerSlack: a viewer sent to a node counts as pending there until
	// the node's gossip, heard this long after the viewer was sent,
	// includes it (the node samples its load every 250 ms).
	ledgerSlack = 500 * time.Millisecond
	// ledgerMax bounds how long a viewer counts as pending, for one that
	// never arrived or a node whose load does not change; at least two
	// load intervals, in a mesh large enough to gossip load less often.
	ledgerMax = 3 * time.Second
)

// Router routes this node's viewers: it applies Admit and Steer to a
// cached view of the mesh, adding to each node the new sessions this node
// has just redirected there. Its zero value is not usable: Mesh must be set. Its
// methods are safe for concurrent use.
type Router struct {
	Mesh       Mesh
	Policy     Policy
	MaxViewers int // hard limit for Admit; 0: none

	view    atomic.Pointer[cachedView]
	refresh sync.Mutex // one refresh at a time

	mu      sync.Mutex
	ledger  map[string][]time.Time // node -> when viewers were sent there, oldest first
	counted map[decisionKey]int64
}

type cachedView struct {
	at    time.Time
	nodes []Node
}

type decisionKey struct {
	Decision string
	Reason   Reason
}

// View returns the mesh as this node routes it now: gossiped state plus
// pending viewers. self names the answering node.
func (r *Router) View(self string) View {
	nodes := r.nodes()
	now := time.Now()
	out := make([]Node, len(nodes))
	copy(out, nodes)
	keep := max(ledgerMax, 2*r.Mesh.LoadInterval())
	r.mu.Lock()
	for i := range out {
		out[i].Pending = r.pendingLocked(out[i], now, keep)
	}
	r.mu.Unlock()
	return View{Self: self, Nodes: out}
}

func (r *Router) nodes() []Node {
	if c := r.view.Load(); c != nil && time.Since(c.at) < refreshInterval {
		return c.nodes
	}
	r.refresh.Lock()
	defer r.refresh.Unlock()
	if c := r.view.Load(); c != nil && time.Since(c.at) < refreshInterval {
		return c.nodes
	}
	c := &cachedView{at: time.Now(), nodes: r.Mesh.Nodes()}
	r.view.Store(c)
	return c.nodes
}

// pendingLocked counts the viewers sent to n that its gossip cannot
// include yet, and forgets those it must.
func (r *Router) pendingLocked(n Node, now time.Time, keep time.Duration) int {
	sent := r.ledger[n.Name]
	drop := 0
	for drop < len(sent) && now.Sub(sent[drop]) > keep {
		drop++
	}
	if drop > 0 {
		sent = sent[drop:]
		if len(sent) == 0 {
			delete(r.ledger, n.Name)
		} else {
			r.ledger[n.Name] = sent
		}
	}
	cut := n.Heard.Add(-ledgerSlack)
	i := sort.Search(len(sent), func(i int) bool { return sent[i].After(cut) })
	return len(sent) - i
}

// sent records a viewer sent to node.
func (r *Router) sent(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ledger == nil {
		r.ledger = map[string][]time.Time{}
	}
	r.ledger[node] = append(r.ledger[node], time.Now())
}

func (r *Router) count(decision string, reason Reason) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.counted == nil {
		r.counted = map[decisionKey]int64{}
	}
	r.counted[decisionKey{decision, reason}]++
}

// Admit decides a new session's first request at node self.
func (r *Router) Admit(self string, who Viewer) Decision {
	d := Admit(r.View(self), who, r.Policy, r.MaxViewers)
	if d.Action == Redirect {
		r.sent(d.To.Name)
	}
	r.count(d.Action.String(), d.Reason)
	return d
}

// Steer decides a playing viewer's pathways at node self. Moves are not
// entered in the ledger: many viewers move in one steering TTL, their new
// node counts them at once, and a ledger that still counted them after
// gossip did would make it look fuller than it is and move some back.
// Which viewers move is hashed, so lagging counts do not move too many.
func (r *Router) Steer(self string, who Viewer) Steering {
	s := Steer(r.View(self), who, r.Policy)
	r.count("steer", s.Reason)
	return s
}

// Decisions returns how many decisions of each kind and reason this
// Router has taken: decision is serve, redirect, shed or steer.
func (r *Router) Decisions() map[string]map[Reason]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]map[Reason]int64{}
	for k, n := range r.counted {
		if out[k.Decision] == nil {
			out[k.Decision] = map[Reason]int64{}
		}
		out[k.Decision][k.Reason] = n
	}
	return out
}
