package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"sort"
	"strconv"
	"time"
)

// This file follows hls.js 1.7's src/controller/content-steering-controller.ts
// (unchanged from 1.7.1 to 1.7.4), including its quirks: a 429 ends
// steering for good, a VERSION other than 1 too, and a failed load before
// the first good one is retried only after 300 s.

// penaltyDuration is how long a pathway that failed stays out of the
// priority walk (PATHWAY_PENALTY_DURATION_MS).
const penaltyDuration = 300 * time.Second

// initialTTL is timeToLoad before a steering manifest has arrived.
const initialTTL = 300 * time.Second

// minReload bounds how fast a manifest with no or a zero TTL is reloaded;
// hls.js would reload at once (setTimeout with NaN or 0).
const minReload = 10 * time.Millisecond

type steeringManifest struct {
	Version   float64        `json:"VERSION"`
	TTL       float64        `json:"TTL"`
	ReloadURI string         `json:"RELOAD-URI"`
	Priority  []string       `json:"PATHWAY-PRIORITY"` // nil when absent; [] is kept apart, as in hls.js
	Clones    []pathwayClone `json:"PATHWAY-CLONES"`
}

type pathwayClone struct {
	BaseID      string         `json:"BASE-ID"`
	ID          string         `json:"ID"`
	Replacement uriReplacement `json:"URI-REPLACEMENT"`
}

type uriReplacement struct {
	Host           string            `json:"HOST"`
	Params         map[string]string `json:"PARAMS"`
	PerVariantURIs map[string]string `json:"PER-VARIANT-URIS"`
}

// pathwaySet is a viewer's variants (hls.js: the steering controller's
// levels) and the pathway it plays from.
type pathwaySet struct {
	all       []variant // the multivariant playlist's, then clones
	current   string
	priority  []string // the last PATHWAY-PRIORITY; nil before one
	penalized map[string]time.Time
	gen       int // counts changes of current
}

// newPathwaySet starts on the steering tag's pathway when it has variants,
// otherwise on the first variant's (filterParsedLevels). Without a tag the
// pathway is ".", which hls.js assumes too.
func newPathwaySet(vs []variant, initial string) *pathwaySet {
	p := &pathwaySet{all: vs, current: initial, penalized: map[string]time.Time{}}
	if !p.has(initial) {
		p.current = vs[0].pathway
	}
	return p
}

func (p *pathwaySet) has(id string) bool {
	for i := range p.all {
		if p.all[i].pathway == id {
			return true
		}
	}
	return false
}

// variant returns the level-th variant of the current pathway (hls.js
// keeps the level index across a pathway change), or its last.
func (p *pathwaySet) variant(level int) variant {
	var last variant
	n := 0
	for _, v := range p.all {
		if v.pathway != p.current {
			continue
		}
		if n == level {
			return v
		}
		last = v
		n++
	}
	return last
}

// pathways lists the pathways in the order their first variant appears.
func (p *pathwaySet) pathways() []string {
	var ids []string
	for _, v := range p.all {
		known := false
		for _, id := range ids {
			known = known || id == v.pathway
		}
		if !known {
			ids = append(ids, v.pathway)
		}
	}
	return ids
}

// updatePriority walks a PATHWAY-PRIORITY (updatePathwayPriority): expired
// penalties are dropped, penalized pathways skipped; it stops at the
// current pathway and switches to the first other one with variants. It
// reports whether the pathway changed.
func (p *pathwaySet) updatePriority(prio []string, now time.Time) bool {
	p.priority = prio
	for id, at := range p.penalized {
		if now.Sub(at) > penaltyDuration {
			delete(p.penalized, id)
		}
	}
	for _, id := range prio {
		if _, bad := p.penalized[id]; bad {
			continue
		}
		if id == p.current {
			return false
		}
		if p.has(id) {
			p.current = id
			p.gen++
			return true
		}
	}
	return false
}

// penalize handles a media request on pathway failed that hls.js sends to
// the penalty box with MoveAllAlternatesMatchingHost (onError): the
// pathway is penalized (unless it already is) and the priority walked
// again, the last PATHWAY-PRIORITY or, before one, the known pathways. It
// reports whether the viewer is now on another pathway (resolved).
func (p *pathwaySet) penalize(failed string, now time.Time) (resolved bool) {
	if _, ok := p.penalized[failed]; !ok {
		p.penalized[failed] = now
	}
	prio := p.priority
	if prio == nil {
		prio = p.pathways()
	}
	if len(prio) > 1 {
		p.updatePriority(prio, now)
		return p.current != failed
	}
	return false
}

// applyClones adds PATHWAY-CLONES whose ID is not a known pathway
// (clonePathways). A replacement URI that is not absolute makes hls.js
// throw out of the manifest's handler; the error stands for that, and the
// caller skips the priority as hls.js does.
func (p *pathwaySet) applyClones(clones []pathwayClone) error {
	for _, c := range clones {
		if p.has(c.ID) {
			continue
		}
		var add []variant
		for _, base := range p.all {
			if base.pathway != c.BaseID {
				continue
			}
			u, err := replaceURI(base.uri, base.stableID, c.Replacement)
			if err != nil {
				return fmt.Errorf("clone %q of %q: %w", c.ID, c.BaseID, err)
			}
			v := base
			v.pathway, v.uri = c.ID, u
			add = append(add, v)
		}
		p.all = append(p.all, add...)
	}
	return nil
}

// replaceURI is performUriReplacement: the stable variant's PER-VARIANT-URIS
// entry if there is one, otherwise the URI with HOST; then PARAMS set in
// key order.
func replaceURI(uri, stableID string, r uriReplacement) (string, error) {
	perVariant := ""
	if stableID != "" {
		perVariant = r.PerVariantURIs[stableID]
	}
	if perVariant != "" {
		uri = perVariant
	}
	u, err := url.Parse(uri)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return "", fmt.Errorf("invalid URL %q", uri)
	}
	if r.Host != "" && perVariant == "" {
		u.Host = r.Host
	}
	if len(r.Params) > 0 {
		keys := make([]string, 0, len(r.Params))
		for k := range r.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		q := u.Query()
		for _, k := range keys {
			if k != "" {
				q.Set(k, r.Params[k])
			}
		}
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

// steerer decides when and where a viewer loads its steering manifest.
type steerer struct {
	uri     string        // the next load's URI
	ttl     time.Duration // timeToLoad
	stopped string        // why loads ended for good; "" while they go on
}

func newSteerer(uri string) *steerer { return &steerer{uri: uri, ttl: initialTTL} }

// request returns the URL of the next load, with _HLS_pathway and
// _HLS_throughput set (replaced if the URI has them).
func (s *steerer) request(pathway string, throughput int32) (string, error) {
	u, err := url.Parse(s.uri)
	if err != nil || !u.IsAbs() {
		return "", fmt.Errorf("steering URI %q is not absolute", s.uri)
	}
	q := u.Query()
	q.Set("_HLS_pathway", pathway)
	q.Set("_HLS_throughput", strconv.FormatInt(int64(throughput), 10))
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// steerResult is one steering load as the loader hands it on.
type steerResult struct {
	status  int // 0: the connection failed
	timeout bool
	body    []byte
	reqURL  string // the URL requested, RELOAD-URI's base
}

// steerRetry is the loader's own retry of a steering load
// (steeringManifestLoadPolicy via xhr-loader): a timeout twice at once; a
// status that is neither 0 nor 4xx (so also a 200 whose body is not a JSON
// object) once after 1 s. attempt counts the retries made so far.
func steerRetry(r steerResult, attempt int) (retry bool, after time.Duration) {
	if r.timeout {
		return attempt < 2, 0
	}
	if r.status >= 200 && r.status < 300 && validJSONObject(r.body) {
		return false, 0
	}
	if attempt < 1 && retryableStatus(r.status) {
		return true, retryDelay(attempt)
	}
	return false, 0
}

func validJSONObject(b []byte) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(b, &m) == nil && m != nil
}

// steerAction is what to do after a load.
type steerAction struct {
	manifest *steeringManifest // to apply: clones, then priority
	next     time.Duration     // when to load again, unless stop
	stop     bool
	err      error // why the load failed, if it did
}

// handle takes a load's final result (onSuccess, onError, onTimeout).
func (s *steerer) handle(r steerResult) steerAction {
	if r.timeout {
		return steerAction{next: s.ttl, err: errors.New("timeout")}
	}
	var m steeringManifest
	if r.status < 200 || r.status > 299 || !validJSONObject(r.body) || json.Unmarshal(r.body, &m) != nil {
		switch r.status {
		case 410:
			s.stopped = "410"
			return steerAction{stop: true, err: errors.New("410: steering disabled")}
		case 429:
			// hls.js reads Retry-After here and then returns without
			// scheduling a reload: steering ends.
			s.stopped = "429"
			return steerAction{stop: true, err: errors.New("429: steering stopped")}
		}
		return steerAction{next: s.ttl, err: fmt.Errorf("status %d", r.status)}
	}
	if m.Version != 1 {
		// Returns before scheduling the next load, too.
		s.stopped = "version"
		return steerAction{stop: true, err: fmt.Errorf("VERSION %v not supported", m.Version)}
	}
	s.ttl = max(secondsDuration(m.TTL), minReload)
	if m.ReloadURI != "" {
		base, err := url.Parse(r.reqURL)
		var ru *url.URL
		if err == nil {
			ru, err = resolve(base, m.ReloadURI)
		}
		if err != nil {
			s.stopped = "reload-uri"
			return steerAction{stop: true, err: fmt.Errorf("RELOAD-URI %q: %v", m.ReloadURI, err)}
		}
		s.uri = ru.String()
	}
	return steerAction{manifest: &m, next: s.ttl}
}

func secondsDuration(s float64) time.Duration {
	if math.IsNaN(s) || s <= 0 {
		return 0
	}
	return time.Duration(math.Min(s, 1e6) * float64(time.Second))
}

// bandwidth is hls.js's EwmaBandWidthEstimator with the live half-lives
// (abrEwmaFastLive 3 s, abrEwmaSlowLive 9 s).
type bandwidth struct {
	fast, slow ewma
}

type ewma struct {
	halfLife, estimate, weight float64
}

func (e *ewma) sample(weight, value float64) {
	a := math.Pow(math.Exp(math.Log(0.5)/e.halfLife), weight)
	e.estimate = value*(1-a) + a*e.estimate
	e.weight += weight
}

func (e *ewma) get() float64 {
	zero := 1 - math.Pow(math.Exp(math.Log(0.5)/e.halfLife), e.weight)
	if zero != 0 {
		return e.estimate / zero
	}
	return e.estimate
}

func newBandwidth() bandwidth {
	return bandwidth{fast: ewma{halfLife: 3}, slow: ewma{halfLife: 9}}
}

// sample records a part's transfer: hls.js takes the load time less the
// time to first byte, at least min(50 ms, bytes/100000 ms).
func (b *bandwidth) sample(transfer time.Duration, bytes int64) {
	if bytes <= 0 {
		return
	}
	ms := math.Max(float64(transfer)/float64(time.Millisecond), math.Min(50, float64(bytes)/100000))
	s := ms / 1000
	bps := float64(8*bytes) / s
	b.fast.sample(s, bps)
	b.slow.sample(s, bps)
}

// throughput is what goes in _HLS_throughput:
// (hls.bandwidthEstimate || abrEwmaDefaultEstimate) | 0, a JavaScript
// ToInt32, so it wraps past 2^31-1 as in hls.js.
func (b *bandwidth) throughput() int32 {
	est := 5e5
	if b.fast.weight >= 0.001 {
		est = math.Min(b.fast.get(), b.slow.get())
	}
	if math.IsNaN(est) || math.IsInf(est, 0) || est == 0 {
		est = 5e5
	}
	if math.Abs(est) >= 1<<63 {
		return 0
	}
	return int32(int64(est))
}
