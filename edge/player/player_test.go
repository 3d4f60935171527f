package player

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func getPage(t *testing.T, method, stream string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, "/live/"+stream+"/", nil)
	w := httptest.NewRecorder()
	ServePage(w, r, stream)
	return w
}

func TestServePage(t *testing.T) {
	w := getPage(t, http.MethodGet, "demo")
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	body := w.Body.String()
	for _, want := range []string{
		"<title>demo · relaymesh</title>",
		"<h1>demo</h1>",
		`<script src="/player/hls.min.js?v=` + assets["hls.min.js"].version + `"></script>`,
		`<video id="video" muted autoplay playsinline controls>`,
		"'index.m3u8'",
		"lowLatencyMode: true",
		"backBufferLength: 30",
		"window, 'relaymesh'",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if n := w.Header().Get("Content-Length"); n != strconv.Itoa(len(body)) {
		t.Errorf("Content-Length %q for %d bytes", n, len(body))
	}
	// The page stays on its own origin: no CDNs, fonts or other sites.
	if strings.Contains(body, "://") || strings.Contains(body, `"//`) || strings.Contains(body, "url(") {
		t.Error("page refers to another origin")
	}
}

func TestServePageHEAD(t *testing.T) {
	w := getPage(t, http.MethodHead, "demo")
	if w.Code != http.StatusOK || w.Body.Len() != 0 || w.Header().Get("Content-Length") == "" {
		t.Errorf("HEAD: status %d, %d body bytes, Content-Length %q", w.Code, w.Body.Len(), w.Header().Get("Content-Length"))
	}
	w = getPage(t, http.MethodPost, "demo")
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d", w.Code)
	}
}

func TestServePageEscapesStream(t *testing.T) {
	const hostile = `<script>alert("x")</script>&'`
	w := getPage(t, http.MethodGet, hostile)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	body := w.Body.String()
	if strings.Contains(body, "<script>alert") || strings.Contains(body, `alert("x")`) {
		t.Error("stream name is not escaped")
	}
	if !strings.Contains(body, "<h1>&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;&#39;</h1>") {
		t.Error("escaped stream name missing from the page")
	}
	// Only the two script elements of the page itself.
	if n := strings.Count(body, "<script"); n != 2 {
		t.Errorf("%d script elements, want 2", n)
	}
}

// The Content-Security-Policy allows the inline style and script by hash:
// they must reach the page unchanged.
func TestServePageCSP(t *testing.T) {
	w := getPage(t, http.MethodGet, "demo")
	csp := w.Header().Get("Content-Security-Policy")
	body := w.Body.String()
	for _, el := range []string{"script", "style"} {
		m := regexp.MustCompile(`(?s)<` + el + `>(.*?)</` + el + `>`).FindStringSubmatch(body)
		if m == nil {
			t.Errorf("no inline %s", el)
			continue
		}
		sum := sha256.Sum256([]byte(m[1]))
		if h := "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, h) {
			t.Errorf("CSP %q lacks the inline %s's hash %s", csp, el, h)
		}
	}
	for _, want := range []string{"default-src 'none'", "script-src 'self' ", "connect-src 'self'", "media-src 'self' blob:"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
}

func getAsset(t *testing.T, method, target string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, "/", nil)
	r.URL.Path, r.URL.RawQuery, _ = strings.Cut(target, "?")
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	ServeAsset(w, r)
	return w
}

func TestServeAsset(t *testing.T) {
	w := getAsset(t, http.MethodGet, AssetPrefix+"hls.min.js")
	if w.Code != http.StatusOK {
		t.Fatalf("status %d", w.Code)
	}
	h := w.Header()
	if ct := h.Get("Content-Type"); !strings.Contains(ct, "javascript") {
		t.Errorf("Content-Type %q", ct)
	}
	if h.Get("Content-Encoding") != "" {
		t.Errorf("Content-Encoding %q without Accept-Encoding", h.Get("Content-Encoding"))
	}
	if !bytes.Equal(w.Body.Bytes(), hlsJS) {
		t.Error("body differs from the embedded hls.min.js")
	}
	onDisk, err := os.ReadFile("assets/hls.min.js")
	if err != nil || !bytes.Equal(onDisk, w.Body.Bytes()) {
		t.Errorf("body differs from assets/hls.min.js (%v)", err)
	}
	if cc := h.Get("Cache-Control"); cc != unversioned {
		t.Errorf("unversioned Cache-Control %q", cc)
	}
	if !strings.Contains(h.Get("Vary"), "Accept-Encoding") {
		t.Errorf("Vary %q", h.Get("Vary"))
	}

	// The versioned URL the page uses is cached for good.
	w = getAsset(t, http.MethodGet, AssetPrefix+"hls.min.js?v="+assets["hls.min.js"].version)
	if cc := w.Header().Get("Cache-Control"); w.Code != http.StatusOK || cc != immutable {
		t.Errorf("versioned: status %d, Cache-Control %q", w.Code, cc)
	}

	// Revalidation.
	w = getAsset(t, http.MethodGet, AssetPrefix+"hls.min.js", "If-None-Match", h.Get("ETag"))
	if w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Errorf("If-None-Match: status %d, %d bytes", w.Code, w.Body.Len())
	}

	w = getAsset(t, http.MethodHead, AssetPrefix+"hls.min.js")
	if w.Code != http.StatusOK || w.Body.Len() != 0 || w.Header().Get("Content-Length") != strconv.Itoa(len(hlsJS)) {
		t.Errorf("HEAD: status %d, %d bytes, Content-Length %q", w.Code, w.Body.Len(), w.Header().Get("Content-Length"))
	}

	w = getAsset(t, http.MethodGet, AssetPrefix+"LICENSE.hls.js")
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), "Apache License, Version 2.0") ||
		!strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		t.Errorf("license: status %d, Content-Type %q", w.Code, w.Header().Get("Content-Type"))
	}

	w = getAsset(t, http.MethodPost, AssetPrefix+"hls.min.js")
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: status %d", w.Code)
	}
}

func TestServeAssetGzip(t *testing.T) {
	for _, ae := range []string{"gzip", "gzip, deflate, br, zstd", "br;q=1.0, GZIP;q=0.5"} {
		w := getAsset(t, http.MethodGet, AssetPrefix+"hls.min.js", "Accept-Encoding", ae)
		if w.Code != http.StatusOK || w.Header().Get("Content-Encoding") != "gzip" {
			t.Errorf("%q: status %d, Content-Encoding %q", ae, w.Code, w.Header().Get("Content-Encoding"))
			continue
		}
		if !strings.Contains(w.Header().Get("Content-Type"), "javascript") {
			t.Errorf("%q: Content-Type %q", ae, w.Header().Get("Content-Type"))
		}
		if w.Body.Len() >= len(hlsJS)/2 {
			t.Errorf("%q: %d gzipped bytes for %d", ae, w.Body.Len(), len(hlsJS))
		}
		zr, err := gzip.NewReader(w.Body)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(zr)
		if err != nil || !bytes.Equal(got, hlsJS) {
			t.Errorf("%q: gunzipped body differs from hls.min.js (%v)", ae, err)
		}
	}
	for _, ae := range []string{"gzip;q=0", "deflate, br", "gzip ; q=0.000", "x-gzip"} {
		w := getAsset(t, http.MethodGet, AssetPrefix+"hls.min.js", "Accept-Encoding", ae)
		if w.Header().Get("Content-Encoding") != "" || !bytes.Equal(w.Body.Bytes(), hlsJS) {
			t.Errorf("%q: Content-Encoding %q", ae, w.Header().Get("Content-Encoding"))
		}
	}
}

func TestServeAssetNotFound(t *testing.T) {
	for _, p := range []string{
		AssetPrefix,
		AssetPrefix + "nope.js",
		AssetPrefix + "README.md",
		AssetPrefix + "assets/hls.min.js",
		AssetPrefix + "hls.min.js/",
		AssetPrefix + "HLS.MIN.JS",
		AssetPrefix + "..",
		AssetPrefix + "../player/hls.min.js",
		AssetPrefix + "../hls.min.js",
		AssetPrefix + "./hls.min.js",
		AssetPrefix + "/hls.min.js",
		AssetPrefix + "%2e%2e/hls.min.js",
		"/hls.min.js",
		"/other/hls.min.js",
	} {
		if w := getAsset(t, http.MethodGet, p); w.Code != http.StatusNotFound {
			t.Errorf("%s: status %d, want 404", p, w.Code)
		}
	}
}

// assets/README.md records the version and hash of the embedded hls.js.
func TestAssetsREADME(t *testing.T) {
	readme, err := os.ReadFile("assets/README.md")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(hlsJS)
	if !bytes.Contains(readme, []byte(hex.EncodeToString(sum[:]))) {
		t.Errorf("assets/README.md lacks the sha256 of hls.min.js, %x", sum)
	}
	if !bytes.Contains(readme, []byte("version:  "+HLSJSVersion)) {
		t.Errorf("assets/README.md lacks version %s", HLSJSVersion)
	}
	// hls.js reports its own version as Hls.version.
	if !bytes.Contains(hlsJS, []byte(`"`+HLSJSVersion+`"`)) {
		t.Errorf("hls.min.js does not look like version %s", HLSJSVersion)
	}
	if !bytes.Contains(hlsLicense, []byte("Apache License")) {
		t.Error("LICENSE.hls.js is not the Apache license notice")
	}
}
