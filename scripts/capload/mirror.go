//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// mirrorKeep is how many parts the mirror keeps on disk: far more than a
// playlist lists (three target durations), so a poller never finds a
// listed part gone.
const mirrorKeep = 300

// runMirror copies the live stream at cfg.rawURL into cfg.dir until ctx
// ends, as a static file server's document root: the multivariant
// playlist once, then for each blocking reload the new init sections and
// parts, and after them the playlist, each renamed into place.
func runMirror(ctx context.Context, cfg *config, log *slog.Logger) error {
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		return fmt.Errorf("mirror directory: %w", err)
	}
	m := &mirror{
		dir: cfg.dir, log: log,
		hc:   &http.Client{Timeout: cfg.timeout},
		have: map[string]bool{},
	}
	base := "http://" + cfg.addr
	var index []byte
	for {
		var err error
		if index, err = m.get(ctx, base+cfg.indexPath); err == nil {
			break
		}
		log.Warn("mirror: multivariant playlist", "err", err)
		if !sleepCtx(ctx, 200*time.Millisecond) {
			return ctx.Err()
		}
	}
	// The one variant, renamed: a static server has no sessions.
	var variant string
	var lines []string
	for _, line := range strings.Split(string(index), "\n") {
		if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") && variant == "" {
			variant = t
			line = "media.m3u8"
		}
		lines = append(lines, line)
	}
	if variant == "" {
		return errors.New("mirror: the multivariant playlist lists no variant")
	}
	if err := m.write("index.m3u8", []byte(strings.Join(lines, "\n"))); err != nil {
		return err
	}
	media := string(resolveRef(nil, []byte(cfg.indexPath), []byte(variant)))
	var l listing
	var at *cursor
	written, fails := 0, 0
	for ctx.Err() == nil {
		u := media
		if at != nil {
			u = string(appendDirectives(nil, []byte(media), *at))
		}
		body, err := m.get(ctx, base+u)
		if err == nil {
			err = scan(body, &l)
		}
		if err == nil {
			var n int
			n, err = m.copyMedia(ctx, base, media, body, &l)
			written += n
		}
		if err == nil {
			err = m.write("media.m3u8", body)
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			fails++
			log.Warn("mirror: reload", "err", err)
			at = nil
			if !sleepCtx(ctx, 200*time.Millisecond) {
				break
			}
			continue
		}
		if l.endList {
			break
		}
		next := l.next
		at = &next
	}
	log.Info("mirror stopped", "parts", written, "failures", fails)
	return ctx.Err()
}

type mirror struct {
	dir   string
	log   *slog.Logger
	hc    *http.Client
	have  map[string]bool
	parts []string // written parts, oldest first
}

func (m *mirror) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := m.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: status %d", u, resp.StatusCode)
	}
	return body, nil
}

// copyMedia fetches the init section and the parts of l not yet on disk.
func (m *mirror) copyMedia(ctx context.Context, base, media string, body []byte, l *listing) (int, error) {
	var uris []string
	if mu := l.mapURI; mu[1] > mu[0] {
		uris = append(uris, string(body[mu[0]:mu[1]]))
	}
	for _, p := range l.parts {
		uris = append(uris, string(body[p.uri:p.end]))
	}
	n := 0
	for _, uri := range uris {
		if m.have[uri] {
			continue
		}
		if strings.ContainsAny(uri, "/?") || uri == ".." {
			return n, fmt.Errorf("mirror: URI %q is not a plain file name", uri)
		}
		data, err := m.get(ctx, base+string(resolveRef(nil, []byte(media), []byte(uri))))
		if err != nil {
			return n, err
		}
		if err := m.write(uri, data); err != nil {
			return n, err
		}
		m.have[uri] = true
		if bytes.HasPrefix([]byte(uri), []byte("part")) {
			m.parts = append(m.parts, uri)
			n++
		}
	}
	for len(m.parts) > mirrorKeep {
		old := m.parts[0]
		m.parts = m.parts[1:]
		delete(m.have, old)
		os.Remove(filepath.Join(m.dir, old))
	}
	return n, nil
}

// write puts data at dir/name through a temporary file and a rename, so
// a reader sees the old file or the new one, never half of one.
func (m *mirror) write(name string, data []byte) error {
	tmp := filepath.Join(m.dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("mirror: writing %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, name)); err != nil {
		return fmt.Errorf("mirror: renaming %s: %w", name, err)
	}
	return nil
}
