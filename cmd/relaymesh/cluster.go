package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/relaymesh/relaymesh/ingest/standby"
	"github.com/relaymesh/relaymesh/mesh"
	"github.com/relaymesh/relaymesh/relay/peer"
	"github.com/relaymesh/relaymesh/relay/peertls"
)

// cluster is a node's part in the mesh: membership, the relay endpoint and
// the puller that fetches streams from other nodes.
type cluster struct {
	mesh    *mesh.Mesh
	ep      *peer.Endpoint
	puller  *peer.Puller
	parents []string
	prewarm int
	standby *standby.Keeper // origins only
	join    []string

	rateMu   sync.Mutex
	rateAt   time.Time
	rateSum  int64
	rate     int64
	cpuAt    time.Time
	cpuSpent time.Duration
	cpu      float64
}

// loopback reports whether addr's host is a loopback address.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// meshEnabled decides whether a node joins a mesh. A node given no cluster
// key and no seeds, with the default mesh address, runs alone: a single
// origin needs no mesh, and the default address is not loopback.
func (f *nodeFlags) meshEnabled(explicit func(string) bool) bool {
	if f.Mesh == "" || f.Relay == "" {
		return false
	}
	return f.ClusterKey != "" || f.Join != "" || explicit("mesh") || explicit("relay") || loopback(f.Mesh)
}

// advertiseHost is the host other nodes dial for this node's relay and
// HTTP listeners.
func (f *nodeFlags) advertiseHost() string {
	if f.Advertise != "" {
		if h, _, err := net.SplitHostPort(f.Advertise); err == nil {
			return h
		}
		return f.Advertise
	}
	for _, a := range []string{f.Mesh, f.Relay, f.HTTP} {
		if h, _, err := net.SplitHostPort(a); err == nil && h != "" {
			if ip := net.ParseIP(h); ip == nil || !ip.IsUnspecified() {
				return h
			}
		}
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

func withPort(host string, ln net.Addr) string {
	_, p, _ := net.SplitHostPort(ln.String())
	return net.JoinHostPort(host, p)
}

// newCluster binds the mesh and relay listeners.
func newCluster(n *node) (*cluster, error) {
	f := &n.flags
	if !loopback(f.Mesh) && f.ClusterKey == "" && f.RelayCA == "" {
		return nil, fmt.Errorf("--mesh %s is reachable from other hosts: set --cluster-key (the same secret on every node) so that gossip and relay traffic are authenticated and encrypted", f.Mesh)
	}
	var tc *peertls.Config
	var err error
	if f.RelayCA != "" || f.RelayCert != "" || f.RelayKey != "" {
		tc, err = peertls.FromFiles(f.RelayCA, f.RelayCert, f.RelayKey)
	} else {
		key := f.ClusterKey
		if key == "" {
			key = "relaymesh loopback" // loopback only, checked above
		}
		tc, err = peertls.FromClusterKey(key, f.NodeName)
	}
	if err != nil {
		return nil, fmt.Errorf("relay TLS: %w", err)
	}
	c := &cluster{prewarm: f.Prewarm}
	for _, p := range strings.Split(f.Parent, ",") {
		if p = strings.TrimSpace(p); p != "" {
			c.parents = append(c.parents, p)
		}
	}
	for _, s := range strings.Split(f.Join, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.join = append(c.join, s)
		}
	}
	c.ep, err = peer.Listen(peer.Config{
		Node: f.NodeName, TLS: tc, Registry: n.registry, Logger: n.baseLog, // peer adds the node's name
		OnEgress: n.metrics.onEgress, OnSubscribers: n.metrics.onSubscribers, Wake: n.wake,
	}, f.Relay)
	if err != nil {
		return nil, fmt.Errorf("--relay %s: %w", f.Relay, err)
	}
	host := f.advertiseHost()
	relayAddr := withPort(host, c.ep.Addr())
	httpAddr := ""
	if n.httpLn != nil {
		httpAddr = withPort(host, n.httpLn.Addr())
	}
	meshAdvertise := ""
	if f.Advertise != "" || hostUnspecified(f.Mesh) {
		meshAdvertise = net.JoinHostPort(host, "0")
	}
	c.mesh, err = mesh.New(mesh.Config{
		NodeName: f.NodeName, Bind: f.Mesh, Advertise: meshAdvertise, ClusterKey: f.ClusterKey, Logger: n.baseLog,
		Local: func() mesh.NodeState { return c.local(n, relayAddr, httpAddr) },
	})
	if err != nil {
		c.ep.Serve(canceled()) // releases the socket
		return nil, fmt.Errorf("--mesh %s: %w", f.Mesh, err)
	}
	if n.role == mesh.RoleOrigin {
		c.standby = &standby.Keeper{
			Self: f.NodeName, StandbyFor: f.StandbyFor, Mesh: originsView{c}, Gate: n.gate,
			Registry: n.registry, Replicas: replicas{c}, Logger: n.log,
		}
		n.gate.Mesh = c.standby
		n.metrics.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "relaymesh_standby_takeovers_total",
				Help: "Streams this origin took over from its partner.",
			}, func() float64 { return float64(c.standby.Promotions()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "relaymesh_standby_yields_total",
				Help: "Streams this origin, cut off while its partner took them over, yielded to the partner.",
			}, func() float64 { return float64(c.standby.Demotions()) }),
		)
	}
	c.puller = peer.NewPuller(peer.PullerConfig{
		Endpoint: c.ep, Registry: n.registry, Directory: directory{c}, Logger: n.log,
		Idle: f.Idle, Grace: f.Grace, Viewers: n.hls.ViewersOf, OnSwitch: n.metrics.onSwitch,
	})
	return c, nil
}

func hostUnspecified(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(h)
	return h == "" || (ip != nil && ip.IsUnspecified())
}

func canceled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// directory ranks a stream's upstreams for the puller: the holders, with
// the --parent nodes first, and a parent that does not hold the stream
// yet in its place as a shield, which will pull the stream itself.
type directory struct{ c *cluster }

func (d directory) Upstreams(stream string) []peer.Upstream {
	holders := d.c.mesh.Holders(stream)
	if d.c.standby != nil && d.c.standby.Standby(stream) {
		// A standby copies the primary itself: it must be at least as far
		// along as every other copy, to continue the playlist from it.
		for _, n := range holders {
			if flags(n, stream).Origin && n.RelayAddr != "" {
				return []peer.Upstream{{Name: n.Name, Addr: n.RelayAddr}}
			}
		}
		return nil
	}
	self := d.c.mesh.LocalName()
	holders = slices.DeleteFunc(holders, func(n mesh.NodeState) bool {
		return mesh.RelaysFrom(n, stream, self, d.c.mesh.Node)
	})
	ranked := mesh.Rank(holders, d.c.parents, d.c.mesh.RTT)
	// Everyone else copies the standby of a stream that has one, so that
	// the standby is ahead of every edge when it takes the stream over, and
	// the edges' subscriptions carry on through the takeover.
	slices.SortStableFunc(ranked, func(a, b mesh.NodeState) int {
		return cmp.Compare(btoi(!flags(a, stream).Standby), btoi(!flags(b, stream).Standby))
	})
	ups := make([]peer.Upstream, 0, len(ranked)+len(d.c.parents))
	for _, name := range d.c.parents {
		if slices.ContainsFunc(ranked, func(n mesh.NodeState) bool { return n.Name == name }) {
			continue // Rank put it first already
		}
		if n, ok := d.c.mesh.Node(name); ok && n.State == mesh.StateReady && n.RelayAddr != "" && name != d.c.mesh.LocalName() {
			ups = append(ups, peer.Upstream{Name: n.Name, Addr: n.RelayAddr, Shield: true})
		}
	}
	for _, n := range ranked {
		if n.RelayAddr != "" {
			ups = append(ups, peer.Upstream{Name: n.Name, Addr: n.RelayAddr, Draining: n.State == mesh.StateDraining})
		}
	}
	// Holding parents come before shields, in --parent order.
	slices.SortStableFunc(ups, func(a, b peer.Upstream) int {
		return cmp.Compare(d.c.parentRank(a.Name), d.c.parentRank(b.Name))
	})
	return ups
}

// parentRank is name's place in --parent, or after all of them.
func (c *cluster) parentRank(name string) int {
	if i := slices.Index(c.parents, name); i >= 0 {
		return i
	}
	return len(c.parents)
}

// local is what this node gossips about itself.
func (c *cluster) local(n *node, relayAddr, httpAddr string) mesh.NodeState {
	viewers := n.hls.Viewers()
	s := mesh.NodeState{
		Role: n.role, State: n.state.Load().(mesh.State), Region: n.flags.Region,
		HTTPAddr: httpAddr, RelayAddr: relayAddr, PublicURL: n.publicURL, Capacity: n.flags.capacity(),
		StandbyFor: n.flags.StandbyFor,
	}
	for _, v := range viewers {
		s.Viewers += v
	}
	for _, name := range n.registry.Names() {
		st := n.registry.Get(name)
		// Only live streams are offered: a window without a publisher or
		// upstream is served to viewers but is no upstream for others.
		if st == nil || !st.Snapshot().Live {
			continue
		}
		l := mesh.StreamLoad{Name: name, Viewers: viewers[name]}
		// An encoder publishes it here: a local stream with a publisher.
		l.FirstMSN, l.Origin = n.registry.FirstMSN(name)
		l.Origin = l.Origin && n.registry.Local(name)
		if !l.Origin {
			l.FirstMSN = 0
		}
		l.Standby = c.standby != nil && c.standby.Standby(name)
		if !n.registry.Local(name) {
			_, l.Via = c.puller.Cut(name)
		}
		s.Streams = append(s.Streams, l)
	}
	// An on-demand pull is offered before it runs: a subscriber wakes it.
	for _, p := range n.pulls {
		if name := p.Source.Stream; p.Source.OnDemand && !slices.ContainsFunc(s.Streams, func(l mesh.StreamLoad) bool { return l.Name == name }) {
			s.Streams = append(s.Streams, mesh.StreamLoad{Name: name})
		}
	}
	sort.Slice(s.Streams, func(i, j int) bool { return s.Streams[i].Name < s.Streams[j].Name })
	s.EgressBps, s.CPU = c.load(n)
	return s
}

// load samples egress bit/s and the process's share of the machine's CPU.
func (c *cluster) load(n *node) (int64, float64) {
	c.rateMu.Lock()
	defer c.rateMu.Unlock()
	now := time.Now()
	if el := now.Sub(c.rateAt); el >= time.Second {
		sum := n.metrics.egressSum.Load()
		if !c.rateAt.IsZero() {
			c.rate = int64(float64(sum-c.rateSum) * 8 / el.Seconds())
		}
		c.rateAt, c.rateSum = now, sum
		var ru syscall.Rusage
		if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
			spent := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
			if !c.cpuAt.IsZero() {
				c.cpu = min(1, float64(spent-c.cpuSpent)/float64(el)/float64(runtime.NumCPU()))
			}
			c.cpuAt, c.cpuSpent = now, spent
		}
	}
	return c.rate, c.cpu
}

// run joins the mesh, pre-warms the most watched streams, reports ready
// and serves until ctx ends.
func (c *cluster) run(ctx context.Context, n *node) error {
	errc := make(chan error, 4)
	go func() { errc <- c.ep.Serve(ctx) }()
	go func() { errc <- c.puller.Run(ctx) }()
	go func() { errc <- c.mesh.Run(ctx) }()
	go func() {
		if c.standby == nil {
			errc <- nil
			return
		}
		errc <- c.standby.Run(ctx)
	}()
	if len(c.join) > 0 {
		jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		joined, err := c.mesh.Join(jctx, c.join)
		cancel()
		if err != nil {
			n.log.Warn("could not join the mesh yet; memberlist keeps trying through its peers", "seeds", c.join, "err", err)
		} else {
			n.log.Info("joined the mesh", "seeds", c.join, "contacted", joined, "members", c.mesh.Members())
		}
	}
	c.warm(ctx, n)
	n.state.CompareAndSwap(mesh.StateWarming, mesh.StateReady)
	if len(c.join) > 0 && c.mesh.Members() == 1 {
		n.log.Warn("node ready, but alone: no seed answered (are they up, and is --cluster-key the same on every node?); retrying",
			"role", n.role, "seeds", c.join)
	} else {
		n.log.Info("node ready", "role", n.role, "members", c.mesh.Members(), "mesh", c.mesh.Addr(), "relay", c.ep.Addr().String())
	}
	<-ctx.Done()
	var errs []error
	for range 4 {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// warm subscribes to the most watched streams in the mesh before the node
// reports ready, so its first viewers find them in the cache.
func (c *cluster) warm(ctx context.Context, n *node) {
	if c.prewarm <= 0 || len(c.join) == 0 {
		return
	}
	// The join's state exchange brings the others' stream lists; a mesh
	// that has just started may need a gossip round or two more.
	watched := map[string]int{}
	for deadline := time.Now().Add(500 * time.Millisecond); ; {
		for _, ns := range c.mesh.Nodes() {
			if ns.Name == c.mesh.LocalName() {
				continue
			}
			for _, s := range ns.Streams {
				watched[s.Name] += s.Viewers + 1
			}
		}
		if len(watched) > 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	names := make([]string, 0, len(watched))
	for s := range watched {
		names = append(names, s)
	}
	sort.Slice(names, func(i, j int) bool {
		if watched[names[i]] != watched[names[j]] {
			return watched[names[i]] > watched[names[j]]
		}
		return names[i] < names[j]
	})
	if len(names) > c.prewarm {
		names = names[:c.prewarm]
	}
	timeout := time.NewTimer(3 * time.Second)
	defer timeout.Stop()
	for _, s := range names {
		select {
		case <-c.puller.Pull(s):
		case <-timeout.C:
			n.log.Warn("pre-warm timed out", "stream", s)
			return
		case <-ctx.Done():
			return
		}
	}
	if len(names) > 0 {
		n.log.Info("pre-warmed", "streams", names)
	}
}

// apiNode is one node in /api/mesh.
type apiNode struct {
	mesh.NodeState
	RTTMillis *float64 `json:"rtt_ms,omitempty"`
	Self      bool     `json:"self,omitempty"`
}

// serveAPI answers /api/mesh with every node's gossiped state.
func (c *cluster) serveAPI(w http.ResponseWriter, _ *http.Request) {
	var out []apiNode
	for _, ns := range c.mesh.Nodes() {
		a := apiNode{NodeState: ns, Self: ns.Name == c.mesh.LocalName()}
		if rtt, ok := c.mesh.RTT(ns.Name); ok && !a.Self {
			ms := float64(rtt.Microseconds()) / 1000
			a.RTTMillis = &ms
		}
		a.Coord = nil
		out = append(out, a)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "relaymesh-" + strconv.Itoa(os.Getpid())
	}
	return h
}

// originsView is the mesh as a standby Keeper reads it.
type originsView struct{ c *cluster }

func (v originsView) Origins() []standby.Origin {
	var out []standby.Origin
	self := v.c.mesh.LocalName()
	for _, n := range v.c.mesh.Nodes() {
		if n.Role != mesh.RoleOrigin || n.Name == self {
			continue
		}
		o := standby.Origin{Name: n.Name, StandbyFor: n.StandbyFor, Publishes: map[string]uint64{}}
		for _, s := range n.Streams {
			if s.Origin {
				o.Publishes[s.Name] = s.FirstMSN
			}
		}
		out = append(out, o)
	}
	return out
}

// replicas keeps a standby's hot replicas with the node's puller.
type replicas struct{ c *cluster }

func (r replicas) Keep(stream string) bool { return r.c.puller.Keep(stream) }

func (r replicas) Release(ctx context.Context, stream string) error {
	return r.c.puller.Release(ctx, stream)
}

func (r replicas) Cut(stream string) (time.Duration, string) { return r.c.puller.Cut(stream) }

// flags returns what n gossips about stream.
func flags(n mesh.NodeState, stream string) mesh.StreamLoad {
	for _, s := range n.Streams {
		if s.Name == stream {
			return s
		}
	}
	return mesh.StreamLoad{}
}
