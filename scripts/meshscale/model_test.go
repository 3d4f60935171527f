package main

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/mesh"
)

func TestSpecs(t *testing.T) {
	md := model{Nodes: 30, Origins: 3, Streams: 5, Relayed: 4, Churn: 0.5}
	specs := md.specs()
	if len(specs) != 30 {
		t.Fatalf("%d specs, want 30", len(specs))
	}
	pool := md.pool()
	if len(pool) != 15 {
		t.Fatalf("pool of %d streams, want 15", len(pool))
	}
	names := map[string]bool{}
	churning := 0
	for i, s := range specs {
		if names[s.Name] {
			t.Errorf("node name %s twice", s.Name)
		}
		names[s.Name] = true
		if s.Churns {
			churning++
		}
		wantRole, wantStreams := mesh.RoleEdge, 4
		if i < 3 {
			wantRole, wantStreams = mesh.RoleOrigin, 5
		}
		if s.Role != wantRole || len(s.Streams) != wantStreams {
			t.Errorf("%s: role %s with %d streams, want %s with %d", s.Name, s.Role, len(s.Streams), wantRole, wantStreams)
		}
		if !slices.IsSortedFunc(s.Streams, func(a, b mesh.StreamLoad) int { return strings.Compare(a.Name, b.Name) }) {
			t.Errorf("%s: streams not sorted by name", s.Name)
		}
		sum := 0
		for j, st := range s.Streams {
			sum += st.Viewers
			if !slices.Contains(pool, held{st.Name, st.Via}) && !(st.Origin && st.Via == "") ||
				(j > 0 && st.Name == s.Streams[j-1].Name) {
				t.Errorf("%s: stream %q (via %q) not in the pool, or twice", s.Name, st.Name, st.Via)
			}
			if st.Origin != (s.Role == mesh.RoleOrigin) {
				t.Errorf("%s: stream %s origin flag %v", s.Name, st.Name, st.Origin)
			}
		}
		if sum != s.Base {
			t.Errorf("%s: base %d, streams sum to %d", s.Name, s.Base, sum)
		}
	}
	if churning != 15 {
		t.Errorf("%d churning nodes, want half of 30", churning)
	}
	// The same model gives the same nodes (a failure trial's child
	// rebuilds its spec from the flags).
	a, b := md.extra("fail-1", 130), md.extra("fail-1", 130)
	if !slices.Equal(a.Streams, b.Streams) {
		t.Error("extra is not deterministic")
	}
	if got := (model{Nodes: 5, Origins: 1, Streams: 3, Relayed: 10}).specs()[1]; len(got.Streams) != 3 {
		t.Errorf("an edge relaying more than the pool holds %d streams, want the pool's 3", len(got.Streams))
	}
}

func TestStateAndSampleAge(t *testing.T) {
	md := model{Nodes: 4, Origins: 1, Streams: 3, Relayed: 2, Churn: 1}
	s := md.specs()[1]
	now := time.UnixMilli(1_700_000_123_456)
	st := s.state(now, false)
	if st.State != mesh.StateReady || st.Role != mesh.RoleEdge || st.PublicURL == "" {
		t.Errorf("state = %+v", st)
	}
	if d := s.state(now, true).State; d != mesh.StateDraining {
		t.Errorf("draining node reports %s", d)
	}
	// Seen 1.5 s later, the sample is 1.5 s old, from the total and from
	// the first stream's count alike.
	later := now.Add(1500 * time.Millisecond)
	if age, ok := sampleAge(st.Viewers, s.Base, later); !ok || age != 1500*time.Millisecond {
		t.Errorf("meta sample age = %v, %v; want 1.5s", age, ok)
	}
	if age, ok := sampleAge(st.Streams[0].Viewers, s.Streams[0].Viewers, later); !ok || age != 1500*time.Millisecond {
		t.Errorf("stream-list sample age = %v, %v; want 1.5s", age, ok)
	}
	if st.Streams[1].Viewers != s.Streams[1].Viewers {
		t.Error("only the first stream's count carries the sample time")
	}
	// Across the wrap of the slot counter.
	if age, ok := sampleAge(s.Base+slotWrap-1, s.Base, time.UnixMilli(1000*slotLen.Milliseconds()*slotWrap+200)); !ok || age != 3*slotLen {
		t.Errorf("age across the wrap = %v, %v; want 300ms", age, ok)
	}
	for _, bad := range []int{s.Base - 1, s.Base + slotWrap} {
		if _, ok := sampleAge(bad, s.Base, now); ok {
			t.Errorf("sampleAge(%d) with base %d accepted", bad, s.Base)
		}
	}
	// A node that does not churn reports the same counts all the time.
	md.Churn = 0
	q := md.specs()[1]
	if a, b := q.state(now, false), q.state(later, false); a.Viewers != b.Viewers || !slices.Equal(a.Streams, b.Streams) {
		t.Error("a quiet node's counts changed")
	}
}

func TestListBytes(t *testing.T) {
	// version kind | name "e" | seq | count 2 | "ab" viewers 5 flags via "o1" | "c" viewers 300 flags firstMSN 1000
	s := &spec{Name: "e", Streams: []mesh.StreamLoad{{Name: "ab", Viewers: 5, Via: "o1"}, {Name: "c", Viewers: 300, Origin: true, FirstMSN: 1000}}}
	seq := uvBytes(uint64(time.Now().UnixNano()))
	want := 2 + 2 + seq + 1 + (3 + 1 + 1 + 3) + (2 + 2 + 1 + 2)
	if got := listBytes(s); got != want {
		t.Errorf("listBytes = %d, want %d", got, want)
	}
	for v, n := range map[uint64]int{0: 1, 127: 1, 128: 2, 16383: 2, 16384: 3} {
		if uvBytes(v) != n {
			t.Errorf("uvBytes(%d) = %d, want %d", v, uvBytes(v), n)
		}
	}
}

func TestTrafficCounts(t *testing.T) {
	tr := &traffic{}
	tr.IncrCounterWithLabels([]string{"memberlist", "udp", "sent"}, 1200, nil)
	tr.IncrCounterWithLabels([]string{"memberlist", "udp", "sent"}, 100, nil)
	tr.IncrCounterWithLabels([]string{"svc", "memberlist", "udp", "received"}, 1311, nil)
	tr.IncrCounterWithLabels([]string{"memberlist", "tcp", "sent"}, 5000, nil)
	tr.IncrCounterWithLabels([]string{"memberlist", "tcp", "sent"}, 3000, nil)
	tr.IncrCounterWithLabels([]string{"memberlist", "tcp", "accept"}, 1, nil)
	tr.IncrCounterWithLabels([]string{"memberlist", "msg", "suspect"}, 1, nil)
	got := tr.snapshot().sub(counts{UDPOut: 100, UDPOutPkts: 1})
	want := counts{UDPOut: 1200, UDPOutPkts: 1, UDPIn: 1311, UDPInPkts: 1, TCPOut: 8000, TCPOutMsgs: 2, Suspects: 1}
	if got != want {
		t.Errorf("counts = %+v, want %+v", got, want)
	}
	if m := tr.stateMax.Load(); m != 5000 {
		t.Errorf("largest push/pull = %d, want 5000", m)
	}
}

func TestLogsCountMemberlistTrouble(t *testing.T) {
	var b strings.Builder
	l := &logs{w: &b}
	log := slog.New(l.handler(false))
	ml := log.With("node", "n1").With("component", "memberlist")
	ml.Debug("[WARN] memberlist: handler queue full, dropping message")
	ml.Debug("[ERR] memberlist: Failed to send gossip")
	ml.Debug("[DEBUG] memberlist: Stream connection")
	log.Info("mesh peer joined")
	log.Warn("mesh leave not confirmed")
	if l.warns.Load() != 1 || l.errs.Load() != 1 {
		t.Errorf("warns %d errs %d, want 1 and 1", l.warns.Load(), l.errs.Load())
	}
	out := b.String()
	if !strings.Contains(out, "queue full") || !strings.Contains(out, "leave not confirmed") ||
		strings.Contains(out, "Stream connection") || strings.Contains(out, "peer joined") {
		t.Errorf("printed:\n%s", out)
	}
	if !ml.Handler().Enabled(context.Background(), slog.LevelDebug) {
		t.Error("memberlist's debug lines must reach the handler to be counted")
	}
}
