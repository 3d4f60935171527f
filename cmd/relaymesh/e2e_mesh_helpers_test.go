package main

// Helpers for the mesh end-to-end tests in e2e_mesh_test.go: origins and
// edges started as separate relaymesh processes that form a mesh on
// loopback, Prometheus scrapes, /api/mesh, and a cheap live-edge scanner for
// many concurrent viewers.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// meshNode is a relaymesh process that is part of a mesh.
type meshNode struct {
	*daemon
	nodeName string
	meshAddr string // its --mesh, what others --join
}

// freeMeshAddr returns a loopback address whose port was free a moment ago
// for both TCP and UDP, as memberlist binds both.
func freeMeshAddr(t *testing.T) string {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil {
			pc.Close()
			return addr
		}
	}
	t.Fatal("found no loopback port free for both TCP and UDP")
	return ""
}

// freeUDPAddr returns a loopback UDP address whose port was free a moment
// ago (the QUIC relay).
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// startMeshOrigin runs `relaymesh origin` as mesh node name with cluster
// key key, on free loopback ports. Cleanup stops it with SIGINT and
// asserts a clean exit.
func startMeshOrigin(t *testing.T, name, key string, extra ...string) *meshNode {
	t.Helper()
	var meshAddr string
	d := startNode(t, "relaymesh origin "+name, true, func(h, r string) ([]string, []string) {
		meshAddr = freeMeshAddr(t)
		args := []string{"origin", "--node-name", name, "--http", h, "--rtmp", r, "--srt", "", "--rtsp", "",
			"--mesh", meshAddr, "--relay", freeUDPAddr(t), "--cluster-key", key}
		return append(args, extra...), nil
	})
	return &meshNode{daemon: d, nodeName: name, meshAddr: meshAddr}
}

// startMeshEdge runs `relaymesh edge` as mesh node name, joining the mesh
// through join (a node's --mesh address).
func startMeshEdge(t *testing.T, name, key, join string, extra ...string) *meshNode {
	t.Helper()
	var meshAddr string
	d := startNode(t, "relaymesh edge "+name, false, func(h, _ string) ([]string, []string) {
		meshAddr = freeMeshAddr(t)
		args := []string{"edge", "--node-name", name, "--http", h, "--mesh", meshAddr, "--relay", freeUDPAddr(t),
			"--cluster-key", key, "--join", join}
		return append(args, extra...), nil
	})
	return &meshNode{daemon: d, nodeName: name, meshAddr: meshAddr}
}

// crash SIGKILLs the node by its PID. Its cleanup no longer expects a
// clean exit.
func (n *meshNode) crash() {
	n.stopOnce.Do(n.kill)
}

// metricsOf is one Prometheus scrape: value by series, the series written
// as in the exposition format, e.g. `relaymesh_viewers{stream="test"}`.
type metricsOf map[string]float64

// scrape fetches and parses a node's /metrics.
func scrape(ctx context.Context, c *http.Client, n *meshNode) (metricsOf, error) {
	r, err := httpGet(ctx, c, n.url("/metrics"))
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: status %d", r.status)
	}
	m := metricsOf{}
	for _, line := range strings.Split(string(r.body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m, nil
}

func mustScrape(t *testing.T, ctx context.Context, c *http.Client, n *meshNode) metricsOf {
	t.Helper()
	m, err := scrape(ctx, c, n)
	if err != nil {
		t.Fatalf("%s: scrape metrics: %v", n.nodeName, err)
	}
	return m
}

// labelled returns the series of metric name by the value of its one label.
func (m metricsOf) labelled(name, label string) map[string]float64 {
	out := map[string]float64{}
	prefix := name + "{" + label + `="`
	for k, v := range m {
		if rest, ok := strings.CutPrefix(k, prefix); ok {
			if val, ok := strings.CutSuffix(rest, `"}`); ok {
				out[val] = v
			}
		}
	}
	return out
}

// prefixed returns the series whose name starts with prefix.
func (m metricsOf) prefixed(prefix string) metricsOf {
	out := metricsOf{}
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

// value returns a series' value, or -1 when it is absent.
func (m metricsOf) value(series string) float64 {
	if v, ok := m[series]; ok {
		return v
	}
	return -1
}

// meshView fetches a node's /api/mesh.
func meshView(ctx context.Context, c *http.Client, n *meshNode) ([]apiNode, error) {
	r, err := httpGet(ctx, c, n.url("/api/mesh"))
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusOK {
		return nil, fmt.Errorf("GET /api/mesh: status %d: %s", r.status, truncate(r.body, 100))
	}
	var nodes []apiNode
	if err := json.Unmarshal(r.body, &nodes); err != nil {
		return nil, fmt.Errorf("GET /api/mesh: %v: %s", err, truncate(r.body, 200))
	}
	return nodes, nil
}

// holders lists the nodes of a mesh view that offer stream, sorted.
func holders(nodes []apiNode, stream string) []string {
	var out []string
	for _, n := range nodes {
		for _, s := range n.Streams {
			if s.Name == stream {
				out = append(out, n.Name)
			}
		}
	}
	slices.Sort(out)
	return out
}

func nodeNames(nodes []apiNode) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}

// eventually polls check every 200 ms until it reports done, failing the
// test with check's last explanation when limit passes or ctx ends.
func eventually(t *testing.T, ctx context.Context, limit time.Duration, what string, check func() (done bool, why string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		done, why := check()
		if done {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("waiting %v for %s: %s", limit, what, why)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitHolders waits until n's view of the mesh lists exactly want as the
// holders of stream.
func waitHolders(t *testing.T, ctx context.Context, c *http.Client, n *meshNode, stream string, want ...string) {
	t.Helper()
	slices.Sort(want)
	eventually(t, ctx, 20*time.Second, fmt.Sprintf("%s to see %v holding %s", n.nodeName, want, stream), func() (bool, string) {
		nodes, err := meshView(ctx, c, n)
		if err != nil {
			return false, err.Error()
		}
		got := holders(nodes, stream)
		return slices.Equal(got, want), fmt.Sprintf("holders %v among nodes %v", got, nodeNames(nodes))
	})
}

// waitMembers waits until every node's relaymesh_mesh_members is want.
func waitMembers(t *testing.T, ctx context.Context, c *http.Client, want int, nodes ...*meshNode) {
	t.Helper()
	eventually(t, ctx, 20*time.Second, fmt.Sprintf("relaymesh_mesh_members %d on every node", want), func() (bool, string) {
		var got []string
		ok := true
		for _, n := range nodes {
			m, err := scrape(ctx, c, n)
			if err != nil {
				return false, err.Error()
			}
			v := m.value("relaymesh_mesh_members")
			ok = ok && v == float64(want)
			got = append(got, fmt.Sprintf("%s=%g", n.nodeName, v))
		}
		return ok, strings.Join(got, " ")
	})
}

// programDates maps each segment's media sequence number to its
// EXT-X-PROGRAM-DATE-TIME, the open segment's included.
func programDates(pl *mediaPlaylist) map[uint64]string {
	out := map[uint64]string{}
	msn := pl.MediaSequence + pl.Skipped
	for _, line := range strings.Split(pl.Raw, "\n") {
		switch {
		case strings.HasPrefix(line, "#EXT-X-PROGRAM-DATE-TIME:"):
			out[msn] = strings.TrimPrefix(line, "#EXT-X-PROGRAM-DATE-TIME:")
		case line != "" && !strings.HasPrefix(line, "#"):
			msn++
		}
	}
	return out
}

// liveEdge scans a media playlist for its newest part: the part's segment,
// its index there and its URI. It is a cheap stand-in for
// parseMediaPlaylist, for hundreds of viewers reloading five times a second.
func liveEdge(body []byte) (msn uint64, idx int, uri string, ok bool) {
	var mediaSeq, segs uint64
	parts := 0
	for len(body) > 0 {
		line := body
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i], body[i+1:]
		} else {
			body = nil
		}
		switch {
		case len(line) == 0:
		case bytes.HasPrefix(line, []byte("#EXT-X-PART:")):
			_, rest, found := bytes.Cut(line, []byte(`URI="`))
			u, _, closed := bytes.Cut(rest, []byte(`"`))
			if !found || !closed {
				return 0, 0, "", false
			}
			msn, idx, uri, ok = mediaSeq+segs, parts, string(u), true
			parts++
		case bytes.HasPrefix(line, []byte("#EXT-X-MEDIA-SEQUENCE:")):
			n, err := strconv.ParseUint(string(line[len("#EXT-X-MEDIA-SEQUENCE:"):]), 10, 64)
			if err != nil {
				return 0, 0, "", false
			}
			mediaSeq = n
		case line[0] != '#':
			segs++
			parts = 0
		}
	}
	return msn, idx, uri, ok
}

// partNum is the number in a part URI (part123.m4s), or -1.
func partNum(uri string) int64 {
	m := partNumber.FindStringSubmatch("/" + uri)
	if m == nil {
		return -1
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	return n
}
