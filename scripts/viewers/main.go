// Command viewers is a swarm of simulated LL-HLS viewers that behave like
// hls.js 1.7.4 in low-latency mode with content steering, for load and
// steering drills against relaymesh (see scripts/surge.sh,
// scripts/soak.sh and scripts/chaos.sh).
//
// Each viewer is a goroutine (plus one for its steering loads) sharing one
// keep-alive http.Transport; it decodes nothing, so one core drives
// several hundred. A viewer
//
//  1. GETs -entry, following up to 5 redirects (each counted). A 503 is a
//     shed: it waits Retry-After (0.1 s to 30 s; 1 s without one) and
//     tries the entry again; other failures are retried every second.
//  2. Reads the multivariant playlist: variants with PATHWAY-ID (default
//     ".") and STABLE-VARIANT-ID, and EXT-X-CONTENT-STEERING. It starts on
//     the tag's pathway if that has variants, otherwise on the first
//     variant's, and plays the first variant of its pathway.
//  3. With a steering tag, loads the steering manifest at once and then
//     TTL seconds after each good load, with _HLS_pathway and
//     _HLS_throughput; applies PATHWAY-CLONES and walks PATHWAY-PRIORITY
//     (penalized pathways skipped for 300 s) as hls.js's
//     content-steering-controller does. A 410 disables steering; a 429
//     ends it too (hls.js reads Retry-After and then schedules nothing).
//  4. Plays LL-HLS: a first media playlist request without directives,
//     a start PART-HOLD-BACK behind the last listed part (moved back to an
//     INDEPENDENT part), then each part in order, the init section once
//     per URL, and a blocking reload (_HLS_msn, _HLS_part and, as hls.js
//     does, _HLS_skip=YES) for the part after the last listed one. A
//     pathway switch sends the next playlist request to the new pathway's
//     variant URI for the same part.
//  5. Keeps a simulated buffer: playback starts with the first part, the
//     playhead then moves in real time, each part adds its duration; a dry
//     buffer is a stall until a part arrives.
//
// Media errors are handled as hls.js's error controller does with its
// default load policies: no answer at all (status 0) or a 4xx sends the
// pathway to the penalty box at once and switches to the next pathway of
// the last PATHWAY-PRIORITY (or of the known pathways before one); a
// playlist 5xx is retried after 1 s and 2 s first, a part 5xx six times
// (1, 2, 4, 8, 8, 8 s); timeouts are retried at once (a blocking reload
// without its directives). With no pathway left, where hls.js would stop
// with a fatal error, the viewer retries the same URI every second.
//
// Viewers arrive -start at once, then evenly over -ramp up to -viewers
// (each arrival jittered by up to half the gap, from -seed). The run stops
// after -duration or at SIGINT/SIGTERM.
//
// Churn: with -lifetime D, viewers come and go all the time while the
// population stays at the target. Each viewer leaves after a lifetime
// drawn from an exponential distribution of mean D (from -seed), and a
// newcomer arrives in its place at once, through -entry like any other.
// Exponential lifetimes are memoryless: from the first minute on, about
// -viewers/D viewers leave and arrive each second, without waves of
// viewers who arrived together leaving together. A viewer whose stream
// ended stays until its lifetime is up. A viewer that leaves stops: its
// context is cancelled, which aborts its requests in flight and ends its
// steering, and its idle connections are closed. With churn each viewer
// has its own connections (its own keep-alive http.Transport, as a
// browser tab has), so a node sees a leaving viewer's connections close;
// without it all viewers share one transport.
//
// Every -report it prints a line and appends a JSON object to -out; at the
// end a JSON object with "final": true, holding first_part_ms (for each
// host:port, the Unix time in ms at which it served its first part to any
// viewer), and the line
//
//	viewers n=300 joined=300 left=0 peak_per_host=104 stalls=0 stall_s=0.00 ...
//
// n and joined are the viewers that arrived in all, left those that left
// at the end of their lifetime (the others were still there when the run
// stopped). Stall totals include the viewers who left.
//
// Per viewer (perviewer.go): the final object also holds histograms of
// the parts each viewer skipped (skipped_parts_by_viewer: parts ->
// viewers) and of each viewer's longest stall (longest_stall_by_viewer:
// "0", "0-0.5", ... "30+" seconds -> viewers), and the ids of the viewers
// whose stream ended, whose playback failed, and of those there at the
// end but not playing (stalled, never through the entry, ended or
// failed); a line "per-viewer skipped_parts=[0:195 3:5] ..." follows the
// summary. Viewers also check the media's continuity by
// PROGRAM-DATE-TIME: a jump of 0.1 s or more from the end of one part (or
// segment) to the start of the next is media missed (forward) or
// received again (back), though every part number followed on: a node
// that numbers the stream differently from the previous one, or a
// standby takeover (which repeats up to a GOP by design); the viewers
// with such gaps and repeats are listed. With -per-viewer, per_viewer
// lists every viewer: its skipped parts, media gaps and repeats, stalls
// (count, total, longest, and when), the host of its parts each time it
// changed, and its state at the end. With -events FILE (lines
// "UNIX_MS HOST:PORT LABEL", read when the run stops, so a drill can write
// it as it goes; scripts/chaos.sh does) the final object splits skips,
// media jumps, stalls and ends by event: from each event to the next, between the
// viewers whose last part before the event came from HOST:PORT (on_node)
// and the others (elsewhere), with the viewers per host at each event; it
// prints a line per event and one starting "events n=" with the sums.
//
// It exits 1 only if the entry URL never answered.
//
// Usage:
//
//	go run ./scripts/viewers -entry http://127.0.0.1:8080/live/bench/index.m3u8 \
//	    -start 30 -viewers 300 -ramp 60s -duration 100s -out viewers.jsonl
//	go run ./scripts/viewers -entry http://127.0.0.1:8080/live/bench/index.m3u8 \
//	    -start 60 -viewers 60 -lifetime 60s -duration 30m
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	entry          string
	start, viewers int
	ramp, duration time.Duration
	report         time.Duration
	lifetime       time.Duration // mean viewer lifetime; 0: viewers stay
	seed           uint64
	perViewer      bool   // every viewer's figures in the final report
	events         string // file of events to attribute stalls and skips to
}

func main() {
	var cfg config
	flag.StringVar(&cfg.entry, "entry", "", "URL viewers arrive at, e.g. http://127.0.0.1:8080/live/bench/index.m3u8 (required)")
	flag.IntVar(&cfg.start, "start", 10, "viewers at t=0")
	flag.IntVar(&cfg.viewers, "viewers", 100, "viewers at the end of the ramp")
	flag.DurationVar(&cfg.ramp, "ramp", 0, "time over which viewers go from -start to -viewers (0: all at once)")
	flag.DurationVar(&cfg.duration, "duration", 60*time.Second, "length of the run")
	flag.DurationVar(&cfg.report, "report", time.Second, "reporting interval")
	flag.DurationVar(&cfg.lifetime, "lifetime", 0, "churn: each viewer leaves after an exponentially distributed lifetime of this mean and a newcomer takes its place (0: viewers stay)")
	out := flag.String("out", "", "file to write one JSON object per report, and a final one, to")
	flag.Uint64Var(&cfg.seed, "seed", 1, "seed of the arrival jitter and the lifetimes")
	verbose := flag.Bool("v", false, "log each viewer's entries, switches, steering and errors to stderr")
	flag.BoolVar(&cfg.perViewer, "per-viewer", false, "list every viewer's skipped parts, stalls, hosts and state in the final JSON object")
	flag.StringVar(&cfg.events, "events", "", "file of events, one a line: UNIX_MS HOST:PORT LABEL (read at the end; it may be written during the run): the final report splits skips and stalls by event and by whether the viewer was on HOST:PORT")
	flag.Parse()
	if err := cfg.check(); err != nil {
		fmt.Fprintln(os.Stderr, "viewers:", err)
		flag.Usage()
		os.Exit(2)
	}

	var jsonOut io.Writer
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			fmt.Fprintln(os.Stderr, "viewers: creating -out:", err)
			os.Exit(2)
		}
		defer f.Close()
		jsonOut = f
	}
	var logger *log.Logger
	if *verbose {
		logger = log.New(os.Stderr, "", log.Lmicroseconds)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()

	sw := newSwarm(cfg, logger)
	churn := ""
	if cfg.lifetime > 0 {
		churn = fmt.Sprintf(", each leaving after %v on average and replaced at once", cfg.lifetime)
	}
	fmt.Printf("viewers: %s: %d at once, %d after %v%s, for %v\n", cfg.entry, cfg.start, cfg.viewers, cfg.ramp, churn, cfg.duration)
	final, err := sw.run(ctx, os.Stdout, jsonOut)
	if err != nil {
		fmt.Fprintln(os.Stderr, "viewers:", err)
	}
	if !final.EntryAnswered {
		fmt.Fprintf(os.Stderr, "viewers: %s never answered\n", cfg.entry)
		os.Exit(1)
	}
}

func (c *config) check() error {
	u, err := url.Parse(c.entry)
	switch {
	case c.entry == "":
		return fmt.Errorf("-entry is required")
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
		return fmt.Errorf("-entry %q is not an http(s) URL", c.entry)
	case c.viewers < 1 || c.viewers > 100_000:
		return fmt.Errorf("-viewers %d: want 1..100000", c.viewers)
	case c.start < 0 || c.start > c.viewers:
		return fmt.Errorf("-start %d: want 0..-viewers", c.start)
	case c.ramp < 0 || c.duration <= 0 || c.report <= 0:
		return fmt.Errorf("-ramp, -duration and -report must be positive")
	case c.lifetime < 0:
		return fmt.Errorf("-lifetime %v: want 0 (no churn) or more", c.lifetime)
	case c.lifetime > 0 && c.lifetime < 100*time.Millisecond:
		return fmt.Errorf("-lifetime %v: want at least 100ms", c.lifetime)
	}
	return nil
}

// arrivals returns when each viewer arrives after the start: start of them
// at once, then the others evenly over ramp, the k-th of n at ramp*k/n,
// each moved by jitter() (in [-0.5, 0.5)) times the gap between arrivals.
func arrivals(start, total int, ramp time.Duration, jitter func() float64) []time.Duration {
	at := make([]time.Duration, total)
	n := total - start
	if n <= 0 || ramp <= 0 {
		return at
	}
	gap := float64(ramp) / float64(n)
	for k := 1; k <= n; k++ {
		t := gap*float64(k) + jitter()*gap
		at[start+k-1] = time.Duration(min(max(t, 0), float64(ramp)))
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	return at
}

// lifetime is a viewer's stay for a mean lifetime and a draw e of the
// standard exponential distribution (mean 1, rand's ExpFloat64): mean*e,
// at least a millisecond. With mean 0 (no churn) it is 0.
func lifetime(mean time.Duration, e float64) time.Duration {
	if mean <= 0 {
		return 0
	}
	return max(time.Duration(float64(mean)*e), time.Millisecond)
}

// counters are the swarm's running totals.
type counters struct {
	joined, left                                   atomic.Int64
	requests, redirects, sheds, entryErrors        atomic.Int64
	switches, steeredSwitches, penalties           atomic.Int64
	steeringLoads, steeringErrors, steeringStopped atomic.Int64
	steering429, steering410                       atomic.Int64
	mediaErrors, skippedParts, ended, parts, bytes atomic.Int64
}

type swarm struct {
	cfg           config
	client        *http.Client
	log           *log.Logger // nil unless -v
	c             counters
	entryAnswered atomic.Bool
	start         time.Time

	mu         sync.Mutex
	viewers    map[*viewer]struct{} // arrived and not left
	goneStalls int64                // stalls of the viewers who left
	goneStall  time.Duration        // and their time stalled
	gone       []viewerStats        // and their figures
	firstParts map[string]int64     // host:port -> Unix ms of its first part
}

// newClient is a keep-alive client that leaves redirects to get, which
// counts them.
func newClient() *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 100_000, // every viewer's connections stay open between requests
		IdleConnTimeout:     90 * time.Second,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func newSwarm(cfg config, logger *log.Logger) *swarm {
	return &swarm{
		cfg:        cfg,
		client:     newClient(),
		log:        logger,
		viewers:    map[*viewer]struct{}{},
		firstParts: map[string]int64{},
	}
}

// join adds a newcomer to the swarm. With churn it gets its own
// connections.
func (s *swarm) join() *viewer {
	id := int(s.c.joined.Add(1))
	v := &viewer{id: id, sw: s, client: s.client, bw: newBandwidth(), inits: map[string]bool{}, hosts: map[string]bool{}}
	v.rec.joined = time.Now()
	if s.cfg.lifetime > 0 {
		v.client = newClient()
	}
	s.mu.Lock()
	s.viewers[v] = struct{}{}
	s.mu.Unlock()
	return v
}

// leave removes a viewer whose run has returned, keeping its stalls in the
// totals, and closes its idle connections.
func (s *swarm) leave(v *viewer) {
	if v.client != s.client {
		v.client.CloseIdleConnections()
	}
	now := time.Now()
	v.mu.Lock()
	v.rec.gone = now
	v.mu.Unlock()
	st := v.stats(now)
	s.mu.Lock()
	s.gone = append(s.gone, st)
	v.mu.Lock()
	s.goneStalls += int64(v.buf.stalls)
	s.goneStall += v.buf.totalStall(now)
	v.mu.Unlock()
	delete(s.viewers, v)
	s.mu.Unlock()
	s.c.left.Add(1)
	v.logf("left")
}

// slot keeps one place in the swarm filled until ctx ends. Without churn
// one viewer stays for the whole run. With it each viewer leaves at the
// end of its lifetime (drawn from rng) and a newcomer takes its place.
func (s *swarm) slot(ctx context.Context, rng *rand.Rand) {
	for {
		v := s.join()
		if s.cfg.lifetime <= 0 {
			v.run(ctx, ctx)
			return
		}
		life := lifetime(s.cfg.lifetime, rng.ExpFloat64())
		lctx, cancel := context.WithTimeout(ctx, life)
		v.run(ctx, lctx)
		// A viewer whose stream ended stays until its time is up.
		<-lctx.Done()
		cancel()
		if ctx.Err() != nil {
			// Still there when the run stopped.
			return
		}
		s.leave(v)
	}
}

func (s *swarm) firstPart(host string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.firstParts[host]; !ok {
		s.firstParts[host] = at.UnixMilli()
		if s.log != nil {
			s.log.Printf("first part from %s", host)
		}
	}
}

// report is one JSON object of -out. Totals are since the start.
type report struct {
	T            float64        `json:"t"`
	Active       int            `json:"active"`   // arrived and not gone
	Entering     int            `json:"entering"` // of those, not yet through the entry
	Joined       int64          `json:"joined"`   // arrived in all
	Left         int64          `json:"left"`     // left at the end of their lifetime
	Hosts        map[string]int `json:"hosts"`    // active viewers by the host of their last part
	NewStalls    int64          `json:"new_stalls"`
	StalledNow   int            `json:"stalled_now"`
	Stalls       int64          `json:"stalls"`
	StallS       float64        `json:"stall_s"`
	Requests     int64          `json:"requests"`
	Redirects    int64          `json:"redirects"`
	Sheds        int64          `json:"sheds"`
	EntryErrors  int64          `json:"entry_errors"`
	Switches     int64          `json:"switches"`
	Steered      int64          `json:"steered_switches"`
	Penalties    int64          `json:"penalties"`
	SteerLoads   int64          `json:"steering_loads"`
	SteerErrors  int64          `json:"steering_errors"`
	SteerStopped int64          `json:"steering_stopped"`
	Steer429     int64          `json:"steering_stopped_429"`
	Steer410     int64          `json:"steering_disabled_410"`
	MediaErrors  int64          `json:"media_errors"`
	Skipped      int64          `json:"skipped_parts"`
	Ended        int64          `json:"ended"`
	Parts        int64          `json:"parts"`
	Bytes        int64          `json:"bytes"`

	// Only in the final object.
	Final         bool             `json:"final,omitempty"`
	Viewers       int              `json:"viewers,omitempty"` // arrived in all
	PeakActive    int              `json:"peak_active,omitempty"`
	PeakPerHost   int              `json:"peak_per_host,omitempty"`
	PeakHosts     map[string]int   `json:"peak_hosts,omitempty"`
	FirstPartMS   map[string]int64 `json:"first_part_ms,omitempty"`
	EntryAnswered bool             `json:"entry_answered,omitempty"`
	*PerViewer                     // per-viewer figures (perviewer.go)
	*EventsReport                  // with -events
}

// sample takes the state of every viewer at now.
func (s *swarm) sample(now time.Time) report {
	s.mu.Lock()
	vs := make([]*viewer, 0, len(s.viewers))
	for v := range s.viewers {
		vs = append(vs, v)
	}
	// Taken with the list: a viewer leaving now is counted once, here
	// or in the list.
	stall, stalls := s.goneStall, s.goneStalls
	s.mu.Unlock()
	r := report{T: now.Sub(s.start).Seconds(), Hosts: map[string]int{}, Stalls: stalls}
	for _, v := range vs {
		v.mu.Lock()
		now := time.Now() // under the lock, as the viewer takes it
		if v.state != done {
			r.Active++
			if v.state == entering {
				r.Entering++
			}
			if v.host != "" {
				r.Hosts[v.host]++
			}
			if v.buf.stalledNow(now) {
				r.StalledNow++
			}
		}
		stall += v.buf.totalStall(now)
		r.Stalls += int64(v.buf.stalls)
		v.mu.Unlock()
	}
	r.StallS = stall.Seconds()
	c := &s.c
	r.Joined, r.Left = c.joined.Load(), c.left.Load()
	r.Requests, r.Redirects, r.Sheds, r.EntryErrors = c.requests.Load(), c.redirects.Load(), c.sheds.Load(), c.entryErrors.Load()
	r.Switches, r.Steered, r.Penalties = c.switches.Load(), c.steeredSwitches.Load(), c.penalties.Load()
	r.SteerLoads, r.SteerErrors, r.SteerStopped = c.steeringLoads.Load(), c.steeringErrors.Load(), c.steeringStopped.Load()
	r.Steer429, r.Steer410 = c.steering429.Load(), c.steering410.Load()
	r.MediaErrors, r.Skipped, r.Ended = c.mediaErrors.Load(), c.skippedParts.Load(), c.ended.Load()
	r.Parts, r.Bytes = c.parts.Load(), c.bytes.Load()
	return r
}

// run starts the viewers on schedule and reports until ctx ends, then
// stops them and returns the final report.
func (s *swarm) run(ctx context.Context, human, jsonOut io.Writer) (report, error) {
	s.start = time.Now()
	rng := rand.New(rand.NewPCG(s.cfg.seed, s.cfg.seed^0x9e3779b97f4a7c15))
	at := arrivals(s.cfg.start, s.cfg.viewers, s.cfg.ramp, func() float64 { return rng.Float64() - 0.5 })

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i, d := range at {
			if !sleep(ctx, time.Until(s.start.Add(d))) {
				return
			}
			// Each place draws its lifetimes from its own generator.
			prng := rand.New(rand.NewPCG(s.cfg.seed, uint64(i)+1))
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.slot(ctx, prng)
			}()
		}
	}()

	var jw *bufio.Writer
	if jsonOut != nil {
		jw = bufio.NewWriter(jsonOut)
	}
	var writeErr error
	emit := func(r report) {
		if jw == nil || writeErr != nil {
			return
		}
		b, _ := json.Marshal(r)
		jw.Write(append(b, '\n'))
		if err := jw.Flush(); err != nil {
			writeErr = fmt.Errorf("writing -out: %w", err)
		}
	}

	peakHosts := map[string]int{}
	peakActive := 0
	var lastStalls int64
	take := func(now time.Time) report {
		r := s.sample(now)
		r.NewStalls, lastStalls = r.Stalls-lastStalls, r.Stalls
		peakActive = max(peakActive, r.Active)
		for h, n := range r.Hosts {
			peakHosts[h] = max(peakHosts[h], n)
		}
		return r
	}
	tick := time.NewTicker(s.cfg.report)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case now := <-tick.C:
			r := take(now)
			fmt.Fprintln(human, r.line())
			emit(r)
		}
	}
	// Who is stalled is taken as the run stops, before the viewers wind
	// down; the rest once they have (they keep their state and host).
	stopAt := time.Now()
	stalledNow := s.sample(stopAt).StalledNow
	s.markStop(stopAt)
	wg.Wait()
	final := take(time.Now())
	final.StalledNow = stalledNow
	final.Final = true
	final.Viewers = int(final.Joined)
	final.PeakActive = peakActive
	final.PeakHosts = peakHosts
	for _, n := range peakHosts {
		final.PeakPerHost = max(final.PeakPerHost, n)
	}
	s.mu.Lock()
	final.FirstPartMS = s.firstParts
	s.mu.Unlock()
	final.EntryAnswered = s.entryAnswered.Load()
	all, pv := s.perViewerReport(stopAt)
	if s.cfg.perViewer {
		pv.All = all
	}
	final.PerViewer = &pv
	var evErr error
	if s.cfg.events != "" {
		evs, err := readEventsFile(s.cfg.events)
		if err != nil {
			evErr = fmt.Errorf("-events: %w", err)
		}
		er := attribute(evs, all, s.start, stopAt)
		final.EventsReport = &er
	}
	emit(final)
	fmt.Fprintln(human, final.summary())
	fmt.Fprintln(human, pv.line())
	if final.EventsReport != nil {
		for _, l := range final.EventsReport.lines() {
			fmt.Fprintln(human, l)
		}
	}
	if writeErr == nil {
		writeErr = evErr
	}
	return final, writeErr
}

func sortedHosts(m map[string]int) string {
	hs := make([]string, 0, len(m))
	for h := range m {
		hs = append(hs, h)
	}
	sort.Strings(hs)
	var b strings.Builder
	for i, h := range hs {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", h, m[h])
	}
	return b.String()
}

// line is the human form of an interval's report.
func (r *report) line() string {
	return fmt.Sprintf("t=%6.1f active=%d entering=%d joined=%d left=%d hosts=[%s] stalls=+%d stalled=%d stall_s=%.2f redirects=%d sheds=%d switches=%d steering=%d/%d errors=%d skipped=%d",
		r.T, r.Active, r.Entering, r.Joined, r.Left, sortedHosts(r.Hosts), r.NewStalls, r.StalledNow, r.StallS,
		r.Redirects, r.Sheds, r.Switches, r.SteerLoads, r.SteerErrors, r.MediaErrors, r.Skipped)
}

// summary is the final line.
func (r *report) summary() string {
	return fmt.Sprintf("viewers n=%d joined=%d left=%d peak_active=%d peak_per_host=%d stalls=%d stall_s=%.2f redirects=%d sheds=%d switches=%d steered=%d penalties=%d steering_loads=%d steering_errors=%d steering_stopped_429=%d steering_disabled_410=%d errors=%d skipped_parts=%d ended=%d peak_hosts=[%s]",
		r.Viewers, r.Joined, r.Left, r.PeakActive, r.PeakPerHost, r.Stalls, r.StallS, r.Redirects, r.Sheds, r.Switches, r.Steered, r.Penalties,
		r.SteerLoads, r.SteerErrors, r.Steer429, r.Steer410, r.MediaErrors, r.Skipped, r.Ended, sortedHosts(r.PeakHosts))
}
