package rtsp

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/relaymesh/relaymesh/relay"
)

func TestStreamName(t *testing.T) {
	for _, tc := range []struct {
		path, name string
		ok         bool
	}{
		{"/live/cam", "cam", true},
		{"/live/cam/", "cam", true},
		{"/live/Cam_1.backup-2", "Cam_1.backup-2", true},
		{"/live/" + strings.Repeat("a", 128), strings.Repeat("a", 128), true},
		{"/live/" + strings.Repeat("a", 129), "", false},
		{"live/cam", "", false},
		{"/live/", "", false},
		{"/live//", "", false},
		{"/live", "", false},
		{"/", "", false},
		{"", "", false},
		{"/other/cam", "", false},
		{"/LIVE/cam", "", false},
		{"//live/cam", "", false},
		{"/live/cam/extra", "", false},
		{"/live/cam//", "", false},
		{"/live/../cam", "", false},
		{"/live/..", "", false},
		{"/live/.cam", "", false},
		{"/live/cam?key=1", "", false},
		{"/live/c am", "", false},
		{"/live/cam\x00", "", false},
		{"/live/kamera\u00e9", "", false},
	} {
		name, err := streamName(tc.path)
		if (err == nil) != tc.ok || name != tc.name {
			t.Errorf("streamName(%q) = %q, %v; want %q ok=%v", tc.path, name, err, tc.name, tc.ok)
		}
		if err != nil && strings.HasPrefix(tc.path, "/live/") && !strings.Contains(strings.TrimSuffix(tc.path[6:], "/"), "/") &&
			!errors.Is(err, relay.ErrBadStreamName) {
			t.Errorf("streamName(%q): %v is not ErrBadStreamName", tc.path, err)
		}
	}
}

func FuzzStreamName(f *testing.F) {
	for _, s := range []string{"/live/cam", "/live/cam/", "live/cam", "/live/", "/other/cam", "/live/a/b", "/live/..", "//live/x", "/live/" + strings.Repeat("z", 130)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		name, err := streamName(path)
		if err != nil {
			if name != "" {
				t.Fatalf("streamName(%q) = %q with error %v", path, name, err)
			}
			// Everything of the form /live/{valid name}[/] must be accepted.
			if rest, ok := strings.CutPrefix(path, "/"+App+"/"); ok && relay.ValidName(strings.TrimSuffix(rest, "/")) {
				t.Fatalf("streamName(%q) rejected valid stream %q: %v", path, rest, err)
			}
			return
		}
		if !relay.ValidName(name) {
			t.Fatalf("streamName(%q) = %q, not a valid name", path, name)
		}
		if path != "/"+App+"/"+name && path != "/"+App+"/"+name+"/" {
			t.Fatalf("streamName(%q) = %q: the name is not the whole rest of the path", path, name)
		}
	})
}

func basic(user, pass string) base.HeaderValue {
	return base.HeaderValue{"Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))}
}

func TestPublishKey(t *testing.T) {
	for _, tc := range []struct {
		name  string
		query string
		auth  base.HeaderValue
		key   string
		given bool
	}{
		{"none", "", nil, "", false},
		{"query", "key=secret", nil, "secret", true},
		{"query escaped", "key=s%26c+t", nil, "s&c t", true},
		{"query among others", "a=1&key=k&b=2", nil, "k", true},
		{"query first of two", "key=one&key=two", nil, "one", true},
		{"query empty key", "key=", nil, "", true},
		{"query other params", "a=1", nil, "", false},
		{"query half broken", "key=ok&bad=%zz", nil, "ok", true},
		{"basic", "", basic("any", "secret"), "secret", true},
		{"basic colon in password", "", basic("u", "a:b"), "a:b", true},
		{"basic empty password", "", basic("u", ""), "", true},
		{"basic lower-case scheme", "", base.HeaderValue{"basic " + base64.StdEncoding.EncodeToString([]byte("u:k"))}, "k", true},
		{"basic without colon", "", base.HeaderValue{"Basic " + base64.StdEncoding.EncodeToString([]byte("uk"))}, "", true},
		{"basic wins over query", "key=q", basic("u", "b"), "b", true},
		{"digest", "key=q", base.HeaderValue{`Digest username="u", realm="r", nonce="n", uri="rtsp://x", response="y"`}, "", true},
		{"garbage", "", base.HeaderValue{"garbage"}, "", true},
		{"bad base64", "", base.HeaderValue{"Basic !!!"}, "", true},
		{"two headers", "", base.HeaderValue{"Basic " + base64.StdEncoding.EncodeToString([]byte("a:b")), "Basic x"}, "", true},
	} {
		key, given := publishKey(tc.query, tc.auth)
		if key != tc.key || given != tc.given {
			t.Errorf("%s: publishKey(%q, %q) = %q, %v; want %q, %v", tc.name, tc.query, tc.auth, key, given, tc.key, tc.given)
		}
	}
}

func FuzzPublishKey(f *testing.F) {
	f.Add("key=secret", "")
	f.Add("", "Basic "+base64.StdEncoding.EncodeToString([]byte("u:p")))
	f.Add("key=%zz", "Digest x")
	f.Fuzz(func(t *testing.T, query, authorization string) {
		var h base.HeaderValue
		if authorization != "" {
			h = base.HeaderValue{authorization}
		}
		key, given := publishKey(query, h)
		if !given && key != "" {
			t.Fatalf("publishKey(%q, %q) = %q without credentials", query, authorization, key)
		}
		if authorization != "" && !given {
			t.Fatalf("publishKey(%q, %q): an Authorization header does not count as credentials", query, authorization)
		}
	})
}
