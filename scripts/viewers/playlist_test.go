package main

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestParseMultivariant(t *testing.T) {
	base := "http://origin:8080/live/bench/index.m3u8"
	tests := []struct {
		name     string
		body     string
		base     string
		want     []variant
		steering *steeringTag
		err      string
	}{
		{
			name: "relaymesh today: one variant, relative URI",
			body: "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n" +
				"#EXT-X-STREAM-INF:BANDWIDTH=800000,AVERAGE-BANDWIDTH=700000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=640x360\n" +
				"media.m3u8?rmsid=0123456789abcdef\n",
			want: []variant{{pathway: ".", bandwidth: 800000, uri: "http://origin:8080/live/bench/media.m3u8?rmsid=0123456789abcdef"}},
		},
		{
			name: "pathways, stable IDs, absolute and relative URIs, relative steering URI",
			body: "#EXTM3U\r\n" +
				"#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steer/bench.json?s=1\",PATHWAY-ID=\"edge-2\"\r\n" +
				"#EXT-X-STREAM-INF:BANDWIDTH=700000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=640x360,PATHWAY-ID=\"edge-1\",STABLE-VARIANT-ID=\"main\"\r\n" +
				"http://127.0.0.1:8081/live/bench/media.m3u8?rmsid=a\r\n" +
				"#EXT-X-STREAM-INF:BANDWIDTH=700000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=640x360,PATHWAY-ID=\"edge-2\",STABLE-VARIANT-ID=\"main\"\r\n" +
				"#a comment between the tag and its URI\r\n" +
				"\r\n" +
				"../other/media.m3u8?rmsid=b\r\n",
			want: []variant{
				{pathway: "edge-1", stableID: "main", bandwidth: 700000, uri: "http://127.0.0.1:8081/live/bench/media.m3u8?rmsid=a"},
				{pathway: "edge-2", stableID: "main", bandwidth: 700000, uri: "http://origin:8080/live/other/media.m3u8?rmsid=b"},
			},
			steering: &steeringTag{uri: "http://origin:8080/steer/bench.json?s=1", pathway: "edge-2"},
		},
		{
			name: "steering tag without PATHWAY-ID, variant without one",
			body: "#EXTM3U\n#EXT-X-CONTENT-STEERING:SERVER-URI=\"https://s.example/x\"\n" +
				"#EXT-X-STREAM-INF:BANDWIDTH=1\nhttp://a/m.m3u8\n",
			want:     []variant{{pathway: ".", bandwidth: 1, uri: "http://a/m.m3u8"}},
			steering: &steeringTag{uri: "https://s.example/x", pathway: "."},
		},
		{
			name: "resolved against the final URL after a redirect",
			base: "http://127.0.0.1:8082/live/bench/index.m3u8",
			body: "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nmedia.m3u8\n",
			want: []variant{{pathway: ".", bandwidth: 1, uri: "http://127.0.0.1:8082/live/bench/media.m3u8"}},
		},
		{
			name: "a media playlist as the entry",
			base: "http://e/live/x/media.m3u8",
			body: "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg1.m4s\n",
			want: []variant{{pathway: ".", uri: "http://e/live/x/media.m3u8"}},
		},
		{name: "not a playlist", body: "<html>", err: "EXTM3U"},
		{name: "no variants", body: "#EXTM3U\n#EXT-X-VERSION:6\n", err: "no variants"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := base
			if tc.base != "" {
				b = tc.base
			}
			m, err := parseMultivariant(tc.body, mustURL(t, b))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.variants, tc.want) {
				t.Errorf("variants\n got %+v\nwant %+v", m.variants, tc.want)
			}
			if !reflect.DeepEqual(m.steering, tc.steering) {
				t.Errorf("steering = %+v, want %+v", m.steering, tc.steering)
			}
		})
	}
}

// livePlaylist is what relaymesh's edge renders: segments 40 and 41
// complete (parts listed for 41 only), segment 42 open with two parts.
const livePlaylist = `#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,PART-HOLD-BACK=0.600,HOLD-BACK=6.000
#EXT-X-PART-INF:PART-TARGET=0.200
#EXT-X-MEDIA-SEQUENCE:40
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-MAP:URI="init1.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00.000Z
#EXTINF:2.000,
seg40.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:02.000Z
#EXT-X-PART:DURATION=0.200,URI="part410.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI="part411.m4s"
#EXT-X-PART:DURATION=0.200,URI="part412.m4s"
#EXT-X-PART:DURATION=0.200,URI="part413.m4s"
#EXTINF:0.800,
seg41.m4s
#EXT-X-MAP:URI="init2.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:02.800Z
#EXT-X-PART:DURATION=0.200,URI="part414.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.200,URI="part415.m4s"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part416.m4s"
`

func TestParseMedia(t *testing.T) {
	pl, err := parseMedia(livePlaylist)
	if err != nil {
		t.Fatal(err)
	}
	if pl.targetDuration != 2 || pl.partTarget != 0.2 || pl.partHoldBack != 0.6 || !pl.canBlock ||
		pl.canSkipUntil != 12 || pl.mediaSequence != 40 || pl.preloadHint != "part416.m4s" || pl.endList {
		t.Errorf("header fields: %+v", pl)
	}
	type seg struct {
		msn       uint64
		uri, map_ string
		dur       float64
		parts     []string
	}
	var got []seg
	for _, s := range pl.segments {
		g := seg{msn: s.msn, uri: s.uri, map_: s.mapURI, dur: s.duration}
		for _, p := range s.parts {
			u := p.uri
			if p.independent {
				u += "*"
			}
			g.parts = append(g.parts, u)
		}
		got = append(got, g)
	}
	want := []seg{
		{40, "seg40.m4s", "init1.mp4", 2, nil},
		{41, "seg41.m4s", "init1.mp4", 0.8, []string{"part410.m4s*", "part411.m4s", "part412.m4s", "part413.m4s"}},
		{42, "", "init2.mp4", 0, []string{"part414.m4s*", "part415.m4s"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("segments\n got %+v\nwant %+v", got, want)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if s := pl.segments; !s[0].pdt.Equal(t0) || !s[1].pdt.Equal(t0.Add(2*time.Second)) || !s[2].pdt.Equal(t0.Add(2800*time.Millisecond)) ||
		!s[1].partStart(2).Equal(t0.Add(2400*time.Millisecond)) {
		t.Errorf("PROGRAM-DATE-TIMEs %v %v %v, part 2 of seg41 at %v", s[0].pdt, s[1].pdt, s[2].pdt, s[1].partStart(2))
	}
	// A segment without its own date follows on from the previous one's.
	noDate, err := parseMedia("#EXTM3U\n#EXT-X-PROGRAM-DATE-TIME:2026-01-01T00:00:00Z\n#EXTINF:2,\ns1\n#EXTINF:2,\ns2\n")
	if err != nil || !noDate.segments[1].pdt.Equal(t0.Add(2*time.Second)) {
		t.Errorf("extrapolated date: %v, %v", noDate, err)
	}

	delta, err := parseMedia("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:40\n#EXT-X-SKIP:SKIPPED-SEGMENTS=5\n" +
		"#EXTINF:2,\nseg45.m4s\n#EXT-X-PART:DURATION=0.2,URI=\"p\"\n#EXT-X-ENDLIST\n")
	if err != nil {
		t.Fatal(err)
	}
	if delta.firstMSN() != 45 || len(delta.segments) != 2 || delta.segments[0].msn != 45 || delta.segments[1].msn != 46 || !delta.endList {
		t.Errorf("delta update: %+v", delta)
	}

	for _, bad := range []string{"#EXT-X-TARGETDURATION:2", "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x\n", "#EXTM3U\n#EXT-X-PART:DURATION=0.2\n", "#EXTM3U\n#EXTINF:abc,\nx\n"} {
		if _, err := parseMedia(bad); err == nil {
			t.Errorf("parseMedia(%q) accepted", bad)
		}
	}
}

func TestLocate(t *testing.T) {
	pl, err := parseMedia(livePlaylist)
	if err != nil {
		t.Fatal(err)
	}
	ended, _ := parseMedia(strings.Replace(livePlaylist, "#EXT-X-PRELOAD-HINT", "#EXT-X-ENDLIST\n#X", 1))
	delta, _ := parseMedia(strings.Replace(livePlaylist, "#EXT-X-MEDIA-SEQUENCE:40", "#EXT-X-MEDIA-SEQUENCE:38\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2", 1))
	tests := []struct {
		pl   *mediaPlaylist
		c    cursor
		want where
		uri  string // of the part or segment
	}{
		{pl, cursor{39, 0}, atBehind, ""},
		{pl, cursor{40, 0}, atSegment, "seg40.m4s"},
		{pl, cursor{40, 3}, atSegment, "seg40.m4s"},
		{pl, cursor{41, 0}, atPart, "part410.m4s"},
		{pl, cursor{41, 3}, atPart, "part413.m4s"},
		{pl, cursor{41, 4}, atNextSegment, ""},
		{pl, cursor{42, 1}, atPart, "part415.m4s"},
		{pl, cursor{42, 2}, atWait, ""}, // the preload hint
		{pl, cursor{43, 0}, atWait, ""},
		{ended, cursor{42, 2}, atEnd, ""},
		{ended, cursor{43, 0}, atEnd, ""},
		{delta, cursor{39, 0}, atSkipped, ""},
		{delta, cursor{37, 0}, atBehind, ""},
		{delta, cursor{41, 2}, atPart, "part412.m4s"},
	}
	for _, tc := range tests {
		w, s := tc.pl.locate(tc.c)
		uri := ""
		switch w {
		case atPart:
			uri = s.parts[tc.c.idx].uri
		case atSegment:
			uri = s.uri
		}
		if w != tc.want || uri != tc.uri {
			t.Errorf("locate(%v) = %v %q, want %v %q", tc.c, w, uri, tc.want, tc.uri)
		}
	}
}

// TestPartWalk follows the cursor as playback does, across a segment
// boundary, the way _HLS_msn/_HLS_part number parts.
func TestPartWalk(t *testing.T) {
	pl, err := parseMedia(livePlaylist)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	c := cursor{41, 1}
	for range 10 {
		w, s := pl.locate(c)
		switch w {
		case atPart:
			got = append(got, s.parts[c.idx].uri)
			c.idx++
			continue
		case atNextSegment:
			c = cursor{c.msn + 1, 0}
			continue
		}
		break
	}
	want := []string{"part411.m4s", "part412.m4s", "part413.m4s", "part414.m4s", "part415.m4s"}
	if !reflect.DeepEqual(got, want) || c != (cursor{42, 2}) {
		t.Errorf("walk = %v ending at %v, want %v ending at {42 2}", got, c, want)
	}
}

func TestStartCursor(t *testing.T) {
	tests := []struct {
		name string
		body string
		want cursor
		ok   bool
	}{
		{"3 parts back, moved back to the segment's independent part", livePlaylist, cursor{41, 0}, true},
		{
			"3 parts back is the open segment's independent part",
			strings.Replace(livePlaylist, "#EXT-X-PRELOAD-HINT", "#EXT-X-PART:DURATION=0.2,URI=\"part416.m4s\"\n#EXT-X-PRELOAD-HINT", 1),
			cursor{42, 0}, true,
		},
		{
			"PART-HOLD-BACK of five parts",
			strings.Replace(livePlaylist, "PART-HOLD-BACK=0.600", "PART-HOLD-BACK=1.0", 1),
			cursor{41, 0}, true,
		},
		{
			"no INDEPENDENT at all: the computed part",
			strings.ReplaceAll(livePlaylist, ",INDEPENDENT=YES", ""),
			cursor{41, 3}, true,
		},
		{
			"no independent part before it: the next one",
			strings.Replace(strings.Replace(livePlaylist, "part410.m4s\",INDEPENDENT=YES", "part410.m4s\"", 1), "PART-HOLD-BACK=0.600", "PART-HOLD-BACK=1.0", 1),
			cursor{42, 0}, true,
		},
		{
			"no parts: three segments back",
			"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2,\na\n#EXTINF:2,\nb\n#EXTINF:2,\nc\n#EXTINF:2,\nd\n",
			cursor{8, 0}, true,
		},
		{"empty", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n", cursor{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pl, err := parseMedia(tc.body)
			if err != nil {
				t.Fatal(err)
			}
			got, ok := pl.startCursor()
			if got != tc.want || ok != tc.ok {
				t.Errorf("startCursor = %v %v, want %v %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestPartsBetween(t *testing.T) {
	pl, err := parseMedia(livePlaylist)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		a, b cursor
		want int
	}{
		{cursor{41, 1}, cursor{41, 3}, 2},
		{cursor{41, 1}, cursor{42, 1}, 4},          // 3 left in 41, one in 42
		{cursor{40, 0}, cursor{41, 0}, 10},         // seg40 has no parts listed: 2 s / 0.2 s
		{cursor{38, 2}, cursor{41, 0}, 2 + 4 + 10}, // gone segments count as the complete ones (4 parts)
		{cursor{42, 1}, cursor{41, 0}, 0},
	}
	for _, tc := range tests {
		if got := pl.partsBetween(tc.a, tc.b); got != tc.want {
			t.Errorf("partsBetween(%v, %v) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestEachAttr(t *testing.T) {
	var got []string
	eachAttr(`BANDWIDTH=1,CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=640x360, PATHWAY-ID="a=b",LAST`, func(k, v string) {
		got = append(got, k+"|"+v)
	})
	want := []string{"BANDWIDTH|1", "CODECS|avc1.64001f,mp4a.40.2", "RESOLUTION|640x360", "PATHWAY-ID|a=b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
