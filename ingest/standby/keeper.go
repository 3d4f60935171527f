package standby

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/relaymesh/relaymesh/ingest"
	"github.com/relaymesh/relaymesh/relay"
)

// Origin is another origin of the mesh, as gossip describes it.
type Origin struct {
	Name       string
	StandbyFor string // its --standby-for
	// Publishes lists the streams an encoder publishes there, each with the
	// media sequence number its publication began at.
	Publishes map[string]uint64
}

// Mesh is the mesh as a Keeper reads it.
type Mesh interface {
	// Origins returns the alive origins other than this node. It is
	// called every tick and at each publish, concurrently; the Keeper
	// does not keep the result.
	Origins() []Origin
}

// Replicas keeps hot replicas of streams: the node's puller.
type Replicas interface {
	// Keep relays stream whether or not anyone watches it; it reports
	// whether a pull runs (one starts if some node holds the stream).
	Keep(stream string) bool
	// Release stops relaying stream and returns once the replica no
	// longer writes it.
	Release(ctx context.Context, stream string) error
	// Cut reports how long the replica of stream has been without a
	// working upstream subscription (0 while fed, or without a replica),
	// and which node last fed it ("" if none has).
	Cut(stream string) (time.Duration, string)
}

// tick is how often a Keeper looks at the mesh.
const tick = 100 * time.Millisecond

// paused is a gap between ticks that means this process was paused, not
// merely busy.
const paused = time.Second

// Keeper applies the standby decisions at one origin: it implements
// ingest.Claimer for the node's Gate, keeps replicas of the partner's
// streams and promotes held encoders. Its zero value is not usable: set
// every field but Logger and StandbyFor.
type Keeper struct {
	Self       string // this node's name
	StandbyFor string // --standby-for: the partner, on the standby
	Mesh       Mesh
	Gate       *ingest.Gate
	Registry   *relay.Registry
	Replicas   Replicas
	Logger     *slog.Logger

	mu         sync.Mutex
	woke       time.Time // when a pause of this process last ended; zero if none was seen
	held       map[string]*heldStream
	kept       map[string]bool
	promotions int64
	demotions  int64
}

type heldStream struct {
	since            time.Time
	partnerPublished bool
}

func (k *Keeper) log() *slog.Logger {
	if k.Logger != nil {
		return k.Logger
	}
	return slog.Default()
}

// partner names this origin's partner among origins: the one it stands by
// for, or one that stands by for it.
func (k *Keeper) partner(origins []Origin) string {
	if k.StandbyFor != "" {
		return k.StandbyFor
	}
	for _, o := range origins {
		if o.StandbyFor == k.Self {
			return o.Name
		}
	}
	return ""
}

// facts gathers what this origin knows about stream.
func (k *Keeper) facts(stream string, origins []Origin) Facts {
	f := Facts{Partner: k.partner(origins), Standby: k.StandbyFor != ""}
	for _, o := range origins {
		first, publishes := o.Publishes[stream]
		switch {
		case o.Name == f.Partner:
			f.PartnerAlive, f.PartnerPublishes, f.PartnerFirstMSN = true, publishes, first
		case publishes:
			f.Elsewhere = o.Name
		}
	}
	if k.Gate.Publishing(stream) != nil {
		f.FirstMSN, f.Publishes = k.Registry.FirstMSN(stream)
	}
	k.mu.Lock()
	if !k.woke.IsZero() {
		f.SincePause = time.Since(k.woke)
	}
	k.mu.Unlock()
	f.Replica = k.Registry.Get(stream) != nil && !k.Registry.Local(stream)
	if f.Replica {
		// Only a replica the partner fed says, by being cut, that the
		// partner is lost: one fed by an edge, or never fed (a returning
		// origin's pre-warm), says nothing about it.
		if cut, from := k.Replicas.Cut(stream); from == f.Partner {
			f.ReplicaCut = cut
		}
	}
	if k.Gate.Held(stream) != nil {
		f.Held = true
		k.mu.Lock()
		if h := k.held[stream]; h != nil {
			f.HeldFor, f.PartnerPublished = time.Since(h.since), h.partnerPublished
		}
		k.mu.Unlock()
	}
	return f
}

// Claim decides a publish at this origin (ingest.Claimer).
func (k *Keeper) Claim(stream string) (ingest.Claim, string) {
	return Claim(k.facts(stream, k.Mesh.Origins()))
}

// ReleaseReplica stops this node's replica of stream (ingest.Claimer).
func (k *Keeper) ReleaseReplica(stream string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	k.mu.Lock()
	delete(k.kept, stream)
	k.mu.Unlock()
	return k.Replicas.Release(ctx, stream)
}

// Standby reports whether this origin stands by for stream: it keeps a
// replica of it, or holds its encoder's copy.
func (k *Keeper) Standby(stream string) bool {
	k.mu.Lock()
	kept := k.kept[stream]
	k.mu.Unlock()
	return kept || k.Gate.Held(stream) != nil
}

// Promotions counts the streams this origin took over.
func (k *Keeper) Promotions() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.promotions
}

// Demotions counts the streams this origin yielded to its partner.
func (k *Keeper) Demotions() int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.demotions
}

// Run applies the decisions every tick until ctx ends.
func (k *Keeper) Run(ctx context.Context) error {
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if now := time.Now(); now.Sub(last) > paused {
			k.log().Warn("standby: this node was paused; a relay cut counts from now", "paused_for", now.Sub(last).Round(time.Millisecond))
			k.mu.Lock()
			k.woke = now
			k.mu.Unlock()
		}
		k.step(ctx)
		last = time.Now()
	}
}

// step keeps the replicas the partner's streams need, and promotes held
// encoders whose streams the partner no longer publishes.
func (k *Keeper) step(ctx context.Context) {
	origins := k.Mesh.Origins()
	partner := k.partner(origins)
	var streams []string
	for _, o := range origins {
		if o.Name == partner {
			for s := range o.Publishes {
				streams = append(streams, s)
			}
		}
	}
	k.mu.Lock()
	if k.held == nil {
		k.held, k.kept = map[string]*heldStream{}, map[string]bool{}
	}
	for s := range k.kept {
		streams = append(streams, s)
	}
	k.mu.Unlock()
	streams = append(streams, k.Gate.HeldStreams()...)
	slices.Sort(streams)
	for _, s := range slices.Compact(streams) {
		f := k.facts(s, origins)
		k.track(s, f)
		switch {
		case Yield(f):
			k.yield(s, f)
		case Promote(f):
			k.promote(ctx, s, f)
		case Keep(f):
			// Marked kept first: the replica's upstream is chosen knowing
			// this node stands by (it copies the primary itself).
			k.mu.Lock()
			k.kept[s] = true
			k.mu.Unlock()
			if !k.Replicas.Keep(s) {
				k.mu.Lock()
				delete(k.kept, s)
				k.mu.Unlock()
			}
		default:
			k.release(ctx, s, f)
		}
	}
}

// track records, for a held stream, when it was first held and whether
// the partner published it meanwhile.
func (k *Keeper) track(stream string, f Facts) {
	k.mu.Lock()
	defer k.mu.Unlock()
	h := k.held[stream]
	switch {
	case !f.Held:
		delete(k.held, stream)
	case h == nil:
		k.held[stream] = &heldStream{since: time.Now(), partnerPublished: f.PartnerPublishes}
	default:
		h.partnerPublished = h.partnerPublished || f.PartnerPublishes
	}
}

// release stops keeping a replica the partner no longer needs kept.
func (k *Keeper) release(ctx context.Context, stream string, f Facts) {
	k.mu.Lock()
	kept := k.kept[stream]
	delete(k.kept, stream)
	k.mu.Unlock()
	if kept && !f.Held {
		if err := k.Replicas.Release(ctx, stream); err != nil {
			k.log().Warn("standby: could not stop a replica", "stream", stream, "err", err)
		}
	}
}

// yield sets aside this origin's encoder of a stream its partner took
// over: the session is held, and the local window goes, so that the next
// step keeps a replica of the partner's.
func (k *Keeper) yield(stream string, f Facts) {
	s := k.Gate.Publishing(stream)
	if s == nil {
		return
	}
	if err := s.Demote(); err != nil {
		k.log().Error("standby: cannot yield the stream to the partner", "stream", stream, "partner", f.Partner, "err", err)
		return
	}
	k.Registry.Drop(stream)
	k.mu.Lock()
	k.demotions++
	k.held[stream] = &heldStream{since: time.Now(), partnerPublished: true}
	k.mu.Unlock()
	k.log().Warn("standby: the partner took the stream over while this origin was cut off; it stands by now",
		"stream", stream, "partner", f.Partner, "first_msn", f.FirstMSN, "partner_first_msn", f.PartnerFirstMSN)
}

// promote makes this origin publish a stream it held: it continues its
// replica's playlist, if it has one, from the held encoder.
func (k *Keeper) promote(ctx context.Context, stream string, f Facts) {
	s := k.Gate.Held(stream)
	if s == nil {
		return
	}
	since := time.Now()
	if st := k.Registry.Get(stream); st != nil && f.Replica {
		if end, ok := mediaEnd(st.Snapshot()); ok {
			since = end
		}
	}
	if err := k.ReleaseReplica(stream); err != nil {
		k.log().Error("standby: cannot take over: the replica does not stop", "stream", stream, "err", err)
		return
	}
	pub, err := k.Registry.Publish(stream)
	if err != nil {
		k.log().Error("standby: cannot take over", "stream", stream, "err", err)
		return
	}
	if err := s.Promote(pub, since); err != nil {
		pub.Close()
		k.log().Error("standby: cannot take over", "stream", stream, "err", err)
		return
	}
	why := "the partner stopped publishing it"
	switch {
	case f.Partner == "" || !f.PartnerAlive:
		why = "the partner is gone"
	case f.PartnerPublishes:
		why = "the relay lost the partner"
	case !f.PartnerPublished:
		why = "the partner did not publish it"
	}
	k.mu.Lock()
	k.promotions++
	delete(k.held, stream)
	k.mu.Unlock()
	k.log().Info("standby: took over the stream; its playlist continues from this origin",
		"stream", stream, "partner", f.Partner, "why", why, "continued", f.Replica, "resumed", pub.Resumed)
}

// mediaEnd is when the newest media of snap ends, by its wall clock.
func mediaEnd(snap *relay.Snapshot) (time.Time, bool) {
	for i := len(snap.Segments) - 1; i >= 0; i-- {
		if seg := snap.Segments[i]; len(seg.Parts) > 0 {
			return seg.Start.Add(seg.Duration), true
		}
	}
	return time.Time{}, false
}
