package edge

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/relaymesh/relaymesh/edge/steer"
	"github.com/relaymesh/relaymesh/relay"
)

// Routing sends viewers where there is room: HLS Content Steering for
// players that steer, 302 redirects of a new session's first request for
// those that do not, and 503s when no node has room. The zero value (no
// Router) serves every viewer here.
type Routing struct {
	Router *steer.Router
	Node   string        // this node's name in the mesh
	TTL    time.Duration // steering manifest TTL (rounded up to whole seconds)
	// RegionHeader names a request header that carries the viewer's
	// region, set by the operator's front balancer.
	RegionHeader string
	// Regions maps client addresses to regions, when no header says.
	Regions *steer.Regions
	// Region is this node's own, the viewer's when nothing else says.
	Region string
	// Alone: the node is in no mesh. It has nowhere to send viewers and
	// writes plain playlists; routing only sheds past --max-viewers.
	Alone bool
}

func (rt *Routing) enabled() bool { return rt != nil && rt.Router != nil }

// Names in URLs.
const (
	steeringName = "steering.json"
	regionParam  = "region"
	hopParam     = "rmhop" // redirects a request has followed
	seqParam     = "rmseq" // set on RELOAD-URI: not the viewer's first steering load
	// maxHops stops a redirect loop between nodes whose views disagree:
	// the third node serves.
	maxHops = 2
	// busySteeringCPU: above it this node stretches steering TTLs.
	busySteeringCPU = 0.9
	// shedRetryAfter is the Retry-After of a 503 for a viewer no node
	// has room for.
	shedRetryAfter = "5"
)

// validSession reports whether s looks like a session this package made.
func validSession(s string) bool {
	if len(s) != 16 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// validRegion bounds a region taken from a request.
func validRegion(s string) bool {
	return len(s) <= 64 && steer.ValidPathwayID(s)
}

// region is the viewer's region: the front balancer's header, the
// operator's address map, the region its steering URI carries, or this
// node's.
func (rt *Routing) region(r *http.Request) string {
	if rt.RegionHeader != "" {
		if v := strings.TrimSpace(r.Header.Get(rt.RegionHeader)); v != "" && validRegion(v) {
			return v
		}
	}
	if rt.Regions != nil {
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			if a, err := netip.ParseAddr(host); err == nil {
				if g := rt.Regions.Lookup(a); g != "" {
					return g
				}
			}
		}
	}
	if v := r.URL.Query().Get(regionParam); v != "" && validRegion(v) {
		return v
	}
	return rt.Region
}

// streamURL is a file of stream on node n.
func streamURL(n steer.Node, stream, file string) string {
	return n.URL + PathPrefix + stream + "/" + file
}

// mediaURL is the media playlist URI of stream on n for session; move
// marks it as a pathway the player moves to (moveParam).
func (rt *Routing) mediaURL(n steer.Node, stream, session string, move bool) string {
	u := streamURL(n, stream, mediaPlaylistName) + "?" + sessionParam + "=" + session
	if move {
		u += "&" + moveParam + "=1"
	}
	return u
}

func (rt *Routing) steeringURL(n steer.Node, stream, session, region string, reload bool) string {
	u := streamURL(n, stream, steeringName) + "?" + sessionParam + "=" + session
	if region != "" {
		u += "&" + regionParam + "=" + region
	}
	if reload {
		u += "&" + seqParam + "=1"
	}
	return u
}

// admission is a routed session served here.
type admission struct {
	session, region string
	pathways        []steer.Node // best first; never empty
}

// admit routes a new session's multivariant request. It answers the
// request itself (a redirect or a shed) and returns nil, or returns what
// the multivariant playlist served here lists.
func (s *Server) admit(w http.ResponseWriter, r *http.Request, stream string) *admission {
	rt := s.Routing
	q := r.URL.Query()
	session := q.Get(sessionParam)
	if !validSession(session) {
		session = newSession()
	}
	region := rt.region(r)
	hops, _ := strconv.Atoi(q.Get(hopParam))
	d := rt.Router.Admit(rt.Node, steer.Viewer{Session: session, Region: region})
	if d.Action == steer.Redirect && hops >= maxHops {
		d = steer.Decision{Action: steer.Serve}
		if self, ok := rt.Router.View(rt.Node).Node(rt.Node); ok {
			d.Pathways = []steer.Node{self}
		}
	}
	switch d.Action {
	case steer.Redirect:
		q.Set(sessionParam, session)
		q.Set(hopParam, strconv.Itoa(hops+1))
		q.Del(regionParam)
		if region != "" && region != rt.Region {
			q.Set(regionParam, region)
		}
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, streamURL(d.To, stream, "index.m3u8")+"?"+q.Encode(), http.StatusFound)
		return nil
	case steer.Shed:
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("Retry-After", shedRetryAfter)
		http.Error(w, "every node is full: try again shortly", http.StatusServiceUnavailable)
		return nil
	}
	pathways := d.Pathways
	if rt.Alone || len(pathways) == 0 || pathways[0].URL == "" {
		return &admission{session: session} // nowhere to steer to: serve it plainly
	}
	return &admission{session: session, region: region, pathways: pathways}
}

// steeredPlaylist renders the multivariant playlist for a routed session:
// every pathway, best first, and the steering server of its first
// fallback.
func (s *Server) steeredPlaylist(snap *relay.Snapshot, stream string, a *admission) []byte {
	rt := s.Routing
	ps := make([]Pathway, 0, len(a.pathways))
	for i, n := range a.pathways {
		ps = append(ps, Pathway{ID: n.Name, URI: rt.mediaURL(n, stream, a.session, i > 0)})
	}
	reload := a.pathways[0]
	if len(a.pathways) > 1 {
		reload = a.pathways[1]
	}
	return RenderSteered(snap, rt.steeringURL(reload, stream, a.session, a.region, false), ps)
}

// steeringManifest is the JSON a steering server answers (RFC 8216bis
// 7.2, Apple's HLS Content Steering specification).
type steeringManifest struct {
	Version   int            `json:"VERSION"`
	TTL       int            `json:"TTL"`
	ReloadURI string         `json:"RELOAD-URI"`
	Priority  []string       `json:"PATHWAY-PRIORITY"`
	Clones    []pathwayClone `json:"PATHWAY-CLONES,omitempty"`
}

type pathwayClone struct {
	BaseID      string         `json:"BASE-ID"`
	ID          string         `json:"ID"`
	Replacement uriReplacement `json:"URI-REPLACEMENT"`
}

type uriReplacement struct {
	Host       string            `json:"HOST,omitempty"`
	PerVariant map[string]string `json:"PER-VARIANT-URIS,omitempty"`
}

// serveSteering answers a steering manifest request: the viewer's
// pathways, best first, with a clone for every node its multivariant
// playlist may not have listed (one that joined later), so a new node
// takes viewers without any player reloading anything.
func (s *Server) serveSteering(w http.ResponseWriter, r *http.Request, stream string) {
	rt := s.Routing
	if !rt.enabled() || rt.Alone {
		notFound(w, time.Second)
		return
	}
	q := r.URL.Query()
	session := q.Get(sessionParam)
	if !validSession(session) {
		// Not a URI this node wrote. Hash the address instead, so the
		// viewer's choices at least stay put.
		session = r.RemoteAddr
	}
	region := rt.region(r)
	current := q.Get("_HLS_pathway")
	if !steer.ValidPathwayID(current) {
		current = ""
	}
	st := rt.Router.Steer(rt.Node, steer.Viewer{Session: session, Region: region, Current: current})
	m := steeringManifest{Version: 1, TTL: s.steeringTTL(session, q.Has(seqParam))}
	m.ReloadURI = rt.steeringURL(st.Reload, stream, session, region, true)
	for _, n := range st.Priority {
		m.Priority = append(m.Priority, n.Name)
		if current == "" || n.Name == current {
			continue
		}
		host := ""
		if u, err := url.Parse(n.URL); err == nil {
			host = u.Host
		}
		m.Clones = append(m.Clones, pathwayClone{BaseID: current, ID: n.Name, Replacement: uriReplacement{
			Host: host, PerVariant: map[string]string{stableVariantID: rt.mediaURL(n, stream, session, true)},
		}})
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // URIs keep their '&'
	if err := enc.Encode(m); err != nil {
		http.Error(w, "steering manifest: "+err.Error(), http.StatusInternalServerError)
		return
	}
	body := buf.Bytes()
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if r.Method == http.MethodHead {
		return
	}
	w.Write(body)
}

// steeringTTL is the TTL of one steering answer (see steer.TTL).
func (s *Server) steeringTTL(session string, reload bool) int {
	busy := false
	if self, ok := s.Routing.Router.View(s.Routing.Node).Node(s.Routing.Node); ok {
		busy = self.CPU >= busySteeringCPU
	}
	return steer.TTL(s.Routing.TTL, session, !reload, busy)
}
