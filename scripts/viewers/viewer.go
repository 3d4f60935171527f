package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// Load policies of hls.js 1.7 (src/config.ts) as the error controller
// applies them: retries share one counter per request, reset by a
// success; a status of 0 (no answer) or 4xx is not retried (error-helper
// retryForHttpStatus); out of retries the pathway goes to the penalty box.
const (
	entryTimeout     = 20 * time.Second // manifestLoadPolicy maxLoadTimeMs
	playlistTimeout  = 10 * time.Second // playlistLoadPolicy maxTimeToFirstByteMs
	playlistRetries  = 2                // its errorRetry and timeoutRetry maxNumRetry
	fragTimeout      = 10 * time.Second // fragLoadPolicy maxTimeToFirstByteMs
	fragErrorRetries = 6
	fragTimeRetries  = 4
	steeringTimeout  = 10 * time.Second // steeringManifestLoadPolicy maxTimeToFirstByteMs
	maxRedirects     = 5
	// When no other pathway is left hls.js gives up (a fatal error); a
	// viewer here retries the same URI this often instead.
	stuckRetry = time.Second
	// Bounds on a shed viewer's wait for its next try at the entry URL.
	maxRetryAfter = 30 * time.Second
	minRetryAfter = 100 * time.Millisecond
)

// retryableStatus is retryForHttpStatus: not 0 (a browser offline aside),
// not 4xx.
func retryableStatus(status int) bool { return status != 0 && (status < 400 || status > 499) }

// retryDelay is getRetryDelay for retryDelayMs 1000, maxRetryDelayMs 8000
// and exponential backoff: 1 s, 2 s, 4 s, 8 s, 8 s...
func retryDelay(retry int) time.Duration {
	return min(time.Second<<min(retry, 4), 8*time.Second)
}

// errSwitched ends a media request whose pathway is no longer the
// viewer's: the next one must be a playlist from the new pathway.
var errSwitched = errors.New("pathway switched")

// response is one GET, redirects followed.
type response struct {
	status      int  // 0 when no HTTP answer came: refused, reset, timed out
	timeout     bool // the request's own deadline passed
	err         error
	final       *url.URL // after redirects
	redirects   int
	retryAfter  string
	bytes       int64
	ttfb, total time.Duration
}

func (r *response) ok() bool { return r.status >= 200 && r.status < 300 }

// get fetches u, following up to maxRedirects redirects by hand so that
// each one is counted. The body goes to body (reset first) or is
// discarded.
func get(ctx context.Context, c *http.Client, u string, timeout time.Duration, body *bytes.Buffer) response {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var r response
	for {
		req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
		if err != nil {
			r.err = err
			return r
		}
		resp, err := c.Do(req)
		if err != nil {
			r.err = err
			r.timeout = ctx.Err() == nil && rctx.Err() != nil
			return r
		}
		if isRedirect(resp.StatusCode) && resp.Header.Get("Location") != "" {
			loc, err := resp.Location()
			// Drained so that the connection is reused.
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			if err != nil {
				r.err = fmt.Errorf("redirect: %w", err)
				return r
			}
			if r.redirects == maxRedirects {
				r.err = fmt.Errorf("more than %d redirects", maxRedirects)
				return r
			}
			r.redirects++
			u = loc.String()
			continue
		}
		r.ttfb = time.Since(start)
		r.final = resp.Request.URL
		r.retryAfter = resp.Header.Get("Retry-After")
		if body != nil {
			body.Reset()
			r.bytes, err = body.ReadFrom(resp.Body)
		} else {
			r.bytes, err = io.Copy(io.Discard, resp.Body)
		}
		resp.Body.Close()
		r.total = time.Since(start)
		if err != nil {
			// A body cut short is a failed load, as for a browser.
			r.err = fmt.Errorf("reading the body: %w", err)
			r.timeout = ctx.Err() == nil && rctx.Err() != nil
			return r
		}
		r.status = resp.StatusCode
		return r
	}
}

func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// retryAfterDelay reads Retry-After (seconds or an HTTP date), bounded;
// 1 s when absent.
func retryAfterDelay(h string, now time.Time) time.Duration {
	d := time.Second
	if h != "" {
		if n, err := strconv.Atoi(h); err == nil {
			d = time.Duration(n) * time.Second
		} else if t, err := http.ParseTime(h); err == nil {
			d = t.Sub(now)
		}
	}
	return min(max(d, minRetryAfter), maxRetryAfter)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type viewerState int

const (
	entering viewerState = iota // fetching the entry URL
	playing
	done
)

// viewer is one simulated hls.js. Its playback goroutine and, with
// content steering, its steering goroutine share mu's fields with the
// reporter.
type viewer struct {
	id     int
	sw     *swarm
	client *http.Client // the swarm's, or its own with churn

	mu    sync.Mutex
	state viewerState
	paths *pathwaySet
	bw    bandwidth
	buf   playout
	host  string // host:port that served the last part
	rec   record // per-viewer figures (perviewer.go)

	// Used by the playback goroutine only.
	level int // variant index within the pathway
	body  bytes.Buffer
	inits map[string]bool // init segment URLs fetched
	hosts map[string]bool // hosts this viewer had parts from
}

func (v *viewer) logf(format string, args ...any) {
	if v.sw.log != nil {
		v.sw.log.Printf("viewer %d: "+format, append([]any{v.id}, args...)...)
	}
}

func (v *viewer) get(ctx context.Context, u string, timeout time.Duration, body *bytes.Buffer) response {
	r := get(ctx, v.client, u, timeout, body)
	v.sw.c.requests.Add(1)
	if r.redirects > 0 {
		v.sw.c.redirects.Add(int64(r.redirects))
	}
	return r
}

// run is the viewer's life: arrive, start steering, play until the stream
// ends or ctx does. ctx is the run's context (runCtx), or one derived from
// it that ends when the viewer leaves.
func (v *viewer) run(runCtx, ctx context.Context) {
	defer func() {
		v.mu.Lock()
		// A viewer stopped by the end of the run still counts as there
		// (with its host) in the final report; one that left does not.
		if runCtx.Err() == nil {
			v.state = done
		}
		v.buf.end(time.Now())
		v.mu.Unlock()
	}()
	mv, err := v.enter(ctx)
	if err != nil {
		return
	}
	initial := "."
	if mv.steering != nil {
		initial = mv.steering.pathway
	}
	v.mu.Lock()
	v.paths = newPathwaySet(mv.variants, initial)
	v.state = playing
	v.mu.Unlock()
	if mv.steering != nil {
		sctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.steer(sctx, newSteerer(mv.steering.uri))
		}()
		// Steering stops with playback, as hls.js stops it once the media
		// has ended.
		defer func() {
			cancel()
			wg.Wait()
		}()
	}
	if err := v.playback(ctx); err != nil && ctx.Err() == nil {
		v.logf("playback ended: %v", err)
		v.finished(err)
	}
}

// enter fetches the entry URL until it answers with a multivariant
// playlist. A 503 is a shed viewer: it comes back after Retry-After.
func (v *viewer) enter(ctx context.Context) (*multivariant, error) {
	c := &v.sw.c
	for {
		r := v.get(ctx, v.sw.cfg.entry, entryTimeout, &v.body)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if r.status != 0 {
			v.sw.entryAnswered.Store(true)
		}
		wait := time.Second
		switch {
		case r.status == http.StatusServiceUnavailable:
			c.sheds.Add(1)
			wait = retryAfterDelay(r.retryAfter, time.Now())
			v.logf("entry shed (503), retrying in %v", wait)
		case r.ok():
			mv, err := parseMultivariant(v.body.String(), r.final)
			if err == nil {
				v.logf("entered at %s: %d variants, steering %v", r.final, len(mv.variants), mv.steering != nil)
				return mv, nil
			}
			c.entryErrors.Add(1)
			v.logf("entry %s: %v", r.final, err)
		default:
			c.entryErrors.Add(1)
			v.logf("entry: status %d: %v", r.status, r.err)
		}
		if !sleep(ctx, wait) {
			return nil, ctx.Err()
		}
	}
}

// steer loads the steering manifest at once and then as it says.
func (v *viewer) steer(ctx context.Context, st *steerer) {
	c := &v.sw.c
	var body bytes.Buffer // playback has its own
	var wait time.Duration
	for sleep(ctx, wait) {
		v.mu.Lock()
		pathway, tput := v.paths.current, v.bw.throughput()
		v.mu.Unlock()
		u, err := st.request(pathway, tput)
		if err != nil {
			c.steeringErrors.Add(1)
			c.steeringStopped.Add(1)
			v.logf("steering disabled: %v", err)
			return
		}
		var r steerResult
		for attempt := 0; ; attempt++ {
			resp := v.get(ctx, u, steeringTimeout, &body)
			if ctx.Err() != nil {
				return
			}
			r = steerResult{status: resp.status, timeout: resp.timeout, body: body.Bytes(), reqURL: u}
			retry, after := steerRetry(r, attempt)
			if !retry {
				break
			}
			if !sleep(ctx, after) {
				return
			}
		}
		act := st.handle(r)
		if act.err != nil {
			c.steeringErrors.Add(1)
			v.logf("steering %s: %v", u, act.err)
		} else {
			c.steeringLoads.Add(1)
		}
		if m := act.manifest; m != nil {
			v.mu.Lock()
			from := v.paths.current
			err := v.paths.applyClones(m.Clones)
			if err == nil && m.Priority != nil {
				v.paths.updatePriority(m.Priority, time.Now())
			}
			to := v.paths.current
			v.mu.Unlock()
			if err != nil {
				c.steeringErrors.Add(1)
				v.logf("steering manifest: %v", err)
			}
			if to != from {
				c.switches.Add(1)
				c.steeredSwitches.Add(1)
				v.logf("steered from pathway %q to %q", from, to)
			}
		}
		if act.stop {
			c.steeringStopped.Add(1)
			switch st.stopped {
			case "429":
				c.steering429.Add(1)
			case "410":
				c.steering410.Add(1)
			}
			v.logf("steering stopped (%s)", st.stopped)
			return
		}
		wait = act.next
	}
}

// failover sends the failed pathway to the penalty box; it reports
// whether the viewer is on another pathway now.
func (v *viewer) failover(failed string) bool {
	v.mu.Lock()
	from := v.paths.current
	resolved := v.paths.penalize(failed, time.Now())
	to := v.paths.current
	v.mu.Unlock()
	v.sw.c.penalties.Add(1)
	if to != from {
		v.sw.c.switches.Add(1)
		v.logf("pathway %q failed: switched to %q", failed, to)
	} else if !resolved {
		v.logf("pathway %q failed and no other is left: retrying every %v", failed, stuckRetry)
	}
	return resolved
}

func (v *viewer) gen() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.paths.gen
}

// loaded is a media playlist and where it came from.
type loaded struct {
	pl      *mediaPlaylist
	base    *url.URL // the URL after redirects: parts resolve against it
	pathway string
	gen     int
	at      time.Time
}

// directives adds _HLS_msn, _HLS_part and, for a delta update,
// _HLS_skip=YES to a variant URI, keeping its own query.
func directives(uri string, c cursor, skip bool) (string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("_HLS_msn", strconv.FormatUint(c.msn, 10))
	q.Set("_HLS_part", strconv.Itoa(c.idx))
	if skip {
		q.Set("_HLS_skip", "YES")
	} else {
		q.Del("_HLS_skip")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// blockTimeout is hls.js's deadline for a blocking reload:
// max(3 part targets, 0.8 target durations), at most 10 s.
func blockTimeout(prev *mediaPlaylist) time.Duration {
	if prev == nil || prev.partTarget <= 0 || prev.targetDuration <= 0 {
		return playlistTimeout
	}
	return min(secondsDuration(max(3*prev.partTarget, 0.8*prev.targetDuration)), playlistTimeout)
}

// loadPlaylist fetches the current pathway's media playlist, for the part
// want (blocking) or, with want nil, as it is.
func (v *viewer) loadPlaylist(ctx context.Context, want *cursor, prev *mediaPlaylist, skip bool) (loaded, error) {
	c := &v.sw.c
	tries := 0
	for {
		v.mu.Lock()
		vr := v.paths.variant(v.level)
		pathway, gen := v.paths.current, v.paths.gen
		v.mu.Unlock()
		u, timeout := vr.uri, playlistTimeout
		if want != nil {
			var err error
			if u, err = directives(vr.uri, *want, skip); err != nil {
				return loaded{}, fmt.Errorf("variant URI %q: %w", vr.uri, err)
			}
			timeout = blockTimeout(prev)
		}
		r := v.get(ctx, u, timeout, &v.body)
		if ctx.Err() != nil {
			return loaded{}, ctx.Err()
		}
		var perr error
		if r.ok() {
			var pl *mediaPlaylist
			if pl, perr = parseMedia(v.body.String()); perr == nil {
				return loaded{pl: pl, base: r.final, pathway: pathway, gen: gen, at: time.Now()}, nil
			}
		}
		c.mediaErrors.Add(1)
		v.logf("playlist %s: status %d timeout %v: %v %v", u, r.status, r.timeout, r.err, perr)
		switch {
		case r.timeout && tries < playlistRetries:
			// A blocking reload that timed out is retried at once without
			// its directives.
			tries++
			want = nil
			continue
		case perr == nil && !r.timeout && retryableStatus(r.status) && tries < playlistRetries:
			if !sleep(ctx, retryDelay(tries)) {
				return loaded{}, ctx.Err()
			}
			tries++
			continue
		}
		if v.failover(pathway) {
			tries, skip = 0, false
			continue
		}
		if !sleep(ctx, stuckRetry) {
			return loaded{}, ctx.Err()
		}
	}
}

// loadMedia fetches an init segment, a part or a segment of the playlist
// cur. errSwitched means the viewer is on another pathway now.
func (v *viewer) loadMedia(ctx context.Context, u string, cur loaded) (response, error) {
	c := &v.sw.c
	tries := 0
	for {
		r := v.get(ctx, u, fragTimeout, nil)
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		if r.ok() {
			return r, nil
		}
		c.mediaErrors.Add(1)
		v.logf("media %s: status %d timeout %v: %v", u, r.status, r.timeout, r.err)
		if v.gen() != cur.gen {
			return r, errSwitched
		}
		switch {
		case r.timeout && tries < fragTimeRetries:
			tries++
			continue
		case !r.timeout && retryableStatus(r.status) && tries < fragErrorRetries:
			if !sleep(ctx, retryDelay(tries)) {
				return r, ctx.Err()
			}
			tries++
			continue
		}
		if v.failover(cur.pathway) {
			return r, errSwitched
		}
		if !sleep(ctx, stuckRetry) {
			return r, ctx.Err()
		}
		if v.gen() != cur.gen {
			return r, errSwitched
		}
	}
}

// fetchInit fetches the segment's init section once per URL.
func (v *viewer) fetchInit(ctx context.Context, cur loaded, s *segment) error {
	if s.mapURI == "" {
		return nil
	}
	u, err := resolve(cur.base, s.mapURI)
	if err != nil {
		return fmt.Errorf("EXT-X-MAP URI %q: %w", s.mapURI, err)
	}
	us := u.String()
	if v.inits[us] {
		return nil
	}
	r, err := v.loadMedia(ctx, us, cur)
	if err != nil {
		return err
	}
	v.inits[us] = true
	v.sw.c.bytes.Add(r.bytes)
	return nil
}

// gotMedia buffers d seconds of media just fetched.
func (v *viewer) gotMedia(r response, d float64) {
	host := r.final.Host
	v.mu.Lock()
	// Taken under the lock so that the reporter, which moves the
	// playhead too, never sees time go backwards.
	now := time.Now()
	v.buf.add(now, secondsDuration(d))
	v.bw.sample(r.total-r.ttfb, r.bytes)
	if host != v.host {
		v.rec.moved(now, host)
	}
	v.host = host
	v.rec.lastPart = now
	v.mu.Unlock()
	v.sw.c.parts.Add(1)
	v.sw.c.bytes.Add(r.bytes)
	if !v.hosts[host] {
		v.hosts[host] = true
		v.sw.firstPart(host, now)
	}
}

// edge identifies how far a playlist reaches, to tell a reload that
// brought nothing new.
type edge struct {
	msn      uint64
	parts    int
	complete bool
}

func edgeOf(pl *mediaPlaylist) edge {
	if n := len(pl.segments); n > 0 {
		s := &pl.segments[n-1]
		return edge{s.msn, len(s.parts), s.complete()}
	}
	return edge{}
}

// playback plays like hls.js in low-latency mode: a first playlist without
// directives, a start PART-HOLD-BACK behind the live edge, then each part
// in order, with a blocking reload for the next part once past the last
// listed one.
func (v *viewer) playback(ctx context.Context) error {
	c := &v.sw.c
	cur, err := v.loadPlaylist(ctx, nil, nil, false)
	if err != nil {
		return err
	}
	if cur.pl.endList {
		c.ended.Add(1)
		v.finished(nil)
		return nil
	}
	var pos cursor
	placed := false
	var segPlayed float64 // of pos.msn's segment, fetched as parts
	for ctx.Err() == nil {
		if !placed {
			var ok bool
			if pos, ok = cur.pl.startCursor(); !ok {
				// Nothing listed yet.
				if !sleep(ctx, secondsDuration(max(cur.pl.targetDuration/2, 0.1))) {
					break
				}
				if cur, err = v.loadPlaylist(ctx, nil, cur.pl, false); err != nil {
					return err
				}
				continue
			}
			placed = true
			v.logf("starting at msn %d part %d on pathway %q", pos.msn, pos.idx, cur.pathway)
		}
		if v.gen() != cur.gen {
			// Steering or a failover moved the viewer: the next playlist
			// comes from the new pathway, for the same part.
			if cur, err = v.loadPlaylist(ctx, &pos, cur.pl, false); err != nil {
				return err
			}
			continue
		}
		w, seg := cur.pl.locate(pos)
		switch w {
		case atPart:
			if err := v.fetchInit(ctx, cur, seg); errors.Is(err, errSwitched) {
				continue
			} else if err != nil {
				return err
			}
			p := seg.parts[pos.idx]
			u, err := resolve(cur.base, p.uri)
			if err != nil {
				return fmt.Errorf("part URI %q: %w", p.uri, err)
			}
			r, err := v.loadMedia(ctx, u.String(), cur)
			if errors.Is(err, errSwitched) {
				continue
			} else if err != nil {
				return err
			}
			v.gotMedia(r, p.duration)
			v.media(seg.partStart(pos.idx), p.duration)
			segPlayed += p.duration
			pos.idx++
		case atNextSegment:
			pos, segPlayed = cursor{pos.msn + 1, 0}, 0
		case atSegment:
			// Behind the parts: hls.js loads the whole segment.
			if err := v.fetchInit(ctx, cur, seg); errors.Is(err, errSwitched) {
				continue
			} else if err != nil {
				return err
			}
			u, err := resolve(cur.base, seg.uri)
			if err != nil {
				return fmt.Errorf("segment URI %q: %w", seg.uri, err)
			}
			r, err := v.loadMedia(ctx, u.String(), cur)
			if errors.Is(err, errSwitched) {
				continue
			} else if err != nil {
				return err
			}
			v.gotMedia(r, max(seg.duration-segPlayed, 0))
			if !seg.pdt.IsZero() {
				v.media(seg.pdt.Add(secondsDuration(segPlayed)), max(seg.duration-segPlayed, 0))
			}
			pos, segPlayed = cursor{pos.msn + 1, 0}, 0
		case atBehind:
			to, _ := cur.pl.startCursor()
			n := cur.pl.partsBetween(pos, to)
			c.skippedParts.Add(int64(n))
			v.skipped(n)
			v.forgetMedia()
			v.logf("fell behind the window at msn %d part %d: skipping %d parts to msn %d part %d", pos.msn, pos.idx, n, to.msn, to.idx)
			pos, segPlayed = to, 0
		case atSkipped:
			if cur, err = v.loadPlaylist(ctx, &pos, cur.pl, false); err != nil {
				return err
			}
		case atEnd:
			c.ended.Add(1)
			v.finished(nil)
			v.logf("stream ended")
			return nil
		case atWait:
			before, gen := edgeOf(cur.pl), cur.gen
			if !cur.pl.canBlock {
				if !sleep(ctx, secondsDuration(max(cur.pl.targetDuration/2, 0.1))) {
					return ctx.Err()
				}
				if cur, err = v.loadPlaylist(ctx, nil, cur.pl, false); err != nil {
					return err
				}
				continue
			}
			// Delta updates as hls.js asks for them: whenever the
			// playlist held is younger than half the skip boundary.
			skip := cur.pl.canSkipUntil > 0 && time.Since(cur.at).Seconds() < cur.pl.canSkipUntil/2
			if cur, err = v.loadPlaylist(ctx, &pos, cur.pl, skip); err != nil {
				return err
			}
			if cur.gen == gen && edgeOf(cur.pl) == before {
				// Nothing new: hls.js waits half a target duration after a
				// miss.
				if !sleep(ctx, secondsDuration(max(cur.pl.targetDuration/2, 0.1))) {
					return ctx.Err()
				}
			}
		}
	}
	return ctx.Err()
}
