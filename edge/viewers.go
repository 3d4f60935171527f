package edge

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"sync"
	"time"
)

// sessionParam carries a viewer's session in media playlist URIs. The
// multivariant playlist hands each viewer its own, and players keep a
// variant URI's query on every reload, so the edge can count viewers
// without cookies. Players that fetch media.m3u8 directly are counted by
// their connection's address instead.
const sessionParam = "rmsid"

// viewerTTL is how long a viewer counts after its last playlist request:
// players reload at least every target duration, or block for up to three.
const viewerTTL = 10 * time.Second

// maxSessions bounds the sessions tracked per stream against hostile
// clients inventing them.
const maxSessions = 200_000

// viewers counts recent viewers per stream. The zero value is ready.
type viewers struct {
	mu      sync.Mutex
	streams map[string]map[string]time.Time
	swept   time.Time
}

func newSession() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// seen records a media playlist request. It reports whether the request
// is the viewer's first: a session (or, without one, a connection) not
// seen in the last viewerTTL.
func (v *viewers) seen(stream string, r *http.Request) (first bool) {
	key := r.URL.Query().Get(sessionParam)
	if len(key) != 16 {
		key = r.RemoteAddr
	}
	now := time.Now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.streams == nil {
		v.streams = map[string]map[string]time.Time{}
	}
	m := v.streams[stream]
	if m == nil {
		m = map[string]time.Time{}
		v.streams[stream] = m
	}
	_, known := m[key]
	if known || len(m) < maxSessions {
		m[key] = now
	}
	if now.Sub(v.swept) > viewerTTL {
		v.sweep(now)
	}
	return !known
}

// sweep forgets viewers gone quiet. The caller holds mu.
func (v *viewers) sweep(now time.Time) {
	v.swept = now
	for stream, m := range v.streams {
		for k, t := range m {
			if now.Sub(t) > viewerTTL {
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
		for _, t := range m {
			if now.Sub(t) <= viewerTTL {
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
