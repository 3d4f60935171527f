package edge

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// sessionParam carries a viewer's session in media playlist URIs. The
// multivariant playlist hands each viewer its own, and players keep a
// variant URI's query on every reload, so the edge can count viewers
// without cookies. Players that fetch media.m3u8 directly are counted by
// their connection's address instead.
const sessionParam = "rmsid"

// moveParam marks the media playlist URI of a pathway a steered player
// moves to (every pathway but its first, and every steering clone). Such
// a first request is a move, not a start: it is answered at once, because
// the player is playing on a buffer of about PART-HOLD-BACK, shorter than
// the first-playlist waits (firstSnapshot). Waiting there stalled hls.js
// 3.5 s in 5 of 20 runs of TestSteeringBrowserDrainToNewEdge.
const moveParam = "rmsmove"

// A viewer counts while one of its playlist requests is in flight and for
// a while after the last one ended: minActive, or 1.5 target durations for
// players that reload once per target duration. A viewer that moved to
// another node stops counting here within seconds, which routing and drain
// rely on.
const minActive = 3 * time.Second

// forgetAfter is how long a quiet session is remembered, so that a viewer
// who comes back is not counted as new (its first playlist request waits
// for a startable window, see startable).
const forgetAfter = 30 * time.Second

// maxSessions bounds the sessions tracked per stream against hostile
// clients inventing them.
const maxSessions = 200_000

// viewers counts recent viewers per stream. The zero value is ready.
type viewers struct {
	mu      sync.Mutex
	streams map[string]map[string]*session
	swept   time.Time
}

type session struct {
	last     time.Time     // when its latest request started or ended
	active   time.Duration // how long it counts after last
	inflight int
}

func (s *session) counts(now time.Time) bool {
	return s.inflight > 0 || now.Sub(s.last) <= s.active
}

func newSession() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sessionKey names the viewer of a media playlist request whose query is
// q.
func sessionKey(r *http.Request, q url.Values) string {
	if key := q.Get(sessionParam); validSession(key) {
		return key
	}
	return r.RemoteAddr
}

// seen records the start of a media playlist request of a stream whose
// target duration is td; done must be called when it ends. first reports
// whether the request is the viewer's first: a session (or, without one, a
// connection) not seen recently.
func (v *viewers) seen(stream, key string, td time.Duration) (first bool) {
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.streams == nil {
		v.streams = map[string]map[string]*session{}
	}
	m := v.streams[stream]
	if m == nil {
		m = map[string]*session{}
		v.streams[stream] = m
	}
	s := m[key]
	if s == nil {
		if len(m) >= maxSessions {
			return true
		}
		s = &session{}
		m[key] = s
	}
	first = s.last.IsZero() || now.Sub(s.last) > forgetAfter
	s.last, s.active = now, max(minActive, td*3/2)
	s.inflight++
	if now.Sub(v.swept) > forgetAfter {
		v.sweep(now)
	}
	return first
}

// done records the end of a request that seen recorded.
func (v *viewers) done(stream, key string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s := v.streams[stream][key]; s != nil {
		s.inflight--
		s.last = time.Now()
	}
}

// sweep forgets sessions gone quiet. The caller holds mu.
func (v *viewers) sweep(now time.Time) {
	v.swept = now
	for stream, m := range v.streams {
		for k, s := range m {
			if s.inflight == 0 && now.Sub(s.last) > forgetAfter {
				delete(m, k)
			}
		}
		if len(m) == 0 {
			delete(v.streams, stream)
		}
	}
}

// count returns every stream's viewers.
func (v *viewers) count() map[string]int {
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string]int{}
	for stream, m := range v.streams {
		n := 0
		for _, s := range m {
			if s.counts(now) {
				n++
			}
		}
		if n > 0 {
			out[stream] = n
		}
	}
	return out
}

// Viewers returns how many viewers each stream has on this node.
func (s *Server) Viewers() map[string]int { return s.viewers.count() }

// ViewersOf returns how many viewers a stream has on this node.
func (s *Server) ViewersOf(stream string) int { return s.viewers.count()[stream] }
