package rtsp

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"

	"github.com/relaymesh/relaymesh/ingest"
)

// client is a gortsplib client of a test server that records the
// responses it gets.
type client struct {
	c   *gortsplib.Client
	mu  sync.Mutex
	res []*base.Response
}

func dial(t *testing.T, ts *testServer) *client {
	t.Helper()
	cl := newClient(ts)
	if err := cl.c.Start2(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.c.Close)
	return cl
}

// record publishes medias to url, sending no media.
func record(t *testing.T, ts *testServer, url string, medias []*description.Media) *client {
	t.Helper()
	cl := newClient(ts)
	if err := cl.c.StartRecording(url, &description.Session{Medias: medias}); err != nil {
		t.Fatalf("publish %s: %v", url, err)
	}
	t.Cleanup(cl.c.Close)
	return cl
}

func newClient(ts *testServer) *client {
	cl := &client{}
	transport := gortsplib.TransportTCP
	cl.c = &gortsplib.Client{
		Scheme: "rtsp", Host: ts.addr, Transport: &transport, ReadTimeout: 5 * time.Second,
		OnResponse: func(r *base.Response) {
			cl.mu.Lock()
			cl.res = append(cl.res, r)
			cl.mu.Unlock()
		},
	}
	return cl
}

func (cl *client) last() *base.Response {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if len(cl.res) == 0 {
		return nil
	}
	return cl.res[len(cl.res)-1]
}

func statusOf(err error) base.StatusCode {
	var bad liberrors.ErrClientBadStatusCode
	if errors.As(err, &bad) {
		return bad.Code
	}
	return 0
}

func announce(t *testing.T, ts *testServer, url string, medias []*description.Media) (*client, error) {
	t.Helper()
	cl := dial(t, ts)
	u, err := base.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.c.Announce(u, &description.Session{Medias: medias})
	return cl, err
}

// TestRefusals checks the status codes encoders get, without ffmpeg.
func TestRefusals(t *testing.T) {
	keys, err := ingest.LoadKeys("secret", "")
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, serverOptions{keys: keys})
	ts.gate.Limits.MaxStreams = 1
	av := testMedias()[:2]
	g711 := []*description.Media{{Type: description.MediaTypeAudio, Formats: []format.Format{&format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}}}}

	// A publisher holds "live" (and so the one stream allowed).
	holder := record(t, ts, ts.url("/live/live?key=secret"), testMedias()[:2])
	waitFor(t, 5*time.Second, "the first publisher", func() bool { return ts.reg.HasPublisher("live") })

	for _, tc := range []struct {
		name   string
		url    string
		medias []*description.Media
		code   base.StatusCode
	}{
		{"wrong path", "/other/cam?key=secret", av, base.StatusNotFound},
		{"bad name", "/live/.cam?key=secret", av, base.StatusBadRequest},
		{"no usable codec", "/live/cam?key=secret", g711, base.StatusUnsupportedMediaType},
		{"wrong key", "/live/cam?key=nope", av, base.StatusUnauthorized},
		{"no key", "/live/cam", av, base.StatusUnauthorized},
		{"busy", "/live/live?key=secret", av, 409},
		{"too many streams", "/live/cam?key=secret", av, base.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := announce(t, ts, ts.url(tc.url), tc.medias)
			if got := statusOf(err); got != tc.code {
				t.Fatalf("ANNOUNCE %s: %v; want status %d", tc.url, err, tc.code)
			}
			challenge := strings.Join(cl.last().Header["WWW-Authenticate"], ",")
			if tc.name == "no key" {
				if challenge != `Basic realm="relaymesh"` {
					t.Errorf("challenge %q, want a Basic one", challenge)
				}
			} else if challenge != "" {
				t.Errorf("unexpected challenge %q", challenge)
			}
		})
	}
	if n := len(ts.reg.Names()); n != 1 {
		t.Errorf("registry holds %d streams (%v), want only the live one", n, ts.reg.Names())
	}

	t.Run("playback", func(t *testing.T) {
		cl := dial(t, ts)
		u, _ := base.ParseURL(ts.url("/live/live"))
		if _, _, err := cl.c.Describe(u); statusOf(err) != base.StatusMethodNotAllowed {
			t.Errorf("DESCRIBE: %v, want 405", err)
		}
	})

	t.Run("ignored tracks", func(t *testing.T) {
		holder.c.Close()
		waitFor(t, 5*time.Second, "the first publisher to leave", func() bool { return !ts.reg.HasPublisher("live") })
		medias := append(append([]*description.Media{}, g711...), testMedias()...)
		record(t, ts, ts.url("/live/mixed?key=secret"), medias)
		waitFor(t, 5*time.Second, "the log line", func() bool { return ts.logs.Count("rtsp tracks ignored") == 1 })
		if !strings.Contains(ts.logs.String(), "G711") {
			t.Errorf("ignored G711 track not logged")
		}
	})
}

// TestSetupDeadline checks that a connection that never records is closed
// and frees what it claimed.
func TestSetupDeadline(t *testing.T) {
	ts := startServer(t, serverOptions{timeout: 500 * time.Millisecond})
	cl, err := announce(t, ts, ts.url("/live/stall"), testMedias()[:2])
	if err != nil {
		t.Fatalf("ANNOUNCE: %v", err)
	}
	if !ts.reg.HasPublisher("stall") {
		t.Fatal("ANNOUNCE did not claim the stream")
	}
	waitFor(t, 5*time.Second, "the stalled publisher to be dropped", func() bool { return !ts.reg.HasPublisher("stall") && ts.gate.Live() == 0 })
	if err := cl.c.Wait(); err == nil {
		t.Error("client still connected")
	}
}

// TestServeStops checks that Serve returns once its context ends, with
// publishers connected, and ends their publications.
func TestServeStops(t *testing.T) {
	ts := startServer(t, serverOptions{udp: true})
	record(t, ts, ts.url("/live/a"), testMedias()[2:])
	waitFor(t, 5*time.Second, "the publisher", func() bool { return ts.reg.HasPublisher("a") })
	start := time.Now()
	ts.cancel()
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		ts.done <- nil // for the cleanup's stop
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Serve took %s to stop", d)
	}
	if ts.gate.Live() != 0 || ts.reg.HasPublisher("a") {
		t.Error("publication still live after Serve returned")
	}
}

// TestServeErrors checks configuration errors.
func TestServeErrors(t *testing.T) {
	if err := (&Server{}).ListenAndServe(t.Context(), "127.0.0.1:0"); err == nil {
		t.Error("Serve without a gate succeeded")
	}
	log, _ := newLogger(t)
	srv := &Server{Gate: newGate(newRegistry(log), log), Logger: log, UDPRTPAddress: "127.0.0.1:1", UDPRTCPAddress: "127.0.0.1:2"}
	if err := srv.ListenAndServe(t.Context(), "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "even") {
		t.Errorf("Serve with an odd RTP port: %v", err)
	}
}
