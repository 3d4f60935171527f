package edge

import (
	"bytes"
	"compress/gzip"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/relay"
)

var decimal = regexp.MustCompile(`^[0-9]+$`)

func FuzzParseDirectives(f *testing.F) {
	for _, s := range []string{
		"", "_HLS_msn=5", "_HLS_msn=5&_HLS_part=2", "_HLS_part=2", "_HLS_msn=-1", "_HLS_msn=abc",
		"_HLS_msn=9007199254740992", "_HLS_msn=9007199254740993", "_HLS_msn=1&_HLS_msn=2",
		"_HLS_skip=YES", "_HLS_skip=v2", "_HLS_skip=NO", "_HLS_msn=3&_HLS_part=1&_HLS_skip=YES&x=y",
		"_HLS_msn=%31", "_HLS_msn=1;_HLS_part=2", "_HLS_msn=%zz", "_HLS_msn=0000000000000001",
	} {
		f.Add(s)
	}
	// A snapshot to evaluate parsed directives against.
	b := newBuilder(testPartTarget, relay.Window{Segments: 4})
	b.open(false)
	for range 6 {
		b.segment(2*time.Second, false)
	}
	b.part(testPartTarget)
	snap := b.st.Snapshot()

	f.Fuzz(func(t *testing.T, raw string) {
		q, _ := url.ParseQuery(raw) // as r.URL.Query() does: keep what parses
		d, err := ParseDirectives(q)
		// Whatever was parsed, using it must be safe.
		d.Satisfied(snap)
		d.TooFarAhead(snap, testPartTarget)
		d.TooFarAhead(snap, time.Second)

		check := func(key string, has bool, v uint64) {
			vs, present := q[key]
			if !present {
				if has {
					t.Fatalf("%q: %s reported present", raw, key)
				}
				return
			}
			ok := len(vs) == 1 && decimal.MatchString(vs[0])
			n, perr := strconv.ParseUint(vs[0], 10, 64)
			ok = ok && perr == nil && n <= 1<<53
			if err == nil {
				if !ok || !has || v != n {
					t.Fatalf("%q: accepted %s=%q as %d (has %v)", raw, key, vs, v, has)
				}
			} else if ok && len(vs[0]) <= 16 && (key == "_HLS_msn" || q.Has("_HLS_msn")) &&
				validSkip(q.Get("_HLS_skip")) && otherOK(q, key) {
				t.Fatalf("%q: rejected valid %s=%q: %v", raw, key, vs[0], err)
			}
		}
		check("_HLS_msn", d.HasMSN, d.MSN)
		check("_HLS_part", d.HasPart, d.Part)
		if err != nil {
			return
		}
		if d.HasPart && !d.HasMSN {
			t.Fatalf("%q: part without msn accepted", raw)
		}
		if want := q.Get("_HLS_skip") == "YES" || q.Get("_HLS_skip") == "v2"; d.Skip != want {
			t.Fatalf("%q: Skip %v", raw, d.Skip)
		}
		if d.Blocking() != d.HasMSN {
			t.Fatalf("%q: Blocking %v HasMSN %v", raw, d.Blocking(), d.HasMSN)
		}
	})
}

func validSkip(v string) bool { return v == "" || v == "YES" || v == "v2" }

// otherOK reports whether the numeric directive other than key is absent
// or valid, so that a rejection can be pinned on key.
func otherOK(q url.Values, key string) bool {
	other := "_HLS_part"
	if key == "_HLS_part" {
		other = "_HLS_msn"
	}
	vs, ok := q[other]
	if !ok {
		return true
	}
	if len(vs) != 1 || !decimal.MatchString(vs[0]) || len(vs[0]) > 16 {
		return false
	}
	n, err := strconv.ParseUint(vs[0], 10, 64)
	return err == nil && n <= 1<<53
}

var mediaFileRE = regexp.MustCompile(`^(?:init([0-9]+)\.mp4|part([0-9]+)\.m4s|seg([0-9]+)\.m4s)$`)

func FuzzParseMediaFile(f *testing.F) {
	for _, s := range []string{"init1.mp4", "part0.m4s", "seg42.m4s", "part.m4s", "seg-1.m4s", "part007.m4s",
		"seg9999999999999999999.m4s", "seg99999999999999999999.m4s", "init1.m4s", "..", "part1.m4s/", "pärt1.m4s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, file string) {
		mf, ok := parseMediaFile(file)
		m := mediaFileRE.FindStringSubmatch(file)
		if !ok {
			// Every name the playlist could use must parse.
			if m != nil {
				digits := m[1] + m[2] + m[3]
				if n, err := strconv.ParseUint(digits, 10, 64); err == nil && len(digits) <= 19 &&
					strconv.FormatUint(n, 10) == digits {
					t.Fatalf("parseMediaFile(%q) rejected a canonical name", file)
				}
			}
			return
		}
		if m == nil {
			t.Fatalf("parseMediaFile(%q) = %c %d; the name is not initN.mp4, partN.m4s or segN.m4s", file, mf.kind, mf.n)
		}
		var prefix, suffix, digits string
		switch {
		case m[1] != "":
			prefix, suffix, digits = "init", ".mp4", m[1]
		case m[2] != "":
			prefix, suffix, digits = "part", ".m4s", m[2]
		default:
			prefix, suffix, digits = "seg", ".m4s", m[3]
		}
		if mf.kind != prefix[0] {
			t.Fatalf("parseMediaFile(%q) kind %c", file, mf.kind)
		}
		if n, err := strconv.ParseUint(digits, 10, 64); err != nil || n != mf.n {
			t.Fatalf("parseMediaFile(%q) = %d, digits say %s", file, mf.n, digits)
		}
		canon := prefix + strconv.FormatUint(mf.n, 10) + suffix
		if again, ok := parseMediaFile(canon); !ok || again != mf {
			t.Fatalf("canonical %q does not parse back to %+v", canon, mf)
		}
	})
}

// weightZero matches an RFC 9110 12.4.2 weight whose qvalue is zero.
var weightZero = regexp.MustCompile(`^[ \t]*;[ \t]*[qQ]=0(?:\.0{0,3})?[ \t]*$`)

// weightValid matches any RFC 9110 weight.
var weightValid = regexp.MustCompile(`^[ \t]*;[ \t]*[qQ]=(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)[ \t]*$`)

func FuzzAcceptsGzip(f *testing.F) {
	for _, s := range []string{"gzip", "gzip;q=0", "gzip; q=0.5", "deflate, br", "br, gzip;q=0", "*", "GZIP",
		"gzip;q=0.0", "gzip;Q=0", "gzip;q=1.000", "identity;q=0, gzip", "gzip;q=0.001", ",,,", ";", "gzip;q"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest(http.MethodGet, "/live/cam/media.m3u8", nil)
		for _, v := range strings.Split(header, "\n") {
			r.Header.Add("Accept-Encoding", v)
		}
		got := acceptsGzip(r)
		// A single well-formed "gzip" element decides.
		if strings.Contains(header, ",") || strings.Contains(header, "\n") {
			return
		}
		coding, weight, _ := strings.Cut(header, ";")
		if !strings.EqualFold(strings.Trim(coding, " \t"), "gzip") {
			if got && !strings.Contains(strings.ToLower(header), "gzip") {
				t.Fatalf("acceptsGzip(%q) = true without gzip", header)
			}
			return
		}
		if weight == "" {
			if !got {
				t.Fatalf("acceptsGzip(%q) = false", header)
			}
			return
		}
		w := ";" + weight
		if !weightValid.MatchString(w) {
			return
		}
		if want := !weightZero.MatchString(w); got != want {
			t.Fatalf("acceptsGzip(%q) = %v, want %v", header, got, want)
		}
	})
}

// FuzzHandler sends the whole handler fuzzed requests against live, ended
// and empty streams. It must never panic, never fail with a 5xx other than
// 503, and never redirect except /live/{stream} to /live/{stream}/.
func FuzzHandler(f *testing.F) {
	for _, s := range []struct {
		method byte
		path   string
		query  string
		enc    string
	}{
		{0, "/live/cam/media.m3u8", "", ""},
		{0, "/live/cam/media.m3u8", "_HLS_msn=5&_HLS_part=1", "gzip"},
		{0, "/live/cam/media.m3u8", "_HLS_skip=YES", "gzip;q=0"},
		{0, "/live/cam/media.m3u8", "_HLS_msn=99999999", ""},
		{0, "/live/cam/media.m3u8", "_HLS_part=1", ""},
		{1, "/live/cam/index.m3u8", "", "gzip"},
		{0, "/live/cam/part12.m4s", "", ""},
		{0, "/live/cam/seg3.m4s", "", ""},
		{0, "/live/cam/init1.mp4", "", ""},
		{0, "/live/ended/media.m3u8", "_HLS_msn=1", ""},
		{0, "/live/empty/media.m3u8", "", ""},
		{0, "/live/empty/index.m3u8", "", ""},
		{0, "/live/../etc/passwd", "", ""},
		{0, "/live/cam", "", ""},
		{0, "/live/cam/", "", ""},
		{2, "/live/cam/media.m3u8", "", ""},
		{3, "/live/cam/media.m3u8", "", ""},
		{0, "//live/cam/media.m3u8", "", ""},
		{0, "/live/cam/part99999999999999999999.m4s", "", ""},
	} {
		f.Add(s.method, s.path, s.query, s.enc)
	}

	reg := relay.NewRegistry(relay.RegistryConfig{PartTarget: testPartTarget, Window: relay.Window{Segments: 4}, Grace: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	f.Cleanup(reg.Close)
	live, _ := reg.Publish("cam")
	b := builderFor(live.Stream)
	b.open(false)
	for range 6 {
		b.segment(2*time.Second, false)
	}
	b.part(testPartTarget)
	b.part(testPartTarget)
	ended, _ := reg.Publish("ended")
	be := builderFor(ended.Stream)
	be.open(false)
	be.segment(2*time.Second, false)
	be.part(testPartTarget)
	ended.Close()
	if _, err := reg.Publish("empty"); err != nil {
		f.Fatal(err)
	}
	srv := &Server{Streams: reg, Logger: slog.New(slog.DiscardHandler)}
	methods := []string{http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPost}

	f.Fuzz(func(t *testing.T, method byte, path, query, enc string) {
		// Blocking requests would wait up to 3 x TARGETDURATION; the
		// viewer gives up much sooner here.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		u := &url.URL{Path: path, RawQuery: query}
		req := (&http.Request{
			Method:     methods[int(method)%len(methods)],
			URL:        u,
			Proto:      "HTTP/1.1",
			ProtoMajor: 1,
			ProtoMinor: 1,
			Header:     http.Header{},
			Host:       "test",
			RequestURI: u.RequestURI(),
		}).WithContext(ctx)
		if enc != "" {
			req.Header.Set("Accept-Encoding", enc)
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)

		code := rec.Code
		switch {
		case code >= 500 && code != http.StatusServiceUnavailable:
			t.Fatalf("%s %q ?%q: %d", req.Method, path, query, code)
		case code >= 300 && code < 400:
			name, isStream := strings.CutPrefix(path, PathPrefix)
			if code != http.StatusMovedPermanently || !isStream || !relay.ValidName(name) || rec.Header().Get("Location") != path+"/" {
				t.Fatalf("%s %q ?%q: %d to %q", req.Method, path, query, code, rec.Header().Get("Location"))
			}
		}
		if rec.Header().Get("Access-Control-Allow-Origin") != "*" {
			t.Fatalf("%s %q: no CORS header", req.Method, path)
		}
		body := rec.Body.Bytes()
		// (net/http drops what http.Error writes for HEAD; the recorder
		// does not, so only the handler's own 200 responses are checked.)
		if req.Method == http.MethodHead && code == http.StatusOK && len(body) != 0 {
			t.Fatalf("HEAD %q returned %d body bytes", path, len(body))
		}
		if code != http.StatusOK || len(body) == 0 || !strings.HasSuffix(path, "/media.m3u8") {
			return
		}
		if rec.Header().Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("%q: gzip body: %v", path, err)
			}
			if body, err = io.ReadAll(zr); err != nil {
				t.Fatalf("%q: gzip body: %v", path, err)
			}
		}
		parseMedia(t, body)
	})
}
