package edge

import (
	"bufio"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/relaymesh/relaymesh/relay"
)

// Each viewer that loads the multivariant playlist gets its own session in
// the media URI, and the edge counts the sessions that reload it.
func TestViewersCountedBySession(t *testing.T) {
	reg := relay.NewRegistry(relay.RegistryConfig{Logger: slog.New(slog.DiscardHandler)})
	defer reg.Close()
	pub, _ := reg.Publish("cam")
	b := builderFor(pub.Stream)
	b.open(false)
	b.part(testPartTarget)
	b.open(false) // a complete segment: playlists are served at once
	for range holdBackParts {
		b.part(testPartTarget)
	}
	srv := &Server{Streams: reg, Logger: slog.New(slog.DiscardHandler)}
	ts := httptest.NewServer(srv)
	defer ts.Close()

	mediaURI := func() string {
		resp, err := http.Get(ts.URL + "/live/cam/index.m3u8")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "media.m3u8") {
				return sc.Text()
			}
		}
		t.Fatal("no media URI in the multivariant playlist")
		return ""
	}
	const n = 7
	for range n {
		uri := mediaURI()
		for range 3 { // each viewer reloads a few times
			resp, err := http.Get(ts.URL + "/live/cam/" + uri)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	if got := srv.ViewersOf("cam"); got != n {
		t.Fatalf("%d viewers counted, want %d", got, n)
	}
	if got := srv.Viewers()["cam"]; got != n {
		t.Fatalf("Viewers()[cam] = %d, want %d", got, n)
	}
}
