package main

import (
	"context"
	"fmt"
	"net"

	"github.com/spf13/cobra"

	"github.com/relaymesh/relaymesh/ingest/demo"
)

// demoStream is the name the built-in test stream is published under.
const demoStream = "demo"

func newDemoCmd() *cobra.Command {
	var f nodeFlags
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a node with a built-in looping test stream (no encoder needed)",
		Long: `Run an origin that publishes a built-in looping test stream (H.264 + AAC)
through the same packager an encoder's stream goes through, and print its
playback URL. It takes the same flags as "relaymesh origin", so you can
publish your own streams to it as well.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			clip, err := demo.Load()
			if err != nil {
				return fmt.Errorf("load the built-in clip: %w", err)
			}
			return runNode(cmd, &f, func(ctx context.Context, n *node) error {
				if n.httpLn != nil {
					base := fmt.Sprintf("%s://%s%s/live/%s/", n.scheme(), displayHost(n.httpLn), port(n.httpLn), demoStream)
					fmt.Fprintf(cmd.OutOrStdout(), "\nrelaymesh demo is live.\n\n  Play:  %sindex.m3u8\n  Watch: %s\n\n"+
						"Open the Watch page in a browser (built-in hls.js player), or give the Play URL\n"+
						"to any HLS player: Safari, `ffplay %sindex.m3u8`, VLC.\n\n", base, base, base)
				}
				return clip.Publish(ctx, n.registry, demoStream, n.packager, demo.Options{Logger: n.log})
			})
		},
	}
	f.register(cmd.Flags())
	return cmd
}

// displayHost is the host to print in URLs: loopback for wildcard binds.
func displayHost(ln net.Listener) string {
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		return "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip.To4() == nil {
		return "[" + host + "]"
	}
	return host
}
