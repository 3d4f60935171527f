package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
)

// ErrStreamBusy is returned when a stream already has a publisher.
var ErrStreamBusy = errors.New("stream already has a publisher")

// ErrBadStreamName is returned for names outside [A-Za-z0-9_.-]{1,128}.
var ErrBadStreamName = errors.New("stream name must be 1-128 characters of A-Z a-z 0-9 _ . -")

var streamName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ValidName reports whether name can name a stream. Names become URL path
// elements, so they are kept to a safe alphabet with no "..".
func ValidName(name string) bool { return streamName.MatchString(name) }

// PartSlack is how far a part may run past the part duration a packager
// aims for, and so what streams add to it to advertise PART-TARGET, which
// no part may exceed (RFC 8216bis 4.4.4.9). Protocols with millisecond
// timestamps (RTMP) put 30 fps frames 33 or 34 ms apart, so six frames span
// 199-201 ms, and six 29.97 fps frames span 200.2 ms; without slack a 200 ms
// aim would need five-frame parts, below the 85% floor the draft sets.
const PartSlack = 2 * time.Millisecond

// RegistryConfig sets how streams are kept.
type RegistryConfig struct {
	// PartTarget is the part duration packagers aim for (default 200ms);
	// streams advertise PART-TARGET as PartTarget + PartSlack.
	PartTarget time.Duration
	Window     Window
	// Grace is how long a stream outlives its publisher, so that a
	// reconnecting encoder continues the same playlist (default 30s).
	// After it the show has ended: playlists carry EXT-X-ENDLIST.
	Grace time.Duration
	// Linger is how long an ended show stays servable, so that players
	// read its EXT-X-ENDLIST (default 1 minute).
	Linger time.Duration
	Logger *slog.Logger
	// OnPart, if set, is told for every part how long after its media
	// ended (PROGRAM-DATE-TIME plus duration) it became available here.
	OnPart func(stream string, lag time.Duration)
}

// Registry is a node's table of streams. The zero value is not usable;
// call NewRegistry.
type Registry struct {
	cfg RegistryConfig
	log *slog.Logger

	mu      sync.Mutex
	streams map[string]*entry
	closed  bool
}

type entry struct {
	stream    *Stream
	publisher *Publication
	expiry    *time.Timer
	published bool          // has had a publisher, so a new one is a discontinuity
	replica   bool          // written by a subscription to another node, not by a publisher here
	gen       uint64        // publications so far
	inits     atomic.Uint64 // init segments so far; IDs are unique per stream
	mediaEnd  time.Duration // where the last publisher's timeline ended
}

// NewRegistry returns an empty registry.
func NewRegistry(cfg RegistryConfig) *Registry {
	if cfg.PartTarget <= 0 {
		cfg.PartTarget = 200 * time.Millisecond
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.Linger <= 0 {
		cfg.Linger = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Registry{cfg: cfg, log: cfg.Logger, streams: map[string]*entry{}}
}

// Get returns the named stream, or nil.
func (r *Registry) Get(name string) *Stream {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.streams[name]; e != nil {
		return e.stream
	}
	return nil
}

// Local reports whether the named stream is this node's own: published
// here, now or within its grace period or linger, rather than relayed. A
// node never pulls its own stream from another: the others relay it from
// this one, and would send it back in a circle.
func (r *Registry) Local(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.streams[name]
	return e != nil && !e.replica
}

// HasPublisher reports whether the named stream has a writer now: an
// encoder at an origin, or a subscription at a relaying node.
func (r *Registry) HasPublisher(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.streams[name]
	return e != nil && e.publisher != nil
}

// FirstMSN reports the first media sequence number of the stream's
// publisher, and whether it has one.
func (r *Registry) FirstMSN(name string) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.streams[name]
	if e == nil || e.publisher == nil {
		return 0, false
	}
	return e.publisher.FirstMSN, true
}

// Drop removes a stream that has no publisher at once, rather than at the
// end of its grace period. Readers holding it see it gone. It reports
// whether the stream was dropped.
func (r *Registry) Drop(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.streams[name]
	if e == nil || e.publisher != nil {
		return false
	}
	if e.expiry != nil {
		e.expiry.Stop()
	}
	delete(r.streams, name)
	e.stream.remove()
	return true
}

// ErrNoStream is returned by Lookup for a stream the node does not hold.
var ErrNoStream = errors.New("no such stream")

// Lookup returns the named stream, or ErrNoStream.
func (r *Registry) Lookup(_ context.Context, name string) (*Stream, error) {
	if s := r.Get(name); s != nil {
		return s, nil
	}
	return nil, ErrNoStream
}

// Names lists the streams held, in no particular order.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	names := make([]string, 0, len(r.streams))
	for n := range r.streams {
		names = append(names, n)
	}
	return names
}

// Publication is a publisher's exclusive right to write a stream.
type Publication struct {
	Stream *Stream
	// Resumed is true when the stream had an earlier publisher whose window
	// is still held: the first new segment must carry a discontinuity.
	Resumed bool
	// Generation counts the stream's publications, from 1. It names the
	// publication's init segment.
	Generation uint64
	// MediaStart is where the previous publisher's timeline ended. A new
	// publisher continues from it, so decode times never go backwards.
	MediaStart time.Duration
	// FirstMSN is the media sequence number of the first segment the
	// publication opens. Of two origins that both publish a name, the one
	// that began later, at the higher number, took it over from the other.
	FirstMSN uint64

	r        *Registry
	e        *entry
	once     sync.Once
	mediaEnd atomic.Int64
	done     chan struct{} // closed when a newer publisher took the stream over

	mu      sync.Mutex // serializes Cut with revoke
	revoked bool
}

// SetMediaEnd records where this publication's timeline has reached.
func (p *Publication) SetMediaEnd(d time.Duration) { p.mediaEnd.Store(int64(d)) }

// NewInitID returns an init segment ID not used before in this stream, so
// that a publisher whose codec parameters change can name a new init.
func (p *Publication) NewInitID() uint64 { return p.e.inits.Add(1) }

// Done is closed when a newer publisher has taken the stream over. The
// publisher should then disconnect; its writes are already ignored.
func (p *Publication) Done() <-chan struct{} { return p.done }

// Cut writes to the stream as Stream.Cut does, unless the publication has
// been taken over, in which case it reports false and writes nothing.
func (p *Publication) Cut(last *Part, next *SegmentHeader) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.revoked {
		return false
	}
	p.Stream.Cut(last, next)
	return true
}

// revoke stops the publication's writes for good. Called with r.mu held.
func (p *Publication) revoke() {
	p.mu.Lock()
	p.revoked = true
	p.mu.Unlock()
	close(p.done)
}

// Publish claims the named stream for a new publisher. A stream that has a
// publisher is refused with ErrStreamBusy.
func (r *Registry) Publish(name string) (*Publication, error) {
	return r.publish(name, false, false)
}

// Relay claims the named stream for a subscription that copies another
// node's, as Publish does.
func (r *Registry) Relay(name string) (*Publication, error) {
	return r.publish(name, false, true)
}

// Takeover claims the named stream for a new publisher, revoking the
// current one if there is one: its writes stop at once and its Done
// channel closes. The new publication continues the timeline after a
// discontinuity.
func (r *Registry) Takeover(name string) (*Publication, error) {
	return r.publish(name, true, false)
}

func (r *Registry) publish(name string, takeover, replica bool) (*Publication, error) {
	if !ValidName(name) {
		return nil, fmt.Errorf("publish %q: %w", name, ErrBadStreamName)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, errors.New("publish: node is shutting down")
	}
	e := r.streams[name]
	if e != nil && e.publisher == nil && e.stream.Snapshot().Ended {
		// The show under this name has ended; this is a new one, with a
		// playlist of its own. Players of the old one have its ENDLIST.
		if e.expiry != nil {
			e.expiry.Stop()
		}
		delete(r.streams, name)
		e.stream.remove()
		e = nil
	}
	if e != nil && e.publisher != nil {
		if !takeover {
			return nil, fmt.Errorf("publish %q: %w", name, ErrStreamBusy)
		}
		old := e.publisher
		old.revoke()
		e.publisher = nil
		e.mediaEnd = time.Duration(old.mediaEnd.Load())
		r.log.Info("publisher taken over by a newer one", "stream", name)
	}
	if e == nil {
		e = &entry{stream: NewStream(name, r.cfg.PartTarget+PartSlack, r.cfg.Window)}
		e.stream.onPart = r.cfg.OnPart
		r.streams[name] = e
	}
	if e.expiry != nil {
		e.expiry.Stop()
		e.expiry = nil
	}
	e.gen++
	e.replica = replica
	p := &Publication{
		Stream: e.stream, Resumed: e.published, Generation: e.gen, MediaStart: e.mediaEnd,
		FirstMSN: e.stream.NextMSN(), r: r, e: e, done: make(chan struct{}),
	}
	p.mediaEnd.Store(int64(e.mediaEnd))
	e.publisher = p
	e.published = true
	return p, nil
}

// Shadow returns a publication of a stream no registry holds, so nobody
// reads it but its owner: a standby origin packages the encoder it holds
// into one, ready to continue the primary's playlist from it.
func Shadow(name string, partTarget time.Duration, w Window) *Publication {
	e := &entry{stream: NewStream(name, partTarget+PartSlack, w), published: true, gen: 1}
	return &Publication{Stream: e.stream, Generation: 1, e: e, done: make(chan struct{})}
}

// Close ends the publication. The stream stays servable for the grace
// period and is then removed unless a new publisher arrived.
func (p *Publication) Close() {
	p.once.Do(func() {
		r := p.r
		if r == nil { // a Shadow
			p.Stream.EndPublish()
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		e := r.streams[p.Stream.Name]
		if e == nil || e.publisher != p {
			return // taken over: the stream is the newer publisher's
		}
		p.Stream.EndPublish()
		e.publisher = nil
		e.mediaEnd = time.Duration(p.mediaEnd.Load())
		if r.closed {
			return
		}
		wait := r.cfg.Grace
		if p.Stream.Snapshot().Ended {
			wait = r.cfg.Linger // a relayed show that ended upstream
		}
		e.expiry = time.AfterFunc(wait, func() { r.expire(p.Stream.Name, e) })
	})
}

// expire ends the show of a stream whose publisher did not come back within
// the grace period, and removes it once it has lingered.
func (r *Registry) expire(name string, e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streams[name] != e || e.publisher != nil {
		return
	}
	if e.stream.End() {
		r.log.Info("show ended: no publisher within the grace period", "stream", name, "grace", r.cfg.Grace)
		e.expiry = time.AfterFunc(r.cfg.Linger, func() { r.expire(name, e) })
		return
	}
	delete(r.streams, name)
	e.stream.remove()
	r.log.Info("ended stream removed", "stream", name)
}

// End ends the show of a stream that has no publisher at once (a relayed
// stream whose upstream said so, or that lost every holder), and removes
// it once it has lingered. It reports whether it did.
func (r *Registry) End(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.streams[name]
	if e == nil || e.publisher != nil || !e.stream.End() {
		return false
	}
	if e.expiry != nil {
		e.expiry.Stop()
	}
	e.expiry = time.AfterFunc(r.cfg.Linger, func() { r.expire(name, e) })
	return true
}

// Close stops all grace timers and marks every stream gone.
func (r *Registry) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for name, e := range r.streams {
		if e.expiry != nil {
			e.expiry.Stop()
		}
		e.stream.remove()
		delete(r.streams, name)
	}
}
