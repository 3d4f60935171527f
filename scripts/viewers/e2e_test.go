package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeLive serves a live LL-HLS stream of fixed parts numbered from t0, as
// every relaymesh node numbers them alike: parts of pt, perSeg to a
// segment, the last six segments listed, parts for the last two complete
// ones and the open one, blocking reloads.
type fakeLive struct {
	t0     time.Time
	pt     time.Duration
	perSeg int
	down   atomic.Bool // drop every connection, as a node that died
	parts  atomic.Int64
}

func (f *fakeLive) avail() int { return int(time.Since(f.t0) / f.pt) }

// drop closes the connection without an answer.
func drop(w http.ResponseWriter) {
	if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
		c.Close()
	}
}

func (f *fakeLive) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.down.Load() {
		drop(w)
		return
	}
	name := path.Base(r.URL.Path)
	switch {
	case name == "media.m3u8":
		q := r.URL.Query()
		if q.Has("_HLS_msn") {
			msn, _ := strconv.Atoi(q.Get("_HLS_msn"))
			p, _ := strconv.Atoi(q.Get("_HLS_part"))
			want := msn*f.perSeg + min(p, f.perSeg)
			deadline := time.Now().Add(3 * time.Second)
			for f.avail() <= want {
				if f.down.Load() {
					drop(w)
					return
				}
				if time.Now().After(deadline) || r.Context().Err() != nil {
					http.Error(w, "timeout", http.StatusServiceUnavailable)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		w.Write(f.render())
	case name == "init.mp4":
		w.Write(make([]byte, 800))
	case strings.HasPrefix(name, "part"):
		n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "part"), ".m4s"))
		if err != nil || n >= f.avail() {
			http.NotFound(w, r)
			return
		}
		f.parts.Add(1)
		w.Write(make([]byte, 2500))
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeLive) render() []byte {
	avail := f.avail()
	complete, open := avail/f.perSeg, avail%f.perSeg
	first := max(complete-6, 0)
	pt := f.pt.Seconds()
	var b bytes.Buffer
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:%d\n", int(float64(f.perSeg)*pt+0.999))
	fmt.Fprintf(&b, "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=%.3f\n#EXT-X-PART-INF:PART-TARGET=%.3f\n", 3*pt, pt)
	fmt.Fprintf(&b, "#EXT-X-MEDIA-SEQUENCE:%d\n#EXT-X-MAP:URI=\"init.mp4\"\n", first)
	part := func(n int) {
		fmt.Fprintf(&b, "#EXT-X-PART:DURATION=%.3f,URI=\"part%d.m4s\"", pt, n)
		if n%f.perSeg == 0 {
			b.WriteString(",INDEPENDENT=YES")
		}
		b.WriteByte('\n')
	}
	for s := first; s < complete; s++ {
		if s >= complete-2 {
			for i := range f.perSeg {
				part(s*f.perSeg + i)
			}
		}
		fmt.Fprintf(&b, "#EXTINF:%.3f,\nseg%d.m4s\n", float64(f.perSeg)*pt, s)
	}
	for i := range open {
		part(complete*f.perSeg + i)
	}
	fmt.Fprintf(&b, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part%d.m4s\"\n", avail)
	return b.Bytes()
}

func host(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// runSwarm runs viewers against entry and returns the final report and
// every JSON object written.
func runSwarm(t *testing.T, cfg config) (report, []report) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration)
	defer cancel()
	var human, js bytes.Buffer
	final, err := newSwarm(cfg, nil).run(ctx, &human, &js)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stdout:\n%s", human.String())
	var all []report
	for _, line := range strings.Split(strings.TrimSpace(js.String()), "\n") {
		var r report
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("JSON line %q: %v", line, err)
		}
		all = append(all, r)
	}
	if len(all) == 0 || !all[len(all)-1].Final {
		t.Fatalf("the last JSON object is not the final one: %+v", all)
	}
	return final, all
}

// TestSwarmSteering: viewers arrive through a redirect, start on pathway
// a, are steered to b, then to a clone c of b on a third host.
func TestSwarmSteering(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds")
	}
	t0 := time.Now().Add(-2 * time.Second)
	var edges [3]*httptest.Server
	var lives [3]*fakeLive
	for i := range edges {
		lives[i] = &fakeLive{t0: t0, pt: 100 * time.Millisecond, perSeg: 4}
		edges[i] = httptest.NewServer(lives[i])
		defer edges[i].Close()
	}
	start := time.Now()
	var mu sync.Mutex
	seen := map[string]int{} // _HLS_pathway values
	badThroughput := 0
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/entry":
			http.Redirect(w, r, "/live/index.m3u8", http.StatusFound)
		case "/live/index.m3u8":
			fmt.Fprintf(w, "#EXTM3U\n#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steer?_HLS_pathway=x\",PATHWAY-ID=\"a\"\n")
			for i, id := range []string{"a", "b"} {
				fmt.Fprintf(w, "#EXT-X-STREAM-INF:BANDWIDTH=200000,PATHWAY-ID=\"%s\",STABLE-VARIANT-ID=\"main\"\n%s/live/media.m3u8?rmsid=%d\n", id, edges[i].URL, i)
			}
		case "/steer":
			q := r.URL.Query()
			mu.Lock()
			seen[q.Get("_HLS_pathway")]++
			if _, err := strconv.ParseInt(q.Get("_HLS_throughput"), 10, 32); err != nil || len(q["_HLS_pathway"]) != 1 {
				badThroughput++
			}
			mu.Unlock()
			prio := `["a","b"]`
			switch el := time.Since(start); {
			case el > 2500*time.Millisecond:
				prio = `["c","b","a"]`
			case el > 1200*time.Millisecond:
				prio = `["b","a"]`
			}
			fmt.Fprintf(w, `{"VERSION":1,"TTL":1,"PATHWAY-PRIORITY":%s,"PATHWAY-CLONES":[{"BASE-ID":"b","ID":"c","URI-REPLACEMENT":{"HOST":%q,"PARAMS":{"k":"v"}}}]}`, prio, host(edges[2]))
		default:
			http.NotFound(w, r)
		}
	}))
	defer origin.Close()

	const n = 6
	final, all := runSwarm(t, config{entry: origin.URL + "/entry", start: 2, viewers: n, ramp: time.Second,
		duration: 4500 * time.Millisecond, report: 500 * time.Millisecond, seed: 1})

	if final.Viewers != n || final.Redirects != n || final.Sheds != 0 || !final.EntryAnswered {
		t.Errorf("viewers %d redirects %d sheds %d answered %v", final.Viewers, final.Redirects, final.Sheds, final.EntryAnswered)
	}
	if final.MediaErrors != 0 || final.Skipped != 0 || final.SteerErrors != 0 || final.Penalties != 0 {
		t.Errorf("media errors %d skipped %d steering errors %d penalties %d", final.MediaErrors, final.Skipped, final.SteerErrors, final.Penalties)
	}
	if final.Steered != 2*n || final.Switches != 2*n {
		t.Errorf("steered switches %d, switches %d, want %d (a to b, b to c)", final.Steered, final.Switches, 2*n)
	}
	if final.StallS > 0.5 {
		t.Errorf("stalled %.2f s in all", final.StallS)
	}
	if final.Hosts[host(edges[2])] != n || final.PeakPerHost != n {
		t.Errorf("at the end hosts = %v, peak per host %d; want all %d on the clone's host", final.Hosts, final.PeakPerHost, n)
	}
	for i, e := range edges {
		ms, ok := final.FirstPartMS[host(e)]
		if !ok || ms < start.UnixMilli() || ms > time.Now().UnixMilli() {
			t.Errorf("first_part_ms of edge %d: %d %v", i, ms, ok)
		}
		if lives[i].parts.Load() == 0 {
			t.Errorf("edge %d served no parts", i)
		}
	}
	if final.FirstPartMS[host(edges[0])] > final.FirstPartMS[host(edges[1])] || final.FirstPartMS[host(edges[1])] > final.FirstPartMS[host(edges[2])] {
		t.Errorf("first parts out of order: %v", final.FirstPartMS)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen["a"] < n || seen["b"] < n || seen["x"] != 0 || badThroughput != 0 {
		t.Errorf("_HLS_pathway seen %v, bad _HLS_throughput %d", seen, badThroughput)
	}
	if len(all) < 8 {
		t.Errorf("%d JSON objects for a 4.5 s run reported every 0.5 s", len(all))
	}
}

// TestSwarmFailover: entry sheds first; a node dies and its viewers move
// to the other pathway at once (a connection error is not retried); a 429
// from the steering server ends each viewer's steering.
func TestSwarmFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds")
	}
	t0 := time.Now().Add(-2 * time.Second)
	var edges [2]*httptest.Server
	var lives [2]*fakeLive
	for i := range edges {
		lives[i] = &fakeLive{t0: t0, pt: 100 * time.Millisecond, perSeg: 4}
		edges[i] = httptest.NewServer(lives[i])
		defer edges[i].Close()
	}
	var mu sync.Mutex
	entries, viewerN := 0, 0
	steerLoads := map[string]int{}
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/live/index.m3u8":
			entries++
			if entries <= 3 {
				w.Header().Set("Retry-After", "0")
				http.Error(w, "full", http.StatusServiceUnavailable)
				return
			}
			viewerN++
			fmt.Fprintf(w, "#EXTM3U\n#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steer?v=%d\",PATHWAY-ID=\"a\"\n", viewerN)
			for i, id := range []string{"a", "b"} {
				fmt.Fprintf(w, "#EXT-X-STREAM-INF:BANDWIDTH=200000,PATHWAY-ID=\"%s\"\n%s/live/media.m3u8\n", id, edges[i].URL)
			}
		case "/steer":
			v := r.URL.Query().Get("v")
			steerLoads[v]++
			if steerLoads[v] > 1 {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "slow down", http.StatusTooManyRequests)
				return
			}
			fmt.Fprint(w, `{"VERSION":1,"TTL":1,"PATHWAY-PRIORITY":["a","b"]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer origin.Close()

	go func() {
		time.Sleep(1500 * time.Millisecond)
		lives[0].down.Store(true)
	}()
	const n = 5
	final, _ := runSwarm(t, config{entry: origin.URL + "/live/index.m3u8", start: n, viewers: n,
		duration: 3500 * time.Millisecond, report: time.Second, seed: 1})

	if final.Sheds != 3 || final.Viewers != n {
		t.Errorf("sheds %d viewers %d, want 3 %d", final.Sheds, final.Viewers, n)
	}
	if final.Steer429 != n || final.SteerLoads != n || final.SteerStopped != n {
		t.Errorf("429 stops %d, good loads %d, stopped %d; want %d each", final.Steer429, final.SteerLoads, final.SteerStopped, n)
	}
	if final.Hosts[host(edges[1])] != n {
		t.Errorf("at the end hosts = %v, want all %d on b", final.Hosts, n)
	}
	if final.Penalties < n || final.Switches != n || final.MediaErrors < n {
		t.Errorf("penalties %d switches %d media errors %d, want >= %d, %d, >= %d", final.Penalties, final.Switches, final.MediaErrors, n, n, n)
	}
	if final.StallS > 0.5*n {
		t.Errorf("stalled %.2f s in all", final.StallS)
	}
}

func TestArrivals(t *testing.T) {
	none := func() float64 { return 0 }
	got := arrivals(2, 6, 4*time.Second, none)
	want := []time.Duration{0, 0, time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("arrivals = %v, want %v", got, want)
	}
	if got := arrivals(3, 3, time.Second, none); fmt.Sprint(got) != "[0s 0s 0s]" {
		t.Errorf("no ramp: %v", got)
	}
	if got := arrivals(0, 2, 0, none); fmt.Sprint(got) != "[0s 0s]" {
		t.Errorf("zero ramp: %v", got)
	}
	// Jitter stays within the ramp and half a gap.
	j := []float64{-0.5, 0.49}
	i := 0
	got = arrivals(0, 2, 2*time.Second, func() float64 { i++; return j[i-1] })
	if fmt.Sprint(got) != "[500ms 2s]" {
		t.Errorf("jittered: %v", got)
	}
}

func TestRetryAfterDelay(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		h    string
		want time.Duration
	}{
		{"", time.Second},
		{"3", 3 * time.Second},
		{"0", minRetryAfter},
		{"3600", maxRetryAfter},
		{now.Add(5 * time.Second).Format(http.TimeFormat), 5 * time.Second},
		{"soon", time.Second},
	}
	for _, tc := range tests {
		if got := retryAfterDelay(tc.h, now); got != tc.want {
			t.Errorf("retryAfterDelay(%q) = %v, want %v", tc.h, got, tc.want)
		}
	}
}

func TestDirectives(t *testing.T) {
	got, err := directives("http://e:1/live/bench/media.m3u8?rmsid=abc&_HLS_msn=1", cursor{42, 3}, true)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(got)
	q := u.Query()
	if q.Get("rmsid") != "abc" || q.Get("_HLS_msn") != "42" || q.Get("_HLS_part") != "3" || q.Get("_HLS_skip") != "YES" || len(q["_HLS_msn"]) != 1 {
		t.Errorf("directives: %s", got)
	}
}
