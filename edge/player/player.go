// Package player serves relaymesh's built-in browser player: an HTML page at
// /live/{stream}/ that plays the stream's LL-HLS playlist with hls.js in
// low-latency mode, or with the browser's own HLS support in Safari, and the
// hls.js script the page loads from AssetPrefix.
//
// Everything is embedded in the binary: the page makes no request beyond
// the node that served it (no CDNs, no web fonts), and its
// Content-Security-Policy enforces that. See assets/README.md for where
// hls.js comes from and how to update it.
//
// The page keeps a read-only stats object at window.relaymesh for
// diagnostics and automated browser tests:
//
//	engine       "hls.js" or "native"
//	playing      true while the video plays (not paused, not rebuffering)
//	currentTime  video.currentTime, in seconds
//	latency      seconds behind the live edge (hls.latency; with native
//	             playback, now - (video.getStartDate() + currentTime)), or
//	             null when unknown
//	bufferAhead  seconds buffered ahead of currentTime
//	level        current resolution, e.g. "1280x720", or ""
//	droppedFrames, totalFrames
//	fragsLoaded, partsLoaded  hls.js FRAG_LOADED events for whole segments
//	             and for parts (always 0 with native playback)
//	errors       every error seen, fatal ones too, as "type/details" strings
//	             (the last 50)
//	fatalErrors  the fatal ones only (the last 50)
//	errorCount   all errors seen, including those no longer kept
//	host         host:port that served the last part or segment
//	hosts        parts and segments loaded per host:port
//	pathway      the content steering pathway (node name) playing, or ""
//	steeringLoads  steering manifests loaded
//	waiting      'waiting' events since playback first started: stalls
//	stalledMs    milliseconds spent in those stalls
//	ended        the show ended (EXT-X-ENDLIST) and playback reached its end;
//	             the page then looks for a new show every 10 s
//
// The page picks hls.js wherever Media Source Extensions exist, except in
// Safari, which plays LL-HLS natively; ?engine=native or ?engine=hls.js on
// the page URL overrides the choice, and ?debug turns on hls.js's console
// log. With hls.js the page starts at hls.js's sync position (PART-HOLD-BACK
// behind the live edge, plus 0.1 s) rather than at the keyframe before it,
// and a viewer who falls behind (a slow start, a stall) plays at up to 1.2x
// until back there, while at least 0.5 s is buffered ahead: hls.js's own
// catch-up needs 1 s buffered, more than a player at PART-HOLD-BACK has.
// A viewer 3 s or more behind after a stall, with the media buffered,
// jumps back at once, unless they paused or seeked back since they were
// last at the live edge; hls.js is not let
// raise its target latency after a stall (liveSyncOnStallIncrease 0).
// Beyond the hls.js error recovery, a watchdog reloads the stream when playback has not moved for 8 s without
// the viewer pausing (an origin restart). When the show ends the page says
// so, and starts again once a new show is live under the same name.
package player

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relaymesh/relaymesh/edge/internal/negotiate"
)

// AssetPrefix is where ServeAsset is mounted: /player/
const AssetPrefix = "/player/"

// HLSJSVersion is the version of the embedded hls.js.
const HLSJSVersion = "1.7.4"

var (
	//go:embed assets/hls.min.js
	hlsJS []byte
	//go:embed assets/LICENSE.hls.js
	hlsLicense []byte

	//go:embed page.html
	pageHTML string
	//go:embed page.js
	pageJS string
	//go:embed page.css
	pageCSS string
)

// asset is one file served under AssetPrefix.
type asset struct {
	contentType string
	plain       []byte
	version     string // content hash: ?v=version URLs are immutable
	gz          func() []byte
}

func newAsset(contentType string, data []byte) *asset {
	sum := sha256.Sum256(data)
	return &asset{
		contentType: contentType,
		plain:       data,
		version:     hex.EncodeToString(sum[:6]),
		// Compressed on first use, not at startup: most runs of the binary
		// never serve the player.
		gz: sync.OnceValue(func() []byte {
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			zw.Write(data)
			zw.Close()
			return buf.Bytes()
		}),
	}
}

// assets are the files ServeAsset knows, by name under AssetPrefix.
var assets = map[string]*asset{
	"hls.min.js":     newAsset("text/javascript; charset=utf-8", hlsJS),
	"LICENSE.hls.js": newAsset("text/plain; charset=utf-8", hlsLicense),
}

const (
	// immutable is for versioned asset URLs, whose content never changes.
	immutable = "public, max-age=31536000, immutable"
	// unversioned asset URLs change when relaymesh updates hls.js.
	unversioned = "public, max-age=86400"
)

// ServeAsset serves the files under AssetPrefix: /player/hls.min.js, and
// its license at /player/LICENSE.hls.js. Responses are gzipped when the
// client accepts it and carry an ETag; URLs with the ?v= content version the
// page uses are cached for a year, others for a day. Anything else is 404.
func ServeAsset(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// No path cleaning: "..", "//" and the like are simply not found.
	name, ok := strings.CutPrefix(r.URL.Path, AssetPrefix)
	a := assets[name]
	if !ok || a == nil {
		h.Set("Cache-Control", "max-age=60")
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	body, etag := a.plain, `"`+a.version+`"`
	h.Add("Vary", "Accept-Encoding")
	if negotiate.AcceptsGzip(r) {
		body, etag = a.gz(), `"`+a.version+`-gz"`
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Type", a.contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", etag)
	if r.URL.Query().Get("v") == a.version {
		h.Set("Cache-Control", immutable)
	} else {
		h.Set("Cache-Control", unversioned)
	}
	// ServeContent answers HEAD, If-None-Match and Range.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

type pageData struct {
	Stream    string
	HLSJS     string // URL of hls.min.js
	HLSJSVer  string
	LicenseJS string // URL of the hls.js license
	CSS       template.CSS
	JS        template.JS
}

var page = template.Must(template.New("page.html").Parse(pageHTML))

// pageCSP keeps the page to its own origin. The inline style and script are
// allowed by hash, so they must be inserted into the page byte for byte.
// blob: is for the MediaSource URL and the transmuxing worker of hls.js.
var pageCSP = strings.Join([]string{
	"default-src 'none'",
	"script-src 'self' " + hashSource(pageJS),
	"style-src " + hashSource(pageCSS),
	// Steering moves the player to other nodes of the mesh.
	"connect-src 'self' http: https:",
	"media-src 'self' blob:",
	"worker-src blob:",
	"img-src data:",
	"base-uri 'none'",
	"form-action 'none'",
}, "; ")

func hashSource(s string) string {
	sum := sha256.Sum256([]byte(s))
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// ServePage writes the player page for stream. The page plays
// ./index.m3u8 relative to /live/{stream}/ with hls.js in low-latency mode,
// or natively where the browser plays HLS itself (Safari).
//
// The stream name is only displayed, HTML-escaped; the caller routes
// /live/{stream}/ here and validates the name.
func ServePage(w http.ResponseWriter, r *http.Request, stream string) {
	h := w.Header()
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	js, lic := assets["hls.min.js"], assets["LICENSE.hls.js"]
	var buf bytes.Buffer
	err := page.Execute(&buf, pageData{
		Stream:    stream,
		HLSJS:     AssetPrefix + "hls.min.js?v=" + js.version,
		HLSJSVer:  HLSJSVersion,
		LicenseJS: AssetPrefix + "LICENSE.hls.js?v=" + lic.version,
		CSS:       template.CSS(pageCSS),
		JS:        template.JS(pageJS),
	})
	if err != nil {
		h.Set("Cache-Control", "no-store")
		http.Error(w, "player page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Revalidate every time: a new relaymesh may bring a new page and
	// hls.js version.
	h.Set("Cache-Control", "no-cache")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	if r.Method == http.MethodHead {
		return
	}
	w.Write(buf.Bytes())
}
