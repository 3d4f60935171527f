//go:build linux

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeLive is a live LL-HLS stream cut in real time: a part every
// partDur, perSeg parts a segment, the last three segments listed, with
// blocking reload. It records the parts each connection fetched.
type fakeLive struct {
	partDur time.Duration
	perSeg  int

	mu      sync.Mutex
	cut     int // parts cut so far
	changed chan struct{}
	fetched map[string][]int // remote address -> part numbers
	queries []string
}

func newFakeLive(t *testing.T, partDur time.Duration, perSeg int) (*fakeLive, *httptest.Server) {
	f := &fakeLive{partDur: partDur, perSeg: perSeg, cut: 2 * perSeg, changed: make(chan struct{}), fetched: map[string][]int{}}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		tk := time.NewTicker(partDur)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				f.mu.Lock()
				f.cut++
				close(f.changed)
				f.changed = make(chan struct{})
				f.mu.Unlock()
			}
		}
	}()
	srv := httptest.NewServer(f)
	t.Cleanup(func() { srv.Close(); cancel() })
	return f, srv
}

func (f *fakeLive) render(n int) []byte {
	var b bytes.Buffer
	open := n / f.perSeg
	first := max(open-2, 0)
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:1\n#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=%.3f\n", 3*f.partDur.Seconds())
	fmt.Fprintf(&b, "#EXT-X-PART-INF:PART-TARGET=%.3f\n#EXT-X-MEDIA-SEQUENCE:%d\n#EXT-X-MAP:URI=\"init1.mp4\"\n", f.partDur.Seconds(), first)
	for msn := first; msn <= open; msn++ {
		for k := msn * f.perSeg; k < min((msn+1)*f.perSeg, n); k++ {
			fmt.Fprintf(&b, "#EXT-X-PART:DURATION=%.3f,URI=\"part%d.m4s\"\n", f.partDur.Seconds(), k)
		}
		if msn < open {
			fmt.Fprintf(&b, "#EXTINF:%.3f,\nseg%d.m4s\n", float64(f.perSeg)*f.partDur.Seconds(), msn)
		}
	}
	fmt.Fprintf(&b, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part%d.m4s\"\n", n)
	return b.Bytes()
}

func (f *fakeLive) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	var body []byte
	switch {
	case name == "index.m3u8":
		body = []byte("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nmedia.m3u8?rmsid=s1\n")
	case name == "media.m3u8":
		f.mu.Lock()
		f.queries = append(f.queries, r.URL.RawQuery)
		f.mu.Unlock()
		if m := r.URL.Query().Get("_HLS_msn"); m != "" {
			msn, _ := strconv.Atoi(m)
			idx, _ := strconv.Atoi(r.URL.Query().Get("_HLS_part"))
			deadline := time.After(2 * time.Second)
			for {
				f.mu.Lock()
				ok, ch := f.cut > msn*f.perSeg+idx, f.changed
				f.mu.Unlock()
				if ok {
					break
				}
				select {
				case <-ch:
				case <-deadline:
					http.Error(w, "late", http.StatusServiceUnavailable)
					return
				}
			}
		}
		f.mu.Lock()
		body = f.render(f.cut)
		f.mu.Unlock()
	case name == "init1.mp4":
		body = []byte("init")
	case strings.HasPrefix(name, "part"):
		k, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "part"), ".m4s"))
		f.mu.Lock()
		ok := err == nil && k < f.cut
		if ok {
			f.fetched[r.RemoteAddr] = append(f.fetched[r.RemoteAddr], k)
		}
		f.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		body = make([]byte, 3000)
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

func testConfig(t *testing.T, srv *httptest.Server, m mode) *config {
	cfg, err := parseFlags([]string{"-url", srv.URL + "/live/s/index.m3u8", "-steps", "3", "-spread", "100ms",
		"-settle", "400ms", "-hold", "1s", "-baseline", "0", "-server-pids", strconv.Itoa(os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	cfg.mode = m
	return cfg
}

func TestPlaysLive(t *testing.T) {
	for _, m := range []mode{modeLLHLS, modePoll} {
		t.Run(map[mode]string{modeLLHLS: "llhls", modePoll: "poll"}[m], func(t *testing.T) {
			// 200 ms parts, as relaymesh cuts them: the 600 ms hold-back
			// rides out a loaded machine's scheduling pauses.
			f, srv := newFakeLive(t, 200*time.Millisecond, 4)
			var out bytes.Buffer
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			if err := runRamp(context.Background(), testConfig(t, srv, m), log, &out); err != nil {
				t.Fatal(err)
			}
			t.Log(out.String())
			if !strings.Contains(out.String(), "held=3 stop=max") || !strings.Contains(out.String(), " stalls=0 ") {
				t.Errorf("want 3 viewers held without stalls:\n%s", out.String())
			}
			f.mu.Lock()
			defer f.mu.Unlock()
			if len(f.fetched) != 3 {
				t.Fatalf("%d connections fetched parts, want 3", len(f.fetched))
			}
			for addr, ks := range f.fetched {
				for i := 1; i < len(ks); i++ {
					if ks[i] != ks[i-1]+1 {
						t.Errorf("%s fetched parts %v: not every part in order", addr, ks)
						break
					}
				}
				if len(ks) < 5 {
					t.Errorf("%s fetched %d parts in at least 1.5 s of 200 ms parts", addr, len(ks))
				}
			}
			blocking := 0
			for _, q := range f.queries {
				if !strings.HasPrefix(q, "rmsid=s1") {
					t.Fatalf("the session query was lost: %q", q)
				}
				if strings.Contains(q, "_HLS_msn=") {
					blocking++
				}
			}
			if (m == modeLLHLS) != (blocking > 0) {
				t.Errorf("%d blocking reloads of %d", blocking, len(f.queries))
			}
		})
	}
}

func TestMirror(t *testing.T) {
	f, srv := newFakeLive(t, 40*time.Millisecond, 4)
	dir := t.TempDir()
	cfg, err := parseFlags([]string{"-url", srv.URL + "/live/s/index.m3u8", "-mode", "mirror", "-dir", dir})
	if err != nil {
		t.Fatal(err)
	}
	// Run until the mirror has followed five blocking reloads past the
	// first listing (8 parts), however slow this machine is today.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runMirror(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))) }()
	var media []byte
	var l listing
	deadline := time.Now().Add(20 * time.Second)
	for {
		media, _ = os.ReadFile(filepath.Join(dir, "media.m3u8"))
		l = listing{}
		if len(media) > 0 {
			if err := scan(media, &l); err != nil {
				t.Fatalf("the mirrored playlist does not parse: %v\n%s", err, media)
			}
			if l.next.msn*4+uint64(l.next.idx) >= 13 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror did not follow the live playlist; it ends at %+v", l.next)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("runMirror returned %v, want context.Canceled", err)
	}
	// The mirror writes the playlist last, so the last one on disk lists
	// only parts that are already there.
	media, err = os.ReadFile(filepath.Join(dir, "media.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	l = listing{}
	if err := scan(media, &l); err != nil {
		t.Fatal(err)
	}
	index, _ := os.ReadFile(filepath.Join(dir, "index.m3u8"))
	if !bytes.HasSuffix(bytes.TrimSpace(index), []byte("\nmedia.m3u8")) {
		t.Errorf("index: %q", index)
	}
	if len(l.parts) == 0 {
		t.Fatalf("the mirrored playlist lists no parts:\n%s", media)
	}
	if !bytes.Equal(media, f.render(int(l.next.msn)*4+l.next.idx)) {
		t.Errorf("the mirrored playlist differs from the origin's")
	}
	for _, p := range append(l.parts, listedPart{uri: l.mapURI[0], end: l.mapURI[1]}) {
		if _, err := os.Stat(filepath.Join(dir, string(media[p.uri:p.end]))); err != nil {
			t.Errorf("listed but not on disk: %v", err)
		}
	}
}
