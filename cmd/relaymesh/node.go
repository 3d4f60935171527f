package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/relaymesh/relaymesh/edge"
	"github.com/relaymesh/relaymesh/edge/player"
	"github.com/relaymesh/relaymesh/edge/steer"
	"github.com/relaymesh/relaymesh/ingest"
	"github.com/relaymesh/relaymesh/ingest/rtmp"
	"github.com/relaymesh/relaymesh/ingest/rtsp"
	"github.com/relaymesh/relaymesh/ingest/srt"
	"github.com/relaymesh/relaymesh/mesh"
	"github.com/relaymesh/relaymesh/relay"
)

// nodeFlags are the settings shared by origin, edge and demo.
type nodeFlags struct {
	HTTP, RTMP, SRT, RTSP, Mesh, Relay string
	Join, NodeName, ClusterKey         string
	Region, Advertise, Parent          string
	RelayCA, RelayCert, RelayKey       string
	TLSCert, TLSKey                    string
	PartTarget, MinSegment, Grace      time.Duration
	Idle                               time.Duration
	Prewarm, Capacity                  int
	LogLevel                           string
	DebugAddr                          string // pprof listener, "" for none
	routingFlags
	ingestFlags
	ingest bool // the encoder-facing flags are registered (origin, demo)
}

// register defines the flags; ingest adds the encoder listeners (origins).
func (f *nodeFlags) register(fs *pflag.FlagSet, ingest bool) {
	fs.String("config", "", "YAML file whose keys are flag names (env RELAYMESH_CONFIG)")
	fs.StringVar(&f.HTTP, "http", ":8080", "viewer HTTP listener: LL-HLS at /live/{stream}/index.m3u8")
	if ingest {
		fs.StringVar(&f.RTMP, "rtmp", ":1935", "RTMP ingest listener: rtmp://HOST/live/{stream}")
		fs.StringVar(&f.SRT, "srt", ":6000", "SRT ingest listener: srt://HOST:6000?streamid=publish:{stream}")
		fs.StringVar(&f.RTSP, "rtsp", ":8554", "RTSP ingest listener: rtsp://HOST:8554/live/{stream}")
		f.ingestFlags.register(fs)
		f.ingest = true
	}
	fs.StringVar(&f.Mesh, "mesh", ":7946", "memberlist bind, TCP and UDP; used once --cluster-key or --join is set")
	fs.StringVar(&f.Relay, "relay", ":7947", "QUIC relay between nodes, UDP")
	fs.StringVar(&f.Join, "join", "", "comma-separated host:port mesh seeds (another node's --mesh)")
	fs.StringVar(&f.NodeName, "node-name", "", "unique node name (default: hostname)")
	fs.StringVar(&f.ClusterKey, "cluster-key", "", "shared secret: authenticates and encrypts gossip and relay traffic")
	fs.StringVar(&f.Region, "region", "", "region label")
	fs.StringVar(&f.Advertise, "advertise", "", "host other nodes should dial for this node (default: the bind address, or the first non-loopback IP)")
	fs.StringVar(&f.Parent, "parent", "", "comma-separated preferred upstream node names (a shield tier)")
	fs.IntVar(&f.Prewarm, "prewarm", 3, "subscribe to this many of the mesh's most watched streams before reporting ready")
	f.routingFlags.register(fs)
	fs.DurationVar(&f.Idle, "idle", 30*time.Second, "how long a relayed stream nobody watches is kept")
	fs.StringVar(&f.RelayCA, "relay-ca", "", "PEM CA for relay mTLS, instead of one derived from --cluster-key")
	fs.StringVar(&f.RelayCert, "relay-cert", "", "PEM certificate for relay mTLS (with --relay-ca)")
	fs.StringVar(&f.RelayKey, "relay-key", "", "PEM key for relay mTLS (with --relay-ca)")
	fs.StringVar(&f.TLSCert, "tls-cert", "", "PEM certificate: serve viewers HTTPS with HTTP/2")
	fs.StringVar(&f.TLSKey, "tls-key", "", "PEM private key for --tls-cert")
	fs.DurationVar(&f.PartTarget, "part-target", 200*time.Millisecond, "LL-HLS part duration (PART-TARGET)")
	fs.DurationVar(&f.MinSegment, "min-segment", time.Second, "shortest segment; segments start at the next keyframe after it")
	fs.DurationVar(&f.Grace, "grace", 30*time.Second, "how long a stream outlives its publisher, so a reconnect continues it")
	fs.StringVar(&f.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&f.DebugAddr, "debug-addr", "", "serve net/http/pprof at this address, e.g. 127.0.0.1:6060 (keep it on loopback)")
}

func (f *nodeFlags) validate() error {
	if f.ingest {
		if err := f.ingestFlags.validate(); err != nil {
			return err
		}
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together: give both or neither")
	}
	if f.PartTarget < 50*time.Millisecond || f.PartTarget > 2*time.Second {
		return fmt.Errorf("--part-target %v: choose between 50ms and 2s", f.PartTarget)
	}
	if f.MinSegment < f.PartTarget || f.MinSegment > 10*time.Second {
		return fmt.Errorf("--min-segment %v: choose between --part-target and 10s", f.MinSegment)
	}
	if f.Grace <= 0 {
		return fmt.Errorf("--grace %v: must be positive", f.Grace)
	}
	if f.Idle <= 0 {
		return fmt.Errorf("--idle %v: must be positive", f.Idle)
	}
	if f.Prewarm < 0 {
		return errors.New("--prewarm cannot be negative")
	}
	if err := f.routingFlags.validate(); err != nil {
		return err
	}
	if set := btoi(f.RelayCA != "") + btoi(f.RelayCert != "") + btoi(f.RelayKey != ""); set != 0 && set != 3 {
		return errors.New("--relay-ca, --relay-cert and --relay-key go together: give all three or none")
	}
	for _, a := range []struct{ name, addr string }{
		{"http", f.HTTP}, {"rtmp", f.RTMP}, {"srt", f.SRT}, {"rtsp", f.RTSP}, {"mesh", f.Mesh}, {"relay", f.Relay},
		{"debug-addr", f.DebugAddr},
	} {
		if a.addr == "" {
			continue
		}
		_, p, err := net.SplitHostPort(a.addr)
		if err != nil {
			return fmt.Errorf("--%s %q: want host:port or :port (%v)", a.name, a.addr, err)
		}
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("--%s %q: the port must be a number from 0 to 65535", a.name, a.addr)
		}
	}
	return nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (f *nodeFlags) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(f.LogLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.LogLevel)
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lvl})), nil
}

// node is one running relaymesh process: its stream registry and listeners.
type node struct {
	flags    nodeFlags
	role     mesh.Role
	log      *slog.Logger // with the node's name
	baseLog  *slog.Logger // for packages that add the name themselves
	registry *relay.Registry
	packager ingest.PackagerConfig
	gate     *ingest.Gate
	hls      *edge.Server
	metrics  *metrics
	cluster  *cluster // nil when the node runs alone

	httpLn, rtmpLn net.Listener
	debugLn        net.Listener // --debug-addr: pprof
	srt            *srt.Server
	srtLn          *srt.Listener
	rtsp           *rtsp.Server
	rtspLn         net.Listener
	pulls          []*rtsp.Puller
	tls            *tls.Config

	state     atomic.Value // mesh.State: warming, ready, draining
	publicURL string       // how viewers reach this node
	drain     drainer
}

// newNode binds every listener, so that a busy port is reported before
// anything starts. explicit tells whether a flag was set by the user.
func newNode(f nodeFlags, role mesh.Role, log *slog.Logger, explicit func(string) bool) (*node, error) {
	if f.NodeName == "" {
		f.NodeName = hostname()
	}
	n := &node{flags: f, role: role, log: log.With("node", f.NodeName), baseLog: log}
	n.state.Store(mesh.StateWarming)
	n.drain.init()
	log = n.log
	n.hls = &edge.Server{Logger: log}
	n.metrics = newMetrics(n.hls.Viewers, func() int {
		if n.cluster == nil {
			return 1
		}
		return n.cluster.mesh.Members()
	})
	n.registry = relay.NewRegistry(relay.RegistryConfig{
		PartTarget: f.PartTarget, Grace: f.Grace, Logger: log, OnPart: n.metrics.onPart,
	})
	n.hls.Streams = n.registry
	n.packager = ingest.PackagerConfig{PartTarget: f.PartTarget, MinSegment: f.MinSegment}
	if f.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(f.TLSCert, f.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		n.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var err error
	if f.HTTP != "" {
		if n.httpLn, err = listen("http", f.HTTP); err != nil {
			return nil, err
		}
	}
	if f.DebugAddr != "" {
		if n.debugLn, err = listenDebug(f.DebugAddr, log); err != nil {
			n.close()
			return nil, err
		}
	}
	if n.gate, err = n.newGate(); err != nil {
		n.close()
		return nil, err
	}
	n.metrics.reg.MustRegister(ingestCollector{n.gate}, routingCollector{n})
	if f.RTMP != "" {
		if n.rtmpLn, err = listen("rtmp", f.RTMP); err != nil {
			n.close()
			return nil, err
		}
	}
	if f.SRT != "" {
		n.srt = &srt.Server{Gate: n.gate, Logger: log, Latency: f.SRTLatency, Passphrase: f.SRTPassphrase}
		if n.srtLn, err = n.srt.Listen(f.SRT); err != nil {
			n.close()
			return nil, fmt.Errorf("--srt %s: %w (pick another address, or --srt \"\" to disable)", f.SRT, err)
		}
	}
	if err := n.listenRTSP(); err != nil {
		n.close()
		return nil, err
	}
	n.publicURL = f.publicURL(n.scheme(), n.httpLn)
	if f.meshEnabled(explicit) {
		if n.cluster, err = newCluster(n); err != nil {
			n.close()
			return nil, err
		}
		n.hls.Streams = n.cluster.puller
		if n.hls.Routing, err = n.newRouting(); err != nil {
			n.close()
			return nil, err
		}
	} else {
		if f.Mesh != "" && f.Relay != "" {
			log.Info("running alone: set --cluster-key and --join to form a mesh")
		}
		// Alone, routing can only shed viewers past --max-viewers.
		n.hls.Routing = &edge.Routing{Node: f.NodeName, Alone: true, Router: &steer.Router{
			Mesh: routingView{n}, MaxViewers: f.MaxViewers,
		}}
	}
	if len(n.pulls) > 0 {
		n.hls.Streams = wakingStreams{Streams: n.hls.Streams, n: n}
	}
	return n, nil
}

func listen(flag, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--%s %s: %w (is another relaymesh running? pick another address, or --%s \"\" to disable)", flag, addr, err, flag)
	}
	return ln, nil
}

func (n *node) close() {
	for _, ln := range []net.Listener{n.httpLn, n.rtmpLn, n.rtspLn, n.debugLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if n.srtLn != nil {
		n.srtLn.Close()
	}
}

// run serves until ctx ends or a drain completes, then shuts down cleanly.
func (n *node) run(ctx context.Context, extra ...func(context.Context) error) error {
	defer n.registry.Close()
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.drainWhenAsked(ctx, stop) })
	if n.rtmpLn != nil {
		srv := &rtmp.Server{Gate: n.gate, Logger: n.log}
		g.Go(func() error { return srv.Serve(ctx, n.rtmpLn) })
		n.log.Info("rtmp ingest listening", "addr", n.rtmpLn.Addr().String(), "publish", "rtmp://HOST"+port(n.rtmpLn)+"/live/{stream}")
	}
	if n.srtLn != nil {
		g.Go(func() error { return n.srt.Serve(ctx, n.srtLn) })
		n.log.Info("srt ingest listening", "addr", n.srtLn.Addr().String(), "publish", "srt://HOST"+port(n.srtLn)+"?streamid=publish:{stream}")
	}
	n.runRTSP(ctx, g)
	if n.debugLn != nil {
		g.Go(func() error { return n.serveDebug(ctx) })
	}
	if n.httpLn != nil {
		g.Go(func() error { return n.serveHTTP(ctx) })
		n.log.Info("http listening", "addr", n.httpLn.Addr().String(), "play", n.scheme()+"://HOST"+port(n.httpLn)+"/live/{stream}/index.m3u8")
	}
	if n.cluster != nil {
		g.Go(func() error { return n.cluster.run(ctx, n) })
	} else {
		n.state.CompareAndSwap(mesh.StateWarming, mesh.StateReady)
	}
	g.Go(func() error { return n.reloadKeysOnHangup(ctx) })
	for _, f := range extra {
		g.Go(func() error { return f(ctx) })
	}
	err := g.Wait()
	n.log.Info("stopped")
	return err
}

func port(ln interface{ Addr() net.Addr }) string {
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	return ":" + p
}

func (n *node) scheme() string {
	if n.tls != nil {
		return "https"
	}
	return "http"
}

func (n *node) handler() http.Handler {
	hls := n.hls
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", n.serveReady)
	mux.HandleFunc("POST /api/v1/drain", n.serveDrain)
	mux.Handle("GET /metrics", n.metrics.handler())
	mux.HandleFunc("GET /api/mesh", func(w http.ResponseWriter, r *http.Request) {
		if n.cluster == nil {
			http.Error(w, "this node runs alone: no mesh", http.StatusNotFound)
			return
		}
		n.cluster.serveAPI(w, r)
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		// This node's streams, and on a mesh node those it relays on
		// request from the others.
		names := map[string]bool{}
		for _, s := range n.registry.Names() {
			names[s] = true
		}
		if n.cluster != nil {
			for _, ns := range n.cluster.mesh.Nodes() {
				for _, s := range ns.Streams {
					names[s.Name] = names[s.Name] || false
				}
			}
		}
		sorted := make([]string, 0, len(names))
		for s := range names {
			sorted = append(sorted, s)
		}
		sort.Strings(sorted)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "relaymesh %s: %s %s\n\nstreams:\n", version(), n.role, n.flags.NodeName)
		for _, s := range sorted {
			base := n.scheme() + "://" + r.Host + edge.PathPrefix + s + "/"
			where := ""
			if !names[s] {
				where = " (in the mesh: relayed here when someone watches)"
			}
			fmt.Fprintf(w, "  %s%s\n    play: %sindex.m3u8\n    watch in a browser: %s\n", s, where, base, base)
		}
		switch {
		case len(sorted) > 0:
		case n.role == mesh.RoleOrigin:
			fmt.Fprintln(w, "  (none: publish to rtmp://HOST/live/{stream}, srt://HOST:6000?streamid=publish:{stream}\n   or rtsp://HOST:8554/live/{stream})")
		default:
			fmt.Fprintln(w, "  (none in the mesh: publish to an origin)")
		}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// LL-HLS and player paths skip ServeMux, which would redirect "..":
		// their handlers answer those with 404 themselves.
		switch {
		case !clean(r.URL.Path):
			// ServeMux would redirect "/../x" and "//x"; a viewer URL is
			// either right or not found.
			http.NotFound(w, r)
			return
		case strings.HasPrefix(r.URL.Path, edge.PathPrefix):
			hls.ServeHTTP(w, r)
			return
		case strings.HasPrefix(r.URL.Path, player.AssetPrefix):
			player.ServeAsset(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// clean reports whether p is already in canonical form.
func clean(p string) bool {
	c := path.Clean(p)
	return c == p || c+"/" == p
}

// serveDebug serves pprof on --debug-addr until ctx ends.
func (n *node) serveDebug(ctx context.Context) error {
	base, cancel := context.WithCancel(context.Background())
	defer cancel()
	return serveUntil(ctx, "debug", newDebugServer(n.log, base), n.debugLn, cancel)
}

// serveHTTP serves viewers until ctx ends.
func (n *node) serveHTTP(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	warnLowFileLimit(n.log)
	base, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := newHTTPServer(n.handler(), viewerLimits(), n.log, base)
	srv.TLSConfig = n.tls
	g.Go(func() error { return serveUntil(ctx, "http", srv, n.httpLn, cancel) })
	return g.Wait()
}
