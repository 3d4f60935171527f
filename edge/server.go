// Package edge serves Low-Latency HLS from relay streams: the multivariant
// and media playlists with blocking reload, preload hints and delta
// updates, and init segments, parts and segments. It reads streams through
// the Streams interface and never writes them.
package edge

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relaymesh/relaymesh/edge/internal/negotiate"
	"github.com/relaymesh/relaymesh/edge/player"
	"github.com/relaymesh/relaymesh/internal/ratelog"
	"github.com/relaymesh/relaymesh/relay"
)

// Streams finds the stream a viewer asks for. It returns
// relay.ErrNoStream when the node cannot serve it.
type Streams interface {
	Lookup(ctx context.Context, name string) (*relay.Stream, error)
}

// PathPrefix is where streams are served: /live/{stream}/{file}.
const PathPrefix = "/live/"

// Server is the LL-HLS handler. Its zero value is not usable: Streams must
// be set.
type Server struct {
	Streams Streams
	Logger  *slog.Logger
	// Routing, if set, sends viewers across the mesh; nil serves every
	// viewer here.
	Routing *Routing

	rejected ratelog.Limiter // malformed or hostile requests
	viewers  viewers
	gzips    sync.Pool // *gzip.Writer: each holds about 1 MB of state
}

// reject logs a request refused as malformed, at most every few seconds.
func (s *Server) reject(r *http.Request, why string) {
	ok, suppressed := s.rejected.Allow()
	if !ok {
		return
	}
	target := r.URL.RequestURI()
	if len(target) > 200 {
		target = target[:200] + "..."
	}
	s.log().Info("rejected viewer request", "peer", r.RemoteAddr, "target", target, "why", why, "suppressed", suppressed)
}

// rendered is a media playlist, plain and gzipped, memoized on the
// snapshot it was rendered from, with its Content-Length values.
type rendered struct {
	plain, gz       []byte
	plainLen, gzLen []string
}

// Header values set on every response, shared so that setting one costs
// no allocation. Read-only: net/http never changes a value in place, and
// Header.Add appends to a copy (each has len == cap).
var (
	hdrAnyOrigin   = []string{"*"}
	hdrExposed     = []string{"Content-Length, Content-Type"}
	hdrPlaylist    = []string{"application/vnd.apple.mpegurl"}
	hdrMP4         = []string{"video/mp4"}
	hdrPriorityPl  = []string{"u=1"}
	hdrPriorityMP4 = []string{"u=2"}
	hdrVaryEnc     = []string{"Accept-Encoding"}
	hdrGzip        = []string{"gzip"}
	hdrNoStore     = []string{"no-store"}
	hdrMaxAge      = func() (v [61][]string) { // max-age=0 to 60: 6 x a 10 s target duration
		for i := range v {
			v[i] = []string{"max-age=" + strconv.Itoa(i)}
		}
		return v
	}()
)

// contentLength is a Content-Length header value.
func contentLength(n int) []string { return []string{strconv.Itoa(n)} }

// renderKey names a rendered playlist in a snapshot's memo.
type renderKey struct{ skip bool }

func (s *Server) log() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// ServeHTTP answers GET, HEAD and OPTIONS under PathPrefix.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h["Access-Control-Allow-Origin"] = hdrAnyOrigin
	h["Access-Control-Expose-Headers"] = hdrExposed
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Range, Origin, Accept, Accept-Encoding")
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		h.Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// The raw (still escaped) path is split by hand, not cleaned: "..",
	// "%2f", empty or extra elements are simply not found.
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), PathPrefix)
	name, file, ok2 := strings.Cut(rest, "/")
	if ok && !ok2 && relay.ValidName(name) {
		http.Redirect(w, r, PathPrefix+name+"/", http.StatusMovedPermanently)
		return
	}
	if !ok || !ok2 || !relay.ValidName(name) || strings.Contains(file, "/") {
		s.reject(r, "malformed path")
		notFound(w, time.Second)
		return
	}
	if file == "" {
		player.ServePage(w, r, name)
		return
	}
	if file == steeringName {
		s.serveSteering(w, r, name)
		return
	}
	var routed *admission
	if file == "index.m3u8" && s.Routing.enabled() {
		// Before the lookup: a node that sends the viewer elsewhere need
		// not pull the stream.
		if routed = s.admit(w, r, name); routed == nil {
			return
		}
	}
	st, err := s.Streams.Lookup(r.Context(), name)
	if err != nil {
		if !errors.Is(err, relay.ErrNoStream) {
			s.log().Warn("stream lookup failed", "stream", name, "err", err)
		}
		notFound(w, time.Second)
		return
	}
	switch {
	case file == "index.m3u8":
		s.serveMultivariant(w, r, st, routed)
	case file == mediaPlaylistName:
		s.serveMedia(w, r, st)
	default:
		s.serveFile(w, r, st, file)
	}
}

func notFound(w http.ResponseWriter, maxAge time.Duration) {
	cacheFor(w, maxAge)
	http.Error(w, "not found", http.StatusNotFound)
}

func cacheFor(w http.ResponseWriter, d time.Duration) {
	if n := max(int(d/time.Second), 0); n < len(hdrMaxAge) {
		w.Header()["Cache-Control"] = hdrMaxAge[n]
	} else {
		w.Header().Set("Cache-Control", "max-age="+strconv.Itoa(n))
	}
}

func targetDuration(snap *relay.Snapshot) time.Duration {
	return time.Duration(snap.TargetDuration) * time.Second
}

func (s *Server) serveMultivariant(w http.ResponseWriter, r *http.Request, st *relay.Stream, routed *admission) {
	// A viewer may arrive between publish and the first keyframe: wait a
	// little for the codecs rather than fail.
	snap := st.Snapshot()
	snap, err := st.WaitFor(r.Context(), 3*targetDuration(snap), func(sn *relay.Snapshot) bool { return sn.LatestInit() != nil })
	if err != nil || snap.LatestInit() == nil {
		w.Header()["Cache-Control"] = hdrNoStore
		http.Error(w, "stream has no media yet", http.StatusServiceUnavailable)
		return
	}
	// Each viewer's copy names its own session.
	w.Header()["Cache-Control"] = hdrNoStore
	switch {
	case routed != nil && len(routed.pathways) > 0:
		writePlaylist(w, r, &rendered{plain: s.steeredPlaylist(snap, st.Name, routed)})
	case routed != nil:
		writePlaylist(w, r, &rendered{plain: RenderMultivariant(snap, mediaPlaylistName+"?"+sessionParam+"="+routed.session)})
	default:
		writePlaylist(w, r, &rendered{plain: RenderMultivariant(snap, mediaPlaylistName+"?"+sessionParam+"="+newSession())})
	}
}

// holdBackParts is PART-HOLD-BACK in parts: players start that far behind
// the live edge.
const holdBackParts = 3

// startable reports whether a player that starts PART-HOLD-BACK behind the
// live edge of snap can start from it.
//
// hls.js 1.7 that starts inside the open segment loads the parts listed
// there in one run. If a reload completes the segment between the end of
// that run and its append, hls.js takes the segment for buffered whole and
// never fetches the rest: it stalls until the segment's parts leave the
// playlist (three target durations, 5–9 s seen), then jumps the hole. A
// start among the parts of a complete segment cannot meet this, nor a
// start in an open segment far from its end. So a viewer's first playlist
// waits while the open segment holds PART-HOLD-BACK parts or more and is
// expected (from the segment before it) to complete within
// PART-HOLD-BACK − 1 more: after the boundary the player starts in the
// segment just completed. Viewers arriving elsewhere in the segment do not
// wait.
//
// In the first segments of a stream, a start in a complete segment stalls
// hls.js instead (or leaves it 4 s behind), so there a first playlist waits
// until the open segment holds PART-HOLD-BACK parts.
//
// Later requests never wait: players that reload without blocking
// (gohlslib) would skip parts.
func startable(snap *relay.Snapshot) bool { return startableAfter(snap, 0) }

// startableAfter is startable for snap with n more parts in its open
// segment.
func startableAfter(snap *relay.Snapshot, n int) bool {
	open, prev := snap.Open(), snap.LastComplete()
	if open == nil || prev == nil || !snap.Live {
		return true
	}
	parts := len(open.Parts) + n
	if len(snap.Segments) <= streamStartSegments {
		return parts >= holdBackParts
	}
	return parts < holdBackParts || len(prev.Parts)-parts >= holdBackParts
}

// streamStartSegments: a window of this many segments or fewer, the open
// one included, is the start of a stream for startable.
const streamStartSegments = 3

// firstSnapshot returns the snapshot a viewer's first playlist is
// answered from: one a player starts well from (startable), and fresh.
//
// Players place their start from the moment the first playlist arrives
// (hls.js: its newest part's end plus the time since arrival), not from
// when that part ended here. A playlist answered late in a part starts
// them up to a part further behind than PART-HOLD-BACK, and a player that
// does not catch up stays there for the session. So a first playlist whose
// newest part is more than half a part old waits for the next part, while
// it is due: at most half a part of wait, for at most half a part of
// error. Not when that part would bring the segment's end near: the
// viewer would wait for the boundary as well (up to half a second at a
// cold join). A player moving here from another node (moveParam) never
// waits.
//
// Not a 503 when a wait runs out: the playlist is valid, only less
// convenient to start from.
func firstSnapshot(ctx context.Context, st *relay.Stream, snap *relay.Snapshot) *relay.Snapshot {
	pt := st.PartTarget
	if !startable(snap) {
		return waitStartable(ctx, st)
	}
	age := snap.PartAge(time.Now())
	if !snap.Live || age <= pt/2 || age >= pt+pt/2 || !startableAfter(snap, 1) {
		return snap // fresh; the publisher is late; or the wait would be long
	}
	n := snap.NextPart
	next, err := st.WaitFor(ctx, pt+pt/2-age, func(s *relay.Snapshot) bool { return s.NextPart != n })
	if err != nil || !startable(next) {
		return snap // the next part is late, or (a shorter segment) not one to start from
	}
	return next
}

// waitStartable waits until the stream is startable, for up to
// PART-HOLD-BACK + 1 parts. The snapshot that makes it so was published
// just now, so it is fresh too.
func waitStartable(ctx context.Context, st *relay.Stream) *relay.Snapshot {
	if next, err := st.WaitFor(ctx, (holdBackParts+1)*st.PartTarget, startable); err == nil {
		return next
	}
	return st.Snapshot()
}

func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request, st *relay.Stream) {
	snap := st.Snapshot()
	td := targetDuration(snap)
	var q url.Values // nil, which reads as empty, saves parsing a plain reload's query
	if r.URL.RawQuery != "" {
		q = r.URL.Query()
	}
	key := sessionKey(r, q)
	first := s.viewers.seen(st.Name, key, td)
	defer s.viewers.done(st.Name, key)
	d, err := ParseDirectives(q)
	if err != nil {
		s.reject(r, err.Error())
		cacheFor(w, td)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if d.TooFarAhead(snap, st.PartTarget) {
		cacheFor(w, 4*td)
		http.Error(w, "requested media is too far beyond the live edge", http.StatusBadRequest)
		return
	}
	wait := d
	if !d.Blocking() && snap.LastComplete() == nil {
		// A stream that has just started: wait for its first complete
		// segment. Players start from a playlist, and some (gohlslib,
		// players that start by segment) reject one with parts only.
		wait = Directives{HasMSN: true}
		if seg := snap.Open(); seg != nil {
			wait.MSN = seg.MSN
		}
	}
	if wait.Blocking() && !wait.Satisfied(snap) {
		snap, err = st.WaitFor(r.Context(), 3*td, wait.Satisfied)
		if err != nil || !wait.Satisfied(snap) {
			// Also when the node shuts down: an answer with no playlist in
			// it must never be a 200.
			w.Header()["Cache-Control"] = hdrNoStore
			http.Error(w, "playlist update did not arrive in time", http.StatusServiceUnavailable)
			return
		}
	}
	if first && !d.Blocking() && !q.Has(moveParam) {
		snap = firstSnapshot(r.Context(), st, snap)
	}
	if d.Blocking() {
		cacheFor(w, 6*td)
	} else {
		cacheFor(w, td/2)
	}
	writePlaylist(w, r, s.render(st, snap, d.Skip))
}

// render returns the playlist for snap, rendered and compressed once
// however many viewers ask for it.
func (s *Server) render(st *relay.Stream, snap *relay.Snapshot, skip bool) *rendered {
	return snap.Memo(renderKey{skip}, func() any {
		return s.renderUncached(st, snap, skip)
	}).(*rendered)
}

func (s *Server) renderUncached(st *relay.Stream, snap *relay.Snapshot, skip bool) *rendered {
	out := &rendered{plain: RenderMedia(snap, st.PartTarget, skip)}
	var buf bytes.Buffer
	buf.Grow(len(out.plain)/4 + 64) // playlists compress to about a fifth
	zw, _ := s.gzips.Get().(*gzip.Writer)
	if zw == nil {
		zw, _ = gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	} else {
		zw.Reset(&buf)
	}
	zw.Write(out.plain)
	zw.Close()
	s.gzips.Put(zw)
	out.gz = buf.Bytes()
	out.plainLen, out.gzLen = contentLength(len(out.plain)), contentLength(len(out.gz))
	return out
}

// writePlaylist sends out, gzipped if it has a gzipped copy and the viewer
// takes it.
func writePlaylist(w http.ResponseWriter, r *http.Request, out *rendered) {
	h := w.Header()
	h["Content-Type"] = hdrPlaylist
	h["Priority"] = hdrPriorityPl
	if len(h["Vary"]) == 0 {
		h["Vary"] = hdrVaryEnc
	} else {
		h.Add("Vary", "Accept-Encoding")
	}
	body, size := out.plain, out.plainLen
	if out.gz != nil && negotiate.AcceptsGzip(r) {
		h["Content-Encoding"] = hdrGzip
		body, size = out.gz, out.gzLen
	}
	if size == nil {
		size = contentLength(len(body))
	}
	h["Content-Length"] = size
	if r.Method == http.MethodHead {
		return
	}
	w.Write(body)
}

// acceptsGzip is kept for the tests' table.
func acceptsGzip(r *http.Request) bool { return negotiate.AcceptsGzip(r) }

// mediaFile names an init segment, a part or a segment.
type mediaFile struct {
	kind byte // 'i', 'p' or 's'
	n    uint64
}

func parseMediaFile(file string) (mediaFile, bool) {
	for _, f := range []struct {
		prefix, suffix string
		kind           byte
	}{{"init", ".mp4", 'i'}, {"part", ".m4s", 'p'}, {"seg", ".m4s", 's'}} {
		num, ok := strings.CutPrefix(file, f.prefix)
		if !ok {
			continue
		}
		num, ok = strings.CutSuffix(num, f.suffix)
		// One spelling per resource: no sign, no leading zeros.
		if !ok || num == "" || len(num) > 19 || strings.TrimLeft(num, "0123456789") != "" ||
			(len(num) > 1 && num[0] == '0') {
			return mediaFile{}, false
		}
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil {
			return mediaFile{}, false
		}
		return mediaFile{f.kind, n}, true
	}
	return mediaFile{}, false
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, st *relay.Stream, file string) {
	mf, ok := parseMediaFile(file)
	snap := st.Snapshot()
	td := targetDuration(snap)
	if !ok {
		notFound(w, td)
		return
	}
	// The body is one buffer (init, part) or a segment's parts.
	var (
		one   []byte
		parts []*relay.Part
		found bool
	)
	switch mf.kind {
	case 'i':
		if in := snap.Init(mf.n); in != nil {
			one, found = in.Data, true
		}
	case 's':
		if seg := snap.Segment(mf.n); seg != nil && seg.Complete {
			parts, found = seg.Parts, true
		}
	case 'p':
		p := snap.Part(mf.n)
		if p == nil && mf.n == snap.NextPart && !snap.Ended {
			// The hinted part: hold the request until it is complete
			// (RFC 8216bis 6.2.6), then send it whole. A publisher that
			// reconnects within the grace period still delivers it.
			snap, _ = st.WaitFor(r.Context(), 3*td, func(sn *relay.Snapshot) bool { return sn.Part(mf.n) != nil })
			p = snap.Part(mf.n)
			if p == nil && (!snap.Ended || r.Context().Err() != nil) {
				w.Header()["Cache-Control"] = hdrNoStore
				http.Error(w, "part did not arrive in time", http.StatusServiceUnavailable)
				return
			}
		}
		if p != nil {
			one, found = p.Data, true
		}
	}
	if !found {
		notFound(w, td)
		return
	}
	size := len(one)
	for _, p := range parts {
		size += len(p.Data)
	}
	h := w.Header()
	h["Content-Type"] = hdrMP4
	h["Content-Length"] = contentLength(size)
	h["Priority"] = hdrPriorityMP4
	cacheFor(w, 6*td)
	if r.Method == http.MethodHead {
		return
	}
	if parts == nil {
		w.Write(one)
		return
	}
	for _, p := range parts {
		if _, err := w.Write(p.Data); err != nil {
			return
		}
	}
}
