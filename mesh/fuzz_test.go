package mesh

import (
	"bytes"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"
)

// Every decoder takes bytes from the network. The fuzz targets check that
// none panics, and that whatever one accepts re-encodes to an equivalent
// value (so a decoder cannot accept something the encoder could not mean).

func FuzzDecodeMeta(f *testing.F) {
	for _, s := range []NodeState{
		{},
		{Role: RoleEdge, State: StateReady, Region: "eu", HTTPAddr: "1.2.3.4:8080", RelayAddr: "1.2.3.4:7947",
			Viewers: 100, EgressBps: 1e9, CPU: 0.5, Capacity: 1000},
	} {
		b, _ := encodeMeta(s, metaLimit)
		f.Add(b)
	}
	f.Add([]byte{1, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeMeta(b)
		if err != nil {
			return
		}
		re, clip := encodeMeta(s, metaLimit)
		if clip.any() {
			return // accepted fields the encoder would shorten (e.g. 3 × 255 bytes)
		}
		s2, err := decodeMeta(re)
		if err != nil {
			t.Fatalf("re-encoded meta does not decode: %v", err)
		}
		if s2.Role != s.Role || s2.State != s.State || s2.Region != s.Region || s2.HTTPAddr != s.HTTPAddr ||
			s2.RelayAddr != s.RelayAddr || s2.Viewers != s.Viewers || s2.EgressBps != s.EgressBps ||
			s2.CPU != s.CPU || s2.Capacity != s.Capacity {
			t.Fatalf("round trip changed meta:\n%+v\n%+v", s, s2)
		}
	})
}

func FuzzDecodeStreams(f *testing.F) {
	f.Add(encodeStreams(streamEntry{Node: "n", Seq: 7, Streams: []StreamLoad{{Name: "a", Viewers: 1}, {Name: "b", Viewers: 300}}}))
	f.Add(encodeStreams(streamEntry{}))
	f.Add([]byte{1, kindStreams, 1, 'n', 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeStreams(b)
		if err != nil {
			return
		}
		if re := encodeStreams(e); !bytes.Equal(re, b) {
			// Varints have one canonical form as Go writes them but decode
			// from padded forms too; compare values instead.
			e2, err := decodeStreams(re)
			if err != nil || e2.Node != e.Node || e2.Seq != e.Seq || len(e2.Streams) != len(e.Streams) {
				t.Fatalf("round trip changed entry: %+v -> %+v (%v)", e, e2, err)
			}
		}
	})
}

func FuzzDecodeState(f *testing.F) {
	f.Add(encodeState([]streamEntry{{Node: "a", Seq: 1, Streams: []StreamLoad{{Name: "s", Viewers: 2}}}, {Node: "b", Seq: 2}}))
	f.Add(encodeState(nil))
	f.Add([]byte{1, kindState, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := decodeState(b)
		if err != nil {
			return
		}
		es2, err := decodeState(encodeState(es))
		if err != nil || len(es2) != len(es) {
			t.Fatalf("round trip changed state: %d entries -> %d (%v)", len(es), len(es2), err)
		}
	})
}

func FuzzDecodeCoord(f *testing.F) {
	c := coordinate.NewCoordinate(coordinate.DefaultConfig())
	f.Add(encodeCoord(c))
	c.Vec[2], c.Height = 0.01, 0.001
	f.Add(encodeCoord(c))
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCoord(b)
		if err != nil {
			return
		}
		if !c.IsValid() {
			t.Fatal("accepted an invalid coordinate")
		}
		if !bytes.Equal(encodeCoord(c), b) {
			t.Fatal("round trip changed the coordinate")
		}
		_ = c.DistanceTo(c) // must not panic
	})
}

// FuzzDelegate feeds arbitrary bytes to every memberlist callback that
// takes network input, on a Mesh that knows one peer, and checks the Mesh
// still answers queries.
func FuzzDelegate(f *testing.F) {
	f.Add(encodeStreams(streamEntry{Node: "p", Seq: 1, Streams: []StreamLoad{{Name: "s", Viewers: 1}}}))
	f.Add(encodeState([]streamEntry{{Node: "p", Seq: 2, Streams: []StreamLoad{{Name: "s", Viewers: 1}}}}))
	f.Add(encodeCoord(coordinate.NewCoordinate(coordinate.DefaultConfig())))
	f.Fuzz(func(t *testing.T, b []byte) {
		viv, err := coordinate.NewClient(coordinate.DefaultConfig())
		if err != nil {
			t.Fatal(err)
		}
		m := &Mesh{
			name: "self", log: slog.New(slog.DiscardHandler), vivaldi: viv,
			peers: map[string]*peer{}, queue: &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 2 }, RetransmitMult: 4},
		}
		d := delegate{m}
		p := &memberlist.Node{Name: "p", Meta: b}
		d.NotifyJoin(p)
		d.NotifyUpdate(p)
		d.NotifyMsg(b)
		d.MergeRemoteState(b, true)
		d.NotifyPingComplete(p, time.Millisecond, b)
		_ = d.LocalState(false)
		_ = d.GetBroadcasts(2, 1400)
		_ = m.Nodes()
		_, _ = m.RTT("p")
		_ = m.Holders("s")
		d.NotifyLeave(p)
		if m.Members() != 1 {
			t.Fatalf("members = %d after leave", m.Members())
		}
	})
}
