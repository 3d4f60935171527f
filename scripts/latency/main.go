// Command latency measures glass-to-glass latency in a real player: hls.js
// 1.7.4 (the copy relaymesh embeds) in headless Chromium, playing one
// node's index.m3u8, for one run.
//
// Two players, chosen with -player:
//
//	builtin   relaymesh's own player page, /live/{stream}/ on the node, with
//	          the hls.js settings of edge/player/page.js
//	defaults  a minimal page that this program serves on loopback: the
//	          node's /player/hls.min.js and new Hls({lowLatencyMode: true}),
//	          nothing else
//
// A probe script (probe.js) is injected into the page before its own
// scripts run. It catches the Hls instance and records, against the wall
// clock:
//
//   - first frame: from navigation start to the first frame presented
//     (requestVideoFrameCallback), in ms;
//   - glass-to-glass, every 250 ms: Date.now() - hls.playingDate, where
//     playingDate is the PROGRAM-DATE-TIME of the playing segment plus the
//     position in it. The origin stamps PROGRAM-DATE-TIME with its wall
//     clock when the segment's first frame reaches the ingest, so this is
//     "now minus when the frame at the playhead arrived at the origin",
//     assuming the encoder sends in real time (ffmpeg -re). The encoder's
//     own delay and the network before the origin are not in it;
//   - display: the same per frame shown, from requestVideoFrameCallback's
//     expectedDisplayTime and mediaTime;
//   - where the time goes, per part: its media end (PROGRAM-DATE-TIME
//     based) to the playlist listing it arriving (listed), to its bytes
//     arriving (loaded) and appended to the buffer (appended); from
//     appended to its first frame presented (position: the time it waited
//     in the buffer for the playhead); and presented to expected on screen
//     (render);
//   - hls.latency, hls.targetLatency and hls.drift, the buffer ahead and
//     the playback rate;
//   - stalls: 'waiting' events after playback started, and their time;
//   - the host:port that served each part or segment, and steering loads,
//     to show which node the player played from.
//
// The run measures one node, so the browser refuses the player's content
// steering manifest (/live/{stream}/steering.json) unless -steering is set:
// hls.js then stays on the pathway it started on. Steering answers from
// gossip, and on a busy machine it may move a viewer to another node in
// mid-run (a node above 95% CPU is not listed).
//
// Glass-to-glass p50 and max are over the samples after -skip from the first
// frame; stalls over the whole run. The program prints two lines:
//
//	latency target=edge-2 player=builtin first_frame=812ms g2g_p50=1043ms g2g_max=1180ms ...
//	budget target=edge-2 player=builtin part=200ms listed_p50=4.1ms loaded_p50=13.3ms ...
//
// In the budget line every figure is a p50 over the parts (or playlist
// responses) after -skip, from the part's media end as the origin's clock
// has it (PROGRAM-DATE-TIME of its segment plus the parts before it and its
// own duration): listed (a playlist listing the newest part arrived),
// loaded (the part's bytes arrived), appended (it was in the buffer);
// then position (appended to its first frame presented), render
// (presented to expected on screen) and part_first_frame_g2g (the part's
// first frame on screen, from its arrival at the ingest: part duration +
// appended + position + render).
//
// Every figure is measured on one host, so browser, nodes and origin read the
// same clock. It exits 1 when the video did not play within -start-limit.
//
// Usage:
//
//	go run ./scripts/latency -url http://127.0.0.1:8080/live/bench/index.m3u8 -player builtin -label origin
//
// Flags: -duration (playing time from the first frame, default 20s), -skip
// (default 5s), -start-limit (default 20s), -chromium (default chromium),
// -json FILE (everything the probe recorded), -steering (allow steering).
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/relaymesh/relaymesh/internal/headless"
)

//go:embed probe.js
var probeJS string

// defaultsPage is the "hls.js defaults" player: nothing but the embedded
// hls.js in low-latency mode (its default too), muted autoplay.
var defaultsPage = template.Must(template.New("defaults").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>hls.js defaults</title></head>
<body style="margin:0;background:#000">
<video id="video" muted autoplay playsinline style="width:100%"></video>
<script src="{{.HLSJS}}"></script>
<script>
var video = document.getElementById('video');
var hls = new Hls({lowLatencyMode: true});
hls.on(Hls.Events.MANIFEST_PARSED, function () { video.play().catch(function () {}); });
hls.loadSource({{.Src}});
hls.attachMedia(video);
</script>
</body></html>
`))

type config struct {
	src        *url.URL // the node's index.m3u8
	player     string
	label      string
	duration   time.Duration
	skip       time.Duration
	startLimit time.Duration
	chromium   string
	jsonOut    string
	steering   bool
}

func main() {
	var c config
	var src string
	flag.StringVar(&src, "url", "", "index.m3u8 of the node to play, e.g. http://127.0.0.1:8080/live/bench/index.m3u8")
	flag.StringVar(&c.player, "player", "builtin", "builtin (relaymesh's player page) or defaults (hls.js with lowLatencyMode only)")
	flag.StringVar(&c.label, "label", "", "name of the target in the output (default: the URL's host)")
	flag.DurationVar(&c.duration, "duration", 20*time.Second, "playing time measured from the first frame")
	flag.DurationVar(&c.skip, "skip", 5*time.Second, "leave the first SKIP of playback out of the glass-to-glass figures")
	flag.DurationVar(&c.startLimit, "start-limit", 20*time.Second, "how long the video may take to start")
	flag.StringVar(&c.chromium, "chromium", "chromium", "Chromium binary")
	flag.StringVar(&c.jsonOut, "json", "", "write everything the probe recorded to this file")
	flag.BoolVar(&c.steering, "steering", false, "let the player load its content steering manifest (and so move to another node)")
	flag.Parse()

	u, err := url.Parse(src)
	switch {
	case src == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || !strings.HasSuffix(u.Path, "/index.m3u8"):
		fail("-url %q: want http(s)://HOST/live/{stream}/index.m3u8", src)
	case c.player != "builtin" && c.player != "defaults":
		fail("-player %q: want builtin or defaults", c.player)
	case c.duration < time.Second || c.skip < 0 || c.skip >= c.duration:
		fail("-duration %v -skip %v: want a duration of at least 1s and 0 <= skip < duration", c.duration, c.skip)
	}
	c.src = u
	if c.label == "" {
		c.label = u.Host
	}
	ctx, stop := signalContext()
	defer stop()
	if err := run(ctx, c); err != nil {
		fail("%v", err)
	}
}

// signalContext is cancelled on SIGINT or SIGTERM, so the browser is
// stopped with the program.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "latency: "+format+"\n", args...)
	os.Exit(1)
}

// record is what probe.js keeps at window.__latency.
type record struct {
	Hooked        bool           `json:"hooked"`
	FirstFrame    float64        `json:"firstFrame"`
	FirstPlaying  float64        `json:"firstPlaying"`
	Waiting       int            `json:"waiting"`
	StalledMs     float64        `json:"stalledMs"`
	WaitingSince  float64        `json:"waitingSince"`
	Errors        []string       `json:"errors"`
	Hosts         map[string]int `json:"hosts"`
	SteeringLoads int            `json:"steeringLoads"`
	Pathway       string         `json:"pathway"`
	Config        map[string]any `json:"config"`
	Samples       []struct {
		T       float64  `json:"t"`
		G2G     *float64 `json:"g2g"`
		Latency float64  `json:"latency"`
		Target  *float64 `json:"target"`
		Drift   *float64 `json:"drift"`
		Ahead   float64  `json:"ahead"`
		Rate    float64  `json:"rate"`
		Playing bool     `json:"playing"`
	} `json:"samples"`
	Frames []struct {
		T      float64  `json:"t"`
		G2G    *float64 `json:"g2g"` // null (NaN) before a segment's date is known
		Render float64  `json:"render"`
	} `json:"frames"`
	Parts []struct {
		Start     float64 `json:"start"`
		Dur       float64 `json:"dur"`
		EndWall   float64 `json:"endWall"`
		ReqStart  float64 `json:"reqStart"`
		Loaded    float64 `json:"loaded"`
		Buffered  float64 `json:"buffered"`
		Shown     float64 `json:"shown"`
		Presented float64 `json:"presented"`
	} `json:"parts"`
	Playlists []struct {
		T    float64 `json:"t"`
		Lag  float64 `json:"lag"`
		Wait float64 `json:"wait"`
	} `json:"playlists"`
	// Set by this program.
	NavStart float64 `json:"navStart"`
}

// readJS returns window.__latency as JSON text (NaN becomes null), or ""
// before the probe ran.
const readJS = `(() => { const l = window.__latency; if (!l) return ''; ` +
	`return JSON.stringify(Object.assign({navStart: performance.timeOrigin}, l)); })()`

func run(ctx context.Context, c config) error {
	target := c.src.String()
	if c.player == "builtin" {
		target = c.src.ResolveReference(&url.URL{Path: "./"}).String()
	} else {
		page, stop, err := serveDefaults(ctx, c.src)
		if err != nil {
			return err
		}
		defer stop()
		target = page
	}

	path, err := exec.LookPath(c.chromium)
	if err != nil {
		return fmt.Errorf("find the browser (apt-get install chromium): %w", err)
	}
	// As the browser tests start it.
	opts := headless.Options(path)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	// The first Run starts the browser, whose life is the context's: no
	// deadline on it.
	err = chromedp.Do(tab, chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, page.AddScriptToEvaluateOnNewDocument,
			page.AddScriptToEvaluateOnNewDocumentParams{Source: probeJS}); err != nil {
			return err
		}
		if c.steering {
			return nil
		}
		// Without its steering manifest hls.js keeps the pathway it
		// started on: the node this run measures.
		if _, err := cdp.Call(ctx, t, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, t, network.SetBlockedURLs, network.SetBlockedURLsParams{
			URLPatterns: []*network.BlockPattern{{URLPattern: "*://*:*/live/*/steering.json*", Block: true}},
		})
		return err
	}))
	if err != nil {
		return fmt.Errorf("start %s and add the probe: %w", path, err)
	}

	if err := within(tab, 20*time.Second, chromedp.Navigate(target)); err != nil {
		return fmt.Errorf("open %s: %w", target, err)
	}
	var rec *record
	started := time.Now()
	for {
		rec, _, err = read(tab)
		if err != nil {
			return err
		}
		if rec != nil && rec.FirstFrame > 0 {
			break
		}
		if time.Since(started) > c.startLimit {
			if rec == nil || !rec.Hooked {
				return fmt.Errorf("%s: no hls.js player started within %v", target, c.startLimit)
			}
			return fmt.Errorf("%s: no frame within %v; player errors %q", target, c.startLimit, rec.Errors)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	// Play until duration after the first frame, by the page's clock.
	end := rec.FirstFrame + float64(c.duration.Milliseconds())
	for {
		now := float64(time.Now().UnixMilli())
		if now >= end {
			break
		}
		if err := sleep(ctx, min(time.Second, time.Duration(end-now)*time.Millisecond)); err != nil {
			return err
		}
	}
	rec, raw, err := read(tab)
	if err != nil {
		return err
	}
	if rec == nil {
		return errors.New("the probe's record is gone (the page navigated away?)")
	}
	if c.jsonOut != "" {
		if err := os.WriteFile(c.jsonOut, []byte(raw), 0o644); err != nil {
			return fmt.Errorf("write -json: %w", err)
		}
	}
	report(os.Stdout, c, rec)
	return nil
}

// serveDefaults serves the defaults page on a loopback port of its own. It
// loads hls.js from the node, and the node's playlists cross-origin (the
// node sends Access-Control-Allow-Origin: *; hls.js's requests are simple
// ones, so no preflight adds a round trip).
func serveDefaults(ctx context.Context, src *url.URL) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen for the defaults page: %w", err)
	}
	hlsJS := src.ResolveReference(&url.URL{Path: "/player/hls.min.js"}).String()
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			if err := defaultsPage.Execute(w, map[string]string{"HLSJS": hlsJS, "Src": src.String()}); err != nil {
				slog.Warn("defaults page", "err", err)
			}
		}),
		ReadHeaderTimeout: 5 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	stop := func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
		<-done
	}
	return "http://" + ln.Addr().String() + "/", stop, nil
}

// read returns the probe's record, decoded and as the JSON text it came
// in; nil before the probe ran.
func read(tab context.Context) (*record, string, error) {
	s, err := runWithin(tab, 10*time.Second, chromedp.Evaluate[string](readJS))
	if err != nil {
		return nil, "", fmt.Errorf("read the probe's record: %w", err)
	}
	if s == "" {
		return nil, "", nil
	}
	var rec record
	if err := json.Unmarshal([]byte(s), &rec); err != nil {
		return nil, "", fmt.Errorf("decode the probe's record: %w", err)
	}
	return &rec, s, nil
}

func within(tab context.Context, limit time.Duration, a chromedp.Action[chromedp.Void]) error {
	_, err := runWithin(tab, limit, a)
	return err
}

func runWithin[T any](tab context.Context, limit time.Duration, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(tab, limit)
	defer cancel()
	return chromedp.Run(ctx, a)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// report prints the run's two lines.
func report(w *os.File, c config, r *record) {
	from := r.FirstFrame + float64(c.skip.Milliseconds())
	var g2g, lat, tgt, ahead, rate, disp, render []float64
	var drift float64
	for _, s := range r.Samples {
		if s.T < from {
			continue
		}
		if s.G2G != nil {
			g2g = append(g2g, *s.G2G)
		}
		lat = append(lat, s.Latency*1000)
		if s.Target != nil {
			tgt = append(tgt, *s.Target*1000)
		}
		if s.Drift != nil {
			drift = *s.Drift
		}
		ahead = append(ahead, s.Ahead*1000)
		rate = append(rate, s.Rate)
	}
	for _, f := range r.Frames {
		if f.T < from || f.G2G == nil {
			continue
		}
		disp = append(disp, *f.G2G)
		render = append(render, f.Render)
	}
	var listed, loaded, appended, position, partShown, partDur []float64
	for _, p := range r.Parts {
		if p.Loaded < from {
			continue
		}
		loaded = append(loaded, p.Loaded-p.EndWall)
		appended = append(appended, p.Buffered-p.EndWall)
		partDur = append(partDur, p.Dur)
		if p.Presented > 0 {
			position = append(position, p.Presented-p.Buffered)
			// The part's first frame: it reached the ingest a part duration
			// before the part's media end.
			partShown = append(partShown, p.Shown-(p.EndWall-p.Dur))
		}
	}
	for _, p := range r.Playlists {
		if p.T >= from {
			listed = append(listed, p.Lag)
		}
	}
	stalledMs := r.StalledMs
	if r.WaitingSince > 0 {
		stalledMs += float64(time.Now().UnixMilli()) - (r.NavStart + r.WaitingSince)
	}
	var hosts []string
	for h, n := range r.Hosts {
		hosts = append(hosts, fmt.Sprintf("%s=%d", h, n))
	}
	sort.Strings(hosts)
	errs := "none"
	if len(r.Errors) > 0 {
		errs = strings.Join(dedupe(r.Errors), ",")
	}
	p50, mx := quantile(g2g, 0.5), quantile(g2g, 1)
	fmt.Fprintf(w, "latency target=%s player=%s first_frame=%.0fms g2g_p50=%.0fms g2g_max=%.0fms g2g_min=%.0fms n=%d "+
		"display_p50=%.0fms display_max=%.0fms stalls=%d stalled=%.0fms hls_latency_p50=%.0fms target_latency=%.0fms "+
		"drift=%.3f ahead_p50=%.0fms rate_max=%.2f hosts=%s steering_loads=%d pathway=%s errors=%s\n",
		c.label, c.player, r.FirstFrame-r.NavStart, p50, mx, quantile(g2g, 0), len(g2g),
		quantile(disp, 0.5), quantile(disp, 1), r.Waiting, stalledMs, quantile(lat, 0.5), quantile(tgt, 0.5),
		drift, quantile(ahead, 0.5), quantile(rate, 1), strings.Join(hosts, ","), r.SteeringLoads,
		orDash(r.Pathway), errs)
	fmt.Fprintf(w, "budget target=%s player=%s part=%.0fms listed_p50=%.1fms loaded_p50=%.1fms appended_p50=%.1fms "+
		"position_p50=%.0fms render_p50=%.1fms part_first_frame_g2g_p50=%.0fms parts=%d playlists=%d\n",
		c.label, c.player, quantile(partDur, 0.5), quantile(listed, 0.5), quantile(loaded, 0.5), quantile(appended, 0.5),
		quantile(position, 0.5), quantile(render, 0.5), quantile(partShown, 0.5), len(loaded), len(listed))
}

// quantile is the nearest-rank quantile q (0: min, 1: max) of v, or NaN.
func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	k := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}

func dedupe(v []string) []string {
	n := map[string]int{}
	var order []string
	for _, s := range v {
		if n[s] == 0 {
			order = append(order, s)
		}
		n[s]++
	}
	out := make([]string, len(order))
	for i, s := range order {
		out[i] = fmt.Sprintf("%s*%d", s, n[s])
	}
	return out
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
