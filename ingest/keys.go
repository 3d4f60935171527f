package ingest

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/relaymesh/relaymesh/relay"
)

// ErrUnauthorized is returned for a publish whose key is missing or wrong.
var ErrUnauthorized = errors.New("publish key missing or wrong")

// Keys decides who may publish. The zero value admits everyone.
//
// With only Global set, every stream takes that key. With a keys file, a
// stream listed there takes its own key, and any other stream takes Global
// or, when Global is empty, is refused.
type Keys struct {
	Global string
	// File is the path of the per-stream keys file, re-read by Reload.
	File string

	mu        sync.RWMutex
	perStream map[string]string
}

// LoadKeys returns Keys for a global key and an optional keys file, which
// is read at once so that a mistake in it stops the node from starting.
func LoadKeys(global, file string) (*Keys, error) {
	k := &Keys{Global: global, File: file}
	if file != "" {
		if err := k.Reload(); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// Reload re-reads the keys file. On error the keys in use are kept.
func (k *Keys) Reload() error {
	if k.File == "" {
		return nil
	}
	data, err := os.ReadFile(k.File)
	if err != nil {
		return fmt.Errorf("read publish keys: %w", err)
	}
	m, err := ParseKeys(data)
	if err != nil {
		return fmt.Errorf("publish keys %s: %w", k.File, err)
	}
	k.mu.Lock()
	k.perStream = m
	k.mu.Unlock()
	return nil
}

// Len reports how many per-stream keys are loaded.
func (k *Keys) Len() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.perStream)
}

// ParseKeys reads a keys file: one "{stream} {key}" pair per line, blank
// lines and lines starting with # ignored.
func ParseKeys(data []byte) (map[string]string, error) {
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 4096), 64*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 {
			return nil, fmt.Errorf("line %d: want \"{stream} {key}\", got %d fields", n, len(f))
		}
		if !relay.ValidName(f[0]) {
			return nil, fmt.Errorf("line %d: stream %q: %w", n, f[0], relay.ErrBadStreamName)
		}
		if _, dup := m[f[0]]; dup {
			return nil, fmt.Errorf("line %d: stream %q listed twice", n, f[0])
		}
		m[f[0]] = f[1]
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return m, nil
}

// Check reports whether key may publish stream.
func (k *Keys) Check(stream, key string) error {
	if k == nil {
		return nil
	}
	k.mu.RLock()
	want, listed := k.perStream[stream]
	file := k.perStream != nil
	k.mu.RUnlock()
	switch {
	case listed:
	case k.Global != "":
		want = k.Global
	case file:
		return fmt.Errorf("stream %q is not in the publish keys file: %w", stream, ErrUnauthorized)
	default:
		return nil
	}
	if subtle.ConstantTimeCompare([]byte(key), []byte(want)) != 1 {
		return fmt.Errorf("stream %q: %w", stream, ErrUnauthorized)
	}
	return nil
}
