package mesh

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"

	"github.com/relaymesh/relaymesh/internal/ratelog"
)

// Role is what a node does in the mesh.
type Role string

// Roles.
const (
	RoleOrigin Role = "origin" // takes streams in from encoders
	RoleEdge   Role = "edge"   // serves viewers
)

// State is where a node is in its life.
type State string

// States.
const (
	StateWarming  State = "warming"  // up, not yet taking viewers
	StateReady    State = "ready"    // taking viewers and subscribers
	StateDraining State = "draining" // shutting down: send nobody new
)

// StreamLoad is one stream a node holds and how many viewers it has there.
type StreamLoad struct {
	Name    string `json:"name"`
	Viewers int    `json:"viewers"`
	// Origin: an encoder publishes it here: this node is its primary.
	Origin bool `json:"origin,omitempty"`
	// FirstMSN, on an origin, is the media sequence number its publication
	// began at: of two origins that both publish the name, the one that
	// began later took it over (relay.Publication.FirstMSN).
	FirstMSN uint64 `json:"first_msn,omitempty"`
	// Standby: this node keeps it ready to take over (a standby origin).
	Standby bool `json:"standby,omitempty"`
	// Via names the node this one relays it from, on a replica: a node
	// never subscribes to a holder whose chain of Vias leads back to it.
	Via string `json:"via,omitempty"`
}

// NodeState is what a node gossips about itself.
type NodeState struct {
	Name      string `json:"name"`
	Region    string `json:"region,omitempty"`
	Role      Role   `json:"role"`
	State     State  `json:"state"`
	HTTPAddr  string `json:"http_addr,omitempty"`  // host:port others dial
	RelayAddr string `json:"relay_addr,omitempty"` // host:port others dial
	PublicURL string `json:"public_url,omitempty"` // how viewers reach it, e.g. https://edge-paris.example.com
	// StandbyFor names the origin this one stands by for (--standby-for).
	StandbyFor string       `json:"standby_for,omitempty"`
	Viewers    int          `json:"viewers"`
	EgressBps  int64        `json:"egress_bps"`
	CPU        float64      `json:"cpu"`      // 0..1 of the machine
	Capacity   int          `json:"capacity"` // viewers it is meant to hold; 0 = unlimited
	Streams    []StreamLoad `json:"streams"`
	// Local to this node, not gossiped:
	Coord *coordinate.Coordinate `json:"coord,omitempty"` // Vivaldi, nil until known
	// Heard is when this node last received the node's gossiped fields;
	// zero for this node itself.
	Heard time.Time `json:"-"`
}

// Config configures a Mesh.
type Config struct {
	NodeName string // required, unique in the mesh
	// Bind is the memberlist listener, host:port, TCP and UDP. An empty host
	// (":7946") listens on every interface. Port 0 picks a free port.
	Bind string
	// Advertise is the host:port other nodes dial. Default: Bind. It is
	// required when Bind's host is unspecified, unless the machine has only
	// loopback addresses. Port 0 means Bind's port.
	Advertise string
	// ClusterKey is the shared secret the gossip encryption key is derived
	// from. Required unless Bind is a loopback address.
	ClusterKey string
	Logger     *slog.Logger // default slog.Default()
	// Local returns this node's current state. New calls it once and Run
	// every 250 ms; it must be cheap and safe for concurrent use. Name and
	// Coord are filled in by mesh. Nil means an empty state.
	Local func() NodeState
}

// Timing. The memberlist values are tuned for fast convergence: a joining
// node is seen everywhere within a few gossip rounds (50 ms each), a node
// that stops without leaving is declared dead within a few seconds.
const (
	tickInterval = 250 * time.Millisecond // how often Run samples Local
	// loadInterval spaces updates that change only load (viewer counts,
	// egress, CPU), in a mesh of up to loadBudget nodes (see LoadInterval).
	// Changes to role, state, region, addresses, capacity or the set of
	// streams go out at the next tick.
	loadInterval = time.Second
	// loadBudget is how many load-only updates a second the whole mesh
	// gossips at most. memberlist re-sends each update from every node
	// that hears it (4 × log10 N times), so one update a second from every
	// node overflows it past about 50 nodes: at 100, its handler queues
	// dropped alive messages and stream lists waited 44 s for room in the
	// gossip packets (docs/scaling.md).
	loadBudget   = 32
	leaveTimeout = 2 * time.Second // bound on the leave broadcast
	// rejoinMin and rejoinMax bound the backoff of Run's retries of the
	// seeds while this node is alone.
	rejoinMin  = 2 * time.Second
	rejoinMax  = 30 * time.Second
	updateWait = 10 * time.Millisecond // how long UpdateNode waits for its broadcast
	// maxBroadcast is the largest stream-list message sent over UDP; longer
	// lists travel by push/pull only. A gossip packet is 1400 bytes, less
	// headers, the label, encryption and memberlist's own messages.
	maxBroadcast = 1000

	keyInfo     = "relaymesh gossip v1"
	gossipLabel = "relaymesh"
)

// Mesh is this node's membership in the mesh. Its methods are safe for
// concurrent use.
type Mesh struct {
	name    string
	addr    string // advertised host:port
	log     *slog.Logger
	local   func() NodeState
	ml      *memberlist.Memberlist
	vivaldi *coordinate.Client
	queue   *memberlist.TransmitLimitedQueue
	bstats  broadcastCounters
	members atomic.Int64 // alive nodes including self
	bad     ratelog.Limiter
	running atomic.Bool
	done    chan struct{} // closed when stopped

	// life is held for reading while Run's tick uses memberlist and for
	// writing while stopping, so memberlist is never used after Shutdown.
	life    sync.RWMutex
	stopped bool

	// mu guards everything below. Lock order: memberlist's locks (held
	// around event callbacks) -> mu -> the broadcast queue and the Vivaldi
	// client. Nothing called with mu held calls into memberlist.
	mu        sync.Mutex
	self      NodeState    // latest Local() sample
	meta      []byte       // published NodeMeta
	metaState NodeState    // what meta was encoded from
	metaClip  metaClip     // what meta had to leave out
	metaAt    time.Time    // when meta was last published
	seq       uint64       // version of pubStreams
	pubStr    []StreamLoad // published stream list
	streamsAt time.Time    // when pubStr was last published
	peers     map[string]*peer
	seeds     []string // from the last Join, for Run's rejoin loop
}

// peer is what this node knows about another alive node.
type peer struct {
	state      NodeState // meta fields, Name and Streams; Coord unused
	seq        uint64    // version of state.Streams
	hasStreams bool
	coord      *coordinate.Coordinate // latest, never mutated once stored
}

func (p *peer) export() NodeState {
	s := p.state
	s.Streams = slices.Clone(p.state.Streams)
	if p.coord != nil {
		s.Coord = p.coord.Clone()
	}
	return s
}

// New starts this node's memberlist listener. It does not contact anyone:
// call Join, then Run.
func New(cfg Config) (*Mesh, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("mesh: node name is empty: set --node-name to a name unique in the mesh")
	}
	if len(cfg.NodeName) > maxNodeName {
		return nil, fmt.Errorf("mesh: node name is %d bytes: use at most %d", len(cfg.NodeName), maxNodeName)
	}
	if cfg.Bind == "" {
		return nil, errors.New("mesh: bind address is empty")
	}
	bindIP, bindPort, err := resolveHostPort(cfg.Bind, "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("mesh: bind address %q: %w", cfg.Bind, err)
	}
	if !bindIP.IsLoopback() && cfg.ClusterKey == "" {
		return nil, fmt.Errorf("mesh: refusing to listen on %s without a cluster key: anyone who can reach it could join the mesh and read its gossip; "+
			"set --cluster-key to the same secret on every node, or bind --mesh to a loopback address (127.0.0.1) for a single-machine mesh",
			cfg.Bind)
	}
	advIP, advPort := bindIP, bindPort
	switch {
	case cfg.Advertise != "":
		advIP, advPort, err = resolveHostPort(cfg.Advertise, "")
		if err != nil {
			return nil, fmt.Errorf("mesh: advertise address %q: %w", cfg.Advertise, err)
		}
		if advIP.IsUnspecified() {
			return nil, fmt.Errorf("mesh: advertise address %q: give the address other nodes should dial, not an unspecified one", cfg.Advertise)
		}
		if advPort == 0 {
			advPort = bindPort
		}
	case bindIP.IsUnspecified():
		if hasNonLoopbackAddr() {
			return nil, fmt.Errorf("mesh: %s listens on every interface, so other nodes cannot tell which address to dial: set --advertise to this node's host:port", cfg.Bind)
		}
		advIP = net.IPv4(127, 0, 0, 1)
	}

	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", cfg.NodeName)

	vivaldi, err := coordinate.NewClient(coordinate.DefaultConfig())
	if err != nil {
		return nil, fmt.Errorf("mesh: create Vivaldi client: %w", err)
	}
	m := &Mesh{
		name:    cfg.NodeName,
		log:     log,
		local:   cfg.Local,
		vivaldi: vivaldi,
		done:    make(chan struct{}),
		peers:   make(map[string]*peer),
	}
	m.members.Store(1)

	now := time.Now()
	m.self = m.sample()
	m.meta, m.metaClip = encodeMeta(m.self, metaLimit)
	m.metaState, m.metaAt = m.self, now
	m.warnClip(m.metaClip, m.self)
	// Versions of the stream list start at the wall clock, so a node that
	// restarts under the same name supersedes what it gossiped before.
	m.seq = uint64(now.UnixNano())
	m.pubStr, m.streamsAt = m.self.Streams, now

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.BindAddr, mc.BindPort = bindIP.String(), bindPort
	mc.AdvertiseAddr, mc.AdvertisePort = advIP.String(), advPort
	mc.Label = gossipLabel
	mc.ProbeInterval = 500 * time.Millisecond
	mc.ProbeTimeout = 300 * time.Millisecond
	mc.GossipInterval = 50 * time.Millisecond
	mc.GossipNodes = 4
	mc.PushPullInterval = 5 * time.Second
	mc.TCPTimeout = 2 * time.Second
	mc.SuspicionMult = 3
	mc.SuspicionMaxTimeoutMult = 4
	mc.GossipToTheDeadTime = 15 * time.Second
	mc.DeadNodeReclaimTime = reclaimDead
	if cfg.ClusterKey != "" {
		key, err := hkdf.Key(sha256.New, []byte(cfg.ClusterKey), nil, keyInfo, 32)
		if err != nil {
			return nil, fmt.Errorf("mesh: derive gossip key: %w", err)
		}
		mc.SecretKey = key
	}
	mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	// memberlist's LZW (a fresh 64 kB table per packet) was a third of
	// gossip CPU at 100 nodes, and it only saves bytes, which are tiny next
	// to video: packets are filled by their uncompressed size
	// (docs/scaling.md).
	mc.EnableCompression = false
	mc.Logger = slog.NewLogLogger(log.With("component", "memberlist").Handler(), slog.LevelDebug)
	d := delegate{m}
	mc.Delegate, mc.Events, mc.Ping, mc.Conflict = d, d, d, d
	m.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(m.members.Load()) },
		RetransmitMult: mc.RetransmitMult,
	}

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("mesh: listen on %s: %w", cfg.Bind, err)
	}
	m.ml = ml
	self := ml.LocalNode()
	m.addr = net.JoinHostPort(self.Addr.String(), strconv.Itoa(int(self.Port)))
	log.Info("mesh listening", "bind", net.JoinHostPort(bindIP.String(), strconv.Itoa(mc.BindPort)),
		"advertise", m.addr, "encrypted", cfg.ClusterKey != "")
	return m, nil
}

// resolveHostPort parses host:port, resolving a host name to one IP
// (IPv4 preferred). An empty host becomes emptyHost, or is an error if
// emptyHost is "".
func resolveHostPort(hostport, emptyHost string) (net.IP, int, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, 0, fmt.Errorf("want host:port: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, 0, fmt.Errorf("port %q: want a number from 0 to 65535", portStr)
	}
	if host == "" {
		if emptyHost == "" {
			return nil, 0, errors.New("host is empty")
		}
		host = emptyHost
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip, int(port), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
	if err != nil {
		return nil, 0, fmt.Errorf("resolve %q: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, 0, fmt.Errorf("resolve %q: no addresses", host)
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip, int(port), nil
		}
	}
	return ips[0], int(port), nil
}

// hasNonLoopbackAddr reports whether the machine has an address another
// machine could reach (anything but loopback and link-local).
func hasNonLoopbackAddr() bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell: assume so and ask for --advertise
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip := ipn.IP; !ip.IsLoopback() && !ip.IsLinkLocalUnicast() && !ip.IsLinkLocalMulticast() {
			return true
		}
	}
	return false
}

// Join contacts the seeds (host:port) and merges their view of the mesh,
// including every alive node's state and stream list, so Holders answers
// as soon as Join returns. It returns how many seeds answered. Seeds equal
// to this node's own address are skipped, so every node can be given the
// same list; if that leaves none, Join returns 0 and no error (this node is
// the first). It fails only if no seed could be joined. Each seed is
// bounded by a 2 s timeout; ctx is checked between seeds.
//
// Run remembers the seeds of the last Join and retries them (backing off
// from 2 s to 30 s) whenever this node is alone, so a node that starts
// before its seeds, or is cut off from every peer, joins when it can.
// reclaimDead is how long after a node was declared dead the mesh admits
// a node of the same name on another address: its restart, with new
// ports. At once, in effect: declaring it dead took the suspicion timeout
// already, and a restarted edge or origin is capacity the show waits for.
const reclaimDead = time.Nanosecond

func (m *Mesh) Join(ctx context.Context, seeds []string) (int, error) {
	var clean []string
	for _, seed := range seeds {
		if seed = strings.TrimSpace(seed); seed != "" && seed != m.addr {
			clean = append(clean, seed)
		}
	}
	m.mu.Lock()
	m.seeds = clean
	m.mu.Unlock()
	return m.join(ctx, clean)
}

func (m *Mesh) join(ctx context.Context, seeds []string) (int, error) {
	m.life.RLock()
	stopped := m.stopped
	m.life.RUnlock()
	if stopped {
		return 0, errors.New("mesh: join: mesh is stopped")
	}
	var (
		joined int
		errs   []error
	)
	for _, seed := range seeds {
		if err := ctx.Err(); err != nil {
			return joined, fmt.Errorf("mesh: join %s: %w", seed, err)
		}
		n, err := m.ml.Join([]string{seed})
		joined += n
		if err != nil {
			m.log.Debug("mesh seed not joined", "seed", seed, "err", err)
			errs = append(errs, fmt.Errorf("%s: %w", seed, err))
		}
	}
	if joined == 0 && len(errs) > 0 {
		return 0, fmt.Errorf("mesh: could not join any seed (check that they are up and reachable and that every node uses the same --cluster-key): %w",
			errors.Join(errs...))
	}
	if joined > 0 {
		if len(errs) > 0 {
			m.log.Warn("some mesh seeds could not be joined", "err", errors.Join(errs...))
		}
		// Our stream list reached the seeds in the join's push/pull; tell
		// everyone else now rather than at the next push/pull.
		m.mu.Lock()
		m.broadcastLocked(m.name, encodeStreams(streamEntry{m.name, m.seq, m.pubStr}))
		m.mu.Unlock()
	}
	return joined, nil
}

// rejoin retries the last Join's seeds while this node is alone.
func (m *Mesh) rejoin(ctx context.Context) {
	delay := rejoinMin
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.mu.Lock()
		seeds := m.seeds
		m.mu.Unlock()
		if len(seeds) == 0 || m.Members() > 1 {
			delay = rejoinMin
		} else if n, err := m.join(ctx, seeds); err == nil && n > 0 {
			m.log.Info("rejoined mesh", "seeds", n, "members", m.Members())
			delay = rejoinMin
		} else {
			delay = min(2*delay, rejoinMax)
			m.log.Debug("mesh still alone; will retry the seeds", "in", delay, "err", err)
		}
		t.Reset(delay)
	}
}

// Run owns the periodic work: every 250 ms it samples Local and gossips what
// changed (see loadInterval), and while this node is alone it retries the
// seeds of the last Join. When ctx ends it leaves the mesh (bounded by 2 s)
// and shuts memberlist down, then returns nil. It also returns once Close
// has stopped the mesh.
func (m *Mesh) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("mesh: Run called twice")
	}
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { m.rejoin(rctx) })
	defer func() {
		cancel()
		wg.Wait()
	}()

	t := time.NewTicker(tickInterval)
	defer t.Stop()
	members := m.Members()
	for {
		select {
		case <-ctx.Done():
			cancel()
			wg.Wait()
			m.stop(true)
			return nil
		case <-m.done:
			return nil
		case now := <-t.C:
			m.tick(now)
			if n := m.Members(); n != members {
				m.log.Info("mesh members", "members", n, "was", members)
				members = n
			}
		}
	}
}

// Close leaves the mesh (bounded by 2 s) and shuts memberlist down, for a
// Mesh whose Run was never started or must stop early. It is idempotent.
func (m *Mesh) Close() error {
	m.stop(true)
	return nil
}

// stop leaves (if leave) and shuts memberlist down, once.
func (m *Mesh) stop(leave bool) {
	m.life.Lock()
	defer m.life.Unlock()
	if m.stopped {
		return
	}
	m.stopped = true
	left := false
	if leave {
		if err := m.ml.Leave(leaveTimeout); err != nil {
			m.log.Warn("mesh leave not confirmed; peers will detect the failure instead", "err", err)
		} else {
			left = true
		}
	}
	if err := m.ml.Shutdown(); err != nil {
		m.log.Warn("mesh shutdown", "err", err)
	}
	m.mu.Lock()
	clear(m.peers)
	m.members.Store(1)
	m.mu.Unlock()
	close(m.done)
	m.log.Info("mesh stopped", "left", left)
}

// sample calls Local and normalizes the result.
func (m *Mesh) sample() NodeState {
	var s NodeState
	if m.local != nil {
		s = m.local()
	}
	s.Name, s.Coord = m.name, nil
	streams := make([]StreamLoad, 0, len(s.Streams))
	for _, st := range s.Streams {
		if st.Name == "" || len(st.Name) > maxStreamName {
			continue // peers would reject the whole list
		}
		st.Viewers = max(st.Viewers, 0)
		streams = append(streams, st)
	}
	slices.SortStableFunc(streams, func(a, b StreamLoad) int { return strings.Compare(a.Name, b.Name) })
	s.Streams = streams
	return s
}

// Update samples Local now and gossips what changed, without waiting for
// Run's next tick: a node that starts draining says so at once. Safe for
// concurrent use; a no-op once the mesh has stopped.
func (m *Mesh) Update() { m.tick(time.Now()) }

// LoadInterval is how often a node in a mesh of n nodes gossips a change
// of load only: every second up to loadBudget nodes, then less often, so
// that the mesh as a whole sends loadBudget such updates a second.
func LoadInterval(n int) time.Duration {
	return max(loadInterval, time.Duration(n)*time.Second/loadBudget)
}

// LoadInterval is how often this node gossips a change of load only, in
// the mesh as it is now.
func (m *Mesh) LoadInterval() time.Duration { return LoadInterval(m.Members()) }

// tick samples Local and publishes what changed.
func (m *Mesh) tick(now time.Time) {
	m.life.RLock()
	defer m.life.RUnlock()
	if m.stopped {
		return
	}
	s := m.sample()
	every := m.LoadInterval()

	m.mu.Lock()
	m.self = s
	updateMeta := false
	if meta, clip := encodeMeta(s, metaLimit); !bytes.Equal(meta, m.meta) &&
		(!sameIdentity(s, m.metaState) || now.Sub(m.metaAt) >= every) {
		if clip != m.metaClip {
			m.warnClip(clip, s)
		}
		m.meta, m.metaState, m.metaClip, m.metaAt = meta, s, clip, now
		updateMeta = true
	}
	if !slices.Equal(s.Streams, m.pubStr) &&
		(!sameButViewers(s.Streams, m.pubStr) || now.Sub(m.streamsAt) >= every) {
		m.seq++
		m.pubStr, m.streamsAt = s.Streams, now
		m.broadcastLocked(m.name, encodeStreams(streamEntry{m.name, m.seq, s.Streams}))
		m.log.Debug("mesh streams changed", "streams", len(s.Streams), "seq", m.seq)
	}
	m.mu.Unlock()

	if updateMeta {
		// UpdateNode queues the alive message at once; waiting for it to be
		// sent would only stall the tick, so a timeout here is normal.
		if err := m.ml.UpdateNode(updateWait); err != nil {
			m.log.Debug("mesh meta update queued", "err", err)
		}
	}
}

// sameIdentity reports whether a and b agree on everything in meta except
// load.
func sameIdentity(a, b NodeState) bool {
	return a.Role == b.Role && a.State == b.State && a.Region == b.Region &&
		a.HTTPAddr == b.HTTPAddr && a.RelayAddr == b.RelayAddr && a.PublicURL == b.PublicURL &&
		a.StandbyFor == b.StandbyFor && a.Capacity == b.Capacity
}

// sameButViewers reports whether a and b differ at most in viewer counts,
// which change all the time and wait for LoadInterval; which streams are
// held, and from where, goes out at once.
func sameButViewers(a, b []StreamLoad) bool {
	return slices.EqualFunc(a, b, func(x, y StreamLoad) bool {
		x.Viewers, y.Viewers = 0, 0
		return x == y
	})
}

func (m *Mesh) warnClip(c metaClip, s NodeState) {
	if !c.any() {
		return
	}
	m.log.Warn("node state too long for mesh gossip; shortened or dropped fields",
		"region_clipped", c.Region, "http_addr_dropped", c.HTTPAddr, "relay_addr_dropped", c.RelayAddr,
		"public_url_dropped", c.PublicURL, "region_len", len(s.Region), "http_addr_len", len(s.HTTPAddr),
		"relay_addr_len", len(s.RelayAddr), "public_url_len", len(s.PublicURL))
}

// streamsBroadcast is one node's stream list in the broadcast queue; a newer
// list for the same node replaces it.
type streamsBroadcast struct {
	name string
	msg  []byte
}

func (b *streamsBroadcast) Name() string    { return b.name }
func (b *streamsBroadcast) Message() []byte { return b.msg }
func (b *streamsBroadcast) Finished()       {}
func (b *streamsBroadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}

// broadcastLocked queues node's stream-list message, if it fits a UDP
// packet. Called with mu held, so queued versions of one node's list only
// move forward.
func (m *Mesh) broadcastLocked(node string, msg []byte) {
	if len(msg) > maxBroadcast {
		m.log.Debug("mesh stream list too long for a broadcast; it travels by push/pull", "peer", node, "bytes", len(msg))
		return
	}
	m.queue.QueueBroadcast(&streamsBroadcast{name: "streams/" + node, msg: msg})
}

// applyEntry stores e if it is about a known alive peer and newer than what
// we have. It reports whether it did.
func (m *Mesh) applyEntryLocked(e streamEntry) bool {
	p := m.peers[e.Node]
	if e.Node == m.name || p == nil || (p.hasStreams && e.Seq <= p.seq) {
		return false
	}
	p.seq, p.hasStreams, p.state.Streams = e.Seq, true, e.Streams
	return true
}

// dropped logs bad input from the network, at most every 5 s.
func (m *Mesh) dropped(what, peer string, err error) {
	if ok, suppressed := m.bad.Allow(); ok {
		m.log.Warn("dropped bad mesh "+what, "peer", peer, "err", err, "suppressed", suppressed)
	}
}

// BroadcastStats counts how the stream-list broadcasts fare. memberlist
// fills each gossip packet with its own messages (alive, suspect, dead)
// first and asks for stream lists only when room is left, so Rooms
// against the gossip rate shows whether lists get a share at all.
type BroadcastStats struct {
	Queued int    // stream-list messages waiting for (re)transmission now
	Rooms  uint64 // times memberlist had room for stream lists
	Sent   uint64 // stream-list messages handed to memberlist
	Bytes  uint64 // their bytes
}

type broadcastCounters struct{ rooms, sent, bytes atomic.Uint64 }

// BroadcastStats returns the stream-list broadcast counters since start.
func (m *Mesh) BroadcastStats() BroadcastStats {
	return BroadcastStats{
		Queued: m.queue.NumQueued(),
		Rooms:  m.bstats.rooms.Load(), Sent: m.bstats.sent.Load(), Bytes: m.bstats.bytes.Load(),
	}
}

// LocalName is this node's name.
func (m *Mesh) LocalName() string { return m.name }

// Addr is the gossip address (host:port) this node advertises: what other
// nodes pass to Join.
func (m *Mesh) Addr() string { return m.addr }

// Members is the number of alive nodes, this one included (the
// mesh_members gauge).
func (m *Mesh) Members() int { return int(m.members.Load()) }

func (m *Mesh) selfLocked() NodeState {
	s := m.self
	s.Streams = slices.Clone(s.Streams)
	s.Coord = m.vivaldi.GetCoordinate()
	return s
}

// Nodes returns every alive node, this one included, with its latest known
// state, sorted by name. This node's entry is its latest Local sample.
func (m *Mesh) Nodes() []NodeState {
	m.mu.Lock()
	out := make([]NodeState, 0, len(m.peers)+1)
	out = append(out, m.selfLocked())
	for _, p := range m.peers {
		out = append(out, p.export())
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b NodeState) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Node returns the named alive node's latest known state.
func (m *Mesh) Node(name string) (NodeState, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if name == m.name {
		return m.selfLocked(), true
	}
	p, ok := m.peers[name]
	if !ok {
		return NodeState{}, false
	}
	return p.export(), true
}

// Holders returns the alive nodes other than this one whose stream list
// includes stream, sorted by name. Pass the result to Rank.
func (m *Mesh) Holders(stream string) []NodeState {
	m.mu.Lock()
	var out []NodeState
	for _, p := range m.peers {
		if slices.ContainsFunc(p.state.Streams, func(s StreamLoad) bool { return s.Name == stream }) {
			out = append(out, p.export())
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b NodeState) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// RTT is the Vivaldi estimate of the round-trip time between this node and
// the named one: false until a ping to it has completed. RTT of this node
// itself is 0.
func (m *Mesh) RTT(name string) (time.Duration, bool) {
	if name == m.name {
		return 0, true
	}
	m.mu.Lock()
	var c *coordinate.Coordinate
	if p := m.peers[name]; p != nil {
		c = p.coord
	}
	m.mu.Unlock()
	if c == nil {
		return 0, false
	}
	own := m.vivaldi.GetCoordinate()
	if !own.IsCompatibleWith(c) {
		return 0, false
	}
	return own.DistanceTo(c), true
}
