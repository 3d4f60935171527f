package main

// Per-viewer figures, for drills that break nodes (scripts/chaos.sh): each
// viewer's skipped parts, stalls, the hosts it played from and how its
// playback ended, kept cheaply as it plays (a few marks per viewer). The
// final report carries histograms of them always, every viewer's record
// with -per-viewer, and with -events FILE the figures of each event the
// file lists, split between the viewers on the node the event hit and the
// others.

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// maxMarks bounds a viewer's lists of host changes and skips. A viewer
// that moves more often keeps its newest host marks.
const maxMarks = 256

// record is what a viewer keeps about itself for the per-viewer figures,
// under its mutex.
type record struct {
	joined, gone  time.Time // gone: left at the end of its lifetime
	endedAt       time.Time // its playback ended (the stream ended, or an error)
	ended         bool      // the stream ended (EXT-X-ENDLIST)
	failure       string    // playback stopped on this error
	skippedParts  int
	skips         []mark // when parts were skipped, and how many
	hosts         []mark // host changes: when, and the new host
	lastPart      time.Time
	stalledAtStop bool // stalled when the run stopped
	atStop        bool // still in the swarm when the run stopped

	// Media continuity by PROGRAM-DATE-TIME: where the media buffered last
	// ended, and the jumps from there to the start of the next media, in
	// either direction, of mediaJump or more: forward, media the viewer
	// never got (gap); backward, media it got again (repeat).
	mediaEnd          time.Time
	jumps             []jump
	gapS, repeatS     float64
	maxGap, maxRepeat float64
}

// mediaJump is the smallest jump between the end of one piece of media
// and the start of the next, by PROGRAM-DATE-TIME, that counts: half a
// 200 ms part. relaymesh's dates are exact to the millisecond.
const mediaJump = 100 * time.Millisecond

type jump struct {
	at  time.Time
	gap time.Duration // > 0: media missed; < 0: media repeated
}

type mark struct {
	at   time.Time
	n    int
	host string
}

// moved records that host served the viewer's part at now, another host
// than the previous part's.
func (r *record) moved(now time.Time, host string) {
	if len(r.hosts) == maxMarks {
		r.hosts = append([]mark(nil), r.hosts[maxMarks/2:]...)
	}
	r.hosts = append(r.hosts, mark{at: now, host: host})
}

// hostAt is the host that served the viewer's last part before t ("" if
// none, or if the marks before t were dropped).
func (r *record) hostAt(t time.Time) string {
	h := ""
	for _, m := range r.hosts {
		if m.at.After(t) {
			break
		}
		h = m.host
	}
	return h
}

// skipped records that the viewer fell behind the window and skipped n
// parts.
func (v *viewer) skipped(n int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rec.skippedParts += n
	if len(v.rec.skips) < maxMarks {
		v.rec.skips = append(v.rec.skips, mark{at: time.Now(), n: n})
	}
}

// media records that media from start (by PROGRAM-DATE-TIME; zero if the
// playlist has none) and d long was buffered.
func (v *viewer) media(start time.Time, d float64) {
	if start.IsZero() {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	r := &v.rec
	if !r.mediaEnd.IsZero() {
		if gap := start.Sub(r.mediaEnd); gap >= mediaJump || gap <= -mediaJump {
			s := gap.Seconds()
			if s > 0 {
				r.gapS += s
				r.maxGap = max(r.maxGap, s)
			} else {
				r.repeatS -= s
				r.maxRepeat = max(r.maxRepeat, -s)
			}
			if len(r.jumps) < maxMarks {
				r.jumps = append(r.jumps, jump{time.Now(), gap})
			}
			v.logf("media jumps %+.3f s (PROGRAM-DATE-TIME)", s)
		}
	}
	r.mediaEnd = start.Add(secondsDuration(d))
}

// forgetMedia: the viewer skips ahead (counted as skipped parts), so the
// next media does not follow on.
func (v *viewer) forgetMedia() {
	v.mu.Lock()
	v.rec.mediaEnd = time.Time{}
	v.mu.Unlock()
}

// finished records the end of the viewer's playback: the stream ended
// (err nil) or playback stopped on err.
func (v *viewer) finished(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rec.endedAt = time.Now()
	if err != nil {
		v.rec.failure = err.Error()
	} else {
		v.rec.ended = true
	}
}

// viewerStats is one viewer's entry in the final report's per_viewer list
// (-per-viewer). Times are Unix ms. The names differ from the report's
// own so that the scripts' sed expressions find the report's figures.
type viewerStats struct {
	ID          int     `json:"id"`
	JoinedMS    int64   `json:"joined_ms"`
	GoneMS      int64   `json:"gone_ms,omitempty"` // left at the end of its lifetime
	State       string  `json:"state"`             // playing, stalled, entering, no_part, ended, failed, left
	Error       string  `json:"error,omitempty"`
	Skip        int     `json:"skip"`          // parts skipped
	StallN      int     `json:"stall_n"`       // stalls
	StallTotalS float64 `json:"stall_total_s"` // time stalled
	LongestS    float64 `json:"longest_s"`     // the longest stall
	// Jumps in the media by PROGRAM-DATE-TIME (of mediaJump or more):
	// forward, media never received (gap); backward, received again.
	GapS      float64 `json:"media_gap_s"`
	MaxGapS   float64 `json:"media_max_gap_s"`
	RepeatS   float64 `json:"media_repeat_s"`
	MaxRepeat float64 `json:"media_max_repeat_s"`
	// Host changes [Unix ms, "host:port"], stalls [start, end] and skips
	// [Unix ms, parts]; the first (newest, for hosts) maxSpans/maxMarks.
	On     [][2]any   `json:"on,omitempty"`
	Stalls [][2]int64 `json:"stall_ms,omitempty"`
	Skips  [][2]int64 `json:"skip_at,omitempty"`
	Jumps  [][2]int64 `json:"jump_ms,omitempty"` // [Unix ms, jump ms]

	endedMS int64 // its playback ended (ended or failed), or 0
	rec     *record
}

// stats takes a viewer's figures at now (the run's stop, or its leaving).
func (v *viewer) stats(now time.Time) viewerStats {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := v.rec // the slices are only appended to: sharing them is safe
	st := viewerStats{
		ID:          v.id,
		JoinedMS:    r.joined.UnixMilli(),
		Skip:        r.skippedParts,
		StallN:      v.buf.stalls,
		StallTotalS: v.buf.totalStall(now).Seconds(),
		LongestS:    v.buf.longestStall(now).Seconds(),
		GapS:        r.gapS,
		MaxGapS:     r.maxGap,
		RepeatS:     r.repeatS,
		MaxRepeat:   r.maxRepeat,
		rec:         &r,
	}
	if !r.gone.IsZero() {
		st.GoneMS = r.gone.UnixMilli()
	}
	if !r.endedAt.IsZero() {
		st.endedMS = r.endedAt.UnixMilli()
	}
	switch {
	case r.failure != "":
		st.State, st.Error = "failed", r.failure
	case r.ended:
		st.State = "ended"
	case !r.gone.IsZero():
		st.State = "left"
	case v.state == entering:
		st.State = "entering"
	case r.lastPart.IsZero():
		st.State = "no_part"
	case r.stalledAtStop:
		st.State = "stalled"
	default:
		st.State = "playing"
	}
	for _, m := range r.hosts {
		st.On = append(st.On, [2]any{m.at.UnixMilli(), m.host})
	}
	for _, s := range v.buf.spans {
		st.Stalls = append(st.Stalls, [2]int64{s.start.UnixMilli(), s.end.UnixMilli()})
	}
	for _, m := range r.skips {
		st.Skips = append(st.Skips, [2]int64{m.at.UnixMilli(), int64(m.n)})
	}
	for _, j := range r.jumps {
		st.Jumps = append(st.Jumps, [2]int64{j.at.UnixMilli(), j.gap.Milliseconds()})
	}
	return st
}

// playingAtEnd: the viewer was in the swarm when the run stopped and
// playing, not stalled.
func (st *viewerStats) playingAtEnd() bool { return st.State == "playing" }

// stallBuckets are the upper bounds (s) of longest_stall_by_viewer's
// buckets; a viewer that never stalled counts under "0".
var stallBuckets = []struct {
	max  float64
	name string
}{{0.5, "0-0.5"}, {1, "0.5-1"}, {2, "1-2"}, {5, "2-5"}, {10, "5-10"}, {30, "10-30"}}

func stallBucket(s float64) string {
	if s <= 0 {
		return "0"
	}
	for _, b := range stallBuckets {
		if s < b.max {
			return b.name
		}
	}
	return "30+"
}

// PerViewer is the per-viewer part of the final report.
type PerViewer struct {
	SkippedHist map[string]int `json:"skipped_parts_by_viewer"` // parts skipped -> viewers
	LongestHist map[string]int `json:"longest_stall_by_viewer"` // longest stall (s) -> viewers
	EndedIDs    []int          `json:"ended_viewers,omitempty"`
	FailedIDs   []int          `json:"failed_viewers,omitempty"`
	// In the swarm at the end but not playing: stalled, still entering,
	// no part yet, ended or failed.
	NotPlayingIDs []int `json:"not_playing_viewers,omitempty"`
	// Viewers whose media jumped forward (missed) or back (repeated), by
	// PROGRAM-DATE-TIME, and the largest jumps.
	GapIDs    []int         `json:"media_gap_viewers,omitempty"`
	MaxGapS   float64       `json:"media_max_gap_s"`
	RepeatIDs []int         `json:"media_repeat_viewers,omitempty"`
	MaxRepS   float64       `json:"media_max_repeat_s"`
	All       []viewerStats `json:"per_viewer,omitempty"` // -per-viewer
}

func summarize(all []viewerStats) PerViewer {
	p := PerViewer{SkippedHist: map[string]int{}, LongestHist: map[string]int{}}
	for i := range all {
		st := &all[i]
		p.SkippedHist[strconv.Itoa(st.Skip)]++
		p.LongestHist[stallBucket(st.LongestS)]++
		switch st.State {
		case "ended":
			p.EndedIDs = append(p.EndedIDs, st.ID)
		case "failed":
			p.FailedIDs = append(p.FailedIDs, st.ID)
		}
		if st.rec.atStop && !st.playingAtEnd() {
			p.NotPlayingIDs = append(p.NotPlayingIDs, st.ID)
		}
		if st.GapS > 0 {
			p.GapIDs = append(p.GapIDs, st.ID)
			p.MaxGapS = max(p.MaxGapS, st.MaxGapS)
		}
		if st.RepeatS > 0 {
			p.RepeatIDs = append(p.RepeatIDs, st.ID)
			p.MaxRepS = max(p.MaxRepS, st.MaxRepeat)
		}
	}
	return p
}

// line is the human form: "per-viewer skipped_parts=[0:195 3:5] ...
// not_playing_at_end=2[17,40]" (at most 20 ids, then ",+N").
func (p *PerViewer) line() string {
	ids := func(s []int) string {
		const most = 20
		var b strings.Builder
		for i, id := range s {
			if i == most {
				fmt.Fprintf(&b, ",+%d", len(s)-most)
				break
			}
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.Itoa(id))
		}
		return b.String()
	}
	skipped := make([]int, 0, len(p.SkippedHist))
	for k := range p.SkippedHist {
		n, _ := strconv.Atoi(k)
		skipped = append(skipped, n)
	}
	sort.Ints(skipped)
	var sk strings.Builder
	for i, n := range skipped {
		if i > 0 {
			sk.WriteByte(' ')
		}
		fmt.Fprintf(&sk, "%d:%d", n, p.SkippedHist[strconv.Itoa(n)])
	}
	var ls strings.Builder
	for _, b := range append([]string{"0"}, append(bucketNames(), "30+")...) {
		if n := p.LongestHist[b]; n > 0 {
			if ls.Len() > 0 {
				ls.WriteByte(' ')
			}
			fmt.Fprintf(&ls, "%s:%d", b, n)
		}
	}
	return fmt.Sprintf("per-viewer skipped_parts=[%s] longest_stall_s=[%s] media_gaps=%d[%s] media_max_gap_s=%.2f media_repeats=%d[%s] media_max_repeat_s=%.2f ended=%d[%s] failed=%d[%s] not_playing_at_end=%d[%s]",
		sk.String(), ls.String(), len(p.GapIDs), ids(p.GapIDs), p.MaxGapS, len(p.RepeatIDs), ids(p.RepeatIDs), p.MaxRepS,
		len(p.EndedIDs), ids(p.EndedIDs), len(p.FailedIDs), ids(p.FailedIDs), len(p.NotPlayingIDs), ids(p.NotPlayingIDs))
}

func bucketNames() []string {
	n := make([]string, len(stallBuckets))
	for i, b := range stallBuckets {
		n[i] = b.name
	}
	return n
}

// event is one line of -events: something done to the node at host.
type event struct {
	at    time.Time
	host  string // host:port of the node's viewer listener
	label string
}

// readEvents reads -events: one event a line, "UNIX_MS HOST:PORT LABEL...";
// blank lines and lines starting with # are skipped. Events come out in
// time order.
func readEvents(r io.Reader) ([]event, error) {
	var evs []event
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		ms, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || len(f) < 2 {
			return nil, fmt.Errorf("events line %d %q: want UNIX_MS HOST:PORT LABEL", n, line)
		}
		evs = append(evs, event{at: time.UnixMilli(ms), host: f[1], label: strings.Join(f[2:], " ")})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
	return evs, nil
}

func readEventsFile(name string) ([]event, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readEvents(f)
}

// group is what some viewers saw in one window of time: from an event to
// the next (or to the end of the run).
type group struct {
	Viewers        int     `json:"viewers"`
	SkippedParts   int     `json:"skipped_parts"`
	LostViewers    int     `json:"viewers_that_skipped"`
	Stalls         int     `json:"stalls"` // stalls that started in the window
	StalledViewers int     `json:"viewers_that_stalled"`
	LongestS       float64 `json:"longest_stall_s"`
	StallS         float64 `json:"stall_time_s"`
	Ended          int     `json:"ended"` // playback ended in the window
	Failed         int     `json:"failed"`
	// Media jumps by PROGRAM-DATE-TIME in the window: forward (missed)
	// and back (repeated).
	GapS          float64 `json:"media_gap_s"`
	GapViewers    int     `json:"viewers_with_gaps"`
	MaxGapS       float64 `json:"media_max_gap_s"`
	RepeatS       float64 `json:"media_repeat_s"`
	RepeatViewers int     `json:"viewers_with_repeats"`
	MaxRepeatS    float64 `json:"media_max_repeat_s"`
	// The ids of the viewers that skipped parts, stalled for a second or
	// more, or ended, at most 50.
	Worst []int `json:"worst_viewers,omitempty"`
}

// add counts one viewer's window [from, to).
func (g *group) add(st *viewerStats, from, to int64) {
	g.Viewers++
	in := func(t int64) bool { return t >= from && t < to }
	skipped := 0
	for _, s := range st.Skips {
		if in(s[0]) {
			skipped += int(s[1])
		}
	}
	stalls, longest := 0, 0.0
	for _, s := range st.Stalls {
		if in(s[0]) {
			stalls++
			d := float64(s[1]-s[0]) / 1000
			g.StallS += d
			longest = max(longest, d)
		}
	}
	ended := st.endedMS != 0 && in(st.endedMS)
	var gap, rep, maxGap, maxRep float64
	for _, j := range st.Jumps {
		if in(j[0]) {
			if s := float64(j[1]) / 1000; s > 0 {
				gap += s
				maxGap = max(maxGap, s)
			} else {
				rep -= s
				maxRep = max(maxRep, -s)
			}
		}
	}
	if gap > 0 {
		g.GapS += gap
		g.GapViewers++
		g.MaxGapS = max(g.MaxGapS, maxGap)
	}
	if rep > 0 {
		g.RepeatS += rep
		g.RepeatViewers++
		g.MaxRepeatS = max(g.MaxRepeatS, maxRep)
	}
	g.SkippedParts += skipped
	g.Stalls += stalls
	g.LongestS = max(g.LongestS, longest)
	if skipped > 0 {
		g.LostViewers++
	}
	if stalls > 0 {
		g.StalledViewers++
	}
	if ended {
		if st.State == "failed" {
			g.Failed++
		} else {
			g.Ended++
		}
	}
	if (skipped > 0 || longest >= 1 || ended || gap > 0) && len(g.Worst) < 50 {
		g.Worst = append(g.Worst, st.ID)
	}
}

func (g *group) merge(o group) {
	g.Viewers += o.Viewers
	g.SkippedParts += o.SkippedParts
	g.LostViewers += o.LostViewers
	g.Stalls += o.Stalls
	g.StalledViewers += o.StalledViewers
	g.LongestS = max(g.LongestS, o.LongestS)
	g.StallS += o.StallS
	g.Ended += o.Ended
	g.Failed += o.Failed
	g.GapS += o.GapS
	g.GapViewers += o.GapViewers
	g.MaxGapS = max(g.MaxGapS, o.MaxGapS)
	g.RepeatS += o.RepeatS
	g.RepeatViewers += o.RepeatViewers
	g.MaxRepeatS = max(g.MaxRepeatS, o.MaxRepeatS)
}

func (g *group) text() string {
	return fmt.Sprintf("%d viewers: lost %d parts (%d viewers), media gaps %.1f s (%d viewers, largest %.2f s), repeats %.1f s (%d viewers, largest %.2f s), %d stalls (%d viewers), longest %.2f s, %.1f s in all, ended %d, failed %d",
		g.Viewers, g.SkippedParts, g.LostViewers, g.GapS, g.GapViewers, g.MaxGapS, g.RepeatS, g.RepeatViewers, g.MaxRepeatS,
		g.Stalls, g.StalledViewers, g.LongestS, g.StallS, g.Ended, g.Failed)
}

// eventReport is an event's entry in the final report: the viewers by the
// host they played from at the event, and what those on the node it hit
// and the others saw until the next event.
type eventReport struct {
	AtMS     int64          `json:"at_ms"`
	T        float64        `json:"t"` // seconds after the swarm started
	Host     string         `json:"host"`
	Label    string         `json:"label"`
	UntilMS  int64          `json:"until_ms"`
	AtHosts  map[string]int `json:"viewers_at"` // host -> viewers, "" for none yet
	OnNode   group          `json:"on_node"`
	Survived group          `json:"elsewhere"`
}

// EventsReport: before the first event, each event, and the sums.
type EventsReport struct {
	Before   group         `json:"before_events"`
	Events   []eventReport `json:"events"`
	OnNode   group         `json:"events_on_node"`
	Survived group         `json:"events_elsewhere"`
}

// attribute splits every viewer's skips, stalls and ends between the time
// before the first event and the windows of the events (each from its
// event to the next, the last to end), and within a window between the
// viewers on the node the event hit (by the host of their last part
// before it) and the others. A viewer counts in a window if it was in the
// swarm at its start.
func attribute(evs []event, all []viewerStats, start, end time.Time) EventsReport {
	var out EventsReport
	first := end.UnixMilli()
	if len(evs) > 0 {
		first = evs[0].at.UnixMilli()
	}
	for i := range all {
		st := &all[i]
		if st.JoinedMS < first {
			out.Before.add(st, start.UnixMilli(), first)
		}
	}
	for i, ev := range evs {
		from, to := ev.at.UnixMilli(), end.UnixMilli()
		if i+1 < len(evs) {
			to = evs[i+1].at.UnixMilli()
		}
		er := eventReport{AtMS: from, T: ev.at.Sub(start).Seconds(), Host: ev.host, Label: ev.label,
			UntilMS: to, AtHosts: map[string]int{}}
		for j := range all {
			st := &all[j]
			if st.JoinedMS > from || (st.GoneMS != 0 && st.GoneMS <= from) ||
				(st.endedMS != 0 && st.endedMS <= from) {
				continue
			}
			h := st.rec.hostAt(ev.at)
			er.AtHosts[h]++
			if h == ev.host {
				er.OnNode.add(st, from, to)
			} else {
				er.Survived.add(st, from, to)
			}
		}
		out.OnNode.merge(er.OnNode)
		out.Survived.merge(er.Survived)
		out.Events = append(out.Events, er)
	}
	return out
}

// lines is the human form: a line per event and one with the sums,
// starting "events ".
func (e *EventsReport) lines() []string {
	out := []string{"before the first event: " + e.Before.text()}
	for _, er := range e.Events {
		out = append(out, fmt.Sprintf("event t=%.1f %s %s: on it %s | elsewhere %s | viewers at [%s]",
			er.T, er.Host, er.Label, er.OnNode.text(), er.Survived.text(), sortedHosts(er.AtHosts)))
	}
	s, h := &e.Survived, &e.OnNode
	out = append(out, fmt.Sprintf("events n=%d elsewhere_lost_parts=%d elsewhere_lost_viewers=%d elsewhere_media_gap_s=%.1f elsewhere_gap_viewers=%d elsewhere_media_repeat_s=%.1f elsewhere_stalls=%d elsewhere_longest_stall_s=%.2f elsewhere_ended=%d elsewhere_failed=%d on_node_lost_parts=%d on_node_lost_viewers=%d on_node_media_gap_s=%.1f on_node_gap_viewers=%d on_node_media_repeat_s=%.1f on_node_stalls=%d on_node_longest_stall_s=%.2f on_node_ended=%d on_node_failed=%d before_stalls=%d before_longest_stall_s=%.2f before_media_gap_s=%.1f",
		len(e.Events), s.SkippedParts, s.LostViewers, s.GapS, s.GapViewers, s.RepeatS, s.Stalls, s.LongestS, s.Ended, s.Failed,
		h.SkippedParts, h.LostViewers, h.GapS, h.GapViewers, h.RepeatS, h.Stalls, h.LongestS, h.Ended, h.Failed,
		e.Before.Stalls, e.Before.LongestS, e.Before.GapS))
	return out
}

// markStop notes, as the run stops, which viewers are there and which of
// them are stalled.
func (s *swarm) markStop(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for v := range s.viewers {
		v.mu.Lock()
		v.rec.atStop = true
		v.rec.stalledAtStop = v.state != done && v.buf.stalledNow(now)
		v.mu.Unlock()
	}
}

// perViewerReport gathers every viewer's figures once they have stopped:
// those still there and those who left.
func (s *swarm) perViewerReport(now time.Time) ([]viewerStats, PerViewer) {
	s.mu.Lock()
	vs := make([]*viewer, 0, len(s.viewers))
	for v := range s.viewers {
		vs = append(vs, v)
	}
	all := append([]viewerStats(nil), s.gone...)
	s.mu.Unlock()
	for _, v := range vs {
		all = append(all, v.stats(now))
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	return all, summarize(all)
}
