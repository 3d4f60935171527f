package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPlayoutSpans(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var p playout
	p.add(at(0), 200*time.Millisecond)
	p.add(at(500), 200*time.Millisecond) // stalled 200..500
	if got := p.longestStall(at(500)); got != 300*time.Millisecond {
		t.Errorf("longest after the first stall = %v, want 300ms", got)
	}
	// Stalled from 700; at 2000 the current stall is the longest.
	if got := p.longestStall(at(2000)); got != 1300*time.Millisecond {
		t.Errorf("longest during the second stall = %v, want 1.3s", got)
	}
	p.end(at(2500))
	want := []span{{at(200), at(500)}, {at(700), at(2500)}}
	if len(p.spans) != 2 || p.spans[0] != want[0] || p.spans[1] != want[1] || p.longest != 1800*time.Millisecond {
		t.Errorf("spans %v longest %v, want %v and 1.8s", p.spans, p.longest, want)
	}
}

func TestHostAt(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var r record
	r.moved(t0, "a")
	r.moved(t0.Add(10*time.Second), "b")
	for _, tc := range []struct {
		s    int
		want string
	}{{-1, ""}, {0, "a"}, {9, "a"}, {10, "b"}, {99, "b"}} {
		if got := r.hostAt(t0.Add(time.Duration(tc.s) * time.Second)); got != tc.want {
			t.Errorf("hostAt(+%ds) = %q, want %q", tc.s, got, tc.want)
		}
	}
	// Past maxMarks the oldest half goes.
	for i := range maxMarks {
		r.moved(t0.Add(time.Duration(20+i)*time.Second), fmt.Sprint(i))
	}
	if len(r.hosts) > maxMarks || r.hostAt(t0.Add(time.Hour)) != fmt.Sprint(maxMarks-1) {
		t.Errorf("%d marks, last host %q", len(r.hosts), r.hostAt(t0.Add(time.Hour)))
	}
}

func TestReadEvents(t *testing.T) {
	evs, err := readEvents(strings.NewReader("# comment\n\n2000 127.0.0.1:2 edge-2 kill -9\n1000 127.0.0.1:1 origin-a stop\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].host != "127.0.0.1:1" || evs[0].label != "origin-a stop" ||
		evs[1].at != time.UnixMilli(2000) || evs[1].label != "edge-2 kill -9" {
		t.Errorf("events %+v", evs)
	}
	if _, err := readEvents(strings.NewReader("soon 127.0.0.1:1 x\n")); err == nil {
		t.Error("a line without a time: no error")
	}
}

func TestAttribute(t *testing.T) {
	t0 := time.UnixMilli(1_000_000)
	ms := func(s float64) int64 { return t0.UnixMilli() + int64(s*1000) }
	rec := func(hosts ...any) *record {
		r := &record{}
		for i := 0; i < len(hosts); i += 2 {
			r.moved(t0.Add(time.Duration(hosts[i].(int))*time.Second), hosts[i+1].(string))
		}
		return r
	}
	all := []viewerStats{
		// On a from the start; stalls 2 s at the first event, skips 5
		// parts at the second while on b.
		{ID: 1, JoinedMS: ms(0), rec: rec(1, "a", 22, "b"),
			Stalls: [][2]int64{{ms(0.5), ms(0.7)}, {ms(20.5), ms(22.5)}}, Skips: [][2]int64{{ms(41), 5}}},
		// On b; a short stall after the first event.
		{ID: 2, JoinedMS: ms(0), rec: rec(1, "b"), Stalls: [][2]int64{{ms(21), ms(21.3)}},
			Jumps: [][2]int64{{ms(25), 2000}, {ms(26), -1500}, {ms(45), 300}}},
		// On b; its playback fails after the second event.
		{ID: 3, JoinedMS: ms(0), rec: rec(1, "b"), State: "failed", endedMS: ms(45)},
		// Arrives after the first event.
		{ID: 4, JoinedMS: ms(30), rec: rec(31, "a")},
	}
	evs := []event{{t0.Add(20 * time.Second), "a", "a kill"}, {t0.Add(40 * time.Second), "b", "b stop"}}
	r := attribute(evs, all, t0, t0.Add(60*time.Second))
	if b := r.Before; b.Viewers != 3 || b.Stalls != 1 || b.LongestS < 0.19 || b.LongestS > 0.21 {
		t.Errorf("before: %+v", b)
	}
	if len(r.Events) != 2 {
		t.Fatalf("%d events", len(r.Events))
	}
	e1, e2 := r.Events[0], r.Events[1]
	if e1.OnNode.Viewers != 1 || e1.OnNode.Stalls != 1 || e1.OnNode.LongestS != 2 || e1.OnNode.Worst[0] != 1 ||
		e1.Survived.Viewers != 2 || e1.Survived.Stalls != 1 || e1.Survived.LongestS > 0.31 || fmt.Sprint(e1.Survived.Worst) != "[2]" {
		t.Errorf("event 1: on node %+v, elsewhere %+v", e1.OnNode, e1.Survived)
	}
	if e1.Survived.GapS != 2 || e1.Survived.GapViewers != 1 || e1.Survived.RepeatS != 1.5 || e1.Survived.MaxRepeatS != 1.5 ||
		e1.OnNode.GapS != 0 || e2.OnNode.GapS != 0.3 || e2.OnNode.MaxGapS != 0.3 {
		t.Errorf("media jumps: event 1 elsewhere %+v, on node %+v; event 2 on node %+v", e1.Survived, e1.OnNode, e2.OnNode)
	}
	if e1.AtHosts["a"] != 1 || e1.AtHosts["b"] != 2 || e1.UntilMS != ms(40) {
		t.Errorf("event 1: viewers at %v, until %d", e1.AtHosts, e1.UntilMS)
	}
	// At the second event viewers 1, 2 and 3 are on b, 4 on a.
	if e2.OnNode.Viewers != 3 || e2.OnNode.SkippedParts != 5 || e2.OnNode.LostViewers != 1 || e2.OnNode.Failed != 1 ||
		e2.Survived.Viewers != 1 || e2.Survived.SkippedParts != 0 {
		t.Errorf("event 2: on node %+v, elsewhere %+v", e2.OnNode, e2.Survived)
	}
	if r.OnNode.Viewers != 4 || r.OnNode.SkippedParts != 5 || r.Survived.Viewers != 3 || r.Survived.Stalls != 1 {
		t.Errorf("sums: on node %+v, elsewhere %+v", r.OnNode, r.Survived)
	}
	lines := r.lines()
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "events n=2 elsewhere_lost_parts=0 ") {
		t.Errorf("last line %q", last)
	}
}

func TestSummarize(t *testing.T) {
	at := &record{atStop: true}
	gone := &record{}
	pv := summarize([]viewerStats{
		{ID: 1, State: "playing", rec: at},
		{ID: 2, State: "stalled", LongestS: 3, Skip: 4, GapS: 2.5, MaxGapS: 2, rec: at},
		{ID: 3, State: "ended", LongestS: 0.2, rec: at},
		{ID: 4, State: "failed", LongestS: 40, rec: at},
		{ID: 5, State: "left", LongestS: 0.7, rec: gone},
	})
	if pv.SkippedHist["0"] != 4 || pv.SkippedHist["4"] != 1 ||
		pv.LongestHist["0"] != 1 || pv.LongestHist["2-5"] != 1 || pv.LongestHist["0-0.5"] != 1 ||
		pv.LongestHist["30+"] != 1 || pv.LongestHist["0.5-1"] != 1 {
		t.Errorf("histograms %v %v", pv.SkippedHist, pv.LongestHist)
	}
	if fmt.Sprint(pv.EndedIDs, pv.FailedIDs, pv.NotPlayingIDs) != "[3] [4] [2 3 4]" {
		t.Errorf("ended %v failed %v not playing %v", pv.EndedIDs, pv.FailedIDs, pv.NotPlayingIDs)
	}
	want := "per-viewer skipped_parts=[0:4 4:1] longest_stall_s=[0:1 0-0.5:1 0.5-1:1 2-5:1 30+:1] media_gaps=1[2] media_max_gap_s=2.00 media_repeats=0[] media_max_repeat_s=0.00 ended=1[3] failed=1[4] not_playing_at_end=3[2,3,4]"
	if got := pv.line(); got != want {
		t.Errorf("line\n%s\nwant\n%s", got, want)
	}
}

// TestSwarmEvents: viewers on one node that goes down, with the event in
// an -events file: the final report puts them, and their stalls, on the
// node, and lists each viewer.
func TestSwarmEvents(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for seconds")
	}
	live := &fakeLive{t0: time.Now().Add(-2 * time.Second), pt: 100 * time.Millisecond, perSeg: 4}
	srv := httptest.NewServer(live)
	defer srv.Close()
	entry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=200000\n%s/live/media.m3u8\n", srv.URL)
	}))
	defer entry.Close()
	evFile := filepath.Join(t.TempDir(), "events")
	go func() {
		time.Sleep(1500 * time.Millisecond)
		os.WriteFile(evFile, fmt.Appendf(nil, "%d %s node down\n", time.Now().UnixMilli(), host(srv)), 0o644)
		live.down.Store(true)
		time.Sleep(1500 * time.Millisecond)
		live.down.Store(false)
	}()
	const n = 4
	final, _ := runSwarm(t, config{entry: entry.URL + "/live/index.m3u8", start: n, viewers: n,
		duration: 5 * time.Second, report: time.Second, seed: 1, perViewer: true, events: evFile})
	if final.PerViewer == nil || len(final.All) != n || final.EventsReport == nil || len(final.Events) != 1 {
		t.Fatalf("per-viewer %+v events %+v", final.PerViewer, final.EventsReport)
	}
	ev := final.Events[0]
	if ev.OnNode.Viewers != n || ev.Survived.Viewers != 0 || ev.OnNode.StalledViewers != n || ev.OnNode.LongestS < 1 {
		t.Errorf("event: on node %+v, elsewhere %+v", ev.OnNode, ev.Survived)
	}
	for _, v := range final.All {
		// Back on its feet, or still recovering (the retries are a second
		// apart) when the run stops.
		if (v.State != "playing" && v.State != "stalled") || len(v.On) != 1 || v.On[0][1] != host(srv) || v.LongestS < 1 || len(v.Stalls) == 0 {
			t.Errorf("viewer %+v", v)
		}
	}
	if final.SkippedHist["0"] != n {
		t.Errorf("skipped parts by viewer %v", final.SkippedHist)
	}
}

func TestMediaJumps(t *testing.T) {
	v := &viewer{sw: &swarm{}}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	v.media(time.Time{}, 0.2) // no PROGRAM-DATE-TIME: nothing
	v.media(at(0), 0.2)
	v.media(at(201), 0.2)  // 1 ms off: in time
	v.media(at(2400), 0.2) // 2 s missed
	v.media(at(600), 0.2)  // 2 s again
	v.forgetMedia()
	v.media(at(9000), 0.2) // after a skip: no jump
	r := &v.rec
	if len(r.jumps) != 2 || r.gapS < 1.998 || r.gapS > 2.0 || r.maxGap != r.gapS || r.repeatS != 2 || r.maxRepeat != 2 {
		t.Errorf("jumps %v gap %.3f (max %.3f) repeat %.3f (max %.3f)", r.jumps, r.gapS, r.maxGap, r.repeatS, r.maxRepeat)
	}
}
