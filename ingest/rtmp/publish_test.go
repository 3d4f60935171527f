package rtmp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	rtmpcodecs "github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/relaymesh/relaymesh/ingest"
	"github.com/relaymesh/relaymesh/relay"
)

// A 640x360 High-profile SPS, for a resolution change.
var testSPS360 = []byte{
	0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
	0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
}

// statuses reads what the server says until it closes the connection.
func statuses(c *gortmplib.Client) (got []string, closed bool) {
	c.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second))
	for range 100 {
		msg, err := c.Read()
		if err != nil {
			var ne net.Error
			return got, !errors.As(err, &ne) || !ne.Timeout()
		}
		if cmd, ok := msg.(*message.CommandAMF0); ok && cmd.Name == "onStatus" {
			got = append(got, fmt.Sprint(cmd.Arguments))
		}
	}
	return got, false
}

// writeVideo sends frames [from, to) of 30 fps video with a 1 s GOP.
func writeVideo(t *testing.T, w *gortmplib.Writer, tr *gortmplib.Track, sps []byte, from, to int) {
	t.Helper()
	for k := from; k < to; k++ {
		au := [][]byte{{0x41, 0x9a, byte(k)}}
		if k%30 == 0 {
			au = [][]byte{sps, testPPS, {0x65, 0x88, 0x84, byte(k)}}
		}
		ts := (time.Duration(k) * time.Second / 30).Round(time.Millisecond)
		if err := w.WriteH264(tr, ts, ts, au); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPublishKey(t *testing.T) {
	ts := startServerWith(t, 5*time.Second, func(g *ingest.Gate) {
		g.Keys, _ = ingest.LoadKeys("s3cret", "")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, path := range []string{"/live/cam", "/live/cam?key=wrong", "/live/cam?key=s3cre"} {
		c, err := dialPublisher(ctx, ts.addr, path, true)
		if err != nil {
			continue // refused during the handshake
		}
		got, closed := statuses(c)
		c.Close()
		if !closed || !strings.Contains(strings.Join(got, " "), "NetStream.Publish.Rejected") {
			t.Errorf("%s: closed %v, statuses %v", path, closed, got)
		}
	}
	if ts.reg.Get("cam") != nil {
		t.Fatal("a refused publisher created the stream")
	}
	c, err := dialPublisher(ctx, ts.addr, "/live/cam?key=s3cret", true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	video := &gortmplib.Track{Codec: &rtmpcodecs.H264{SPS: testSPS, PPS: testPPS}}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{video}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	writeVideo(t, w, video, testSPS, 0, 45)
	if st := waitStream(t, ts, "cam"); st == nil {
		t.Fatal("right key: no stream")
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "publish key missing or wrong") || !strings.Contains(logs, "stream=cam") {
		t.Errorf("refusal not logged with the stream:\n%s", logs)
	}
}

func waitStream(t *testing.T, ts *testServer, name string) *relay.Stream {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st := ts.reg.Get(name); st != nil && len(st.Snapshot().Segments) > 0 {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no segments of %s; logs:\n%s", name, ts.logs)
	return nil
}

// With takeover, a second publisher replaces the first, which is
// disconnected.
func TestPublishTakeover(t *testing.T) {
	ts := startServerWith(t, 5*time.Second, func(g *ingest.Gate) { g.Takeover = true })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	publish := func() (*gortmplib.Client, *gortmplib.Writer, *gortmplib.Track) {
		c, err := dialPublisher(ctx, ts.addr, "/live/cam", true)
		if err != nil {
			t.Fatal(err)
		}
		video := &gortmplib.Track{Codec: &rtmpcodecs.H264{SPS: testSPS, PPS: testPPS}}
		w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{video}}
		if err := w.Initialize(); err != nil {
			t.Fatal(err)
		}
		return c, w, video
	}
	c1, w1, v1 := publish()
	defer c1.Close()
	writeVideo(t, w1, v1, testSPS, 0, 45)
	st := waitStream(t, ts, "cam")
	c2, w2, v2 := publish()
	defer c2.Close()
	writeVideo(t, w2, v2, testSPS, 0, 75)
	if _, closed := statuses(c1); !closed {
		t.Fatal("the first publisher was not disconnected")
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if _, err := st.Wait(wctx, func(s *relay.Snapshot) bool {
		for _, seg := range s.Segments {
			if seg.Discontinuity {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("no discontinuity after the takeover: %v; logs:\n%s", err, ts.logs)
	}
	if !ts.reg.HasPublisher("cam") {
		t.Fatal("the new publisher lost the stream")
	}
}

// A new sequence header with another resolution mid-stream gives a new
// init segment after a discontinuity; the publisher stays connected.
func TestPublishResolutionChange(t *testing.T) {
	ts := startServer(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dialPublisher(ctx, ts.addr, "/live/cam", true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	audioCfg := &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelConfig: 2}
	video := &gortmplib.Track{Codec: &rtmpcodecs.H264{SPS: testSPS, PPS: testPPS}}
	audio := &gortmplib.Track{Codec: &rtmpcodecs.MPEG4Audio{Config: audioCfg}}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{video, audio}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	writeVideo(t, w, video, testSPS, 0, 60)
	// The encoder restarts its video encoder at 640x360: new metadata and
	// sequence headers on the same connection.
	video2 := &gortmplib.Track{Codec: &rtmpcodecs.H264{SPS: testSPS360, PPS: testPPS}}
	w2 := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{video2, audio}}
	if err := w2.Initialize(); err != nil {
		t.Fatal(err)
	}
	writeVideo(t, w2, video2, testSPS360, 60, 150)
	st := waitStream(t, ts, "cam")
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	snap, err := st.Wait(wctx, func(s *relay.Snapshot) bool {
		for _, seg := range s.Segments {
			if seg.Init.Width == 640 && seg.Discontinuity {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatalf("no 640x360 segment after a discontinuity: %v; logs:\n%s", err, ts.logs)
	}
	if first := snap.Segments[0].Init; first.Width != 1280 || first.ID == snap.Segments[len(snap.Segments)-1].Init.ID {
		t.Fatalf("first init %+v", first)
	}
	if !ts.reg.HasPublisher("cam") {
		t.Fatal("the publisher was disconnected by the change")
	}
}
