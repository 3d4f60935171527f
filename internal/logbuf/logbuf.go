// Package logbuf is a log sink for tests: a buffer that slog handlers (or
// a child process's output) on many goroutines can write to while the
// test searches it.
package logbuf

import (
	"bytes"
	"strings"
	"sync"
	"time"
)

// Buffer is safe for concurrent use. The zero value is ready.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Count reports how many times s occurs.
func (b *Buffer) Count(s string) int { return strings.Count(b.String(), s) }

// Lines returns the lines that contain every one of want.
func (b *Buffer) Lines(want ...string) []string {
	var out []string
	for _, line := range strings.Split(b.String(), "\n") {
		ok := line != ""
		for _, w := range want {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// Wait polls until a line contains every one of want and returns it, or
// reports false once within has passed.
func (b *Buffer) Wait(within time.Duration, want ...string) (string, bool) {
	deadline := time.Now().Add(within)
	for {
		if l := b.Lines(want...); len(l) > 0 {
			return l[0], true
		}
		if time.Now().After(deadline) {
			return "", false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
