package rtsp

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/ingest"
)

// TestPublish publishes with ffmpeg over both transports and both codec
// pairs, and checks what the registry gets.
func TestPublish(t *testing.T) {
	requireFFmpeg(t)
	for _, tc := range []struct {
		name   string
		enc    encoder
		codecs *regexp.Regexp
	}{
		{"h264-aac-tcp", encoder{video: "h264", audio: "aac", transport: "tcp"}, avcAAC},
		{"h264-aac-udp", encoder{video: "h264-bframes", audio: "aac", transport: "udp"}, avcAAC},
		{"h265-opus-tcp", encoder{video: "h265", audio: "opus", transport: "tcp"}, hevcOpus},
		{"h265-opus-udp", encoder{video: "h265", audio: "opus", transport: "udp"}, hevcOpus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, serverOptions{udp: true})
			tc.enc.seconds = 4
			ff := startFFmpeg(t, tc.enc, ts.url("/live/cam"))
			if err := ff.wait(t, 30*time.Second); err != nil {
				t.Fatalf("publish failed: %s", describe(ff))
			}
			checkStream(t, ts.reg, "cam", tc.codecs)
			// ffmpeg's TEARDOWN ends the publication.
			waitFor(t, 5*time.Second, "the publication to end", func() bool { return !ts.reg.HasPublisher("cam") })
			if ts.gate.Live() != 0 {
				t.Errorf("gate has %d live streams after the publisher left", ts.gate.Live())
			}
		})
	}
}

// TestPublishKeys checks both ways of presenting the key, and that wrong or
// missing keys make ffmpeg fail without claiming the stream.
func TestPublishKeys(t *testing.T) {
	requireFFmpeg(t)
	keys, err := ingest.LoadKeys("secret", "")
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, serverOptions{keys: keys, udp: true})
	host := ts.addr
	for _, tc := range []struct {
		name, url, stream, transport string
		ok                           bool
	}{
		{"query-wrong", "rtsp://" + host + "/live/cam?key=wrong", "cam", "tcp", false},
		{"basic-wrong", "rtsp://any:wrong@" + host + "/live/cam", "cam", "udp", false},
		{"missing", "rtsp://" + host + "/live/cam", "cam", "tcp", false},
		{"query-right", "rtsp://" + host + "/live/a?key=secret", "a", "udp", true},
		{"basic-right", "rtsp://any:secret@" + host + "/live/b", "b", "tcp", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ff := startFFmpeg(t, encoder{video: "h264", audio: "aac", transport: tc.transport, seconds: 3}, tc.url)
			err := ff.wait(t, 20*time.Second)
			if !tc.ok {
				if err == nil {
					t.Fatalf("ffmpeg published with a wrong or missing key")
				}
				if !strings.Contains(ff.stderr.String(), "401") {
					t.Errorf("ffmpeg did not report a 401: %s", describe(ff))
				}
				return
			}
			if err != nil {
				t.Fatalf("publish with the right key failed: %s", describe(ff))
			}
			checkStream(t, ts.reg, tc.stream, avcAAC)
		})
	}
	t.Cleanup(func() {
		// After every subtest: nothing was ever published under the name
		// the wrong keys tried.
		if s := ts.reg.Get("cam"); s != nil {
			t.Errorf("stream cam exists after refused publishers")
		}
		// Both wrong keys are refused; the log lines are rate-limited.
		if n := ts.logs.Count("wrong publish key"); n < 1 {
			t.Errorf("no log line about a wrong publish key")
		}
	})
}

// TestPublishBusy checks that a second publisher is refused while the
// first is live, and wins with takeover.
func TestPublishBusy(t *testing.T) {
	requireFFmpeg(t)
	for _, takeover := range []bool{false, true} {
		t.Run(map[bool]string{false: "refused", true: "takeover"}[takeover], func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, serverOptions{takeover: takeover})
			enc := encoder{video: "h264", audio: "aac", transport: "tcp", seconds: 30}
			first := startFFmpeg(t, enc, ts.url("/live/cam"))
			waitFor(t, 15*time.Second, "the first publisher's parts", func() bool { return parts(ts.reg, "cam") >= 3 })

			second := startFFmpeg(t, enc, ts.url("/live/cam"))
			if !takeover {
				if err := second.wait(t, 15*time.Second); err == nil {
					t.Fatalf("second publisher was not refused")
				}
				if !strings.Contains(second.stderr.String(), "409") {
					t.Errorf("ffmpeg did not report the 409 refusal: %s", describe(second))
				}
				n := parts(ts.reg, "cam")
				waitFor(t, 5*time.Second, "the first publisher to go on", func() bool { return parts(ts.reg, "cam") > n+2 })
				select {
				case <-first.done:
					t.Fatalf("first publisher was disconnected: %s", describe(first))
				default:
				}
				first.interrupt(t)
				return
			}
			select {
			case <-first.done:
			case <-time.After(15 * time.Second):
				t.Fatalf("first publisher was not disconnected by the takeover")
			}
			waitFor(t, 15*time.Second, "the second publisher's segments after a discontinuity", func() bool {
				return discontinuities(ts.reg, "cam") >= 1 && ts.reg.HasPublisher("cam")
			})
			n := parts(ts.reg, "cam")
			waitFor(t, 5*time.Second, "the second publisher's parts", func() bool { return parts(ts.reg, "cam") > n+2 })
			second.interrupt(t)
		})
	}
}
