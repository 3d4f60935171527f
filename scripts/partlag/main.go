// Command partlag measures the part lag of an LL-HLS media playlist: how
// long after its media ends each part is listed.
//
// It follows the live edge exactly as an LL-HLS player does: one plain
// request for the media playlist, then blocking reloads
// (media.m3u8?_HLS_msn=M&_HLS_part=P) each asking for the part after the
// newest one listed. For every part that first appears in a response it
// records the wall-clock time that response arrived (right after its body
// was read) and computes
//
//	media end = PROGRAM-DATE-TIME of the part's segment
//	            + the durations of the segment's parts up to and including it
//	lag       = arrival - media end
//
// PROGRAM-DATE-TIME is the wall clock at which the segment's first frame
// reached the ingest, so media end is the wall-clock time at which the
// frame following the part reached the ingest if the encoder sends in real
// time; a part cannot be cut before that frame arrives, so the ideal lag is
// 0 ms plus processing and delivery. Run partlag on the same host as the
// server (or on hosts with synchronised clocks): the figure compares the
// server's clock with this one.
//
// Parts listed in the first (non-blocking) response, and parts first seen
// during -warmup, are not measured. The program prints the count, min,
// p50, p95, p99 and max lag, then one machine-readable line:
//
//	partlag n=142 min=0.4ms p50=3.1ms p95=7.9ms p99=12.0ms max=15.2ms
//
// It exits with status 1 when fewer than 10 parts were measured.
//
// Usage:
//
//	go run ./scripts/partlag -url http://127.0.0.1:8080/live/bench/media.m3u8 [-duration 30s] [-warmup 3s] [-v] [-csv parts.csv]
//
// -csv writes every measured part (msn, index, URI, lag in ms, asked) to a
// file; scripts/bench-two-hop.sh uses it to pair the same part across nodes.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/relaymesh/relaymesh/internal/m3u8attr"
)

// part is one EXT-X-PART line.
type part struct {
	uri         string
	dur         time.Duration
	independent bool
}

// segment is a parent segment: its PROGRAM-DATE-TIME and listed parts.
type segment struct {
	msn      uint64
	pdt      time.Time
	hasPDT   bool
	parts    []part
	complete bool // its EXTINF and URI lines were seen
}

// playlist is what partlag needs from a media playlist.
type playlist struct {
	segments []*segment // in order; the last may be the open segment
	hint     string     // URI of the EXT-X-PRELOAD-HINT TYPE=PART, if any
}

// parsePlaylist reads a media playlist. Segment numbers come from
// EXT-X-MEDIA-SEQUENCE (plus EXT-X-SKIP for delta updates); EXTINF and the
// URI line after it close a segment; parts after the last URI line belong
// to the open segment, whose number is the last complete one's plus one.
func parsePlaylist(body []byte) (*playlist, error) {
	pl := &playlist{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	var msn uint64
	var cur *segment
	open := func() *segment {
		if cur == nil {
			cur = &segment{msn: msn}
			pl.segments = append(pl.segments, cur)
		}
		return cur
	}
	first := true
	sawInf := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if first {
			if line != "#EXTM3U" {
				return nil, errors.New("not a playlist: no #EXTM3U")
			}
			first = false
			continue
		}
		tag, val, _ := strings.Cut(line, ":")
		switch {
		case tag == "#EXT-X-MEDIA-SEQUENCE":
			n, err := strconv.ParseUint(val, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("EXT-X-MEDIA-SEQUENCE %q: %v", val, err)
			}
			msn = n
		case tag == "#EXT-X-SKIP":
			n, err := strconv.ParseUint(attrs(val)["SKIPPED-SEGMENTS"], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("EXT-X-SKIP %q: %v", val, err)
			}
			msn += n
		case tag == "#EXT-X-PROGRAM-DATE-TIME":
			t, err := time.Parse(time.RFC3339Nano, val)
			if err != nil {
				return nil, fmt.Errorf("EXT-X-PROGRAM-DATE-TIME %q: %v", val, err)
			}
			s := open()
			if len(s.parts) > 0 {
				return nil, fmt.Errorf("segment %d: PROGRAM-DATE-TIME after its first part", s.msn)
			}
			s.pdt, s.hasPDT = t, true
		case tag == "#EXT-X-PART":
			a := attrs(val)
			sec, err := strconv.ParseFloat(a["DURATION"], 64)
			if err != nil || a["URI"] == "" {
				return nil, fmt.Errorf("EXT-X-PART %q: want DURATION and URI", val)
			}
			s := open()
			s.parts = append(s.parts, part{
				uri:         a["URI"],
				dur:         time.Duration(math.Round(sec * float64(time.Second))),
				independent: a["INDEPENDENT"] == "YES",
			})
		case tag == "#EXTINF":
			open()
			sawInf = true
		case tag == "#EXT-X-PRELOAD-HINT":
			if a := attrs(val); a["TYPE"] == "PART" {
				pl.hint = a["URI"]
			}
		case strings.HasPrefix(line, "#"):
			// Other tags (MAP, DISCONTINUITY, ...) do not matter here.
		default: // a segment URI closes the segment
			if !sawInf {
				return nil, fmt.Errorf("segment URI %q without EXTINF", line)
			}
			open().complete = true
			cur, sawInf = nil, false
			msn++
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if first {
		return nil, errors.New("empty playlist")
	}
	return pl, nil
}

// attrs parses an attribute list, leniently.
func attrs(s string) map[string]string {
	m, _ := m3u8attr.Parse(s)
	return m
}

// sample is one measured part.
type sample struct {
	msn     uint64
	idx     int
	uri     string
	lag     time.Duration
	arrival time.Time
	asked   bool // the part the blocking request asked for (not one listed alongside it)
}

type client struct {
	http *http.Client
	base *url.URL
}

// get fetches the playlist, blocking for (msn, part) when block is set. It
// returns the body and the time it finished arriving.
func (c *client) get(ctx context.Context, block bool, msn uint64, prt int) ([]byte, time.Time, error) {
	u := *c.base
	if block {
		q := u.Query()
		q.Set("_HLS_msn", strconv.FormatUint(msn, 10))
		q.Set("_HLS_part", strconv.Itoa(prt))
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, time.Time{}, err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, time.Time{}, err
	}
	body, err := io.ReadAll(resp.Body)
	arrival := time.Now()
	resp.Body.Close()
	if err != nil {
		return nil, time.Time{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, arrival, fmt.Errorf("GET %s: %s: %s", u.String(), resp.Status, strings.TrimSpace(string(body)))
	}
	return body, arrival, nil
}

func main() {
	rawURL := flag.String("url", "", "media playlist URL, e.g. http://127.0.0.1:8080/live/bench/media.m3u8")
	duration := flag.Duration("duration", 30*time.Second, "how long to measure, after -warmup")
	warmup := flag.Duration("warmup", 3*time.Second, "parts first seen this soon after the first response are not measured")
	startWait := flag.Duration("start-timeout", 20*time.Second, "how long to wait for the stream to appear")
	verbose := flag.Bool("v", false, "print every measured part to stderr")
	csvPath := flag.String("csv", "", "also write every measured part to this file as CSV: msn,part,uri,lag_ms,asked")
	flag.Parse()
	if *rawURL == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: partlag -url http://HOST:PORT/live/STREAM/media.m3u8 [-duration 30s] [-warmup 3s] [-v]")
		os.Exit(2)
	}
	base, err := url.Parse(*rawURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "partlag: -url:", err)
		os.Exit(2)
	}
	c := &client{http: &http.Client{}, base: base}
	ctx := context.Background()

	// The first, plain request. The stream may not exist yet: retry.
	var pl *playlist
	var t0 time.Time
	giveUp := time.Now().Add(*startWait)
	for {
		body, at, err := c.get(ctx, false, 0, 0)
		if err == nil {
			if pl, err = parsePlaylist(body); err == nil && lastPart(pl) != nil {
				t0 = at
				break
			}
			if err == nil {
				err = errors.New("no parts listed yet")
			}
		}
		if time.Now().After(giveUp) {
			fmt.Fprintln(os.Stderr, "partlag: stream did not start:", err)
			os.Exit(1)
		}
		time.Sleep(100 * time.Millisecond)
	}

	seen := map[string]bool{}
	for _, s := range pl.segments {
		for _, p := range s.parts {
			seen[p.uri] = true
		}
	}
	initial := len(seen)
	measureFrom := t0.Add(*warmup)
	end := measureFrom.Add(*duration)
	var samples []sample
	var errs, noPDT, skippedWarmup int
	var lastErr error

	for {
		// Ask for the part after the newest one listed: the next index of
		// its segment, or part 0 of the next segment once it is complete.
		lp := lastPart(pl)
		msn, idx := lp.seg.msn, lp.idx+1
		if lp.seg.complete {
			msn, idx = lp.seg.msn+1, 0
		}
		rctx, cancel := context.WithDeadline(ctx, end)
		body, arrival, err := c.get(rctx, true, msn, idx)
		cancel()
		if err != nil {
			if time.Now().After(end) {
				break
			}
			errs++
			lastErr = err
			if errs > 20 {
				fmt.Fprintln(os.Stderr, "partlag: too many errors; last:", err)
				break
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		next, err := parsePlaylist(body)
		if err != nil {
			errs++
			lastErr = err
			continue
		}
		for _, s := range next.segments {
			var media time.Duration
			for i, p := range s.parts {
				media += p.dur
				if seen[p.uri] {
					continue
				}
				seen[p.uri] = true
				if arrival.Before(measureFrom) {
					skippedWarmup++
					continue
				}
				if !s.hasPDT {
					noPDT++
					continue
				}
				smp := sample{
					msn: s.msn, idx: i, uri: p.uri, arrival: arrival,
					lag:   arrival.Sub(s.pdt.Add(media)),
					asked: s.msn == msn && i == idx || s.msn > msn && i == 0,
				}
				samples = append(samples, smp)
				if *verbose {
					fmt.Fprintf(os.Stderr, "msn=%d part=%d %s dur=%v independent=%v lag=%s asked=%v\n",
						s.msn, i, p.uri, p.dur, p.independent, ms(smp.lag), smp.asked)
				}
			}
		}
		if lastPart(next) != nil {
			pl = next
		}
		if !arrival.Before(end) {
			break
		}
	}

	if errs > 0 {
		fmt.Fprintf(os.Stderr, "partlag: %d failed requests; last: %v\n", errs, lastErr)
	}
	if noPDT > 0 {
		fmt.Fprintf(os.Stderr, "partlag: %d parts had no PROGRAM-DATE-TIME and were not measured\n", noPDT)
	}
	report(os.Stdout, *rawURL, samples, initial, skippedWarmup)
	if *csvPath != "" {
		if err := writeCSV(*csvPath, samples); err != nil {
			fmt.Fprintln(os.Stderr, "partlag: -csv:", err)
			os.Exit(1)
		}
	}
	if len(samples) < 10 {
		fmt.Fprintf(os.Stderr, "partlag: only %d parts measured (need 10)\n", len(samples))
		os.Exit(1)
	}
}

// writeCSV writes one line per measured part, so that runs against
// several nodes of one mesh can be compared part by part (part URIs are
// numbered by the origin and are the same on every node).
func writeCSV(path string, samples []sample) error {
	var b strings.Builder
	b.WriteString("msn,part,uri,lag_ms,asked\n")
	for _, s := range samples {
		fmt.Fprintf(&b, "%d,%d,%s,%.3f,%v\n", s.msn, s.idx, s.uri, float64(s.lag)/float64(time.Millisecond), s.asked)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

type partRef struct {
	seg *segment
	idx int
}

// lastPart returns the newest listed part.
func lastPart(pl *playlist) *partRef {
	for i := len(pl.segments) - 1; i >= 0; i-- {
		if s := pl.segments[i]; len(s.parts) > 0 {
			return &partRef{seg: s, idx: len(s.parts) - 1}
		}
	}
	return nil
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[min(max(k, 0), len(sorted)-1)]
}

func report(w io.Writer, u string, samples []sample, initial, warm int) {
	lags := make([]time.Duration, len(samples))
	var unasked int
	var sum time.Duration
	for i, s := range samples {
		lags[i] = s.lag
		sum += s.lag
		if !s.asked {
			unasked++
		}
	}
	sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
	fmt.Fprintf(w, "part lag (arrival of the listing playlist - (PROGRAM-DATE-TIME + media up to the part's end)) for %s\n", u)
	fmt.Fprintf(w, "  parts measured: %d (not measured: %d in the first response, %d during warmup; measured parts listed before the request asked for them: %d)\n",
		len(samples), initial, warm, unasked)
	if len(lags) == 0 {
		fmt.Fprintln(w, "partlag n=0")
		return
	}
	mean := sum / time.Duration(len(lags))
	fmt.Fprintf(w, "  min %s  p50 %s  p95 %s  p99 %s  max %s  mean %s\n",
		ms(lags[0]), ms(percentile(lags, 50)), ms(percentile(lags, 95)), ms(percentile(lags, 99)), ms(lags[len(lags)-1]), ms(mean))

	// By position within the segment: a lag that grows along the segment
	// points at clock drift between the encoder's timestamps and its real
	// sending pace; one that is high only at index 0 at the keyframe.
	byIdx := map[int][]time.Duration{}
	maxIdx := 0
	for _, s := range samples {
		byIdx[s.idx] = append(byIdx[s.idx], s.lag)
		maxIdx = max(maxIdx, s.idx)
	}
	fmt.Fprintf(w, "  by part index in segment (n, p50, max):")
	for i := 0; i <= maxIdx; i++ {
		v := byIdx[i]
		if len(v) == 0 {
			continue
		}
		sort.Slice(v, func(a, b int) bool { return v[a] < v[b] })
		fmt.Fprintf(w, " [%d] %d %s %s;", i, len(v), ms(percentile(v, 50)), ms(v[len(v)-1]))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "partlag n=%d min=%s p50=%s p95=%s p99=%s max=%s\n",
		len(lags), ms(lags[0]), ms(percentile(lags, 50)), ms(percentile(lags, 95)), ms(percentile(lags, 99)), ms(lags[len(lags)-1]))
}
