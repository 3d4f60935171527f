package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/ingest/demo"
	"github.com/relaymesh/relaymesh/mesh"
)

// TestInProcessCluster runs an origin and two edges in this process, each
// on its own loopback address (127.0.0.1-3), with real memberlist, QUIC and
// HTTP: edge-2 relays through edge-1 and all three serve the same bytes.
func TestInProcessCluster(t *testing.T) {
	clip, err := demo.Load()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	base := nodeFlags{PartTarget: 200 * time.Millisecond, MinSegment: time.Second, Grace: time.Minute,
		Idle: time.Minute, Prewarm: 3, ClusterKey: "in-process test"}
	always := func(string) bool { return true }

	ctx, cancel := context.WithCancel(context.Background())
	var runs []chan error
	start := func(f nodeFlags, role mesh.Role, publish bool) *node {
		t.Helper()
		n, err := newNode(f, role, log, always)
		if err != nil {
			t.Fatalf("%s: %v", f.NodeName, err)
		}
		var extra []func(context.Context) error
		if publish {
			extra = append(extra, func(ctx context.Context) error {
				return clip.Publish(ctx, n.registry, "demo", n.packager, demo.Options{Logger: log})
			})
		}
		done := make(chan error, 1)
		runs = append(runs, done)
		go func() { done <- n.run(ctx, extra...) }()
		return n
	}
	defer func() {
		cancel()
		for _, done := range runs {
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("node stopped with %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("a node did not stop within 10 s")
			}
		}
	}()

	of := base
	of.NodeName, of.HTTP, of.Mesh, of.Relay = "origin", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	origin := start(of, mesh.RoleOrigin, true)
	waitReady(ctx, origin)
	for origin.registry.Get("demo") == nil || origin.registry.Get("demo").Snapshot().NextPart < 3 {
		time.Sleep(20 * time.Millisecond)
	}

	var edges []*node
	parent := ""
	for i, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		ef := base
		ef.NodeName = fmt.Sprintf("edge-%d", i+1)
		ef.HTTP, ef.Mesh, ef.Relay = ip+":0", ip+":0", ip+":0"
		ef.Join, ef.Parent = origin.cluster.mesh.Addr(), parent
		e := start(ef, mesh.RoleEdge, false)
		waitReady(ctx, e)
		for !holds(origin, ef.NodeName, "demo") {
			time.Sleep(20 * time.Millisecond)
		}
		edges = append(edges, e)
		parent = ef.NodeName
	}

	// Pre-warmed: both edges hold the stream before any viewer asked.
	for _, e := range edges {
		if e.registry.Get("demo") == nil {
			t.Fatalf("%s did not pre-warm the stream", e.flags.NodeName)
		}
	}
	if n := origin.cluster.ep.Subscribers("demo"); n != 1 {
		t.Errorf("origin feeds %d subscribers, want 1 (edge-1; edge-2 goes through it)", n)
	}
	if n := edges[0].cluster.ep.Subscribers("demo"); n != 1 {
		t.Errorf("edge-1 feeds %d subscribers, want 1 (edge-2)", n)
	}

	get := func(n *node, path string) []byte {
		t.Helper()
		resp, err := http.Get("http://" + n.httpLn.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s", n.flags.NodeName, path, resp.StatusCode, b)
		}
		return b
	}
	// Every node serves segment 2 with the same bytes, and lists it with
	// the same PROGRAM-DATE-TIME.
	var seg []byte
	var pdt string
	for _, n := range append([]*node{origin}, edges...) {
		pl := string(get(n, "/live/demo/media.m3u8?_HLS_msn=2"))
		i := strings.Index(pl, "seg2.m4s")
		j := strings.LastIndex(pl[:i], "#EXT-X-PROGRAM-DATE-TIME:")
		if i < 0 || j < 0 {
			t.Fatalf("%s playlist lacks segment 2:\n%s", n.flags.NodeName, pl)
		}
		p := strings.SplitN(pl[j:], "\n", 2)[0]
		b := get(n, "/live/demo/seg2.m4s")
		if seg == nil {
			seg, pdt = b, p
			continue
		}
		if !bytes.Equal(b, seg) || p != pdt {
			t.Errorf("%s: segment 2 differs from the origin's (%d vs %d bytes; %s vs %s)", n.flags.NodeName, len(b), len(seg), p, pdt)
		}
	}
}
