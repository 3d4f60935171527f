package edge

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/edge/steer"
	"github.com/relaymesh/relaymesh/relay"
)

// fixedMesh is a mesh view given by the test: the routing decisions are
// pure functions of it.
type fixedMesh []steer.Node

func (m fixedMesh) Nodes() []steer.Node { return m }

func (fixedMesh) LoadInterval() time.Duration { return time.Second }

func routedNode(name string, viewers, capacity int) steer.Node {
	return steer.Node{Name: name, URL: "http://" + name + ".example:8080", Ready: true, Viewers: viewers, Capacity: capacity}
}

// routedServer serves a live stream "cam" as node self of mesh.
func routedServer(t *testing.T, self string, mesh fixedMesh, maxViewers int) *httptest.Server {
	t.Helper()
	reg := relay.NewRegistry(relay.RegistryConfig{Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(reg.Close)
	pub, _ := reg.Publish("cam")
	b := builderFor(pub.Stream)
	b.open(false)
	b.part(testPartTarget)
	b.open(false)
	for range holdBackParts {
		b.part(testPartTarget)
	}
	srv := &Server{Streams: reg, Logger: slog.New(slog.DiscardHandler), Routing: &Routing{
		Router: &steer.Router{Mesh: mesh, Policy: steer.Policy{OriginOffload: true}, MaxViewers: maxViewers},
		Node:   self, TTL: 3 * time.Second,
	}}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return ts
}

var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := noRedirects.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// A node that ranks first serves a multivariant playlist with one variant
// per pathway, best first, on each node's public URL, and a steering
// server on the viewer's first fallback.
func TestSteeredMultivariant(t *testing.T) {
	ts := routedServer(t, "edge-1", fixedMesh{routedNode("edge-1", 10, 100), routedNode("edge-2", 10, 100)}, 0)
	resp, body := get(t, ts.URL+"/live/cam/index.m3u8")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	lines := strings.Split(strings.TrimSpace(body), "\n")
	var steering, variants, uris []string
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "#EXT-X-CONTENT-STEERING:"):
			steering = append(steering, l)
		case strings.HasPrefix(l, "#EXT-X-STREAM-INF:"):
			variants = append(variants, l)
			uris = append(uris, lines[i+1])
		}
	}
	if len(steering) != 1 || len(variants) != 2 {
		t.Fatalf("want one steering tag and two variants:\n%s", body)
	}
	session := strings.TrimPrefix(uris[0], "http://edge-1.example:8080/live/cam/media.m3u8?rmsid=")
	if !validSession(session) {
		t.Fatalf("first variant URI %q: want edge-1's media playlist with a session", uris[0])
	}
	want := `#EXT-X-CONTENT-STEERING:SERVER-URI="http://edge-2.example:8080/live/cam/steering.json?rmsid=` + session + `",PATHWAY-ID="edge-1"`
	if steering[0] != want {
		t.Errorf("steering tag\n got %s\nwant %s", steering[0], want)
	}
	// The player starts on the first pathway; the others are moves.
	for i, node := range []string{"edge-1", "edge-2"} {
		uri := "http://" + node + ".example:8080/live/cam/media.m3u8?rmsid=" + session
		if i > 0 {
			uri += "&" + moveParam + "=1"
		}
		if !strings.Contains(variants[i], `PATHWAY-ID="`+node+`",STABLE-VARIANT-ID="main"`) || uris[i] != uri {
			t.Errorf("variant %d: %s\n%s; want pathway %s", i, variants[i], uris[i], node)
		}
	}
}

// A node that does not rank first redirects to the node that does,
// carrying the session and a hop count; at the hop limit it serves.
func TestRedirectAndHopLimit(t *testing.T) {
	mesh := fixedMesh{routedNode("edge-1", 100, 100), routedNode("edge-2", 10, 100)}
	ts := routedServer(t, "edge-1", mesh, 0)
	resp, _ := get(t, ts.URL+"/live/cam/index.m3u8?token=abc")
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("status %d Location %q, want 302", resp.StatusCode, resp.Header.Get("Location"))
	}
	q := loc.Query()
	if loc.Host != "edge-2.example:8080" || loc.Path != "/live/cam/index.m3u8" || q.Get("rmhop") != "1" ||
		!validSession(q.Get("rmsid")) || q.Get("token") != "abc" {
		t.Errorf("Location %s: want edge-2's index.m3u8 with rmhop=1, a session and the viewer's own parameters", loc)
	}
	if resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("Cache-Control %q on a redirect, want no-store", resp.Header.Get("Cache-Control"))
	}
	resp, body := get(t, ts.URL+"/live/cam/index.m3u8?rmhop=2&rmsid=0123456789abcdef")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "rmsid=0123456789abcdef") {
		t.Errorf("at the hop limit: status %d, body %q; want the playlist served here with the session kept", resp.StatusCode, body)
	}
	// Media playlists and parts are never redirected.
	if resp, _ := get(t, ts.URL+"/live/cam/media.m3u8?rmsid=0123456789abcdef"); resp.StatusCode != http.StatusOK {
		t.Errorf("media playlist at a full node: status %d, want 200", resp.StatusCode)
	}
}

// Past --max-viewers, with no room anywhere, a new session gets 503 with
// Retry-After; a lone node sheds too but never steers.
func TestShed(t *testing.T) {
	for _, mesh := range []fixedMesh{
		{routedNode("edge-1", 20, 10), routedNode("edge-2", 10, 10)},
		{routedNode("edge-1", 20, 0)},
	} {
		ts := routedServer(t, "edge-1", mesh, 20)
		resp, body := get(t, ts.URL+"/live/cam/index.m3u8")
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%d nodes, all full: status %d Retry-After %q: %s; want 503 with Retry-After",
				len(mesh), resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
}

func TestSteeringManifest(t *testing.T) {
	mesh := fixedMesh{routedNode("edge-1", 10, 100), routedNode("edge-2", 10, 100), routedNode("edge-3", 10, 100)}
	ts := routedServer(t, "edge-2", mesh, 0)
	var m struct {
		Version  int      `json:"VERSION"`
		TTL      int      `json:"TTL"`
		Reload   string   `json:"RELOAD-URI"`
		Priority []string `json:"PATHWAY-PRIORITY"`
		Clones   []struct {
			BaseID string `json:"BASE-ID"`
			ID     string `json:"ID"`
			URI    struct {
				Host       string            `json:"HOST"`
				PerVariant map[string]string `json:"PER-VARIANT-URIS"`
			} `json:"URI-REPLACEMENT"`
		} `json:"PATHWAY-CLONES"`
	}
	const session = "0123456789abcdef"
	for _, reload := range []bool{false, true} {
		u := ts.URL + "/live/cam/steering.json?rmsid=" + session + "&_HLS_pathway=edge-1&_HLS_throughput=1000000"
		if reload {
			u += "&rmseq=1"
		}
		resp, body := get(t, u)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("status %d %s: %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if strings.Contains(body, `\u0026`) {
			t.Errorf("URIs in the manifest are escaped: %s", body)
		}
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatal(err)
		}
		if m.Version != 1 || len(m.Priority) != 3 || m.Priority[0] != "edge-1" {
			t.Fatalf("manifest %s: want VERSION 1 and edge-1, the viewer's balanced node, first of three", body)
		}
		if reload && m.TTL != 3 || !reload && (m.TTL < 1 || m.TTL > 3) {
			t.Errorf("TTL %d on a reload=%v answer, want 3 on reloads, 1..3 the first time", m.TTL, reload)
		}
		second := "http://" + m.Priority[1] + ".example:8080/live/cam/steering.json?rmsid=" + session + "&rmseq=1"
		if m.Reload != second {
			t.Errorf("RELOAD-URI %q, want %q on the viewer's first fallback", m.Reload, second)
		}
		if len(m.Clones) != 2 {
			t.Fatalf("clones %+v, want one for each pathway but the viewer's own", m.Clones)
		}
		for _, c := range m.Clones {
			want := "http://" + c.ID + ".example:8080/live/cam/media.m3u8?rmsid=" + session + "&" + moveParam + "=1"
			if c.BaseID != "edge-1" || c.URI.Host != c.ID+".example:8080" || c.URI.PerVariant["main"] != want {
				t.Errorf("clone %+v: want BASE-ID edge-1 and %s", c, want)
			}
		}
	}
}
