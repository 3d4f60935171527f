package steer

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

type fixedMesh []Node

func (m fixedMesh) Nodes() []Node { return m }

func (fixedMesh) LoadInterval() time.Duration { return time.Second }

// TestRouterLedger: viewers this node sends count on their node until its
// gossip, heard afterwards, includes them.
func TestRouterLedger(t *testing.T) {
	heard := time.Now().Add(-time.Minute)
	mesh := fixedMesh{origin("o", 0, 0), with(edge("a", 0, 4), func(n *Node) { n.Heard = heard })}
	r := &Router{Mesh: mesh, Policy: offload}
	for i := range 4 {
		d := r.Admit("o", Viewer{Session: strings.Repeat("0", 15) + string(rune('a'+i))})
		if d.Action != Redirect || d.To.Name != "a" {
			t.Fatalf("arrival %d: %+v, want a redirect to a", i, d)
		}
	}
	// a's gossip still says 0 viewers, but four were sent: a is full.
	if d := r.Admit("o", Viewer{Session: "ffffffffffffffff"}); d.Action != Serve || d.Reason != ReasonHere {
		t.Fatalf("fifth arrival: %s %s, want served at the origin: a is full", d.Action, d.Reason)
	}
	if v, _ := r.View("o").Node("a"); v.Pending != 4 {
		t.Fatalf("a pending %d, want 4", v.Pending)
	}
	// Gossip from a, heard well after the viewers were sent, counts them.
	mesh[1].Heard, mesh[1].Viewers = time.Now().Add(time.Second), 4
	r.view.Store(nil)
	if v, _ := r.View("o").Node("a"); v.Pending != 0 || v.Viewers != 4 {
		t.Fatalf("after gossip: %+v, want 4 viewers, none pending", v)
	}
	d := r.Decisions()
	if d["redirect"][ReasonOffload] != 4 || d["serve"][ReasonHere] != 1 {
		t.Fatalf("decisions %v", d)
	}
}

func TestRegions(t *testing.T) {
	g, err := ParseRegions(strings.NewReader(`
# operator's map
10.0.0.0/8      eu
10.1.0.0/16     us   
2001:db8::/32   ap
::ffff:192.0.2.0/120 mapped
`))
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]string{
		"10.9.9.9": "eu", "10.1.2.3": "us", "11.0.0.1": "", "2001:db8::1": "ap", "2001:db9::1": "",
		"::ffff:10.1.0.1": "us", "192.0.2.7": "mapped",
	} {
		if got := g.Lookup(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Lookup(%s) = %q, want %q", addr, got, want)
		}
	}
	for _, bad := range []string{"10.0.0.0/8", "10.0.0.0/33 eu", "nonsense eu", "10.0.0.0/8 " + strings.Repeat("r", 65)} {
		if _, err := ParseRegions(strings.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "line 1") {
			t.Errorf("ParseRegions(%q) = %v, want an error naming line 1", bad, err)
		}
	}
	var none *Regions
	if none.Lookup(netip.MustParseAddr("10.0.0.1")) != "" || none.Len() != 0 {
		t.Error("nil Regions maps something")
	}
}
