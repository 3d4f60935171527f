package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaymesh/relaymesh/edge/steer"
	"github.com/relaymesh/relaymesh/mesh"
)

func newStatusCmd() *cobra.Command {
	var api string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the mesh as a table: nodes, role, state, load, headroom, round-trip estimate, streams",
		Long: `Ask one node for the mesh as it sees it (GET /api/mesh) and print it.
STREAMS lists each stream with its viewers on the node; "primary" marks the
origin an encoder publishes it to, "standby" the origin ready to take it over.
VIEWERS is viewers/capacity; HEADROOM is how many more viewers the node takes
before routing sends new ones elsewhere. The last line sums the nodes that
take new viewers (ready, not draining): the figure to scale on.
RTT is that node's Vivaldi estimate of the round trip to each other node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client := &http.Client{Timeout: 5 * time.Second}
			url := strings.TrimSuffix(api, "/") + "/api/mesh"
			resp, err := client.Get(url)
			if err != nil {
				return fmt.Errorf("status: %w", err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status: %s answered %s (is it part of a mesh?)", url, resp.Status)
			}
			var nodes []apiNode
			if err := json.NewDecoder(resp.Body).Decode(&nodes); err != nil {
				return fmt.Errorf("status: %s: %w", url, err)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NODE\tROLE\tSTATE\tREGION\tURL\tVIEWERS\tHEADROOM\tEGRESS\tCPU\tRTT\tSTREAMS")
			all := make([]steer.Node, 0, len(nodes))
			for _, n := range nodes {
				all = append(all, steer.Node{Ready: n.State == mesh.StateReady, Draining: n.State == mesh.StateDraining,
					Viewers: n.Viewers, Capacity: n.Capacity})
				name := n.Name
				if n.Self {
					name += " *"
				}
				rtt := "-"
				if n.RTTMillis != nil {
					rtt = fmt.Sprintf("%.1fms", *n.RTTMillis)
				}
				viewers, headroom := fmt.Sprint(n.Viewers), "-"
				if n.Capacity > 0 {
					viewers += fmt.Sprintf("/%d", n.Capacity)
					headroom = fmt.Sprint(n.Capacity - n.Viewers)
				}
				var streams []string
				for _, s := range n.Streams {
					role := ""
					switch {
					case s.Origin:
						role = ", primary"
					case s.Standby:
						role = ", standby"
					}
					streams = append(streams, fmt.Sprintf("%s(%d%s)", s.Name, s.Viewers, role))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f%%\t%s\t%s\n", name, n.Role, n.State, dash(n.Region),
					dash(n.PublicURL), viewers, headroom, bitrate(n.EgressBps), n.CPU*100, rtt, dash(strings.Join(streams, " ")))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			t := steer.Sum(all)
			fmt.Fprintf(cmd.OutOrStdout(), "\nmesh: %d nodes, %d taking viewers; %d viewers", t.Nodes, t.Ready, t.Viewers)
			if t.Capacity > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "; capacity %d, headroom %d (%.0f%% used)", t.Capacity, t.Headroom, 100*t.Utilization())
			}
			switch {
			case t.Unlimited == 1:
				fmt.Fprintf(cmd.OutOrStdout(), "; 1 node without --capacity")
			case t.Unlimited > 1:
				fmt.Fprintf(cmd.OutOrStdout(), "; %d nodes without --capacity", t.Unlimited)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().StringVar(&api, "api", "http://127.0.0.1:8080", "any node's HTTP address")
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func bitrate(bps int64) string {
	switch {
	case bps >= 1e6:
		return fmt.Sprintf("%.1fMb/s", float64(bps)/1e6)
	case bps >= 1e3:
		return fmt.Sprintf("%.0fkb/s", float64(bps)/1e3)
	}
	return fmt.Sprintf("%db/s", bps)
}
