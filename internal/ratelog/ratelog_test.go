package ratelog

import (
	"sync"
	"testing"
)

func TestLimiterAllowsFirstAndCountsTheRest(t *testing.T) {
	var l Limiter
	var wg sync.WaitGroup
	allowed := make(chan int, 100)
	for range 100 {
		wg.Go(func() {
			if ok, _ := l.Allow(); ok {
				allowed <- 1
			}
		})
	}
	wg.Wait()
	if len(allowed) != 1 {
		t.Fatalf("%d of 100 events in one window allowed, want 1", len(allowed))
	}
	// The first event of the next window reports what this one suppressed.
	l.last = l.last.Add(-Every)
	if ok, n := l.Allow(); !ok || n != 99 {
		t.Errorf("next window: allowed %v, suppressed %d, want true, 99", ok, n)
	}
}
