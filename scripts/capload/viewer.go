//go:build linux

package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"
)

// playout is a simulated player's buffer, as scripts/viewers keeps it:
// playback starts with the first part, the playhead then moves in real
// time, and each part adds its duration ahead of it. dry is when the
// buffer runs out; a part arriving after that ends a stall.
type playout struct {
	started bool
	dry     time.Time
}

// add buffers d of media arriving at now. It returns the stall that part
// ends (0 for none) and the buffer that was left when it arrived
// (negative during a stall).
func (p *playout) add(now time.Time, d time.Duration) (stall, left time.Duration) {
	if !p.started {
		p.started, p.dry = true, now.Add(d)
		return 0, 0
	}
	left = p.dry.Sub(now)
	if left < 0 {
		stall = -left
		p.dry = now
	}
	p.dry = p.dry.Add(d)
	return stall, left
}

// counters are the swarm's running totals, written by the engine's loop
// and read by the reporter.
type counters struct {
	playlists, parts, inits, indexes atomic.Int64
	bytes                            atomic.Int64
	stalls, stallNanos               atomic.Int64
	errors, timeouts, behind         atomic.Int64
	// minLeft is the smallest buffer (ns) any viewer had when a part
	// arrived since the reporter last reset it: how close to a stall.
	minLeft atomic.Int64
}

func (c *counters) noteLeft(left time.Duration) {
	for {
		old := c.minLeft.Load()
		if int64(left) >= old || c.minLeft.CompareAndSwap(old, int64(left)) {
			return
		}
	}
}

// noLeft is minLeft's reset value.
const noLeft = math.MaxInt64

// mode is how viewers reload the media playlist.
type mode int

const (
	modeLLHLS mode = iota // blocking reload for the next part
	modePoll              // plain reload every poll interval
)

// what a viewer is waiting for.
type state int

const (
	stIdle   state = iota // nothing: about to act
	stIndex               // the multivariant playlist
	stFirst               // the first media playlist, without directives
	stInit                // the init section
	stPart                // a part
	stReload              // a media playlist reload
	stSleep               // a timer: the next poll, or a retry
)

// viewer is one simulated player: one keep-alive connection, driven by
// the engine's loop as a state machine (no goroutine of its own). It
// plays like hls.js in low-latency mode: the multivariant playlist, a
// first media playlist without directives, a start PART-HOLD-BACK behind
// its last part, the init section once, then every part in order; past
// the last listed part it reloads, blocking for that part (llhls) or
// at the next poll (poll).
type viewer struct {
	id    int
	fd    int // -1: not connected
	conn  bool
	st    state
	rr    respReader
	req   []byte // the request to send once connected
	since time.Time
	// deadline of the request in flight (Unix ns; 0 for none).
	deadline int64
	gen      uint32 // bumped on every restart: stale timers are ignored

	index, media, path []byte
	l                  listing
	p                  playout
	pos                cursor
	part               listedPart // the part in flight
	nextPoll           time.Time
	interval           time.Duration
	// dryAt is the playout's dry time in Unix ns (0 before playback
	// starts), for the reporter to see viewers stalled right now.
	dryAt atomic.Int64
}

var (
	errStatus = errors.New("unexpected status")
	errEnded  = errors.New("the stream ended")
	errNoVar  = errors.New("multivariant playlist lists no variant")
)

// firstVariant finds the first URI line of a multivariant playlist.
func firstVariant(body []byte) []byte {
	for len(body) > 0 {
		var line []byte
		line, body, _ = bytes.Cut(body, []byte("\n"))
		line = bytes.TrimSpace(line)
		if len(line) > 0 && line[0] != '#' {
			return line
		}
	}
	return nil
}

// complete handles the response the viewer was waiting for and returns
// its next step: a request to send (path, keep, next state, timeout) or a
// sleep. It is the viewer's whole playing logic, free of I/O.
func (v *viewer) complete(cfg *config, c *counters, now time.Time) (action, error) {
	h := v.rr.h
	if h.status != 200 {
		return action{}, fmt.Errorf("%w %d while in state %d", errStatus, h.status, v.st)
	}
	switch v.st {
	case stIndex:
		c.indexes.Add(1)
		uri := firstVariant(v.rr.body)
		if uri == nil {
			return action{}, errNoVar
		}
		v.media = resolveRef(v.media[:0], v.index, uri)
		return v.request(stFirst, v.media, true, cfg.timeout), nil
	case stFirst:
		c.playlists.Add(1)
		if err := scan(v.rr.body, &v.l); err != nil {
			return action{}, err
		}
		if v.l.endList {
			return action{}, errEnded
		}
		if len(v.l.parts) == 0 {
			return action{st: stSleep, sleep: 100 * time.Millisecond, then: stFirst}, nil
		}
		v.pos = v.l.parts[startIndex(&v.l, holdBackParts)].at
		v.interval = cfg.poll
		if v.interval == 0 {
			v.interval = max(v.l.partTarget, 50*time.Millisecond)
		}
		v.nextPoll = now.Add(v.interval)
		if m := v.l.mapURI; m[1] > m[0] {
			return v.request(stInit, v.ref(m[0], m[1]), false, cfg.timeout), nil
		}
	case stInit:
		c.inits.Add(1)
	case stPart:
		c.parts.Add(1)
		stall, left := v.p.add(now, v.part.dur)
		v.dryAt.Store(v.p.dry.UnixNano())
		if stall > 0 {
			c.stalls.Add(1)
			c.stallNanos.Add(int64(stall))
		} else if left > 0 {
			c.noteLeft(left)
		}
	case stReload:
		c.playlists.Add(1)
		if err := scan(v.rr.body, &v.l); err != nil {
			return action{}, err
		}
	}
	return v.next(cfg, c, now), nil
}

// action is what a viewer does next.
type action struct {
	st      state
	path    []byte // request target
	keep    bool   // keep the response body
	timeout time.Duration
	sleep   time.Duration // stSleep: how long
	then    state         // stSleep: what to do when it ends
}

func (v *viewer) request(st state, path []byte, keep bool, timeout time.Duration) action {
	return action{st: st, path: path, keep: keep, timeout: timeout}
}

// ref builds the path of body[i:j], a URI in the current playlist.
func (v *viewer) ref(i, j int) []byte {
	v.path = resolveRef(v.path[:0], v.media, v.rr.body[i:j])
	return v.path
}

// next picks the next request at position pos: the part there, or a
// reload once past the last listed part.
func (v *viewer) next(cfg *config, c *counters, now time.Time) action {
	for {
		w, i := locate(&v.l, v.pos)
		switch w {
		case atBehind:
			c.behind.Add(1)
			v.pos = v.l.parts[i].at
			continue
		case atPart:
			v.part = v.l.parts[i]
			if i+1 < len(v.l.parts) {
				v.pos = v.l.parts[i+1].at
			} else {
				v.pos = v.l.next
			}
			return v.request(stPart, v.ref(v.part.uri, v.part.end), false, cfg.timeout)
		}
		break
	}
	if v.l.endList {
		return action{st: stSleep, sleep: time.Second, then: stIndex}
	}
	if cfg.mode == modeLLHLS {
		v.path = appendDirectives(v.path, v.media, v.pos)
		return v.request(stReload, v.path, true, cfg.blockTimeout)
	}
	if wait := v.nextPoll.Sub(now); wait > 0 {
		return action{st: stSleep, sleep: wait, then: stReload}
	}
	// Polls keep their cadence; one that ran late does not bunch up the
	// ones after it.
	v.nextPoll = v.nextPoll.Add(v.interval)
	if v.nextPoll.Before(now) {
		v.nextPoll = now.Add(v.interval)
	}
	return v.request(stReload, v.media, true, cfg.timeout)
}

// wake turns the end of a sleep into the action it was waiting for.
func (v *viewer) wake(cfg *config, c *counters, then state, now time.Time) action {
	switch then {
	case stFirst:
		return v.request(stFirst, v.media, true, cfg.timeout)
	case stReload:
		return v.next(cfg, c, now)
	}
	return v.request(stIndex, v.index, true, cfg.timeout)
}

// restart forgets the session after a failure.
func (v *viewer) restart() {
	v.gen++
	v.p = playout{}
	v.dryAt.Store(0)
}
