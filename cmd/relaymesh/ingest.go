package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/relaymesh/relaymesh/edge"
	"github.com/relaymesh/relaymesh/ingest"
	"github.com/relaymesh/relaymesh/ingest/rtsp"
	"github.com/relaymesh/relaymesh/relay"
)

// ingestFlags are the origin's encoder-facing settings.
type ingestFlags struct {
	PublishKey, PublishKeys string
	Takeover                bool
	MaxStreams              int
	MaxBitrate              bitsPerSecond
	MaxFrameSize            byteSize
	SRTLatency              time.Duration
	SRTPassphrase           string
	RTSPUDP                 string
	Pull                    []string
	StandbyFor              string
}

func (f *ingestFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.PublishKey, "publish-key", "", "key every publisher must give (RTMP/RTSP: ?key=KEY; RTSP: or the password; SRT: streamid=publish:{stream}:KEY)")
	fs.StringVar(&f.PublishKeys, "publish-keys", "", "file of \"{stream} {key}\" lines, a key per stream; re-read on SIGHUP")
	fs.BoolVar(&f.Takeover, "publish-takeover", false, "a new publisher replaces the live one instead of being refused")
	fs.IntVar(&f.MaxStreams, "max-streams", ingest.DefaultMaxStreams, "most streams published at once on this node")
	f.MaxBitrate = ingest.DefaultMaxBitrate
	fs.Var(&f.MaxBitrate, "max-bitrate", "highest bitrate of a stream, averaged over 5s, e.g. 8M or 2500k (bits/s); above it the publisher is disconnected")
	f.MaxFrameSize = ingest.DefaultMaxFrameSize
	fs.Var(&f.MaxFrameSize, "max-frame-size", "largest video or audio frame accepted, e.g. 8MiB; larger frames are dropped")
	fs.DurationVar(&f.SRTLatency, "srt-latency", 120*time.Millisecond, "SRT receiver latency: more survives a lossy uplink, less is closer to live")
	fs.StringVar(&f.SRTPassphrase, "srt-passphrase", "", "SRT encryption passphrase (10-79 characters); encoders must use the same")
	fs.StringVar(&f.RTSPUDP, "rtsp-udp", ":8000", "UDP port pair (RTP, RTP+1 for RTCP) for RTSP publishers using UDP; \"\" allows TCP only")
	fs.StringSliceVar(&f.Pull, "pull", nil, "pull a stream from an RTSP source: {stream}=rtsp://HOST/path (repeatable); see docs/ingest.md")
	fs.StringVar(&f.StandbyFor, "standby-for", "", "be the standby of origin NODE: keep its streams hot and take them over if it is lost (see docs/standby.md)")
}

func (f *ingestFlags) validate() error {
	if f.MaxStreams < 1 {
		return fmt.Errorf("--max-streams %d: must be at least 1", f.MaxStreams)
	}
	if f.MaxBitrate < 100_000 {
		return fmt.Errorf("--max-bitrate %s: must be at least 100k", f.MaxBitrate.String())
	}
	if f.MaxFrameSize < 64<<10 {
		return fmt.Errorf("--max-frame-size %s: must be at least 64KiB", f.MaxFrameSize.String())
	}
	if f.SRTLatency < 0 || f.SRTLatency > 10*time.Second {
		return fmt.Errorf("--srt-latency %v: choose between 0 and 10s", f.SRTLatency)
	}
	if n := len(f.SRTPassphrase); n != 0 && (n < 10 || n > 79) {
		return fmt.Errorf("--srt-passphrase: SRT needs 10 to 79 characters, got %d", n)
	}
	return nil
}

// gate builds the admission gate every ingest listener shares.
func (n *node) newGate() (*ingest.Gate, error) {
	f := n.flags.ingestFlags
	keys, err := ingest.LoadKeys(f.PublishKey, f.PublishKeys)
	if err != nil {
		return nil, fmt.Errorf("--publish-keys: %w", err)
	}
	return &ingest.Gate{
		Registry: n.registry,
		Packager: n.packager,
		Keys:     keys,
		Takeover: f.Takeover,
		Limits: ingest.Limits{
			MaxStreams: f.MaxStreams, MaxBitrate: int64(f.MaxBitrate), MaxFrameSize: int(f.MaxFrameSize),
		},
		Logger: n.log,
	}, nil
}

// reloadKeysOnHangup re-reads --publish-keys on every SIGHUP until ctx
// ends. Without a keys file SIGHUP is logged and otherwise ignored, rather
// than ending the process as it would by default.
func (n *node) reloadKeysOnHangup(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	keys := n.gate.Keys
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
		}
		if keys == nil || keys.File == "" {
			n.log.Info("SIGHUP: nothing to reload (no --publish-keys file)")
			continue
		}
		if err := keys.Reload(); err != nil {
			n.log.Error("publish keys not reloaded; the previous keys stay in force", "err", err)
			continue
		}
		n.log.Info("publish keys reloaded", "file", keys.File, "streams", keys.Len())
	}
}

// bitsPerSecond is a flag value in bits per second with an optional k, M or G
// suffix (powers of 1000).
type bitsPerSecond int64

func (b *bitsPerSecond) String() string {
	return formatUnits(int64(*b), 1000, []string{"", "k", "M", "G"})
}
func (b *bitsPerSecond) Type() string { return "bitrate" }
func (b *bitsPerSecond) Set(s string) error {
	v, err := parseUnits(s, map[string]int64{"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9})
	if err != nil {
		return fmt.Errorf("want bits per second like 8M or 2500k: %w", err)
	}
	*b = bitsPerSecond(v)
	return nil
}

// byteSize is a flag value in bytes with an optional KiB or MiB suffix.
type byteSize int64

func (b *byteSize) String() string {
	return formatUnits(int64(*b), 1024, []string{"", "KiB", "MiB", "GiB"})
}
func (b *byteSize) Type() string { return "size" }
func (b *byteSize) Set(s string) error {
	v, err := parseUnits(s, map[string]int64{"": 1, "KiB": 1 << 10, "K": 1 << 10, "MiB": 1 << 20, "M": 1 << 20, "GiB": 1 << 30, "G": 1 << 30})
	if err != nil {
		return fmt.Errorf("want bytes like 8MiB or 512KiB: %w", err)
	}
	*b = byteSize(v)
	return nil
}

func parseUnits(s string, units map[string]int64) (int64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	mult, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("unknown unit %q", unit)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || v*float64(mult) > 1<<62 {
		return 0, errors.New("not a non-negative number")
	}
	return int64(v * float64(mult)), nil
}

func formatUnits(v, base int64, names []string) string {
	i := 0
	for i < len(names)-1 && v >= base && v%base == 0 {
		v /= base
		i++
	}
	return strconv.FormatInt(v, 10) + names[i]
}

// listenRTSP binds the RTSP publisher listener and checks the pull sources.
func (n *node) listenRTSP() error {
	f := n.flags
	for _, spec := range f.Pull {
		src, err := rtsp.ParseSource(spec)
		if err != nil {
			return fmt.Errorf("--pull: %w", err)
		}
		for _, p := range n.pulls {
			if p.Source.Stream == src.Stream {
				return fmt.Errorf("--pull: stream %q is pulled twice", src.Stream)
			}
		}
		n.pulls = append(n.pulls, &rtsp.Puller{Gate: n.gate, Source: src, Logger: n.log, Idle: f.Idle})
	}
	if f.RTSP == "" {
		return nil
	}
	n.rtsp = &rtsp.Server{Gate: n.gate, Logger: n.log, NoUDP: f.RTSPUDP == ""}
	if f.RTSPUDP != "" {
		host, p, err := net.SplitHostPort(f.RTSPUDP)
		port, perr := strconv.Atoi(p)
		if err != nil || perr != nil || port <= 0 || port >= 65535 || port%2 != 0 {
			return fmt.Errorf("--rtsp-udp %q: want host:port or :port with an even port (RTCP uses the next one)", f.RTSPUDP)
		}
		n.rtsp.UDPRTPAddress = f.RTSPUDP
		n.rtsp.UDPRTCPAddress = net.JoinHostPort(host, strconv.Itoa(port+1))
		// The RTSP server binds these when it starts; a busy port should
		// stop the node now, with the flag named, not after start-up.
		for _, addr := range []string{n.rtsp.UDPRTPAddress, n.rtsp.UDPRTCPAddress} {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return fmt.Errorf("--rtsp-udp %s: %w (pick another even port, or --rtsp-udp \"\" for TCP only)", f.RTSPUDP, err)
			}
			pc.Close()
		}
	}
	var err error
	n.rtspLn, err = listen("rtsp", f.RTSP)
	return err
}

// runRTSP starts the RTSP listener and every pull in g.
func (n *node) runRTSP(ctx context.Context, g *errgroup.Group) {
	if n.rtspLn != nil {
		g.Go(func() error { return n.rtsp.Serve(ctx, n.rtspLn) })
		n.log.Info("rtsp ingest listening", "addr", n.rtspLn.Addr().String(), "publish", "rtsp://HOST"+port(n.rtspLn)+"/live/{stream}")
	}
	for _, p := range n.pulls {
		mode := "always"
		if p.Source.OnDemand {
			mode = "on demand"
		}
		n.log.Info("rtsp pull configured", "stream", p.Source.Stream, "source", p.Source.String(), "mode", mode)
		g.Go(func() error { return p.Run(ctx) })
	}
	if len(n.pulls) > 0 {
		g.Go(func() error { return n.keepDemand(ctx) })
	}
}

// onDemand returns the on-demand pull of a stream, or nil.
func (n *node) onDemand(stream string) *rtsp.Puller {
	for _, p := range n.pulls {
		if p.Source.OnDemand && p.Source.Stream == stream {
			return p
		}
	}
	return nil
}

// wake starts an on-demand pull for a viewer or a relay subscriber and
// waits until its stream exists. It returns nil for any other stream.
func (n *node) wake(ctx context.Context, stream string) *relay.Stream {
	p := n.onDemand(stream)
	if p == nil {
		// A downstream node that has this one as its --parent asks for a
		// stream it does not hold: pull it from the mesh, as a shield.
		if n.cluster == nil {
			return nil
		}
		st, err := n.cluster.puller.LookupForShield(ctx, stream)
		if err != nil {
			return nil
		}
		return st
	}
	p.Demand()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if st := n.registry.Get(stream); st != nil {
			return st
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// keepDemand keeps on-demand pulls running while anyone watches them here
// or a downstream node relays them.
func (n *node) keepDemand(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		viewers := n.hls.Viewers()
		for _, p := range n.pulls {
			name := p.Source.Stream
			if p.Source.OnDemand && (viewers[name] > 0 || n.metrics.subscribers(name) > 0) {
				p.Demand()
			}
		}
	}
}

// wakingStreams finds streams for viewers, starting on-demand pulls.
type wakingStreams struct {
	edge.Streams
	n *node
}

// wakeTimeout bounds how long a viewer's first request waits for an
// on-demand source to connect.
const wakeTimeout = 8 * time.Second

func (w wakingStreams) Lookup(ctx context.Context, name string) (*relay.Stream, error) {
	if p := w.n.onDemand(name); p != nil {
		p.Demand()
		if w.n.registry.Get(name) == nil {
			wctx, cancel := context.WithTimeout(ctx, wakeTimeout)
			defer cancel()
			if st := w.n.wake(wctx, name); st != nil {
				return st, nil
			}
		}
	}
	return w.Streams.Lookup(ctx, name)
}
