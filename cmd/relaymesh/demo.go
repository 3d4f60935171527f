package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/relaymesh/relaymesh/ingest/demo"
	"github.com/relaymesh/relaymesh/mesh"
)

// demoStream is the name the built-in test stream is published under.
const demoStream = "demo"

func newDemoCmd() *cobra.Command {
	var f nodeFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a working mesh (one origin, two edges) with a built-in test stream",
		Long: `Run one origin and two edges in one process, on loopback. The origin
publishes a built-in looping test stream (H.264 + AAC) through the same
packager an encoder's stream goes through; edge-1 relays it from the origin,
and edge-2 relays it through edge-1. Every node serves the same playlist.

The flags set up the origin (--http, --rtmp, ...); the edges take the next
two HTTP ports. You can publish your own streams to the origin as well.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd, &f)
		},
	}
	f.register(cmd.Flags(), true)
	return cmd
}

func runDemo(cmd *cobra.Command, f *nodeFlags) error {
	fs := cmd.Flags()
	log, err := f.load(cmd)
	if err != nil {
		return err
	}
	clip, err := demo.Load()
	if err != nil {
		return fmt.Errorf("load the built-in clip: %w", err)
	}
	// The demo stays on loopback unless told otherwise: its ingest takes
	// any publisher without a key. The demo is a mesh: its addresses can
	// move but not go away.
	for flag, addr := range map[string]*string{"http": &f.HTTP, "rtmp": &f.RTMP, "srt": &f.SRT, "rtsp": &f.RTSP} {
		if !fs.Changed(flag) {
			*addr = "127.0.0.1" + *addr
		}
	}
	if !fs.Changed("mesh") || f.Mesh == "" {
		f.Mesh = "127.0.0.1:0"
	}
	if !fs.Changed("relay") || f.Relay == "" {
		f.Relay = "127.0.0.1:0"
	}
	// Port 8000 is often taken by development servers; the demo accepts
	// RTSP publishers over TCP unless told otherwise.
	if !fs.Changed("rtsp-udp") {
		f.RTSPUDP = ""
	}
	if f.ClusterKey == "" {
		var b [16]byte
		rand.Read(b[:])
		f.ClusterKey = hex.EncodeToString(b[:])
	}
	if f.NodeName == "" {
		f.NodeName = "origin"
	}
	always := func(string) bool { return true }
	origin, err := newNode(*f, mesh.RoleOrigin, log, always)
	if err != nil {
		return err
	}
	var nodes = []*node{origin}
	defer func() {
		for _, n := range nodes {
			n.close()
		}
	}()
	parent := ""
	for i := 1; i <= 2; i++ {
		ef := *f
		ef.NodeName = "edge-" + strconv.Itoa(i)
		ef.RTMP, ef.SRT, ef.RTSP, ef.Pull = "", "", "", nil
		ef.DebugAddr = "" // pprof covers the whole process: the origin's listener serves it
		ef.Mesh, ef.Relay = "127.0.0.1:0", "127.0.0.1:0"
		ef.Join = origin.cluster.mesh.Addr()
		ef.Parent = parent
		ef.HTTP = nextPort(f.HTTP, i)
		e, err := newNode(ef, mesh.RoleEdge, log, always)
		if err != nil {
			return fmt.Errorf("%s: %w", ef.NodeName, err)
		}
		nodes = append(nodes, e)
		parent = ef.NodeName
	}

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, func() { log.Info("shutting down") })
	g, ctx := errgroup.WithContext(ctx)
	// The edges stop first and the origin once they have: each edge's
	// mesh leave is then acknowledged at once, and the origin, left alone,
	// has nobody to tell.
	originCtx, stopOrigin := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOrigin()
	var edges sync.WaitGroup
	edges.Add(len(nodes) - 1)
	g.Go(func() error {
		<-ctx.Done()
		edges.Wait()
		stopOrigin()
		return nil
	})
	g.Go(func() error {
		return origin.run(originCtx, func(ctx context.Context) error {
			return clip.Publish(ctx, origin.registry, demoStream, origin.packager, demo.Options{Logger: origin.log})
		})
	})
	// Start the edges one after the other, each once the previous is
	// ready, so that edge-2 finds the stream on edge-1.
	waitReady(ctx, origin)
	for _, e := range nodes[1:] {
		if ctx.Err() != nil {
			edges.Done()
			continue
		}
		g.Go(func() error {
			defer edges.Done()
			return e.run(ctx)
		})
		waitReady(ctx, e)
		// The next edge learns who holds the stream from the origin.
		for ctx.Err() == nil && !holds(origin, e.flags.NodeName, demoStream) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	printDemo(cmd.OutOrStdout(), nodes)
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// waitReady returns once n reports ready (or ctx ends).
func waitReady(ctx context.Context, n *node) {
	for ctx.Err() == nil && n.state.Load().(mesh.State) != mesh.StateReady {
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// holds reports whether n's mesh sees node holding stream.
func holds(n *node, node, stream string) bool {
	for _, h := range n.cluster.mesh.Holders(stream) {
		if h.Name == node {
			return true
		}
	}
	return false
}

// nextPort is addr with its port moved up by i; port 0 and "" stay.
func nextPort(addr string, i int) string {
	host, p, err := net.SplitHostPort(addr)
	if err != nil || p == "0" {
		return addr
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return addr
	}
	return net.JoinHostPort(host, strconv.Itoa(n+i))
}

func printDemo(w io.Writer, nodes []*node) {
	fmt.Fprintf(w, "\nrelaymesh demo is live: an origin and two edges (edge-2 relays through edge-1).\n\n")
	for _, n := range nodes {
		if n.httpLn == nil {
			continue
		}
		base := fmt.Sprintf("%s://%s%s/live/%s/", n.scheme(), displayHost(n.httpLn), port(n.httpLn), demoStream)
		fmt.Fprintf(w, "  %-7s Play:  %sindex.m3u8\n          Watch: %s\n", n.flags.NodeName, base, base)
	}
	fmt.Fprintf(w, "\nOpen a Watch page in a browser (built-in hls.js player), or give a Play URL\n"+
		"to any HLS player: Safari, `ffplay URL`, VLC.\n")
	if ln := nodes[0].httpLn; ln != nil {
		fmt.Fprintf(w, "`relaymesh status --api http://%s%s` shows the mesh.\n", displayHost(ln), port(ln))
	}
	o := nodes[0]
	var publish []string
	if o.rtmpLn != nil {
		publish = append(publish, "rtmp://"+displayHost(o.rtmpLn)+port(o.rtmpLn)+"/live/{stream}")
	}
	if o.srtLn != nil {
		publish = append(publish, "srt://"+displayHost(o.srtLn)+port(o.srtLn)+"?streamid=publish:{stream}")
	}
	if o.rtspLn != nil {
		publish = append(publish, "rtsp://"+displayHost(o.rtspLn)+port(o.rtspLn)+"/live/{stream}")
	}
	if len(publish) > 0 {
		fmt.Fprintf(w, "Publish your own stream to the origin:\n")
		for _, u := range publish {
			fmt.Fprintf(w, "  %s\n", u)
		}
	}
	fmt.Fprintln(w)
}

// displayHost is the host to print in URLs: loopback for wildcard binds.
func displayHost(ln interface{ Addr() net.Addr }) string {
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip.To4() == nil {
		return "[" + host + "]"
	}
	return host
}
