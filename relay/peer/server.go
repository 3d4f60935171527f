// Package peer owns a node's QUIC relay endpoint: it serves the streams
// this node holds to downstream nodes, and subscribes to upstream nodes for
// streams it relays. One quic.Transport carries both directions, and there
// is one connection per pair of nodes, whoever dialled it.
//
// A subscription is a bidirectional control stream (Hello, Subscribe, then
// Catalog and StreamState updates) plus one unidirectional stream per
// segment (SegmentStart, Parts, SegmentEnd), so a lost packet stalls only
// the segment it belongs to. See relay/wire for the framing.
package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/relaymesh/relaymesh/relay"
	"github.com/relaymesh/relaymesh/relay/peertls"
	"github.com/relaymesh/relaymesh/relay/wire"
)

// Config sets up an Endpoint.
type Config struct {
	Node     string
	TLS      *peertls.Config
	Registry *relay.Registry // the streams this node holds and serves
	Logger   *slog.Logger
	// OnEgress, if set, counts bytes sent to a downstream node.
	OnEgress func(peer string, n int)
	// OnSubscribers, if set, is told how many downstream subscriptions a
	// stream has whenever that changes.
	OnSubscribers func(stream string, n int)
	// Wake, if set, is asked for a stream the registry does not hold: a
	// node that can start it on demand (an on-demand pull) does so and
	// returns it, blocking at most until ctx ends. It returns nil if not.
	Wake func(ctx context.Context, stream string) *relay.Stream
}

// quicConfig keeps connections alive between parts and notices a dead peer
// within a second, so failover can start before a viewer runs dry.
func quicConfig() *quic.Config {
	return &quic.Config{
		KeepAlivePeriod:       150 * time.Millisecond,
		MaxIdleTimeout:        700 * time.Millisecond,
		HandshakeIdleTimeout:  2 * time.Second,
		MaxIncomingStreams:    4096,
		MaxIncomingUniStreams: 4096,
	}
}

// wakeTimeout bounds how long a subscriber waits for a stream started on
// demand; it stays under the 5 s a subscriber gives the catalog.
const wakeTimeout = 4 * time.Second

// Endpoint is a node's relay endpoint.
type Endpoint struct {
	cfg Config
	log *slog.Logger
	udp *net.UDPConn
	tr  *quic.Transport
	ln  *quic.Listener

	mu    sync.Mutex
	life  context.Context  // Serve's: connections live no longer
	conns map[string]*conn // by peer node name
	subs  map[string]int   // downstream subscriptions by stream
	wg    sync.WaitGroup
}

// Listen binds the relay's UDP address.
func Listen(cfg Config, addr string) (*Endpoint, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("relay address %q: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return nil, fmt.Errorf("relay listen %s: %w", addr, err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(cfg.TLS.Server(), quicConfig())
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("relay listen %s: %w", addr, err)
	}
	return &Endpoint{
		cfg: cfg, log: cfg.Logger.With("node", cfg.Node), udp: udp, tr: tr, ln: ln,
		conns: map[string]*conn{}, subs: map[string]int{},
	}, nil
}

// Addr is the bound UDP address.
func (e *Endpoint) Addr() net.Addr { return e.udp.LocalAddr() }

// Subscribers returns how many downstream subscriptions stream has.
func (e *Endpoint) Subscribers(stream string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.subs[stream]
}

// Serve accepts connections until ctx ends, then closes every connection
// and the transport and waits for the goroutines it started.
func (e *Endpoint) Serve(ctx context.Context) error {
	e.mu.Lock()
	e.life = ctx
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		for _, c := range e.conns {
			c.qc.CloseWithError(0, "shutting down")
		}
		e.mu.Unlock()
		e.ln.Close()
		e.wg.Wait()
		e.tr.Close()
		e.udp.Close()
	}()
	for {
		qc, err := e.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("relay accept: %w", err)
		}
		c := e.adopt(ctx, qc)
		e.log.Debug("relay connection accepted", "peer", c.peer, "addr", qc.RemoteAddr().String())
	}
}

// conn is one QUIC connection to a peer, used in both directions.
type conn struct {
	qc   *quic.Conn
	peer string

	mu   sync.Mutex
	subs map[string]*Subscription // our subscriptions over it, by stream
}

// adopt starts serving a connection: control streams the peer opens are
// its subscriptions to us; unidirectional streams are segments of our
// subscriptions to it.
func (e *Endpoint) adopt(ctx context.Context, qc *quic.Conn) *conn {
	c := &conn{qc: qc, peer: peertls.PeerName(qc.ConnectionState().TLS), subs: map[string]*Subscription{}}
	e.mu.Lock()
	if old := e.conns[c.peer]; old != nil && old.qc.Context().Err() != nil {
		delete(e.conns, c.peer)
	}
	if e.conns[c.peer] == nil {
		e.conns[c.peer] = c
	}
	e.mu.Unlock()
	e.wg.Add(2)
	go func() {
		defer e.wg.Done()
		e.acceptSubscriptions(ctx, c)
	}()
	go func() {
		defer e.wg.Done()
		c.acceptSegments(ctx)
		e.mu.Lock()
		if e.conns[c.peer] == c {
			delete(e.conns, c.peer)
		}
		e.mu.Unlock()
	}()
	return c
}

func (e *Endpoint) acceptSubscriptions(ctx context.Context, c *conn) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s, err := c.qc.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := e.serve(ctx, c, s)
			if err != nil && ctx.Err() == nil && c.qc.Context().Err() == nil {
				e.log.Info("relay subscription ended", "peer", c.peer, "err", err)
			}
		}()
	}
}

// serve answers one subscription from a downstream node.
func (e *Endpoint) serve(ctx context.Context, c *conn, ctl *quic.Stream) error {
	defer ctl.CancelRead(0)
	defer ctl.Close()
	r := wire.NewReader(ctl, 0)
	ctl.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := readHello(r); err != nil {
		wire.WriteMessage(ctl, &wire.Error{Code: wire.CodeBadVersion, Message: err.Error()})
		return err
	}
	m, err := r.ReadMessage()
	if err != nil {
		return fmt.Errorf("read subscribe: %w", err)
	}
	sub, ok := m.(*wire.Subscribe)
	if !ok {
		return fmt.Errorf("expected Subscribe, got %s", m.Type())
	}
	ctl.SetReadDeadline(time.Time{})
	log := e.log.With("peer", c.peer, "stream", sub.Stream)
	if err := wire.WriteMessage(ctl, &wire.Hello{Version: wire.Version, Node: e.cfg.Node}); err != nil {
		return err
	}
	st := e.cfg.Registry.Get(sub.Stream)
	if st == nil && e.cfg.Wake != nil {
		wctx, cancel := context.WithTimeout(ctx, wakeTimeout)
		st = e.cfg.Wake(wctx, sub.Stream)
		cancel()
	}
	if st == nil {
		wire.WriteMessage(ctl, &wire.Error{Code: wire.CodeNotFound, Message: "stream not held here"})
		return nil
	}
	e.countSub(sub.Stream, +1)
	defer e.countSub(sub.Stream, -1)
	log.Info("relay subscriber attached", "from_part", sub.FromPart)
	defer log.Info("relay subscriber detached")

	// The subscription ends when the subscriber closes its control stream
	// or the connection goes.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		io.Copy(io.Discard, ctl)
		cancel()
	}()
	snd := &sender{e: e, c: c, ctl: ctl, st: st, from: sub.FromPart, log: log}
	return snd.run(ctx)
}

func readHello(r *wire.Reader) error {
	m, err := r.ReadMessage()
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	h, ok := m.(*wire.Hello)
	if !ok {
		return fmt.Errorf("expected Hello, got %s", m.Type())
	}
	if h.Version != wire.Version {
		return fmt.Errorf("%w: peer speaks %d, we speak %d", wire.ErrBadVersion, h.Version, wire.Version)
	}
	return nil
}

func (e *Endpoint) countSub(stream string, d int) {
	e.mu.Lock()
	e.subs[stream] += d
	n := e.subs[stream]
	if n == 0 {
		delete(e.subs, stream)
	}
	e.mu.Unlock()
	if e.cfg.OnSubscribers != nil {
		e.cfg.OnSubscribers(stream, n)
	}
}

// sender follows a stream's snapshots and writes what the subscriber has
// not had yet. It reads snapshots only, so it never holds up the stream's
// writer; a subscriber too slow to keep up loses its oldest segments.
type sender struct {
	e    *Endpoint
	c    *conn
	ctl  *quic.Stream
	st   *relay.Stream
	from uint64 // first part number to send
	log  *slog.Logger

	inits   map[uint64]bool
	state   wire.StreamState
	seg     *quic.SendStream // the open segment stream
	segMSN  uint64
	segHdr  wire.SegmentStart // what seg was opened with
	sentMSN uint64            // segments up to here are done
	started bool
}

func (s *sender) run(ctx context.Context) error {
	defer func() {
		if s.seg != nil {
			s.seg.CancelWrite(0)
		}
	}()
	snap := s.st.Snapshot()
	cat := wire.CatalogFrom(s.st, snap)
	if s.from == 0 {
		// A fresh replica gets the newest segments only, so that its node
		// answers viewers as soon as they have arrived.
		s.from, cat.DiscSeq = snap.Tail()
	}
	s.inits = map[uint64]bool{}
	for _, in := range cat.Inits {
		s.inits[in.ID] = true
	}
	s.state = wire.StreamStateFrom(snap)
	if err := s.write(s.ctl, &cat); err != nil {
		return err
	}
	for {
		if err := s.send(snap); err != nil {
			return err
		}
		if snap.Gone {
			return nil
		}
		select {
		case <-snap.Changed():
			snap = s.st.Snapshot()
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *sender) write(w io.Writer, m wire.Message) error {
	b := m.Marshal()
	if err := wire.WriteFrame(w, m.Type(), b); err != nil {
		return err
	}
	if s.e.cfg.OnEgress != nil {
		s.e.cfg.OnEgress(s.c.peer, len(b)+4)
	}
	return nil
}

// send writes everything in snap the subscriber lacks.
func (s *sender) send(snap *relay.Snapshot) error {
	if st := wire.StreamStateFrom(snap); st != s.state {
		s.state = st
		if err := s.write(s.ctl, &st); err != nil {
			return err
		}
	}
	td := time.Duration(snap.TargetDuration) * time.Second
	for _, seg := range snap.Segments {
		if s.started && seg.MSN <= s.sentMSN {
			continue
		}
		writing := s.seg != nil && s.segMSN == seg.MSN
		if writing && !sameHeader(s.segHdr, wire.SegmentStartFrom(seg)) {
			// The segment was replaced before its first part: a publisher
			// that left was taken over (a standby). Start it again.
			s.seg.CancelWrite(0)
			s.seg, writing = nil, false
		}
		if !writing && seg.Complete && len(seg.Parts) > 0 && seg.Parts[len(seg.Parts)-1].N < s.from {
			// Before the resume point. (A segment whose stream is open
			// still needs its end, even when all its parts are sent: on a
			// relaying node the last part and the segment's end arrive in
			// separate snapshots.)
			continue
		}
		if s.seg != nil && s.segMSN != seg.MSN {
			// The segment we were writing left the window before we
			// finished it: this subscriber is too slow. Drop it.
			s.seg.CancelWrite(0)
			s.seg = nil
			s.log.Warn("relay subscriber fell behind; skipped a segment", "msn", s.segMSN)
		}
		if s.seg == nil {
			if err := s.openSegment(seg); err != nil {
				return err
			}
		}
		if s.seg == nil {
			continue // writing its start failed: dropped
		}
		for _, p := range seg.Parts {
			if p.N < s.from {
				continue
			}
			s.seg.SetWriteDeadline(time.Now().Add(3 * td))
			wp := wire.PartFrom(p)
			if err := s.write(s.seg, &wp); err != nil {
				s.skip(err)
				break
			}
			s.from = p.N + 1
		}
		if s.seg != nil && seg.Complete {
			err := s.write(s.seg, &wire.SegmentEnd{MSN: seg.MSN, Complete: true})
			if err != nil {
				s.skip(err)
			} else {
				s.seg.Close()
				s.seg = nil
			}
		}
		if seg.Complete {
			s.sentMSN, s.started = seg.MSN, true
		}
	}
	return nil
}

// skip abandons the open segment after a write failed or timed out.
func (s *sender) skip(err error) {
	if s.seg == nil {
		return
	}
	s.seg.CancelWrite(0)
	s.seg = nil
	if s.c.qc.Context().Err() != nil {
		return // the subscriber went away; nothing was too slow
	}
	if se := (*quic.StreamError)(nil); errors.As(err, &se) && se.Remote {
		// The subscriber cancelled the segment: it is leaving, or moving
		// to another upstream.
		s.log.Debug("relay subscriber cancelled a segment", "msn", s.segMSN, "err", err)
		return
	}
	s.log.Warn("relay subscriber too slow; dropped a segment", "msn", s.segMSN, "err", err)
}

func (s *sender) openSegment(seg *relay.Segment) error {
	if seg.Init != nil && !s.inits[seg.Init.ID] {
		// A new publisher brought a new init: the subscriber learns it
		// from the control stream before the segment that uses it.
		s.inits[seg.Init.ID] = true
		cat := wire.CatalogFrom(s.st, s.st.Snapshot())
		if err := s.write(s.ctl, &cat); err != nil {
			return err
		}
	}
	us, err := s.c.qc.OpenUniStream()
	if err != nil {
		return fmt.Errorf("open segment stream: %w", err)
	}
	start := wire.SegmentStartFrom(seg)
	s.seg, s.segMSN, s.segHdr = us, seg.MSN, start
	start.Stream = s.st.Name
	if err := s.write(us, &start); err != nil {
		s.skip(err)
	}
	return nil
}

// sameHeader reports whether a and b open the same segment.
func sameHeader(a, b wire.SegmentStart) bool {
	return a.MSN == b.MSN && a.Start.Equal(b.Start) && a.Discontinuity == b.Discontinuity && a.InitID == b.InitID
}
