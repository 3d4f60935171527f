package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/relaymesh/relaymesh/mesh"
)

// drainer takes a node out of service like a lame duck: it announces
// that it is draining, so routing sends nobody new and moves its steered
// viewers away, keeps serving the viewers and downstream nodes still on
// it, and stops the node once they have gone or --drain-timeout passes.
type drainer struct {
	once    sync.Once
	started chan struct{} // closed when draining starts
	at      time.Time
	why     string
}

func (d *drainer) init() { d.started = make(chan struct{}) }

// startDrain moves the node to draining and gossips that at once. It
// reports whether this call started it.
func (n *node) startDrain(why string) bool {
	started := false
	n.drain.once.Do(func() {
		started = true
		n.drain.at, n.drain.why = time.Now(), why
		n.state.Store(mesh.StateDraining)
		if n.cluster != nil {
			n.cluster.mesh.Update()
		}
		close(n.drain.started)
		n.log.Info("draining: new viewers go to other nodes, steered viewers move away",
			"why", why, "viewers", n.viewers(), "downstream", n.metrics.totalSubscribers(), "timeout", n.flags.DrainTimeout)
	})
	return started
}

// draining reports whether the node is draining.
func (n *node) draining() bool { return n.state.Load().(mesh.State) == mesh.StateDraining }

// drainWhenAsked waits for a drain to start, then calls stop once the
// node's viewers and downstream nodes have gone, or the timeout passes.
func (n *node) drainWhenAsked(ctx context.Context, stop context.CancelFunc) error {
	select {
	case <-ctx.Done():
		return nil
	case <-n.drain.started:
	}
	// Give every steered player one steering reload, so that none keeps
	// asking this node where to go after it has gone.
	settle := time.Duration(0)
	if n.cluster != nil {
		settle = n.flags.SteeringTTL + time.Second
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastLog := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		viewers, subs, el := n.viewers(), n.metrics.totalSubscribers(), time.Since(n.drain.at)
		switch {
		case viewers == 0 && subs == 0 && el >= settle:
			n.log.Info("drained: no viewers or downstream nodes left; stopping", "after", el.Round(time.Millisecond))
			stop()
			return nil
		case el >= n.flags.DrainTimeout:
			n.log.Warn("drain timeout: stopping with viewers or downstream nodes still here",
				"viewers", viewers, "downstream", subs, "timeout", n.flags.DrainTimeout)
			stop()
			return nil
		case time.Since(lastLog) >= 5*time.Second:
			lastLog = time.Now()
			n.log.Info("draining", "viewers", viewers, "downstream", subs, "elapsed", el.Round(time.Second))
		}
	}
}

// drainStatus is the control API's answer about a drain.
type drainStatus struct {
	Node       string `json:"node"`
	State      string `json:"state"`
	Viewers    int    `json:"viewers"`
	Downstream int    `json:"downstream"`
	Timeout    string `json:"timeout"`
}

// serveDrain answers POST /api/v1/drain.
func (n *node) serveDrain(w http.ResponseWriter, r *http.Request) {
	if !n.authorized(w, r) {
		return
	}
	code := http.StatusOK
	if n.flags.DrainTimeout <= 0 {
		http.Error(w, "this node drains with --drain-timeout 0: it would stop at once; send SIGINT instead", http.StatusConflict)
		return
	}
	if n.startDrain("api from " + r.RemoteAddr) {
		code = http.StatusAccepted
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(drainStatus{
		Node: n.flags.NodeName, State: string(mesh.StateDraining), Viewers: n.viewers(),
		Downstream: n.metrics.totalSubscribers(), Timeout: n.flags.DrainTimeout.String(),
	})
}

// authorized checks a control API request: the bearer token when
// --api-token is set, else a loopback client. Refusals fail closed.
func (n *node) authorized(w http.ResponseWriter, r *http.Request) bool {
	if tok := n.flags.APIToken; tok != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if ok && subtle.ConstantTimeCompare([]byte(got), []byte(tok)) == 1 {
			return true
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="relaymesh"`)
		http.Error(w, "wrong or missing API token: send Authorization: Bearer <--api-token>", http.StatusUnauthorized)
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsLoopback() {
		return true
	}
	http.Error(w, "the control API answers loopback clients only: start the node with --api-token to use it remotely", http.StatusForbidden)
	return false
}

// serveReady answers /readyz: 200 while the node takes new viewers, 503
// while it starts or drains (a Kubernetes readiness probe).
func (n *node) serveReady(w http.ResponseWriter, _ *http.Request) {
	state := n.state.Load().(mesh.State)
	w.Header().Set("Cache-Control", "no-store")
	if state != mesh.StateReady {
		http.Error(w, string(state), http.StatusServiceUnavailable)
		return
	}
	w.Write([]byte("ready\n"))
}

func newDrainCmd() *cobra.Command {
	var api, token string
	var wait bool
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Take a node out of service gracefully: move its viewers away, then stop it",
		Long: `Ask a node to drain (POST /api/v1/drain), as SIGTERM does. The node tells
the mesh at once; new viewers are redirected to other nodes, and players
that steer move to another node within one steering TTL. The node keeps
serving the viewers and downstream nodes still on it until they have gone
or its --drain-timeout passes, then leaves the mesh and exits 0.

Without --api-token the node answers loopback clients only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			url := strings.TrimSuffix(api, "/") + "/api/v1/drain"
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, url, nil)
			if err != nil {
				return fmt.Errorf("drain: %w", err)
			}
			if token == "" {
				token = os.Getenv(envName("api-token"))
			}
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			client := &http.Client{Timeout: 5 * time.Second}
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("drain: %w", err)
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusAccepted {
				return fmt.Errorf("drain: %s answered %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
			}
			var st drainStatus
			if err := json.Unmarshal(body, &st); err != nil {
				return fmt.Errorf("drain: %s: %w", url, err)
			}
			verb := "draining"
			if resp.StatusCode == http.StatusOK {
				verb = "already draining"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s: %d viewers and %d downstream nodes to move; it stops when they have, or after %s\n",
				st.Node, verb, st.Viewers, st.Downstream, st.Timeout)
			if !wait {
				return nil
			}
			return waitGone(cmd, client, strings.TrimSuffix(api, "/")+"/healthz")
		},
	}
	cmd.Flags().StringVar(&api, "api", "http://127.0.0.1:8080", "the node's HTTP address")
	cmd.Flags().StringVar(&token, "api-token", "", "the node's --api-token (env RELAYMESH_API_TOKEN)")
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the node has stopped")
	return cmd
}

// waitGone polls url until the node stops answering.
func waitGone(cmd *cobra.Command, client *http.Client, url string) error {
	for {
		resp, err := client.Get(url)
		if err != nil {
			fmt.Fprintln(cmd.OutOrStdout(), "stopped")
			return nil
		}
		resp.Body.Close()
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
