package mesh

import (
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/coordinate"
)

func TestMetaRoundTrip(t *testing.T) {
	in := NodeState{
		Name: "ignored", Region: "eu-west", Role: RoleEdge, State: StateDraining,
		HTTPAddr: "10.0.0.5:8080", RelayAddr: "10.0.0.5:7947", PublicURL: "https://e1.example",
		Viewers: 18234, EgressBps: 9_500_000_000, CPU: 0.4321, Capacity: 20000,
		Streams: []StreamLoad{{Name: "a", Viewers: 1}},
	}
	b, clip := encodeMeta(in, memberlist.MetaMaxSize)
	if clip.any() {
		t.Fatalf("clip = %+v, want none", clip)
	}
	got, err := decodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	want := in
	want.Name, want.Streams = "", nil
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decode(encode(x)):\n got %+v\nwant %+v", got, want)
	}
	if len(b) > 96 {
		t.Errorf("typical meta is %d bytes, want it small", len(b))
	}
	in.StandbyFor = "origin-a"
	b, _ = encodeMeta(in, metaLimit)
	if got, err = decodeMeta(b); err != nil || got.StandbyFor != "origin-a" {
		t.Errorf("standby-for: %+v, %v", got, err)
	}
}

func TestMetaClampsOutOfRange(t *testing.T) {
	for _, tc := range []struct {
		in      NodeState
		cpu     float64
		viewers int
	}{
		{NodeState{CPU: math.NaN(), Viewers: -5}, 0, 0},
		{NodeState{CPU: -1}, 0, 0},
		{NodeState{CPU: 7}, 1, 0},
		{NodeState{CPU: math.Inf(1)}, 1, 0},
	} {
		b, _ := encodeMeta(tc.in, metaLimit)
		got, err := decodeMeta(b)
		if err != nil {
			t.Fatal(err)
		}
		if got.CPU != tc.cpu || got.Viewers != tc.viewers {
			t.Errorf("%+v -> cpu %v viewers %d, want %v %d", tc.in, got.CPU, got.Viewers, tc.cpu, tc.viewers)
		}
	}
}

// TestMetaPublicURLGoesFirst: when every field is at its longest, the public
// URL is dropped before the addresses the mesh needs.
func TestMetaPublicURLGoesFirst(t *testing.T) {
	long := strings.Repeat("h", 195) + ":7947"
	s := NodeState{Region: strings.Repeat("r", 255), HTTPAddr: long, RelayAddr: long, PublicURL: "http://" + strings.Repeat("p", 240)}
	b, clip := encodeMeta(s, metaLimit)
	if want := (metaClip{Region: true, PublicURL: true}); clip != want {
		t.Fatalf("clip = %+v, want %+v", clip, want)
	}
	got, err := decodeMeta(b)
	if err != nil || got.PublicURL != "" || got.HTTPAddr != long || got.RelayAddr != long {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	s.Region = ""
	s.PublicURL = "https://e1.example"
	if b, clip = encodeMeta(s, metaLimit); clip.any() {
		t.Fatalf("clip = %+v for a short public URL", clip)
	}
	if got, _ = decodeMeta(b); got.PublicURL != s.PublicURL {
		t.Fatalf("public URL %q, want %q", got.PublicURL, s.PublicURL)
	}
}

// TestMetaSize checks the worst cases stay under memberlist's 512-byte limit
// (memberlist panics above it) and what gets clipped.
func TestMetaSize(t *testing.T) {
	long := func(c string, n int) string { return strings.Repeat(c, n) }
	addr := func(n int) string { return long("h", n-5) + ":7947" }
	maxed := NodeState{
		Role: RoleOrigin, State: StateWarming,
		Viewers: math.MaxInt, EgressBps: math.MaxInt64, CPU: 1, Capacity: math.MaxInt,
	}
	for _, tc := range []struct {
		name                string
		region, http, relay string
		wantRegion          int // bytes of region kept, -1 = all
		wantHTTP, wantRelay bool
		wantClip            metaClip
	}{
		{"255 region, short addrs", long("r", 255), "1.2.3.4:8080", "1.2.3.4:7947", -1, true, true, metaClip{}},
		{"300 region is cut to 255", long("r", 300), "a:1", "b:2", 255, true, true, metaClip{Region: true}},
		{"255 everything", long("r", 255), addr(255), addr(255), 0, true, false,
			metaClip{Region: true, RelayAddr: true}},
		{"255 region, 200 addrs", long("r", 255), addr(200), addr(200), -2, true, true, metaClip{Region: true}},
		{"addr over 255 is dropped", "r", addr(256), "b:2", -1, false, true, metaClip{HTTPAddr: true}},
		{"multibyte region cut on a rune", long("é", 200), addr(200), addr(200), -2, true, true, metaClip{Region: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := maxed
			s.Region, s.HTTPAddr, s.RelayAddr = tc.region, tc.http, tc.relay
			b, clip := encodeMeta(s, memberlist.MetaMaxSize)
			if len(b) >= memberlist.MetaMaxSize {
				t.Fatalf("meta is %d bytes, want < %d", len(b), memberlist.MetaMaxSize)
			}
			if clip != tc.wantClip {
				t.Errorf("clip = %+v, want %+v", clip, tc.wantClip)
			}
			got, err := decodeMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.Viewers != math.MaxInt || got.EgressBps != math.MaxInt64 || got.Capacity != math.MaxInt || got.CPU != 1 ||
				got.Role != RoleOrigin || got.State != StateWarming {
				t.Errorf("numbers or enums changed: %+v", got)
			}
			switch tc.wantRegion {
			case -1:
				if got.Region != tc.region {
					t.Errorf("region cut to %d bytes, want all %d", len(got.Region), len(tc.region))
				}
			case -2: // cut somewhere, but a prefix and valid UTF-8
				if len(got.Region) == 0 || len(got.Region) >= len(tc.region) {
					t.Errorf("region is %d bytes, want cut but not empty", len(got.Region))
				}
			default:
				if len(got.Region) != tc.wantRegion {
					t.Errorf("region is %d bytes, want %d", len(got.Region), tc.wantRegion)
				}
			}
			if !strings.HasPrefix(tc.region, got.Region) || !utf8.ValidString(got.Region) {
				t.Errorf("region %q is not a valid prefix", got.Region)
			}
			if (got.HTTPAddr == tc.http) != tc.wantHTTP || (got.HTTPAddr != tc.http && got.HTTPAddr != "") {
				t.Errorf("http addr %d bytes, want kept=%v (else empty)", len(got.HTTPAddr), tc.wantHTTP)
			}
			if (got.RelayAddr == tc.relay) != tc.wantRelay || (got.RelayAddr != tc.relay && got.RelayAddr != "") {
				t.Errorf("relay addr %d bytes, want kept=%v (else empty)", len(got.RelayAddr), tc.wantRelay)
			}
		})
	}
}

func TestMetaRejects(t *testing.T) {
	good, _ := encodeMeta(NodeState{Role: RoleEdge, Region: "x", PublicURL: "http://x"}, metaLimit)
	for name, b := range map[string][]byte{
		"empty":        nil,
		"version 0":    append([]byte{0}, good[1:]...),
		"next version": append([]byte{wireVersion + 1}, good[1:]...),
		"truncated":    good[:len(good)-1],
		"bad role":     append([]byte{wireVersion, 9}, good[2:]...),
		"bad state":    append([]byte{wireVersion, 1, 9}, good[3:]...),
		"cpu > 1":      {wireVersion, 1, 1, 0, 0, 0, 0xff, 0xff, 0, 0, 0},
		"huge string":  {wireVersion, 1, 1, 0, 0, 0, 0, 0, 0xff, 0x01},
		"varint ovfl":  {wireVersion, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"int overflow": {wireVersion, 1, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
	} {
		if _, err := decodeMeta(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	// Trailing bytes are allowed: a later release may append fields.
	if _, err := decodeMeta(append(good, 7, 7)); err != nil {
		t.Errorf("trailing bytes: %v", err)
	}
}

func TestStreamsRoundTrip(t *testing.T) {
	e := streamEntry{Node: "edge-1", Seq: 1<<63 + 5, Streams: []StreamLoad{{Name: "shop", Viewers: 1200}, {Name: "", Viewers: 0}, {Name: "x/y", Viewers: 1}}}
	got, err := decodeStreams(encodeStreams(e))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, e) {
		t.Fatalf("got %+v, want %+v", got, e)
	}
	empty := streamEntry{Node: "n", Seq: 1}
	if got, err := decodeStreams(encodeStreams(empty)); err != nil || !reflect.DeepEqual(got, empty) {
		t.Fatalf("empty list: got %+v, %v", got, err)
	}

	state := []streamEntry{e, empty, {Node: "o", Seq: 9, Streams: []StreamLoad{{Name: "shop", Viewers: 0}}}}
	gotState, err := decodeState(encodeState(state))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotState, state) {
		t.Fatalf("state: got %+v, want %+v", gotState, state)
	}
}

func TestStreamsRejects(t *testing.T) {
	msg := encodeStreams(streamEntry{Node: "n", Seq: 1, Streams: []StreamLoad{{Name: "s", Viewers: 1}}})
	state := encodeState([]streamEntry{{Node: "n", Seq: 1}})
	for name, b := range map[string][]byte{
		"empty":              nil,
		"next version":       append([]byte{wireVersion + 1}, msg[1:]...),
		"state as streams":   state,
		"truncated":          msg[:len(msg)-1],
		"trailing":           append(msg, 0),
		"count beyond input": {wireVersion, kindStreams, 1, 'n', 1, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"long node name":     append([]byte{wireVersion, kindStreams, 0x80, 0x02}, make([]byte, 256)...),
	} {
		if _, err := decodeStreams(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	for name, b := range map[string][]byte{
		"streams as state":   msg,
		"count beyond input": {wireVersion, kindState, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3},
		"truncated":          state[:len(state)-1],
	} {
		if _, err := decodeState(b); err == nil {
			t.Errorf("state %s: decoded without error", name)
		}
	}
}

func TestCoordRoundTrip(t *testing.T) {
	c := coordinate.NewCoordinate(coordinate.DefaultConfig())
	c.Vec[0], c.Vec[7], c.Error, c.Adjustment, c.Height = 0.012, -0.003, 0.9, -0.0001, 0.00002
	got, err := decodeCoord(encodeCoord(c))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Fatalf("got %+v, want %+v", got, c)
	}
	bad := func(f func(c *coordinate.Coordinate)) []byte {
		x := c.Clone()
		f(x)
		return encodeCoord(x)
	}
	for name, b := range map[string][]byte{
		"empty":      nil,
		"version":    append([]byte{wireVersion + 1}, encodeCoord(c)[1:]...),
		"truncated":  encodeCoord(c)[:20],
		"trailing":   append(encodeCoord(c), 0),
		"zero dims":  {wireVersion, 0, 1, 2, 3},
		"NaN":        bad(func(c *coordinate.Coordinate) { c.Vec[3] = math.NaN() }),
		"Inf":        bad(func(c *coordinate.Coordinate) { c.Height = math.Inf(1) }),
		"huge":       bad(func(c *coordinate.Coordinate) { c.Vec[1] = 1e9 }),
		"neg error":  bad(func(c *coordinate.Coordinate) { c.Error = -1 }),
		"neg height": bad(func(c *coordinate.Coordinate) { c.Height = -1 }),
	} {
		if _, err := decodeCoord(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

func TestClipUTF8(t *testing.T) {
	for _, tc := range []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"}, {"abc", 2, "ab"}, {"abc", 0, ""}, {"abc", -1, ""},
		{"aé", 2, "a"}, {"aé", 3, "aé"}, {"a€", 3, "a"}, {"a€", 2, "a"}, {"😀", 3, ""},
	} {
		if got := clipUTF8(tc.s, tc.n); got != tc.want {
			t.Errorf("clipUTF8(%q, %d) = %q, want %q", tc.s, tc.n, got, tc.want)
		}
	}
}

func TestStreamFlags(t *testing.T) {
	in := streamEntry{Node: "o", Seq: 3, Streams: []StreamLoad{
		{Name: "show", Viewers: 2, Origin: true, FirstMSN: 123456}, {Name: "other", Standby: true}, {Name: "relayed", Viewers: 9, Via: "edge-1"},
	}}
	got, err := decodeStreams(encodeStreams(in))
	if err != nil || !reflect.DeepEqual(got, in) {
		t.Fatalf("decode(encode(%+v)) = %+v, %v", in, got, err)
	}
	bad := encodeStreams(streamEntry{Node: "o", Seq: 1, Streams: []StreamLoad{{Name: "s"}}})
	bad[len(bad)-1] = 0x80
	if _, err := decodeStreams(bad); err == nil {
		t.Error("unknown stream flags decoded without error")
	}
}
