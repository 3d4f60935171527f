package peer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/relaymesh/relaymesh/relay"
	"github.com/relaymesh/relaymesh/relay/peertls"
	"github.com/relaymesh/relaymesh/relay/wire"
)

// ErrNotHeld is returned when the upstream does not hold the stream.
var ErrNotHeld = errors.New("upstream does not hold the stream")

// ErrEnded is returned when the upstream's show ended: the replica is
// ended too, and no other upstream can continue it.
var ErrEnded = errors.New("the show ended upstream")

// ErrRestarted is returned when the upstream's stream numbers parts below
// ours: it is a new instance of the stream (an origin restarted), which
// cannot continue this node's playlist.
var ErrRestarted = errors.New("upstream's stream restarted its numbering")

// dial returns the connection to the peer at addr, dialling it once.
func (e *Endpoint) dial(ctx context.Context, peer, addr string) (*conn, error) {
	e.mu.Lock()
	if c := e.conns[peer]; c != nil && c.qc.Context().Err() == nil {
		e.mu.Unlock()
		return c, nil
	}
	e.mu.Unlock()
	ua, err := resolveUDP(addr)
	if err != nil {
		return nil, err
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	qc, err := e.tr.Dial(dctx, ua, e.cfg.TLS.ClientFor(peer), quicConfig())
	if err != nil {
		return nil, fmt.Errorf("dial relay %s at %s: %w", peer, addr, err)
	}
	if got := peertls.PeerName(qc.ConnectionState().TLS); peer != "" && got != peer {
		qc.CloseWithError(0, "unexpected peer")
		return nil, fmt.Errorf("dial relay at %s: it is %q, not %q", addr, got, peer)
	}
	life, err := e.ctx()
	if err != nil {
		qc.CloseWithError(0, "shutting down")
		return nil, err
	}
	return e.adopt(life, qc), nil
}

// forget drops c from the connections that dial reuses, and closes it.
func (e *Endpoint) forget(c *conn) {
	e.mu.Lock()
	if e.conns[c.peer] == c {
		delete(e.conns, c.peer)
	}
	e.mu.Unlock()
	c.qc.CloseWithError(0, "connection lost")
}

// Connect dials the node peer at addr, or reuses the connection to it.
func (e *Endpoint) Connect(ctx context.Context, peer, addr string) error {
	_, err := e.dial(ctx, peer, addr)
	return err
}

// Subscription feeds a relay.Stream from an upstream node.
type Subscription struct {
	e     *Endpoint
	c     *conn
	ctl   *quic.Stream
	pub   *relay.Publication
	segs  chan segment
	done  chan struct{} // closed when the subscription ends
	ready chan struct{} // closed once the upstream's window is applied

	readyAt uint64 // the upstream's next part when we subscribed
	once    sync.Once

	mu      sync.Mutex
	inits   map[uint64]*relay.Init
	initsCh chan struct{} // closed and replaced when inits change
}

// Subscribe asks the node peer at addr for stream, starting at part
// fromPart (0: a fresh replica, the newest segments of the window), and
// feeds pub's stream until ctx ends or the upstream goes. ready is called once the window has arrived,
// so that waiting viewers can be answered. It returns ErrNotHeld when the
// upstream does not have the stream.
func (e *Endpoint) Subscribe(ctx context.Context, peer, addr string, pub *relay.Publication, fromPart uint64, ready func()) error {
	c, err := e.dial(ctx, peer, addr)
	if err != nil {
		return err
	}
	ctl, err := c.qc.OpenStreamSync(ctx)
	if err != nil && ctx.Err() == nil {
		// The cached connection died before its context said so: after
		// this process was paused, its idle timeout fires as the
		// subscription over it is retried. Dial afresh, once.
		e.forget(c)
		if c, err = e.dial(ctx, peer, addr); err != nil {
			return err
		}
		ctl, err = c.qc.OpenStreamSync(ctx)
	}
	if err != nil {
		return fmt.Errorf("open control stream to %s: %w", c.peer, err)
	}
	name := pub.Stream.Name
	sub := &Subscription{
		e: e, c: c, ctl: ctl, pub: pub, segs: make(chan segment, 64), done: make(chan struct{}),
		ready: make(chan struct{}), inits: map[uint64]*relay.Init{}, initsCh: make(chan struct{}),
	}
	c.mu.Lock()
	if c.subs[name] != nil {
		c.mu.Unlock()
		ctl.CancelWrite(0)
		return fmt.Errorf("already subscribed to %s over this connection", name)
	}
	c.subs[name] = sub
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.subs, name)
		c.mu.Unlock()
		close(sub.done)
		ctl.CancelRead(0)
		ctl.CancelWrite(0)
	}()

	if err := wire.WriteMessage(ctl, &wire.Hello{Version: wire.Version, Node: e.cfg.Node}); err != nil {
		return fmt.Errorf("subscribe to %s: %w", c.peer, err)
	}
	if err := wire.WriteMessage(ctl, &wire.Subscribe{Stream: name, FromPart: fromPart}); err != nil {
		return fmt.Errorf("subscribe to %s: %w", c.peer, err)
	}
	r := wire.NewReader(ctl, 0)
	ctl.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := readHello(r); err != nil {
		return fmt.Errorf("subscribe to %s: %w", c.peer, err)
	}
	m, err := r.ReadMessage()
	if err != nil {
		return fmt.Errorf("subscribe to %s: %w", c.peer, err)
	}
	ctl.SetReadDeadline(time.Time{})
	switch m := m.(type) {
	case *wire.Error:
		if m.Code == wire.CodeNotFound {
			return ErrNotHeld
		}
		return fmt.Errorf("subscribe to %s: %s", c.peer, m.Message)
	case *wire.Catalog:
		if m.NextPart < pub.Stream.Snapshot().NextPart {
			return fmt.Errorf("subscribe to %s: %w", c.peer, ErrRestarted)
		}
		sub.addInits(m.Inits)
		pub.Stream.Seed(m.DiscSeq, m.TargetSeconds(), m.Live)
		sub.readyAt = m.NextPart
		sub.checkReady()
	default:
		return fmt.Errorf("subscribe to %s: expected Catalog, got %s", c.peer, m.Type())
	}

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sub.ready:
			if ready != nil && ctx.Err() == nil {
				ready()
			}
		case <-ctx.Done():
		}
	}()
	// Stream reads do not watch a context: cancelling them is how the
	// readers below learn that the subscription is over.
	stop := context.AfterFunc(ctx, func() { ctl.CancelRead(0) })
	defer stop()
	errc := make(chan error, 2)
	go func() { errc <- sub.control(ctx, r) }()
	go func() { errc <- sub.apply(ctx) }()
	err = <-errc
	cancel()
	<-errc
	if parent.Err() != nil {
		return nil // ended by our side
	}
	return err
}

// ctx is the lifetime connections are adopted under.
func (e *Endpoint) ctx() (context.Context, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.life == nil || e.life.Err() != nil {
		return nil, errors.New("relay endpoint is not serving")
	}
	return e.life, nil
}

func resolveUDP(addr string) (*net.UDPAddr, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("relay address %q: %w", addr, err)
	}
	return ua, nil
}

// segment is a segment stream routed to its subscription.
type segment struct {
	start *wire.SegmentStart
	r     *wire.Reader
	s     *quic.ReceiveStream
}

// acceptSegments routes the segment streams an upstream opens to our
// subscriptions, by the stream name in their first frame. QUIC hands
// streams over in the order they were opened, so each subscription gets
// its segments in order.
func (c *conn) acceptSegments(ctx context.Context) {
	for {
		s, err := c.qc.AcceptUniStream(ctx)
		if err != nil {
			return
		}
		r := wire.NewReader(s, 0)
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := r.ReadMessage()
		start, ok := m.(*wire.SegmentStart)
		if err != nil || !ok {
			s.CancelRead(0)
			continue
		}
		s.SetReadDeadline(time.Time{})
		c.mu.Lock()
		sub := c.subs[start.Stream]
		c.mu.Unlock()
		if sub == nil {
			s.CancelRead(0)
			continue
		}
		select {
		case sub.segs <- segment{start, r, s}:
		case <-sub.done:
			s.CancelRead(0)
		case <-ctx.Done():
			s.CancelRead(0)
			return
		}
	}
}

// checkReady closes ready once the stream holds what the upstream had when
// we subscribed.
func (sub *Subscription) checkReady() {
	if sub.pub.Stream.Snapshot().NextPart >= sub.readyAt {
		sub.once.Do(func() { close(sub.ready) })
	}
}

func (sub *Subscription) addInits(inits []wire.Init) {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	for _, in := range inits {
		if sub.inits[in.ID] == nil {
			sub.inits[in.ID] = in.Relay()
		}
	}
	close(sub.initsCh)
	sub.initsCh = make(chan struct{})
}

// initFor waits for the init a segment names: a Catalog with a new init
// travels on the control stream, which QUIC does not order against the
// segment stream.
func (sub *Subscription) initFor(ctx context.Context, id uint64) (*relay.Init, error) {
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	for {
		sub.mu.Lock()
		in, ch := sub.inits[id], sub.initsCh
		sub.mu.Unlock()
		if in != nil {
			return in, nil
		}
		select {
		case <-ch:
		case <-t.C:
			return nil, fmt.Errorf("upstream never sent init %d", id)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// control reads Catalog and StreamState updates until the upstream closes
// the control stream.
func (sub *Subscription) control(ctx context.Context, r *wire.Reader) error {
	for {
		m, err := r.ReadMessage()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("upstream %s control stream: %w", sub.c.peer, err)
		}
		switch m := m.(type) {
		case *wire.Catalog:
			sub.addInits(m.Inits)
		case *wire.StreamState:
			if m.Ended {
				sub.pub.Stream.End()
				return fmt.Errorf("upstream %s: %w", sub.c.peer, ErrEnded)
			}
			if m.Gone {
				sub.pub.Stream.EndPublish()
				return fmt.Errorf("upstream %s: %w", sub.c.peer, ErrNotHeld)
			}
			if m.Live {
				sub.pub.Stream.Seed(m.DiscSeq, m.TargetSeconds(), true)
			} else {
				sub.pub.Stream.EndPublish()
			}
		case *wire.Error:
			return fmt.Errorf("upstream %s: %s", sub.c.peer, m.Message)
		}
	}
}

// apply writes segments into the stream, one segment stream at a time.
func (sub *Subscription) apply(ctx context.Context) error {
	st := sub.pub.Stream
	for {
		var seg segment
		select {
		case seg = <-sub.segs:
		case <-ctx.Done():
			return nil
		case <-sub.c.qc.Context().Done():
			return fmt.Errorf("connection to %s lost: %w", sub.c.peer, context.Cause(sub.c.qc.Context()))
		}
		in, err := sub.initFor(ctx, seg.start.InitID)
		if err != nil {
			seg.s.CancelRead(0)
			return err
		}
		st.OpenSegment(seg.start.MSN, seg.start.Header(in))
		sub.checkReady()
		stop := context.AfterFunc(ctx, func() { seg.s.CancelRead(0) })
		err = sub.readSegment(st, seg)
		stop()
		if err != nil && ctx.Err() == nil && sub.c.qc.Context().Err() != nil {
			return fmt.Errorf("connection to %s lost: %w", sub.c.peer, err)
		}
	}
}

func (sub *Subscription) readSegment(st *relay.Stream, seg segment) error {
	defer seg.s.CancelRead(0)
	msn := seg.start.MSN
	for {
		m, err := seg.r.ReadMessage()
		if err != nil {
			return err // the upstream dropped this segment (we were slow) or went away
		}
		switch m := m.(type) {
		case *wire.Part:
			st.AddPart(msn, m.Relay())
			sub.checkReady()
		case *wire.SegmentEnd:
			if m.Complete {
				st.CloseSegment(msn)
			}
			return nil
		}
	}
}
