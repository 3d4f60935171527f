package main

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

func TestLifetime(t *testing.T) {
	tests := []struct {
		mean time.Duration
		e    float64
		want time.Duration
	}{
		{0, 1, 0}, // no churn
		{-time.Second, 1, 0},
		{60 * time.Second, 1, 60 * time.Second},
		{60 * time.Second, 0.5, 30 * time.Second},
		{60 * time.Second, 3, 180 * time.Second},
		{60 * time.Second, 0, time.Millisecond}, // at least a millisecond
	}
	for _, tc := range tests {
		if got := lifetime(tc.mean, tc.e); got != tc.want {
			t.Errorf("lifetime(%v, %v) = %v, want %v", tc.mean, tc.e, got, tc.want)
		}
	}
	// Drawn as the swarm draws them, lifetimes average the mean.
	rng := rand.New(rand.NewPCG(1, 1))
	const n = 50_000
	var sum time.Duration
	for range n {
		sum += lifetime(time.Minute, rng.ExpFloat64())
	}
	if avg := sum / n; avg < 58*time.Second || avg > 62*time.Second {
		t.Errorf("mean of %d lifetimes = %v, want about 1m", n, avg)
	}
}

func TestCheckLifetime(t *testing.T) {
	for _, tc := range []struct {
		lifetime time.Duration
		ok       bool
	}{
		{0, true},
		{time.Minute, true},
		{100 * time.Millisecond, true},
		{50 * time.Millisecond, false},
		{-time.Second, false},
	} {
		c := config{entry: "http://127.0.0.1:1/live/index.m3u8", start: 1, viewers: 1, duration: time.Second, report: time.Second, lifetime: tc.lifetime}
		if err := c.check(); (err == nil) != tc.ok {
			t.Errorf("-lifetime %v: check() = %v, want ok %v", tc.lifetime, err, tc.ok)
		}
	}
}

// connCounter counts a server's open connections.
type connCounter struct {
	mu         sync.Mutex
	open, peak int
}

func (c *connCounter) hook(_ net.Conn, s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s {
	case http.StateNew:
		c.open++
		c.peak = max(c.peak, c.open)
	case http.StateClosed, http.StateHijacked:
		c.open--
	}
}

func (c *connCounter) get() (open, peak int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open, c.peak
}

// TestSwarmChurn: with -lifetime, viewers leave and newcomers take their
// place; the population stays at the target, every newcomer enters, the
// totals keep the stalls of those who left, and a leaving viewer's
// connections close.
func TestSwarmChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds")
	}
	live := &fakeLive{t0: time.Now().Add(-2 * time.Second), pt: 100 * time.Millisecond, perSeg: 4}
	edge := httptest.NewUnstartedServer(live)
	var edgeConns connCounter
	edge.Config.ConnState = edgeConns.hook
	edge.Start()
	defer edge.Close()
	var mu sync.Mutex
	entries, steers := 0, 0
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch r.URL.Path {
		case "/live/index.m3u8":
			entries++
			fmt.Fprintf(w, "#EXTM3U\n#EXT-X-CONTENT-STEERING:SERVER-URI=\"/steer\",PATHWAY-ID=\"a\"\n")
			fmt.Fprintf(w, "#EXT-X-STREAM-INF:BANDWIDTH=200000,PATHWAY-ID=\"a\"\n%s/live/media.m3u8\n", edge.URL)
		case "/steer":
			steers++
			fmt.Fprint(w, `{"VERSION":1,"TTL":1,"PATHWAY-PRIORITY":["a"]}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer origin.Close()

	const n = 4
	final, all := runSwarm(t, config{entry: origin.URL + "/live/index.m3u8", start: n, viewers: n,
		duration: 3 * time.Second, report: 250 * time.Millisecond, lifetime: 300 * time.Millisecond, seed: 1})

	// The lifetimes come from the seed: about 3 s / 0.3 s departures per
	// place.
	if final.Left < 20 || final.Left > 80 {
		t.Errorf("left %d, want about %d", final.Left, 10*n)
	}
	if final.Joined != final.Left+n || final.Viewers != int(final.Joined) {
		t.Errorf("joined %d, left %d, viewers %d: want joined = left + %d = viewers", final.Joined, final.Left, final.Viewers, n)
	}
	if final.PeakActive != n || final.Active != n {
		t.Errorf("peak active %d, active at the end %d, want %d", final.PeakActive, final.Active, n)
	}
	mu.Lock()
	if entries > int(final.Joined) || entries < int(final.Left)/2 || steers == 0 {
		t.Errorf("the origin saw %d entries and %d steering loads for %d viewers joined", entries, steers, final.Joined)
	}
	mu.Unlock()
	if final.Parts == 0 || live.parts.Load() == 0 || final.MediaErrors != 0 || final.EntryErrors != 0 {
		t.Errorf("parts %d (edge served %d), media errors %d, entry errors %d", final.Parts, live.parts.Load(), final.MediaErrors, final.EntryErrors)
	}
	prev := report{}
	for _, r := range all {
		if r.Active > n {
			t.Errorf("t=%.2f: %d active, more than %d", r.T, r.Active, n)
		}
		if r.Stalls < prev.Stalls || r.StallS < prev.StallS-1e-9 || r.Joined < prev.Joined || r.Left < prev.Left {
			t.Errorf("t=%.2f: totals went back: stalls %d→%d stall_s %.3f→%.3f joined %d→%d left %d→%d",
				r.T, prev.Stalls, r.Stalls, prev.StallS, r.StallS, prev.Joined, r.Joined, prev.Left, r.Left)
		}
		prev = r
	}
	// Each viewer has its own connections and closes them as it leaves:
	// what stays open is the last viewers' (a playlist or part connection
	// each, and one cut short at the end), not one per viewer who came.
	time.Sleep(200 * time.Millisecond)
	open, peak := edgeConns.get()
	t.Logf("edge connections: %d open at the end, peak %d, for %d viewers joined", open, peak, final.Joined)
	if open > 3*n || peak > 3*n {
		t.Errorf("edge connections: %d open at the end, peak %d; want at most %d", open, peak, 3*n)
	}
}

// TestLeaveKeepsStalls: a viewer who leaves is no longer active, and its
// stalls stay in the totals.
func TestLeaveKeepsStalls(t *testing.T) {
	s := newSwarm(config{entry: "http://127.0.0.1:1/", viewers: 2, lifetime: time.Second}, nil)
	s.start = time.Now()
	t0 := time.Now().Add(-10 * time.Second)
	a, b := s.join(), s.join()
	for _, v := range []*viewer{a, b} {
		v.state = playing
		v.buf.add(t0, time.Second)                    // plays 1 s, then stalls
		v.buf.add(t0.Add(3*time.Second), time.Minute) // for 2 s
	}
	a.buf.end(t0.Add(4 * time.Second))
	if a.client == s.client || a.client == b.client {
		t.Error("with churn, viewers share a client")
	}
	before := s.sample(time.Now())
	s.leave(a)
	after := s.sample(time.Now())
	if before.Active != 2 || after.Active != 1 || after.Joined != 2 || after.Left != 1 {
		t.Errorf("active %d then %d, joined %d, left %d; want 2, 1, 2, 1", before.Active, after.Active, after.Joined, after.Left)
	}
	if before.Stalls != 2 || after.Stalls != 2 || after.StallS < 3.99 || after.StallS > 4.01 {
		t.Errorf("stalls %d then %d, stall_s %.2f; want 2, 2, 4", before.Stalls, after.Stalls, after.StallS)
	}
}
