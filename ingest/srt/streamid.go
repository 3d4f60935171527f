package srt

import (
	"errors"
	"fmt"
	"strings"

	"github.com/relaymesh/relaymesh/relay"
)

// Errors parseStreamID returns besides relay.ErrBadStreamName. They decide
// the rejection code an encoder shows.
var (
	// errStreamID is a stream id in no format relaymesh understands.
	errStreamID = errors.New("stream id must be publish:{stream}[:{key}] or #!::r={stream},m=publish[,s={key}]")
	// errReadMode is a stream id that asks to play rather than publish.
	errReadMode = errors.New("stream id asks to read: SRT playback is not offered; play http://HOST:8080/live/{stream}/index.m3u8, or publish with streamid=publish:{stream}")
	// errBadMode is an access-control mode other than publish or request.
	errBadMode = errors.New("access-control mode must be m=publish")
)

// accessControlPrefix starts the SRT access-control stream id syntax
// (https://github.com/Haivision/srt/blob/master/docs/features/access-control.md).
const accessControlPrefix = "#!::"

// parseStreamID reads what an SRT caller asks for. Two forms publish:
//
//	publish:{stream}            publish:{stream}:{key}
//	#!::r={stream},m=publish    #!::r={stream},m=publish,s={key}
//
// In the second form u= (user) and h= (host) are ignored, t= must be
// "stream" if present, and unknown keys are ignored. A key may contain any
// character but the form's separators (',' in the second form; in the first
// everything after the second ':' is the key). Errors never quote the key.
func parseStreamID(id string) (stream, key string, err error) {
	if rest, ok := strings.CutPrefix(id, accessControlPrefix); ok {
		return parseAccessControl(rest)
	}
	mode, rest, ok := strings.Cut(id, ":")
	if !ok {
		if id == "" {
			return "", "", fmt.Errorf("no stream id: %w", errStreamID)
		}
		// A bare name is what players send to ask for a stream.
		return "", "", errReadMode
	}
	switch strings.ToLower(mode) {
	case "publish":
	case "read", "play", "request", "subscribe":
		return "", "", errReadMode
	default:
		return "", "", fmt.Errorf("unknown mode %s: %w", quote(mode), errStreamID)
	}
	stream, key, _ = strings.Cut(rest, ":")
	if !relay.ValidName(stream) {
		return "", "", fmt.Errorf("stream %s: %w", quote(stream), relay.ErrBadStreamName)
	}
	return stream, key, nil
}

// parseAccessControl reads the comma-separated key=value pairs after "#!::".
func parseAccessControl(kvs string) (stream, key string, err error) {
	seen := map[string]bool{}
	var mode string
	var hasStream bool
	n := 0
	for kv := range strings.SplitSeq(kvs, ",") {
		n++
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			// Not quoted: it may be a key written without "s=".
			return "", "", fmt.Errorf("access-control element %d is not key=value: %w", n, errStreamID)
		}
		if seen[k] {
			return "", "", fmt.Errorf("access-control key %s given twice: %w", quote(k), errStreamID)
		}
		seen[k] = true
		switch k {
		case "r":
			stream, hasStream = v, true
		case "m":
			mode = v
		case "s":
			key = v
		case "t":
			if v != "stream" {
				return "", "", fmt.Errorf("access-control type t=%s: only live streams are taken: %w", quote(v), errStreamID)
			}
		}
		// u (user), h (host) and keys of other applications are ignored.
	}
	switch mode {
	case "publish":
	case "", "request":
		return "", "", errReadMode // m defaults to request
	default:
		return "", "", fmt.Errorf("m=%s: %w", quote(mode), errBadMode)
	}
	if !hasStream {
		return "", "", fmt.Errorf("access-control stream id has no r={stream}: %w", errStreamID)
	}
	if !relay.ValidName(stream) {
		return "", "", fmt.Errorf("stream %s: %w", quote(stream), relay.ErrBadStreamName)
	}
	return stream, key, nil
}

// quote shortens and quotes a piece of a stream id for an error message: a
// hostile caller picks it, up to 512 bytes of it.
func quote(s string) string {
	const limit = 64
	if len(s) > limit {
		return fmt.Sprintf("%q...", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}
