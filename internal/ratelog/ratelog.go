// Package ratelog limits log lines for events that a hostile or broken peer
// can repeat at will (bad input, bad requests), so they cannot flood the log.
package ratelog

import (
	"sync"
	"time"
)

// Every is how often a Limiter allows a line.
const Every = 5 * time.Second

// Limiter allows the first event of every Every window and counts the
// rest. It is safe for concurrent use and its zero value is ready.
type Limiter struct {
	mu         sync.Mutex
	suppressed int
	last       time.Time
}

// Allow records one event. It reports whether to log it, and how many
// events were suppressed since the last one logged.
func (l *Limiter) Allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Sub(l.last) < Every {
		l.suppressed++
		return false, 0
	}
	suppressed = l.suppressed
	l.last, l.suppressed = now, 0
	return true, suppressed
}
