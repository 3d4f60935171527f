package rtsp

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"strings"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/relaymesh/relaymesh/relay"
)

// App is the path prefix publishers use: rtsp://HOST:8554/live/{stream}.
const App = "live"

// streamName takes {stream} out of /live/{stream}. One trailing slash is
// tolerated, as some encoders add it.
func streamName(path string) (string, error) {
	rest, ok := strings.CutPrefix(path, "/"+App+"/")
	if !ok {
		return "", fmt.Errorf("publish to rtsp://HOST/%s/{stream}, not %q", App, path)
	}
	rest = strings.TrimSuffix(rest, "/")
	if !relay.ValidName(rest) {
		return "", fmt.Errorf("stream %q: %w", rest, relay.ErrBadStreamName)
	}
	return rest, nil
}

// publishKey finds the key a publisher presents: the password of a Basic
// Authorization header (any user name, as OBS and ffmpeg need one), or
// else the key query parameter. given reports whether the publisher
// presented any credentials at all, so that a missing key can be answered
// with a challenge and a wrong one with a refusal.
func publishKey(query string, authorization base.HeaderValue) (key string, given bool) {
	if len(authorization) > 0 {
		// Unusable credentials (Digest, which would need the key here in
		// the clear, or garbage) are still credentials: refused, not
		// challenged.
		pass, _ := basicPassword(authorization)
		return pass, true
	}
	// ParseQuery keeps what parsed before an error; a key there counts.
	q, _ := url.ParseQuery(query)
	if v, ok := q["key"]; ok && len(v) > 0 {
		return v[0], true
	}
	return "", false
}

// basicPassword decodes a Basic Authorization header (RFC 7617). The
// password is everything after the first colon, so keys may hold colons.
func basicPassword(h base.HeaderValue) (string, bool) {
	if len(h) != 1 {
		return "", false
	}
	scheme, creds, ok := strings.Cut(strings.TrimSpace(h[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Basic") {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(creds))
	if err != nil {
		return "", false
	}
	_, pass, ok := strings.Cut(string(raw), ":")
	return pass, ok
}
