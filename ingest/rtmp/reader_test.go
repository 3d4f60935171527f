package rtmp

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	rtmpcodecs "github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/relaymesh/relaymesh/relay"
)

// Packaging starts at the first keyframe: a publisher that has sent only
// 0.6 s of media already has parts in the stream. (A reader that buffers
// seconds of media to discover tracks would hold all of it back.)
func TestPublishStartsAtFirstKeyframe(t *testing.T) {
	ts := startServer(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := dialPublisher(ctx, ts.addr, "/live/quick", true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	video := &gortmplib.Track{Codec: &rtmpcodecs.H264{SPS: testSPS, PPS: testPPS}}
	audio := &gortmplib.Track{Codec: &rtmpcodecs.MPEG4Audio{Config: &mpeg4audio.AudioSpecificConfig{
		Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelConfig: 2,
	}}}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{video, audio}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	for frame := range 18 { // 0.6 s at 30 fps, one keyframe
		vt := (time.Duration(frame) * time.Second / 30).Round(time.Millisecond)
		au := [][]byte{{0x41, 0x9a, byte(frame)}}
		if frame == 0 {
			au = [][]byte{{0x65, 0x88, 0x84, 0}}
		}
		if err := w.WriteH264(video, vt, vt, au); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteMPEG4Audio(audio, vt, []byte{0x21, 0x10, byte(frame)}); err != nil {
			t.Fatal(err)
		}
	}
	var st *relay.Stream
	for st == nil && ctx.Err() == nil {
		st = ts.reg.Get("quick")
		time.Sleep(5 * time.Millisecond)
	}
	if st == nil {
		t.Fatalf("stream not registered; logs:\n%s", ts.logs)
	}
	snap, err := st.Wait(ctx, func(s *relay.Snapshot) bool { return s.NextPart >= 2 })
	if err != nil {
		t.Fatalf("after 0.6 s of media the stream has %d parts, want 2; logs:\n%s", snap.NextPart, ts.logs)
	}
	if in := snap.LatestInit(); in == nil || in.Codecs != "avc1.64001f,mp4a.40.2" {
		t.Errorf("init %+v", in)
	}
}

// A codec relaymesh cannot package is refused with a status the encoder
// shows, and a log line names it; nothing is served under the name.
func TestPublishRefusesUnsupportedCodec(t *testing.T) {
	ts := startServer(t, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := dialPublisher(ctx, ts.addr, "/live/mp3", true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{
		{Codec: &rtmpcodecs.MPEG1Audio{}},
	}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteMPEG1Audio(w.Tracks[0], 0, append([]byte{0xff, 0xfb, 0x90, 0x64}, make([]byte, 413)...)); err != nil {
		t.Fatal(err)
	}
	c.NetConn().SetReadDeadline(time.Now().Add(5 * time.Second))
	var status string
	for status == "" {
		msg, err := c.Read()
		if err != nil {
			break
		}
		if cmd, ok := msg.(*message.CommandAMF0); ok && cmd.Name == "onStatus" {
			if s := fmt.Sprint(cmd.Arguments); strings.Contains(s, "error") {
				status = s
			}
		}
	}
	if !strings.Contains(status, "NetStream.Publish.Failed") || !strings.Contains(status, "H.264") {
		t.Errorf("status %q, want NetStream.Publish.Failed naming the codecs to send", status)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(ts.logs.String(), "unsupported codec") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(ts.logs.String(), "unsupported codec") {
		t.Errorf("no log line names the codec:\n%s", ts.logs)
	}
	if st := ts.reg.Get("mp3"); st != nil && st.Snapshot().LatestInit() != nil {
		t.Error("media is served for a refused publish")
	}
}
