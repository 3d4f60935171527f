package peer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relaymesh/relaymesh/relay"
)

// Upstream is a node to subscribe to for a stream, as the mesh knows it.
type Upstream struct {
	Name     string
	Addr     string // its relay address
	Draining bool   // it is shutting down: move off it while it still serves
	// Shield is a preferred upstream (--parent) that does not hold the
	// stream yet: subscribing to it makes it pull the stream itself, so a
	// shield tier stands between its children and the origin.
	Shield bool
}

// holds reports whether some upstream holds the stream: a shield alone
// cannot conjure a stream nobody has.
func holds(ups []Upstream) bool {
	for _, up := range ups {
		if !up.Shield {
			return true
		}
	}
	return false
}

// errUpstreamDraining ends a subscription to an upstream that started
// draining while another holder is ready.
var errUpstreamDraining = errors.New("upstream is draining")

// Directory names the upstreams for a stream, best first: the nodes that
// hold it, and shields (see Upstream). The mesh implements it; the puller
// only consults it.
type Directory interface {
	Upstreams(stream string) []Upstream
}

// PullerConfig sets up a Puller.
type PullerConfig struct {
	Endpoint  *Endpoint
	Registry  *relay.Registry
	Directory Directory
	Logger    *slog.Logger
	// Idle is how long a relayed stream with no viewers and no downstream
	// subscribers is kept before its subscription is dropped (default 30s).
	Idle time.Duration
	// Grace is how long a relayed stream that lost every holder, and
	// heard no end, keeps its window before this node ends the show
	// itself (EXT-X-ENDLIST) rather than serve a stale window (default
	// 30s, as --grace).
	Grace time.Duration
	// Viewers returns how many viewers a stream has on this node.
	Viewers func(stream string) int
	// OnSwitch, if set, is called when a stream moves to another upstream.
	OnSwitch func(stream string)
}

// Puller fetches streams this node does not hold from the mesh, on the
// first viewer's request: one subscription per stream however many viewers
// ask, moved to another holder when its upstream fails, and dropped when
// nobody watches.
type Puller struct {
	cfg PullerConfig
	log *slog.Logger

	mu      sync.Mutex
	life    context.Context
	running chan struct{} // closed once Run has started
	pulls   map[string]*pull
	pinned  map[string]bool // kept without viewers (a standby's replicas)
	wg      sync.WaitGroup
}

type pull struct {
	ready  chan struct{} // closed once the window has arrived
	done   chan struct{} // closed when the pull ends
	err    error         // why it ended before being ready
	cancel context.CancelFunc
	// holdersOnly: started for a downstream node that asked this one as
	// its shield; asking a shield in turn could go round in a circle.
	holdersOnly bool
	// cutSince is when the pull last lost its upstream's window (zero
	// while a subscription has delivered it), in Unix nanoseconds.
	cutSince atomic.Int64
	// fedBy names the upstream whose subscription last delivered.
	fedBy atomic.Pointer[string]
}

// NewPuller returns a Puller; Run must be running for it to pull.
func NewPuller(cfg PullerConfig) *Puller {
	if cfg.Idle <= 0 {
		cfg.Idle = 30 * time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Viewers == nil {
		cfg.Viewers = func(string) int { return 0 }
	}
	return &Puller{cfg: cfg, log: cfg.Logger, pulls: map[string]*pull{}, pinned: map[string]bool{}, running: make(chan struct{})}
}

// Run owns the pulls: they live until ctx ends, and Run waits for them.
func (p *Puller) Run(ctx context.Context) error {
	p.mu.Lock()
	p.life = ctx
	p.mu.Unlock()
	close(p.running)
	<-ctx.Done()
	// start adds to wg under mu and refuses once ctx has ended: taking mu
	// orders every Add before this Wait (the WaitGroup rule the race
	// detector checks).
	p.mu.Lock()
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

// Lookup returns the named stream: the local one if this node publishes
// or already relays it, otherwise a new subscription's, once the upstream's
// window has arrived. It implements edge.Streams.
func (p *Puller) Lookup(ctx context.Context, name string) (*relay.Stream, error) {
	return p.lookup(ctx, name, false)
}

// LookupForShield is Lookup for a downstream node that subscribed to this
// one as its shield: the pull, if it starts one, asks only nodes that
// hold the stream.
func (p *Puller) LookupForShield(ctx context.Context, name string) (*relay.Stream, error) {
	return p.lookup(ctx, name, true)
}

func (p *Puller) lookup(ctx context.Context, name string, holdersOnly bool) (*relay.Stream, error) {
	select { // a request may arrive while the node is still starting
	case <-p.running:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	p.mu.Lock()
	pl := p.pulls[name]
	p.mu.Unlock()
	if st := p.cfg.Registry.Get(name); pl == nil && st != nil {
		// Published here (even if its encoder is reconnecting within the
		// grace period: the others relay it from here), or a window nobody
		// else can refresh: serve it as it is.
		if p.cfg.Registry.Local(name) || p.cfg.Registry.HasPublisher(name) || !holds(p.cfg.Directory.Upstreams(name)) {
			return st, nil
		}
	}
	pl, err := p.start(name, holdersOnly)
	if err != nil {
		return nil, err
	}
	select {
	case <-pl.ready:
		if st := p.cfg.Registry.Get(name); st != nil {
			return st, nil
		}
		return nil, relay.ErrNoStream
	case <-pl.done:
		if pl.err != nil {
			return nil, pl.err
		}
		return nil, relay.ErrNoStream
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Pull starts relaying a stream without waiting for it (pre-warming).
// The returned channel is closed once the window has arrived or the pull
// failed.
func (p *Puller) Pull(name string) <-chan struct{} {
	<-p.running
	pl, err := p.start(name, false)
	if err != nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	either := make(chan struct{})
	go func() {
		select {
		case <-pl.ready:
		case <-pl.done:
		}
		close(either)
	}()
	return either
}

// Keep relays a stream whether or not anyone watches it, until Release:
// a standby origin keeps a hot replica of its primary's streams. It starts
// the pull if none runs and some node holds the stream; call it again to
// retry. It reports whether a pull runs.
func (p *Puller) Keep(name string) bool {
	select {
	case <-p.running:
	default:
		return false
	}
	p.mu.Lock()
	p.pinned[name] = true
	p.mu.Unlock()
	_, err := p.start(name, true)
	return err == nil
}

// Release undoes Keep and ends the stream's pull, waiting until it has
// closed its publication, so that this node may publish the stream itself
// (a standby that takes over). The replica's window stays.
func (p *Puller) Release(ctx context.Context, name string) error {
	p.mu.Lock()
	delete(p.pinned, name)
	pl := p.pulls[name]
	p.mu.Unlock()
	if pl == nil {
		return nil
	}
	pl.cancel()
	select {
	case <-pl.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("release %s: %w", name, ctx.Err())
	}
}

// Cut reports for how long the stream's pull has been without a working
// subscription (0 while one delivers, or when no pull runs), and which
// upstream last delivered ("" if none has).
func (p *Puller) Cut(name string) (time.Duration, string) {
	p.mu.Lock()
	pl := p.pulls[name]
	p.mu.Unlock()
	if pl == nil {
		return 0, ""
	}
	var from string
	if f := pl.fedBy.Load(); f != nil {
		from = *f
	}
	since := pl.cutSince.Load()
	if since == 0 {
		return 0, from
	}
	return time.Since(time.Unix(0, since)), from
}

func (p *Puller) isPinned(name string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pinned[name]
}

// start returns the stream's pull, starting one if there is none.
func (p *Puller) start(name string, holdersOnly bool) (*pull, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pl := p.pulls[name]; pl != nil {
		return pl, nil
	}
	if p.life == nil || p.life.Err() != nil {
		return nil, errors.New("puller is not running")
	}
	if !holds(p.cfg.Directory.Upstreams(name)) {
		return nil, relay.ErrNoStream // nobody holds it: 404 at once
	}
	// A window left from an earlier pull ended where that subscription
	// stopped, perhaps inside a segment that has gone on upstream since:
	// start afresh from the upstream's window rather than splice onto it.
	if p.cfg.Registry.Local(name) {
		return nil, relay.ErrNoStream // this node's own stream is never pulled
	}
	p.cfg.Registry.Drop(name)
	pub, err := p.cfg.Registry.Relay(name)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(p.life)
	pl := &pull{ready: make(chan struct{}), done: make(chan struct{}), holdersOnly: holdersOnly, cancel: cancel}
	pl.cutSince.Store(time.Now().UnixNano()) // until a subscription delivers
	p.pulls[name] = pl
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer cancel()
		p.run(ctx, name, pub, pl)
		pub.Close()
		p.mu.Lock()
		delete(p.pulls, name)
		p.mu.Unlock()
		close(pl.done)
	}()
	return pl, nil
}

// run keeps one subscription for the stream, moving to the next holder
// when an upstream fails, until nobody watches for the idle period.
func (p *Puller) run(ctx context.Context, name string, pub *relay.Publication, pl *pull) {
	log := p.log.With("stream", name)
	ctx, cancel := context.WithCancel(ctx)
	var idle sync.WaitGroup
	defer idle.Wait()
	defer cancel()
	idle.Go(func() { p.watchIdle(ctx, cancel, name, log) })

	var once sync.Once
	markReady := func() { once.Do(func() { close(pl.ready) }) }
	failed := map[string]time.Time{} // upstreams that just failed us
	var current string
	var orphaned time.Time // when the last holder was lost
	var again *Upstream    // an upstream to subscribe to again at once
	retried := map[string]time.Time{}
	for ctx.Err() == nil {
		var up Upstream
		ok := true
		if again != nil {
			up, again = *again, nil
		} else {
			up, ok = p.connect(ctx, name, failed, pl.holdersOnly)
		}
		if !ok {
			select {
			case <-pl.ready:
			default:
				pl.err = relay.ErrNoStream
				log.Info("no node holds the stream")
				return
			}
			// Keep serving the window; the stream may come back. Past the
			// grace period the show is over for this node's viewers too.
			if orphaned.IsZero() {
				orphaned = time.Now()
			}
			if time.Since(orphaned) >= p.cfg.Grace && !p.isPinned(name) {
				pub.Stream.End()
				log.Info("show ended: no node has held the stream for the grace period", "grace", p.cfg.Grace)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(250 * time.Millisecond):
			}
			continue
		}
		orphaned = time.Time{}
		if current != "" && current != up.Name && p.cfg.OnSwitch != nil {
			p.cfg.OnSwitch(name)
		}
		if current != up.Name {
			log.Info("relaying stream", "upstream", up.Name, "addr", up.Addr)
		}
		current = up.Name
		from := pub.Stream.Snapshot().NextPart
		sctx, cancelSub := context.WithCancelCause(ctx)
		var watch sync.WaitGroup
		watch.Go(func() { p.watchDrain(sctx, cancelSub, name, up.Name) })
		attached := func() {
			pl.fedBy.Store(&up.Name)
			pl.cutSince.Store(0)
			markReady()
		}
		err := p.cfg.Endpoint.Subscribe(sctx, up.Name, up.Addr, pub, from, attached)
		fed := pl.cutSince.CompareAndSwap(0, time.Now().UnixNano())
		cancelSub(nil)
		watch.Wait()
		if ctx.Err() != nil {
			return
		}
		if errors.Is(context.Cause(sctx), errUpstreamDraining) {
			// A planned move: the next holder continues from the next
			// part, as after a failure, while this one still serves.
			log.Info("upstream is draining; moving to another holder", "upstream", up.Name)
			continue
		}
		if errors.Is(err, ErrEnded) {
			log.Info("show ended upstream", "upstream", up.Name)
			return
		}
		if errors.Is(err, ErrRestarted) {
			// Viewers lose this window; the next request starts afresh.
			log.Warn("the stream restarted upstream; dropping this node's copy", "upstream", up.Name)
			return
		}
		if fed && p.isPinned(name) && time.Since(retried[up.Name]) > 2*time.Second {
			// A standby's replica of its partner: a connection that timed
			// out while this node was stalled (a pause, a frozen VM) does
			// not mean the partner is gone. Ask it again before the Cut
			// counts against it; a dead one answers nothing meanwhile.
			retried[up.Name] = time.Now()
			again = &up
			log.Warn("upstream lost; subscribing to it again", "upstream", up.Name, "err", err)
			continue
		}
		failed[up.Name] = time.Now()
		log.Warn("upstream lost; choosing another", "upstream", up.Name, "err", err)
	}
}

// watchDrain cancels a subscription to upstream, with errUpstreamDraining,
// once upstream drains and another holder that does not is ranked first.
func (p *Puller) watchDrain(ctx context.Context, cancel context.CancelCauseFunc, name, upstream string) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ups := p.cfg.Directory.Upstreams(name)
		if len(ups) == 0 || ups[0].Draining || ups[0].Name == upstream {
			continue
		}
		for _, up := range ups {
			if up.Name == upstream && up.Draining {
				cancel(errUpstreamDraining)
				return
			}
		}
	}
}

// connectStagger: when the best holder has not answered a QUIC dial in
// this long, the next one is dialled too, and the first to answer is
// used. A holder that has just died stays in the mesh for about two
// seconds, until memberlist declares it dead; without this, a node that
// viewers fail over to would wait out the dial timeout on it before
// asking a live holder, and the viewers would stall.
const connectStagger = 150 * time.Millisecond

// failedRest is how long an upstream that failed is passed over while
// other holders are left; failedRetry, how soon it is asked again when none
// is.
const (
	failedRest  = 2 * time.Second
	failedRetry = 250 * time.Millisecond
)

// connect returns the best holder that has not just failed and answers a
// dial, dialling the next ones in turn while the earlier ones have not
// answered. Holders that fail to answer are added to failed. It returns
// false when none is left.
func (p *Puller) connect(ctx context.Context, name string, failed map[string]time.Time, holdersOnly bool) (Upstream, bool) {
	ups := p.cfg.Directory.Upstreams(name)
	if !holds(ups) {
		return Upstream{}, false
	}
	pick := func(rest time.Duration) []Upstream {
		var cands []Upstream
		for _, up := range ups {
			if t, ok := failed[up.Name]; (ok && time.Since(t) < rest) || (holdersOnly && up.Shield) {
				continue
			}
			cands = append(cands, up)
		}
		return cands
	}
	cands := pick(failedRest)
	if len(cands) == 0 {
		// Nowhere else to go: an upstream that failed a moment ago (a
		// connection timed out on a busy machine) is asked again soon.
		cands = pick(failedRetry)
	}
	switch len(cands) {
	case 0:
		return Upstream{}, false
	case 1:
		return cands[0], true // Subscribe dials it
	}
	ctx, cancel := context.WithCancel(ctx)
	var dials sync.WaitGroup
	defer dials.Wait()
	defer cancel()
	type answer struct {
		i   int
		err error
	}
	answers := make(chan answer, len(cands))
	next, pending := 0, 0
	dial := func() {
		i := next
		next, pending = next+1, pending+1
		dials.Go(func() { answers <- answer{i, p.cfg.Endpoint.Connect(ctx, cands[i].Name, cands[i].Addr)} })
	}
	dial()
	stagger := time.NewTicker(connectStagger)
	defer stagger.Stop()
	for pending > 0 {
		select {
		case a := <-answers:
			pending--
			if a.err == nil {
				return cands[a.i], true
			}
			failed[cands[a.i].Name] = time.Now()
			p.log.Info("upstream does not answer; trying the next", "stream", name, "upstream", cands[a.i].Name, "err", a.err)
			if next < len(cands) {
				dial()
			}
		case <-stagger.C:
			if next < len(cands) {
				dial()
			}
		case <-ctx.Done():
			return Upstream{}, false
		}
	}
	return Upstream{}, false
}

// watchIdle ends the pull once the stream has had no viewers and no
// downstream subscribers for the idle period.
func (p *Puller) watchIdle(ctx context.Context, cancel context.CancelFunc, name string, log *slog.Logger) {
	tick := time.NewTicker(min(p.cfg.Idle/4, time.Second))
	defer tick.Stop()
	since := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if p.cfg.Viewers(name) > 0 || p.cfg.Endpoint.Subscribers(name) > 0 || p.isPinned(name) {
			since = time.Now()
			continue
		}
		if time.Since(since) >= p.cfg.Idle {
			log.Info("nobody watches; dropping the relayed stream", "idle", p.cfg.Idle)
			cancel()
			return
		}
	}
}
