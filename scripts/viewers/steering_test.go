package main

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func threeEdges() []variant {
	return []variant{
		{pathway: "edge-1", stableID: "main", bandwidth: 7e5, uri: "http://127.0.0.1:8081/live/bench/media.m3u8?rmsid=a"},
		{pathway: "edge-2", stableID: "main", bandwidth: 7e5, uri: "http://127.0.0.1:8082/live/bench/media.m3u8?rmsid=b"},
		{pathway: "edge-3", stableID: "main", bandwidth: 7e5, uri: "http://127.0.0.1:8083/live/bench/media.m3u8?rmsid=c"},
	}
}

func TestNewPathwaySet(t *testing.T) {
	tests := []struct {
		initial, want string
	}{
		{"edge-2", "edge-2"},
		{"edge-9", "edge-1"}, // no variants: the first variant's pathway
		{".", "edge-1"},      // no steering tag and no "." variants
	}
	for _, tc := range tests {
		if got := newPathwaySet(threeEdges(), tc.initial).current; got != tc.want {
			t.Errorf("initial %q: current = %q, want %q", tc.initial, got, tc.want)
		}
	}
	p := newPathwaySet([]variant{{pathway: "a", uri: "u1"}, {pathway: "."}, {pathway: "a", uri: "u2"}}, ".")
	if p.current != "." {
		t.Errorf("current = %q, want \".\"", p.current)
	}
	p.current = "a"
	if p.variant(0).uri != "u1" || p.variant(1).uri != "u2" || p.variant(7).uri != "u2" {
		t.Errorf("variant by level index: %v %v %v", p.variant(0), p.variant(1), p.variant(7))
	}
	if got := p.pathways(); !reflect.DeepEqual(got, []string{"a", "."}) {
		t.Errorf("pathways = %q", got)
	}
}

func TestUpdatePriority(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name      string
		current   string
		penalized map[string]time.Duration // penalized this long before now
		prio      []string
		want      string
		switched  bool
	}{
		{"first is current: no change", "edge-1", nil, []string{"edge-1", "edge-2"}, "edge-1", false},
		{"switch to the first", "edge-1", nil, []string{"edge-2", "edge-1"}, "edge-2", true},
		{"unknown pathways are passed over", "edge-1", nil, []string{"edge-9", "edge-3", "edge-1"}, "edge-3", true},
		{"current reached before any other", "edge-2", nil, []string{"edge-9", "edge-2", "edge-3"}, "edge-2", false},
		{"penalized skipped", "edge-1", map[string]time.Duration{"edge-2": time.Minute}, []string{"edge-2", "edge-3", "edge-1"}, "edge-3", true},
		{"penalty over after 300 s", "edge-1", map[string]time.Duration{"edge-2": 301 * time.Second}, []string{"edge-2", "edge-1"}, "edge-2", true},
		{"penalized current is left", "edge-1", map[string]time.Duration{"edge-1": time.Second}, []string{"edge-1", "edge-2"}, "edge-2", true},
		{"all penalized: stay", "edge-1", map[string]time.Duration{"edge-1": 0, "edge-2": 0}, []string{"edge-1", "edge-2"}, "edge-1", false},
		{"empty priority", "edge-1", nil, []string{}, "edge-1", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPathwaySet(threeEdges(), tc.current)
			for id, ago := range tc.penalized {
				p.penalized[id] = t0.Add(-ago)
			}
			gen := p.gen
			switched := p.updatePriority(tc.prio, t0)
			if p.current != tc.want || switched != tc.switched || (p.gen != gen) != tc.switched {
				t.Errorf("current %q switched %v gen %d->%d, want %q %v", p.current, switched, gen, p.gen, tc.want, tc.switched)
			}
			if !reflect.DeepEqual(p.priority, tc.prio) {
				t.Errorf("priority kept = %q", p.priority)
			}
		})
	}
}

func TestPenalize(t *testing.T) {
	t0 := time.Unix(1000, 0)
	t.Run("no priority yet: the known pathways in order", func(t *testing.T) {
		p := newPathwaySet(threeEdges(), "edge-1")
		if !p.penalize("edge-1", t0) || p.current != "edge-2" {
			t.Fatalf("current = %q", p.current)
		}
		if !reflect.DeepEqual(p.priority, []string{"edge-1", "edge-2", "edge-3"}) {
			t.Errorf("hls.js keeps the pathway list as the priority: %q", p.priority)
		}
		if !p.penalize("edge-2", t0) || p.current != "edge-3" {
			t.Fatalf("current = %q", p.current)
		}
		if p.penalize("edge-3", t0) || p.current != "edge-3" {
			t.Errorf("all penalized: resolved, current = %q", p.current)
		}
	})
	t.Run("the last PATHWAY-PRIORITY", func(t *testing.T) {
		p := newPathwaySet(threeEdges(), "edge-1")
		p.updatePriority([]string{"edge-1", "edge-3"}, t0)
		if !p.penalize("edge-1", t0) || p.current != "edge-3" {
			t.Fatalf("current = %q", p.current)
		}
	})
	t.Run("one pathway: unresolved", func(t *testing.T) {
		p := newPathwaySet(threeEdges()[:1], "edge-1")
		if p.penalize("edge-1", t0) {
			t.Error("resolved with nowhere to go")
		}
	})
	t.Run("empty priority is not replaced by the known pathways", func(t *testing.T) {
		p := newPathwaySet(threeEdges(), "edge-1")
		p.updatePriority([]string{}, t0)
		if p.penalize("edge-1", t0) || p.current != "edge-1" {
			t.Errorf("current = %q", p.current)
		}
	})
	t.Run("a request to a pathway already left", func(t *testing.T) {
		p := newPathwaySet(threeEdges(), "edge-2")
		if !p.penalize("edge-1", t0) || p.current != "edge-2" {
			t.Errorf("current = %q", p.current)
		}
	})
	t.Run("penalty time is not renewed", func(t *testing.T) {
		p := newPathwaySet(threeEdges(), "edge-1")
		p.penalize("edge-1", t0)
		p.penalize("edge-1", t0.Add(time.Minute))
		if !p.penalized["edge-1"].Equal(t0) {
			t.Errorf("penalized at %v", p.penalized["edge-1"])
		}
	})
}

func TestApplyClones(t *testing.T) {
	tests := []struct {
		name   string
		clones []pathwayClone
		want   []string // "pathway uri" of the variants added
		err    string
	}{
		{
			name: "PER-VARIANT-URIS wins over HOST",
			clones: []pathwayClone{{BaseID: "edge-1", ID: "edge-4", Replacement: uriReplacement{
				Host:           "127.0.0.1:9999",
				PerVariantURIs: map[string]string{"main": "http://127.0.0.1:8084/live/bench/media.m3u8?rmsid=abc"},
			}}},
			want: []string{"edge-4 http://127.0.0.1:8084/live/bench/media.m3u8?rmsid=abc"},
		},
		{
			name: "HOST replaces host:port, PARAMS set in key order",
			clones: []pathwayClone{{BaseID: "edge-2", ID: "edge-4", Replacement: uriReplacement{
				Host:   "127.0.0.1:8084",
				Params: map[string]string{"z": "1", "rmsid": "new", "a": "x y"},
			}}},
			want: []string{"edge-4 http://127.0.0.1:8084/live/bench/media.m3u8?a=x+y&rmsid=new&z=1"},
		},
		{
			name: "PER-VARIANT-URIS for another stable ID: HOST applies",
			clones: []pathwayClone{{BaseID: "edge-1", ID: "edge-4", Replacement: uriReplacement{
				Host:           "h:1",
				PerVariantURIs: map[string]string{"other": "http://x/"},
			}}},
			want: []string{"edge-4 http://h:1/live/bench/media.m3u8?rmsid=a"},
		},
		{
			name: "known IDs and bases without variants add nothing",
			clones: []pathwayClone{
				{BaseID: "edge-1", ID: "edge-2", Replacement: uriReplacement{Host: "h:1"}},
				{BaseID: "edge-9", ID: "edge-5", Replacement: uriReplacement{Host: "h:1"}},
				{BaseID: "edge-3", ID: "edge-6", Replacement: uriReplacement{}},
			},
			want: []string{"edge-6 http://127.0.0.1:8083/live/bench/media.m3u8?rmsid=c"},
		},
		{
			name: "a clone of a clone, in order",
			clones: []pathwayClone{
				{BaseID: "edge-1", ID: "edge-4", Replacement: uriReplacement{Host: "h:4"}},
				{BaseID: "edge-4", ID: "edge-5", Replacement: uriReplacement{Host: "h:5"}},
			},
			want: []string{"edge-4 http://h:4/live/bench/media.m3u8?rmsid=a", "edge-5 http://h:5/live/bench/media.m3u8?rmsid=a"},
		},
		{
			name: "a relative PER-VARIANT-URI throws in hls.js",
			clones: []pathwayClone{{BaseID: "edge-1", ID: "edge-4", Replacement: uriReplacement{
				PerVariantURIs: map[string]string{"main": "/live/bench/media.m3u8"},
			}}},
			err: "invalid URL",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPathwaySet(threeEdges(), "edge-1")
			err := p.applyClones(tc.clones)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, v := range p.all[3:] {
				got = append(got, v.pathway+" "+v.uri)
				if v.stableID != "main" || v.bandwidth != 7e5 {
					t.Errorf("clone lost the base's attributes: %+v", v)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("added\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// TestSteererStateMachine runs loads through handle and checks when the
// next one comes, where it goes and when steering ends.
func TestSteererStateMachine(t *testing.T) {
	type load struct {
		status  int
		timeout bool
		body    string
		next    time.Duration // when stop is false
		stop    string        // steerer.stopped after it
		uri     string        // the URI of the next load, if checked
	}
	const ok = `{"VERSION":1,"TTL":3,"PATHWAY-PRIORITY":["edge-2","edge-1"]}`
	tests := []struct {
		name  string
		loads []load
	}{
		{"good loads every TTL", []load{{status: 200, body: ok, next: 3 * time.Second}, {status: 200, body: `{"VERSION":1,"TTL":5}`, next: 5 * time.Second}}},
		{"an error before any good load waits 300 s", []load{{status: 500, next: 300 * time.Second}}},
		{"errors and timeouts wait the last TTL", []load{
			{status: 200, body: ok, next: 3 * time.Second},
			{status: 503, next: 3 * time.Second},
			{status: 0, next: 3 * time.Second},
			{timeout: true, next: 3 * time.Second},
			{status: 404, next: 3 * time.Second},
			{status: 200, body: "not json", next: 3 * time.Second},
		}},
		{"410 disables", []load{{status: 200, body: ok, next: 3 * time.Second}, {status: 410, stop: "410"}}},
		{"429 stops for good", []load{{status: 200, body: ok, next: 3 * time.Second}, {status: 429, stop: "429"}}},
		{"VERSION 2 stops too", []load{{status: 200, body: `{"VERSION":2,"TTL":3}`, stop: "version"}}},
		{"RELOAD-URI resolved against the request", []load{
			{status: 200, body: `{"VERSION":1,"TTL":1,"RELOAD-URI":"next.json?x=1"}`, next: time.Second, uri: "http://o:8080/steer/next.json?x=1"},
			{status: 200, body: `{"VERSION":1,"TTL":1,"RELOAD-URI":"http://other/s"}`, next: time.Second, uri: "http://other/s"},
			{status: 500, next: time.Second, uri: "http://other/s"},
		}},
		{"no TTL reloads at once (bounded)", []load{{status: 200, body: `{"VERSION":1}`, next: minReload}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newSteerer("http://o:8080/steer/bench.json?_HLS_pathway=old&k=v")
			for i, l := range tc.loads {
				req, err := s.request("edge-1", 123)
				if err != nil {
					t.Fatal(err)
				}
				act := s.handle(steerResult{status: l.status, timeout: l.timeout, body: []byte(l.body), reqURL: req})
				if l.stop != "" {
					if !act.stop || s.stopped != l.stop {
						t.Errorf("load %d: stop %v (%q), want stop %q", i, act.stop, s.stopped, l.stop)
					}
					continue
				}
				if act.stop || act.next != l.next {
					t.Errorf("load %d: stop %v next %v, want next %v", i, act.stop, act.next, l.next)
				}
				if (act.manifest != nil) != (l.status == 200 && strings.HasPrefix(l.body, "{")) {
					t.Errorf("load %d: manifest %v", i, act.manifest)
				}
				if l.uri != "" && s.uri != l.uri {
					t.Errorf("load %d: next URI %q, want %q", i, s.uri, l.uri)
				}
			}
		})
	}
}

func TestSteeringRequest(t *testing.T) {
	s := newSteerer("http://o:8080/steer?_HLS_pathway=old&_HLS_throughput=1&k=v")
	got, err := s.request("edge-2", 800000)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(got)
	q := u.Query()
	if q.Get("_HLS_pathway") != "edge-2" || q.Get("_HLS_throughput") != "800000" || q.Get("k") != "v" || len(q["_HLS_pathway"]) != 1 {
		t.Errorf("request URL %s", got)
	}
	if _, err := newSteerer("relative/only").request(".", 1); err == nil {
		t.Error("relative steering URI accepted")
	}
}

func TestSteerRetry(t *testing.T) {
	tests := []struct {
		r       steerResult
		attempt int
		retry   bool
		after   time.Duration
	}{
		{steerResult{status: 200, body: []byte(`{"VERSION":1}`)}, 0, false, 0},
		{steerResult{status: 503}, 0, true, time.Second},
		{steerResult{status: 503}, 1, false, 0},
		{steerResult{status: 200, body: []byte("garbage")}, 0, true, time.Second},
		{steerResult{status: 0}, 0, false, 0},
		{steerResult{status: 429}, 0, false, 0},
		{steerResult{status: 410}, 0, false, 0},
		{steerResult{timeout: true}, 1, true, 0},
		{steerResult{timeout: true}, 2, false, 0},
	}
	for _, tc := range tests {
		retry, after := steerRetry(tc.r, tc.attempt)
		if retry != tc.retry || after != tc.after {
			t.Errorf("steerRetry(%d %v %q, %d) = %v %v, want %v %v", tc.r.status, tc.r.timeout, tc.r.body, tc.attempt, retry, after, tc.retry, tc.after)
		}
	}
}

func TestThroughput(t *testing.T) {
	b := newBandwidth()
	if got := b.throughput(); got != 500000 {
		t.Errorf("default = %d, want abrEwmaDefaultEstimate 500000", got)
	}
	// 25 kB in 100 ms is 2 Mb/s; the estimate converges on it.
	for range 50 {
		b.sample(100*time.Millisecond, 25000)
	}
	if got := b.throughput(); got < 1_990_000 || got > 2_010_000 {
		t.Errorf("estimate = %d, want about 2000000", got)
	}
	// A sample faster than min(50 ms, bytes/100000 ms) is taken at that;
	// the estimate needs 1 ms of samples in all.
	c := newBandwidth()
	c.sample(0, 17500)
	if got := c.throughput(); got != 500000 {
		t.Errorf("after 0.175 ms of samples = %d, want the default", got)
	}
	for range 5 {
		c.sample(0, 17500)
	}
	if got := c.throughput(); got < 800_000_000-2 || got > 800_000_000+2 {
		t.Errorf("instant transfer = %d, want 800000000", got)
	}
	// ToInt32 wraps as JavaScript's | 0.
	d := newBandwidth()
	d.fast.estimate, d.fast.weight, d.slow.estimate, d.slow.weight = 3e9, 1e9, 3e9, 1e9
	if got := d.throughput(); got != int32(int64(3e9)-1<<32) {
		t.Errorf("3e9 | 0 = %d, want %d", got, int64(3e9)-1<<32)
	}
}
