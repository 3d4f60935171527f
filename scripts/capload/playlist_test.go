//go:build linux

package main

import (
	"strings"
	"testing"
	"time"
)

const livePlaylist = `#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,PART-HOLD-BACK=0.606,HOLD-BACK=6.000
#EXT-X-PART-INF:PART-TARGET=0.202
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-MAP:URI="init1.mp4"
#EXT-X-PROGRAM-DATE-TIME:2026-11-29T03:41:37.734Z
#EXTINF:1.000,
seg7.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-29T03:41:38.500Z
#EXT-X-PART:DURATION=0.200,URI="part40.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.1995,URI="part41.m4s"
#EXTINF:0.400,
seg8.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-29T03:41:39.471Z
#EXT-X-PART:DURATION=0.200,URI="part42.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part43.m4s"
`

func TestScan(t *testing.T) {
	var l listing
	if err := scan([]byte(livePlaylist), &l); err != nil {
		t.Fatal(err)
	}
	want := []struct {
		at  cursor
		dur time.Duration
		uri string
	}{
		{cursor{8, 0}, 200 * time.Millisecond, "part40.m4s"},
		{cursor{8, 1}, 199500 * time.Microsecond, "part41.m4s"},
		{cursor{9, 0}, 200 * time.Millisecond, "part42.m4s"},
	}
	if len(l.parts) != len(want) {
		t.Fatalf("%d parts, want %d", len(l.parts), len(want))
	}
	for i, w := range want {
		p := l.parts[i]
		if p.at != w.at || p.dur != w.dur || livePlaylist[p.uri:p.end] != w.uri {
			t.Errorf("part %d: %+v %q, want %+v", i, p, livePlaylist[p.uri:p.end], w)
		}
	}
	if l.next != (cursor{9, 1}) {
		t.Errorf("next %+v, want 9/1", l.next)
	}
	if l.partTarget != 202*time.Millisecond {
		t.Errorf("part target %v", l.partTarget)
	}
	if livePlaylist[l.mapURI[0]:l.mapURI[1]] != "init1.mp4" || l.endList {
		t.Errorf("map %v end %v", l.mapURI, l.endList)
	}

	// A segment that just completed: the next part opens the next one.
	done := livePlaylist[:len(livePlaylist)-len("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part43.m4s\"\n")] +
		"#EXTINF:0.200,\nseg9.m4s\n#EXT-X-ENDLIST\n"
	if err := scan([]byte(done), &l); err != nil {
		t.Fatal(err)
	}
	if l.next != (cursor{10, 0}) || !l.endList {
		t.Errorf("completed: next %+v end %v", l.next, l.endList)
	}
}

func TestScanRejects(t *testing.T) {
	for _, body := range []string{
		"",
		"<html>",
		"#EXTM3U\n#EXT-X-PART:URI=\"p.m4s\"\n",
		"#EXTM3U\n#EXT-X-PART:DURATION=0.2\n",
		"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:x\n",
		"#EXTM3U\n#EXT-X-SKIP:SKIPPED-SEGMENTS=3\n",
	} {
		var l listing
		if scan([]byte(body), &l) == nil {
			t.Errorf("%q: accepted", body)
		}
	}
}

func TestAttrSeconds(t *testing.T) {
	for _, c := range []struct {
		line string
		want time.Duration
		ok   bool
	}{
		{"#EXT-X-PART:DURATION=0.200,URI=\"a\"", 200 * time.Millisecond, true},
		{"#EXT-X-PART:URI=\"a\",DURATION=1", time.Second, true},
		{"#EXT-X-PART:DURATION=2.0000005", 2 * time.Second, true},
		{"#EXT-X-PART:X-DURATION=3,DURATION=0.1", 100 * time.Millisecond, true},
		{"#EXT-X-PART:X-DURATION=3", 0, false},
		{"#EXT-X-PART:DURATION=.", 0, false},
		{"#EXT-X-PART:DURATION=", 0, false},
	} {
		got, ok := attrSeconds([]byte(c.line), attrDur)
		if got != c.want || ok != c.ok {
			t.Errorf("%q: %v %v, want %v %v", c.line, got, ok, c.want, c.ok)
		}
	}
}

func TestLocate(t *testing.T) {
	var l listing
	if err := scan([]byte(livePlaylist), &l); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		pos  cursor
		w    where
		i    int
	}{
		{"listed", cursor{8, 1}, atPart, 1},
		{"first listed", cursor{8, 0}, atPart, 0},
		{"past a completed segment", cursor{8, 2}, atPart, 2},
		{"the part after the last", cursor{9, 1}, atWait, 3},
		{"further ahead", cursor{12, 0}, atWait, 3},
		{"the part before the first, a segment earlier", cursor{7, 5}, atPart, 0},
		{"behind the window", cursor{6, 2}, atBehind, 0},
		{"behind within the first segment", cursor{7, 0}, atBehind, 0},
	} {
		w, i := locate(&l, c.pos)
		if w != c.w || i != c.i {
			t.Errorf("%s: %v %d, want %v %d", c.name, w, i, c.w, c.i)
		}
	}
	var empty listing
	if w, _ := locate(&empty, cursor{1, 0}); w != atWait {
		t.Errorf("empty listing: %v", w)
	}
}

// The viewer's hot loop, response bytes to parsed playlist and the next
// request, allocates nothing once its buffers have grown.
func TestHotLoopAllocs(t *testing.T) {
	body := livePlaylist
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.apple.mpegurl\r\nContent-Length: " +
		itoa(len(body)) + "\r\n\r\n" + body)
	part := []byte("HTTP/1.1 200 OK\r\ncontent-length: 40000\r\n\r\n" + string(make([]byte, 40000)))
	cfg := &config{mode: modeLLHLS, timeout: time.Second, blockTimeout: time.Second}
	var c counters
	v := &viewer{st: stReload, media: []byte("/live/bench/media.m3u8?rmsid=1"), path: make([]byte, 0, 256)}
	v.rr.body = make([]byte, 0, 4096)
	req := make([]byte, 0, 512)
	host := []byte("127.0.0.1:8080")
	now := time.Now()
	run := func() {
		v.st = stReload
		v.pos = cursor{9, 0}
		v.rr.reset(true)
		if done, err := v.rr.feed(resp); !done || err != nil {
			t.Fatal(done, err)
		}
		a, err := v.complete(cfg, &c, now)
		if err != nil || a.st != stPart {
			t.Fatal(a, err)
		}
		req = appendRequest(req[:0], a.path, host)
		v.st = stPart
		v.rr.reset(false)
		// A part in two reads.
		v.rr.feed(part[:1000])
		if done, err := v.rr.feed(part[1000:]); !done || err != nil {
			t.Fatal(done, err)
		}
		if a, err = v.complete(cfg, &c, now); err != nil || a.st != stReload {
			t.Fatal(a, err)
		}
		req = appendRequest(req[:0], a.path, host)
	}
	run()
	if got := string(req); !strings.HasPrefix(got, "GET /live/bench/media.m3u8?rmsid=1&_HLS_msn=9&_HLS_part=1 HTTP/1.1\r\n") {
		t.Fatalf("request %q", got)
	}
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("%v allocations per playlist and part", n)
	}
}

func itoa(n int) string { return string(appendInt(nil, n)) }

func appendInt(b []byte, n int) []byte {
	if n >= 10 {
		b = appendInt(b, n/10)
	}
	return append(b, byte('0'+n%10))
}
