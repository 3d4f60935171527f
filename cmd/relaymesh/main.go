// Command relaymesh is a live-streaming daemon. An origin takes streams
// from encoders over RTMP and serves them as Low-Latency HLS; edges (in a
// later release) relay them across a mesh. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sync"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/relaymesh/relaymesh/mesh"
)

var stderr io.Writer = os.Stderr

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "relaymesh:", err)
		os.Exit(2)
	}
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "relaymesh",
		Short: "Live streaming: RTMP in, Low-Latency HLS out",
		Long: `relaymesh takes live streams from encoders (OBS, ffmpeg) and serves them
as Low-Latency HLS.

  relaymesh demo      a working mesh (origin + two edges) with a built-in test stream
  relaymesh origin    take streams from encoders: rtmp://HOST/live/{stream}
  relaymesh edge      serve viewers, relaying streams from the mesh
  relaymesh status    print the mesh as a table

Playback on any node: http://HOST:8080/live/{stream}/index.m3u8

Every flag can also be set as RELAYMESH_<FLAG> (e.g. RELAYMESH_PART_TARGET=300ms)
or as a key in the YAML file given to --config.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newOriginCmd(), newEdgeCmd(), newDemoCmd(), newStatusCmd(), newDrainCmd(), newVersionCmd())
	return root
}

func newOriginCmd() *cobra.Command {
	var f nodeFlags
	cmd := &cobra.Command{
		Use:   "origin",
		Short: "Take live streams from encoders and serve them as LL-HLS",
		Long: `Run an origin: encoders publish to it, viewers play from it, and edges
relay its streams.

Publish:  rtmp://HOST:1935/live/{stream}   (OBS: server rtmp://HOST/live, key {stream})
          srt://HOST:6000?streamid=publish:{stream}
          rtsp://HOST:8554/live/{stream}
Pull:     --pull {stream}=rtsp://camera/path  (or {stream}=ondemand:rtsp://...)
Play:     http://HOST:8080/live/{stream}/index.m3u8

Alone by default. With --cluster-key (and --join for all but the first node)
it joins a mesh: edges find its streams over gossip and relay them over QUIC.
An empty address disables a listener, e.g. --srt "".`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runNode(cmd, &f, mesh.RoleOrigin, nil)
		},
	}
	f.register(cmd.Flags(), true)
	return cmd
}

func newEdgeCmd() *cobra.Command {
	var f nodeFlags
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Serve viewers LL-HLS, relaying streams from the mesh",
		Long: `Run an edge: it joins the mesh, and on a viewer's first request for a
stream it subscribes to the nearest node that holds it (an origin or
another edge) and serves it from its cache.

  relaymesh edge --cluster-key SECRET --join origin.example:7946

Play:     http://HOST:8080/live/{stream}/index.m3u8`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runNode(cmd, &f, mesh.RoleEdge, nil)
		},
	}
	f.register(cmd.Flags(), false)
	return cmd
}

// runNode reads flags, binds listeners and serves until SIGINT or SIGTERM.
// started, if set, runs once listeners are bound, alongside the node.
func runNode(cmd *cobra.Command, f *nodeFlags, role mesh.Role, started func(context.Context, *node) error) error {
	log, err := f.load(cmd)
	if err != nil {
		return err
	}
	if cmd.Flags().Changed("cluster-key") && f.ClusterKey == "" {
		return errors.New("--cluster-key is empty (an unset shell variable?): give the mesh's shared secret, e.g. from `openssl rand -hex 16`, or leave the flag out to run alone")
	}
	if f.StandbyFor != "" && (f.StandbyFor == f.NodeName || !f.meshEnabled(cmd.Flags().Changed)) {
		return fmt.Errorf("--standby-for %s: a standby is another origin in the same mesh: give this one its own --node-name, --cluster-key and --join", f.StandbyFor)
	}
	if role == mesh.RoleEdge && !f.meshEnabled(cmd.Flags().Changed) {
		return errors.New("an edge needs a mesh: give --cluster-key and --join HOST:7946 (another node's --mesh)")
	}
	n, err := newNode(*f, role, log, cmd.Flags().Changed)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(cmd.Context())
	defer stop()
	var signals sync.WaitGroup
	defer signals.Wait()
	defer stop()
	signals.Go(func() { n.onSignals(ctx, stop) })
	var extra []func(context.Context) error
	if started != nil {
		extra = append(extra, func(ctx context.Context) error { return started(ctx, n) })
	}
	err = n.run(ctx, extra...)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// load completes the flags from the environment and the config file,
// checks them and returns the logger they ask for.
func (f *nodeFlags) load(cmd *cobra.Command) (*slog.Logger, error) {
	if err := applyEnvAndConfig(cmd.Flags()); err != nil {
		return nil, err
	}
	if err := f.validate(); err != nil {
		return nil, err
	}
	return f.logger()
}

// onSignals handles SIGINT and SIGTERM until ctx ends. SIGTERM drains the
// node (see drainer), unless --drain-timeout is 0; SIGINT, or a second
// SIGTERM, stops it at once.
func (n *node) onSignals(ctx context.Context, stop context.CancelFunc) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-sigs:
			if sig == syscall.SIGTERM && n.flags.DrainTimeout > 0 && n.startDrain("SIGTERM") {
				continue
			}
			n.log.Info("shutting down", "signal", sig.String())
			stop()
			return
		}
	}
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the relaymesh version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "relaymesh", version())
		},
	}
}
