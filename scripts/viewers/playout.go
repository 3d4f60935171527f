package main

import "time"

// playout is a simulated player's buffer. Playback starts with the first
// part; from then on the playhead moves in real time and each part adds
// its duration ahead of it. When the buffer runs dry the player stalls
// until a part arrives. Nothing moves until advance or add is called: the
// stall start is computed from when the buffer ran out, not from when
// someone looked.
type playout struct {
	started, stalled, ended bool
	at                      time.Time     // when buffered was last brought up to date
	buffered                time.Duration // media ahead of the playhead at `at`
	stallStart              time.Time
	stalls                  int
	stallTime               time.Duration // of finished stalls
	longest                 time.Duration // of finished stalls
	// Finished stalls, the first maxSpans of them, for per-viewer
	// reports (scripts/chaos.sh attributes them to events).
	spans []span
}

// span is one finished stall.
type span struct{ start, end time.Time }

// maxSpans bounds a viewer's list of stalls.
const maxSpans = 256

// finish records the stall that ends at now.
func (p *playout) finish(now time.Time) {
	p.stalled = false
	d := now.Sub(p.stallStart)
	p.stallTime += d
	p.longest = max(p.longest, d)
	if len(p.spans) < maxSpans {
		p.spans = append(p.spans, span{p.stallStart, now})
	}
}

// advance moves the playhead to now.
func (p *playout) advance(now time.Time) {
	if !p.started || p.ended || p.stalled || now.Before(p.at) {
		return
	}
	if el := now.Sub(p.at); el > p.buffered {
		p.stalled = true
		p.stallStart = p.at.Add(p.buffered)
		p.stalls++
		p.buffered = 0
	} else {
		p.buffered -= el
	}
	p.at = now
}

// add buffers d of media that arrived at now.
func (p *playout) add(now time.Time, d time.Duration) {
	if p.ended {
		return
	}
	if !p.started {
		p.started, p.at = true, now
	}
	p.advance(now)
	if p.stalled {
		p.finish(now)
		p.at = now
	}
	p.buffered += d
}

// end stops the clock: the stream ended or the viewer left. A stall going
// on is counted up to now.
func (p *playout) end(now time.Time) {
	p.advance(now)
	if p.stalled {
		p.finish(now)
	}
	p.ended = true
}

// stalledNow reports whether the player is stalled at now.
func (p *playout) stalledNow(now time.Time) bool {
	p.advance(now)
	return p.stalled
}

// totalStall is the time spent stalled up to now, the current stall
// included.
func (p *playout) totalStall(now time.Time) time.Duration {
	p.advance(now)
	if p.stalled {
		return p.stallTime + now.Sub(p.stallStart)
	}
	return p.stallTime
}

// longestStall is the longest stall up to now, the current one included.
func (p *playout) longestStall(now time.Time) time.Duration {
	p.advance(now)
	if p.stalled {
		return max(p.longest, now.Sub(p.stallStart))
	}
	return p.longest
}
