// Package m3u8attr reads the attribute lists of HLS playlist tags
// (RFC 8216bis 4.2): KEY=value,KEY="quoted, value". The measuring tools in
// scripts/ and the end-to-end tests share it; the server writes its
// playlists and never reads one.
package m3u8attr

import (
	"errors"
	"fmt"
	"strings"
)

// Each calls f with each attribute of list, in order, quotes removed.
// Spaces around a name are trimmed. It stops at the first malformed
// attribute and says what was wrong; the attributes before it have been
// seen, so a lenient reader can ignore the error.
func Each(list string, f func(key, val string)) error {
	for list != "" {
		key, rest, ok := strings.Cut(list, "=")
		if !ok {
			return fmt.Errorf("attribute without a value: %q", list)
		}
		key = strings.TrimSpace(key)
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				return fmt.Errorf("unterminated quoted string after %s=", key)
			}
			val, rest = rest[1:1+end], rest[2+end:]
			if rest != "" && rest[0] != ',' {
				return fmt.Errorf("junk after attribute %s: %q", key, rest)
			}
			rest = strings.TrimPrefix(rest, ",")
		} else {
			val, rest, _ = strings.Cut(rest, ",")
		}
		if key == "" {
			return errors.New("attribute without a name")
		}
		f(key, val)
		list = rest
	}
	return nil
}

// Parse returns list's attributes by name: every attribute before the
// first malformed one, and the error.
func Parse(list string) (map[string]string, error) {
	out := map[string]string{}
	err := Each(list, func(k, v string) { out[k] = v })
	return out, err
}
