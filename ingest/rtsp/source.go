package rtsp

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/relaymesh/relaymesh/relay"
)

// OnDemandPrefix marks a source pulled only while viewers ask for it:
// {stream}=ondemand:rtsp://...
const OnDemandPrefix = "ondemand:"

// Source is an RTSP stream to pull and the name to publish it under.
type Source struct {
	Stream string
	// URL is rtsp:// or rtsps://, with credentials if the server needs
	// them. It is never logged with its password.
	URL string
	// OnDemand pulls only while Puller.Demand is being called.
	OnDemand bool
}

// ParseSource parses a source flag value:
//
//	{stream}=rtsp://[user:pass@]host[:port]/path[?query]
//	{stream}=ondemand:rtsp://[user:pass@]host[:port]/path[?query]
//
// The stream name is checked with relay.ValidName; the URL, kept as
// given, must be rtsp:// or rtsps:// with a host.
func ParseSource(spec string) (Source, error) {
	name, rawURL, ok := strings.Cut(spec, "=")
	if !ok {
		return Source{}, errors.New("RTSP source: want {stream}=rtsp://host/path or {stream}=" + OnDemandPrefix + "rtsp://host/path")
	}
	if !relay.ValidName(name) {
		return Source{}, fmt.Errorf("RTSP source: stream %q: %w", name, relay.ErrBadStreamName)
	}
	src := Source{Stream: name}
	rawURL, src.OnDemand = strings.CutPrefix(rawURL, OnDemandPrefix)
	if _, err := parseSourceURL(rawURL); err != nil {
		return Source{}, fmt.Errorf("RTSP source %s: %w", name, err)
	}
	src.URL = rawURL
	return src, nil
}

// parseSourceURL checks a source URL. Its errors never quote the URL,
// which may hold a password.
func parseSourceURL(raw string) (*base.URL, error) {
	u, err := base.ParseURL(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the URL, password and all
		}
		return nil, fmt.Errorf("URL %s: %w", redactURL(raw), err)
	}
	if !validHost(u.Hostname()) {
		return nil, fmt.Errorf("URL %s: no host or a bad one", redactURL(raw))
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("URL %s: bad port %q", redactURL(raw), p)
		}
	}
	return u, nil
}

// validHost accepts an IP address or a DNS name.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if net.ParseIP(h) != nil {
		return true
	}
	for _, c := range h {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return true
}

// redactURL is raw with any password replaced by xxxxx, for logs.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		// Keep only what cannot hold credentials: the scheme, and the
		// part after the last @ when there is one.
		scheme, rest, ok := strings.Cut(raw, "://")
		if !ok {
			return "(unparsable URL)"
		}
		if i := strings.LastIndexByte(rest, '@'); i >= 0 {
			rest = "xxxxx@" + rest[i+1:]
		}
		return scheme + "://" + rest
	}
	return u.Redacted()
}

// String describes the source for logs, without the URL's password.
func (s Source) String() string {
	prefix := ""
	if s.OnDemand {
		prefix = OnDemandPrefix
	}
	return s.Stream + "=" + prefix + redactURL(s.URL)
}
