//go:build linux

package main

import (
	"strconv"
	"strings"
	"testing"
)

func TestParseHead(t *testing.T) {
	for _, c := range []struct {
		name, head string
		want       head
		err        bool
	}{
		{"plain", "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", head{200, 12, false}, false},
		{"no reason", "HTTP/1.1 404\r\ncontent-length:0\r\n\r\n", head{404, 0, false}, false},
		{"close", "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 3\r\n\r\n", head{503, 3, true}, false},
		{"1.0 keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", head{200, 1, false}, false},
		{"1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", head{200, 1, true}, false},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", head{204, 0, false}, false},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", head{}, true},
		{"no length", "HTTP/1.1 200 OK\r\n\r\n", head{}, true},
		{"bad length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", head{}, true},
		{"not http", "SSH-2.0-OpenSSH\r\n\r\n", head{}, true},
		{"bad status", "HTTP/1.1 2x0 OK\r\n\r\n", head{}, true},
	} {
		h, err := parseHead([]byte(c.head))
		if (err != nil) != c.err || (!c.err && h != c.want) {
			t.Errorf("%s: %+v %v, want %+v (error %v)", c.name, h, err, c.want, c.err)
		}
	}
}

func TestAppendDirectives(t *testing.T) {
	for _, c := range []struct{ path, want string }{
		{"/live/a/media.m3u8", "/live/a/media.m3u8?_HLS_msn=7&_HLS_part=2"},
		{"/live/a/media.m3u8?rmsid=ab", "/live/a/media.m3u8?rmsid=ab&_HLS_msn=7&_HLS_part=2"},
	} {
		if got := string(appendDirectives(nil, []byte(c.path), cursor{7, 2})); got != c.want {
			t.Errorf("%s: %s", c.path, got)
		}
	}
}

func TestResolveRef(t *testing.T) {
	for _, c := range []struct{ base, ref, want string }{
		{"/live/a/index.m3u8", "media.m3u8?rmsid=1", "/live/a/media.m3u8?rmsid=1"},
		{"/live/a/media.m3u8?rmsid=1&x=/y", "part3.m4s", "/live/a/part3.m4s"},
		{"/live/a/index.m3u8", "/other/media.m3u8", "/other/media.m3u8"},
	} {
		if got := string(resolveRef(nil, []byte(c.base), []byte(c.ref))); got != c.want {
			t.Errorf("%s + %s: %s", c.base, c.ref, got)
		}
	}
}

// A response is parsed the same however the connection splits it.
func TestRespReaderSplits(t *testing.T) {
	body := strings.Repeat("0123456789", 500)
	resp := "HTTP/1.1 200 OK\r\nContent-Type: video/mp4\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	for _, keep := range []bool{true, false} {
		for cut := 1; cut < len(resp); cut += 7 {
			for _, size := range []int{1, 3, 4096} {
				var r respReader
				r.reset(keep)
				done, err := r.feed([]byte(resp[:cut]))
				for off := cut; err == nil && !done; off += size {
					done, err = r.feed([]byte(resp[off:min(off+size, len(resp))]))
				}
				if err != nil || !done || r.h.status != 200 || r.n != int64(len(body)) || (keep && string(r.body) != body) {
					t.Fatalf("keep %v, first piece %d, then %d at a time: done %v err %v status %d n %d", keep, cut, size, done, err, r.h.status, r.n)
				}
			}
		}
	}
	var r respReader
	r.reset(false)
	if _, err := r.feed([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabc")); err == nil {
		t.Error("bytes past the body accepted")
	}
	r.reset(false)
	if _, err := r.feed([]byte("HTTP/1.1 200 OK\r\nX: " + strings.Repeat("y", maxHead))); err == nil {
		t.Error("endless head accepted")
	}
}
