package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/relaymesh/relaymesh/mesh"
)

// model is the shape of the simulated mesh: who holds which streams. It is
// built once from the flags and read-only afterwards.
type model struct {
	Nodes   int     // nodes started at boot, origins included
	Origins int     // of which origins
	Streams int     // streams published on each origin
	Relayed int     // streams an edge holds (relayed copies)
	Churn   float64 // share of nodes whose viewer counts change (0..1)
}

// slotLen and slotWrap encode when a load sample was taken into the viewer
// counts (see spec.state), so an observer can tell how old its view is.
const (
	slotLen  = 100 * time.Millisecond
	slotWrap = 10000 // slots: 1,000 s before the code repeats
)

// spec is one simulated node: what relaymesh's cmd would report through
// mesh.Config.Local. Read-only once built.
type spec struct {
	Name     string
	Index    int
	Role     mesh.Role
	Region   string
	HTTP     string
	Relay    string
	Public   string
	Capacity int
	Churns   bool              // viewer counts change every sample
	Streams  []mesh.StreamLoad // sorted by name, as mesh publishes them
	Base     int               // sum of the streams' base viewers
}

// streamName is the name of an origin's k-th stream.
func streamName(origin, k int) string { return fmt.Sprintf("show-%03d-%02d", origin, k) }

// held is a stream in the mesh and the origin that publishes it.
type held struct{ name, origin string }

// pool is every stream published in the mesh.
func (md model) pool() []held {
	out := make([]held, 0, md.Origins*md.Streams)
	for o := range md.Origins {
		for k := range md.Streams {
			out = append(out, held{streamName(o, k), originName(o)})
		}
	}
	return out
}

func originName(i int) string { return fmt.Sprintf("origin-%02d", i) }

// specs builds the nodes started at boot: the origins, then the edges.
func (md model) specs() []*spec {
	pool := md.pool()
	out := make([]*spec, 0, md.Nodes)
	for i := range md.Nodes {
		if i < md.Origins {
			out = append(out, md.origin(i))
		} else {
			out = append(out, md.edge(fmt.Sprintf("edge-%03d", i-md.Origins), i, pool))
		}
	}
	return out
}

// extra builds an edge that is not started at boot (a joiner, a node to
// kill); index must differ from every boot node's.
func (md model) extra(name string, index int) *spec { return md.edge(name, index, md.pool()) }

func (md model) origin(i int) *spec {
	rng := rand.New(rand.NewPCG(uint64(i), 1))
	s := md.base(originName(i), i, mesh.RoleOrigin)
	for k := range md.Streams {
		// Origins offload viewers to edges: few watch there.
		s.Streams = append(s.Streams, mesh.StreamLoad{Name: streamName(i, k), Viewers: rng.IntN(10),
			Origin: true, FirstMSN: uint64(1000 + rng.IntN(100000))})
	}
	return s.finish()
}

func (md model) edge(name string, i int, pool []held) *spec {
	rng := rand.New(rand.NewPCG(uint64(i), 2))
	s := md.base(name, i, mesh.RoleEdge)
	for _, j := range rng.Perm(len(pool))[:min(md.Relayed, len(pool))] {
		// A replica names the node it comes from (Via): here its origin,
		// as in a mesh without shields.
		s.Streams = append(s.Streams, mesh.StreamLoad{Name: pool[j].name, Viewers: 1 + rng.IntN(200), Via: pool[j].origin})
	}
	return s.finish()
}

func (md model) base(name string, i int, role mesh.Role) *spec {
	// Realistic lengths matter: meta is gossiped bytes.
	regions := [...]string{"eu-west", "eu-central", "us-east", "ap-south"}
	region := regions[i%len(regions)]
	ip := fmt.Sprintf("10.%d.%d.%d", 20+i/65536%200, i/256%256, i%256)
	return &spec{
		Name: name, Index: i, Role: role, Region: region,
		HTTP: ip + ":8080", Relay: ip + ":7947",
		Public:   "https://" + name + "." + region + ".live.example.com",
		Capacity: 2000,
		// Deterministic and spread evenly over the indexes: any run of
		// nodes holds the Churn share of churning ones, rounded.
		Churns: math.Floor(float64(i+1)*md.Churn) > math.Floor(float64(i)*md.Churn),
	}
}

func (s *spec) finish() *spec {
	slices.SortFunc(s.Streams, func(a, b mesh.StreamLoad) int { return strings.Compare(a.Name, b.Name) })
	for _, st := range s.Streams {
		s.Base += st.Viewers
	}
	return s
}

// slotAt is the load-sample slot of t.
func slotAt(t time.Time) int { return int(t.UnixMilli() / slotLen.Milliseconds() % slotWrap) }

// state is what the node reports at now. A churning node's viewer counts
// change at every sample, as a busy edge's do: its total and its first
// stream's count are the base plus the current slot, so whoever sees them
// can tell when they were sampled (sampleAge). mesh gossips such load-only
// changes at most once a second (its loadInterval).
func (s *spec) state(now time.Time, draining bool) mesh.NodeState {
	st := mesh.NodeState{
		Region: s.Region, Role: s.Role, State: mesh.StateReady,
		HTTPAddr: s.HTTP, RelayAddr: s.Relay, PublicURL: s.Public, Capacity: s.Capacity,
		Viewers: s.Base, Streams: slices.Clone(s.Streams),
	}
	if draining {
		st.State = mesh.StateDraining
	}
	if s.Churns {
		slot := slotAt(now)
		st.Viewers += slot
		if len(st.Streams) > 0 {
			st.Streams[0].Viewers += slot
		}
	}
	st.EgressBps = int64(st.Viewers) * 700_000 / 8 // a 0.7 Mbit/s stream per viewer
	st.CPU = min(1, float64(st.Viewers)/float64(4*s.Capacity))
	return st
}

// sampleAge tells how old a churning node's load sample is: observed is a
// viewer count an observer holds, base the count without the slot. False
// when observed cannot be such a sample.
func sampleAge(observed, base int, now time.Time) (time.Duration, bool) {
	slot := observed - base
	if slot < 0 || slot >= slotWrap {
		return 0, false
	}
	age := (slotAt(now) - slot + slotWrap) % slotWrap
	return time.Duration(age) * slotLen, true
}

// listBytes is the size of s's stream-list broadcast as mesh encodes it
// (mesh/wire.go, version 4: version kind node:str seq:uv count:uv, then per
// stream name:str viewers:uv flags:u8 [firstMSN:uv] [via:str]), with a wall-clock sequence
// number as a fresh node has and the counts at their largest churned value.
func listBytes(s *spec) int {
	n := 2 + strBytes(s.Name) + uvBytes(uint64(time.Now().UnixNano())) + uvBytes(uint64(len(s.Streams)))
	for i, st := range s.Streams {
		v := st.Viewers
		if i == 0 && s.Churns {
			v += slotWrap - 1
		}
		n += strBytes(st.Name) + uvBytes(uint64(v)) + 1
		if st.Origin {
			n += uvBytes(st.FirstMSN)
		}
		if st.Via != "" {
			n += strBytes(st.Via)
		}
	}
	return n
}

func strBytes(s string) int { return uvBytes(uint64(len(s))) + len(s) }

func uvBytes(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}
