package rtsp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/pion/rtp"

	"github.com/relaymesh/relaymesh/ingest"
	"github.com/relaymesh/relaymesh/relay"
)

// Puller defaults.
const (
	DefaultIdle       = 30 * time.Second
	DefaultMinBackoff = 500 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
)

// healthyRun is how long a pull must deliver media before a failure
// counts as a fresh one, restarting the backoff at MinBackoff.
const healthyRun = 10 * time.Second

// Puller reads one RTSP source and publishes it through the gate.
//
// Each connection publishes a new session, so that a reconnect shows in
// the playlist as a discontinuity while the registry's grace period keeps
// the stream.
type Puller struct {
	Gate   *ingest.Gate
	Source Source
	Logger *slog.Logger
	// Idle is how long an on-demand pull goes on after the last Demand
	// (default DefaultIdle).
	Idle time.Duration
	// MinBackoff and MaxBackoff bound the wait before reconnecting after
	// a failure, which doubles from MinBackoff, with jitter (defaults
	// DefaultMinBackoff and DefaultMaxBackoff).
	MinBackoff, MaxBackoff time.Duration
	// Transport is "tcp", "udp" or "" to try UDP first and fall back to
	// TCP.
	Transport string
	// Timeout bounds connecting, each request and silence from the source
	// (default 10s).
	Timeout time.Duration

	once    sync.Once
	epoch   time.Time     // Demand times are monotonic offsets from it
	demand  atomic.Int64  // offset of the latest Demand plus 1; 0: never
	wakeups chan struct{} // a Demand arrived
}

func (p *Puller) init() {
	p.once.Do(func() {
		p.epoch = time.Now()
		p.wakeups = make(chan struct{}, 1)
	})
}

// Demand tells an on-demand puller that a viewer wants the stream: it
// starts pulling if it is not, and keeps going until Idle passes without
// another Demand. It never blocks and is safe for concurrent use; for an
// always-on source it does nothing that matters.
func (p *Puller) Demand() {
	p.init()
	p.demand.Store(int64(time.Since(p.epoch)) + 1)
	select {
	case p.wakeups <- struct{}{}:
	default:
	}
}

// demanded reports whether Demand was called within the last d.
func (p *Puller) demanded(d time.Duration) bool {
	last := p.demand.Load()
	return last > 0 && int64(time.Since(p.epoch))-(last-1) < int64(d)
}

// settings are a Run's validated configuration.
type settings struct {
	url        *base.URL
	transport  *gortsplib.Transport
	idle       time.Duration
	minBackoff time.Duration
	maxBackoff time.Duration
	timeout    time.Duration
	log        *slog.Logger
}

func (p *Puller) settings() (*settings, error) {
	if p.Gate == nil {
		return nil, errors.New("Puller.Gate is not set")
	}
	if !relay.ValidName(p.Source.Stream) {
		return nil, fmt.Errorf("stream %q: %w", p.Source.Stream, relay.ErrBadStreamName)
	}
	u, err := parseSourceURL(p.Source.URL)
	if err != nil {
		return nil, err
	}
	s := &settings{
		url:        u,
		idle:       orDefault(p.Idle, DefaultIdle),
		minBackoff: orDefault(p.MinBackoff, DefaultMinBackoff),
		maxBackoff: orDefault(p.MaxBackoff, DefaultMaxBackoff),
		timeout:    orDefault(p.Timeout, 10*time.Second),
	}
	s.maxBackoff = max(s.maxBackoff, s.minBackoff)
	switch strings.ToLower(p.Transport) {
	case "":
	case "tcp":
		t := gortsplib.TransportTCP
		s.transport = &t
	case "udp":
		t := gortsplib.TransportUDP
		s.transport = &t
	default:
		return nil, fmt.Errorf("transport %q: want tcp, udp or empty for automatic", p.Transport)
	}
	log := p.Logger
	if log == nil {
		log = slog.Default()
	}
	s.log = log.With("proto", "pull", "stream", p.Source.Stream, "peer", redactURL(p.Source.URL))
	return s, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Run pulls the source until ctx ends, reconnecting after failures. An
// on-demand source is pulled only while Demand is being called. Run
// returns nil when ctx ends, or an error at once if the configuration is
// unusable.
func (p *Puller) Run(ctx context.Context) error {
	p.init()
	s, err := p.settings()
	if err != nil {
		return fmt.Errorf("rtsp pull %s: %w", p.Source.Stream, err)
	}
	backoff := s.minBackoff
	for {
		if p.Source.OnDemand && !p.waitDemand(ctx, s.idle) {
			return nil
		}
		runCtx, stop := ctx, func() {}
		if p.Source.OnDemand {
			runCtx, stop = p.whileDemanded(ctx, s.idle)
		}
		healthy, err := p.pull(runCtx, s)
		idle := runCtx.Err() != nil && ctx.Err() == nil
		stop()
		switch {
		case ctx.Err() != nil:
			return nil
		case idle:
			s.log.Info("rtsp pull stopped: no demand", "idle", s.idle)
			backoff = s.minBackoff
			continue
		case healthy:
			backoff = s.minBackoff
		}
		// Equal jitter: between half and all of the backoff, so that
		// pullers of one camera do not reconnect in lockstep.
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(backoff*2, s.maxBackoff)
		s.log.Warn("rtsp pull failed; reconnecting", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// waitDemand waits until Demand has been called within idle. It reports
// false when ctx ended first.
func (p *Puller) waitDemand(ctx context.Context, idle time.Duration) bool {
	for !p.demanded(idle) {
		select {
		case <-ctx.Done():
			return false
		case <-p.wakeups:
		}
	}
	return ctx.Err() == nil
}

// errNoDemand ends an on-demand pull that nobody asked for in a while.
var errNoDemand = errors.New("no demand")

// whileDemanded returns a context that ends idle after the last Demand.
// stop releases its timer goroutine.
func (p *Puller) whileDemanded(ctx context.Context, idle time.Duration) (context.Context, func()) {
	ctx, cancelCause := context.WithCancelCause(ctx)
	cancel := func() { cancelCause(errNoDemand) }
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTimer(idle)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				last := p.demand.Load() - 1
				left := time.Duration(last + int64(idle) - int64(time.Since(p.epoch)))
				if left <= 0 {
					cancel()
					return
				}
				t.Reset(left)
			}
		}
	}()
	return ctx, func() {
		cancel()
		wg.Wait()
	}
}

// pull runs one connection: DESCRIBE, SETUP, admission, PLAY, then media
// until the source fails, the session ends or ctx ends. healthy reports
// whether it delivered media for healthyRun.
func (p *Puller) pull(ctx context.Context, s *settings) (healthy bool, err error) {
	// Packet callbacks must not call Client.Close, which waits for the
	// reader they run on; they cancel this context and an AfterFunc
	// closes the client.
	ctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	var sess atomic.Pointer[ingest.Session]
	drop := func(err error) {
		if ss := sess.Load(); ss != nil {
			ss.Drop(err)
		}
	}
	c := &gortsplib.Client{
		Scheme:        s.url.Scheme,
		Host:          s.url.Host,
		ReadTimeout:   s.timeout,
		WriteTimeout:  s.timeout,
		Transport:     s.transport,
		DialContext:   dialQuickAck,
		OnPacketsLost: func(lost uint64) { drop(fmt.Errorf("%d RTP packets lost", lost)) },
		OnDecodeError: drop,
		OnTransportSwitch: func(err error) {
			s.log.Info("rtsp pull switched transport", "reason", err)
		},
	}
	if err := c.Start2(); err != nil {
		return false, fmt.Errorf("start RTSP client: %w", err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, c.Close) // unblocks requests in flight
	defer stop()

	desc, _, err := c.Describe(s.url)
	if err != nil {
		return false, fmt.Errorf("DESCRIBE: %w", err)
	}
	tracks, ignored := selectTracks(desc.Medias)
	if len(tracks) == 0 {
		return false, fmt.Errorf("no H.264, H.265, AAC or Opus track among %s", strings.Join(ignored, ", "))
	}
	for _, t := range tracks {
		if _, err := c.Setup(desc.BaseURL, t.media, 0, 0); err != nil {
			return false, fmt.Errorf("SETUP %s: %w", describeMedia(t.media), err)
		}
	}
	// Admitted only now, so that an unreachable source claims nothing.
	ss, err := p.Gate.Admit(ingest.Request{Stream: p.Source.Stream, Proto: "pull", Peer: redactURL(p.Source.URL), Configured: true})
	if err != nil {
		return false, fmt.Errorf("publish: %w", err)
	}
	defer ss.Close()
	if err := ss.SetTracks(ingestTracks(tracks)); err != nil {
		if err2 := ss.SetTracks(withoutParams(tracks)); err2 != nil {
			return false, fmt.Errorf("package tracks: %w", err2)
		}
		ss.Log.Warn("parameter sets in the SDP cannot be packaged; waiting for in-band ones", "err", err)
	}
	sess.Store(ss)
	if len(ignored) > 0 {
		ss.Log.Info("rtsp tracks ignored", "tracks", ignored)
	}

	var media atomic.Bool
	for _, t := range tracks {
		c.OnPacketRTP(t.media, t.format, func(pkt *rtp.Packet) {
			defer func() {
				// Depacketizers and parsers see hostile bytes; a bug there
				// must cost one connection, never the node.
				if v := recover(); v != nil {
					ss.Log.Error("rtsp packet handler panicked; reconnecting", "panic", fmt.Sprint(v))
					abort(fmt.Errorf("packet handler panicked: %v", v))
				}
			}()
			pts, ok := c.PacketPTS2(t.media, pkt)
			if !ok {
				return
			}
			media.Store(true)
			if err := t.push(ss, pkt, pts); err != nil {
				var end errSessionOver
				if errors.As(err, &end) {
					abort(err)
					return
				}
				ss.Drop(err)
			}
		})
	}
	if _, err := c.Play(nil); err != nil {
		return false, fmt.Errorf("PLAY: %w", err)
	}
	started := time.Now()
	transport := "auto"
	if s.transport != nil {
		transport = strings.ToLower(s.transport.String())
	}
	ss.Log.Info("rtsp pull started", "tracks", len(tracks), "transport", transport, "resumed", ss.Resumed())

	waited := make(chan error, 1)
	go func() { waited <- c.Wait() }()
	select {
	case err = <-waited:
	case <-ctx.Done():
		err = context.Cause(ctx)
		c.Close()
		<-waited
	case <-ss.Done():
		err = ss.Err()
		c.Close()
		<-waited
	}
	healthy = media.Load() && time.Since(started) >= healthyRun
	ss.Log.Info("rtsp pull ended", "err", err, "after", time.Since(started).Round(time.Millisecond))
	if err == nil {
		err = errors.New("source ended the session")
	}
	return healthy, err
}
