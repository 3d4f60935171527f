package rtsp

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/relay"
)

func TestParseSource(t *testing.T) {
	for _, tc := range []struct {
		spec string
		want Source
		ok   bool
	}{
		{"cam=rtsp://10.0.0.5/stream1", Source{Stream: "cam", URL: "rtsp://10.0.0.5/stream1"}, true},
		{"cam=rtsp://10.0.0.5:8554/a/b?x=1&y=2", Source{Stream: "cam", URL: "rtsp://10.0.0.5:8554/a/b?x=1&y=2"}, true},
		{"cam=rtsps://cam.example/s", Source{Stream: "cam", URL: "rtsps://cam.example/s"}, true},
		{"cam=rtsp://admin:p%40ss@cam.example/s", Source{Stream: "cam", URL: "rtsp://admin:p%40ss@cam.example/s"}, true},
		{"cam=rtsp://[::1]:554/s", Source{Stream: "cam", URL: "rtsp://[::1]:554/s"}, true},
		{"door.cam-2=ondemand:rtsp://u:p@cam/s?q=1", Source{Stream: "door.cam-2", URL: "rtsp://u:p@cam/s?q=1", OnDemand: true}, true},
		{"cam=rtsp://cam", Source{Stream: "cam", URL: "rtsp://cam"}, true},
		{"cam=RTSP://cam/s", Source{Stream: "cam", URL: "RTSP://cam/s"}, true},
		{"cam=rtsp://h/x=y", Source{Stream: "cam", URL: "rtsp://h/x=y"}, true},
		{"", Source{}, false},
		{"cam", Source{}, false},
		{"=rtsp://h/s", Source{}, false},
		{"../x=rtsp://h/s", Source{}, false},
		{"c m=rtsp://h/s", Source{}, false},
		{"cam=", Source{}, false},
		{"cam=http://h/s", Source{}, false},
		{"cam=rtmp://h/s", Source{}, false},
		{"cam=ondemand:", Source{}, false},
		{"cam=ondemand:http://h/s", Source{}, false},
		{"cam=rtsp:///s", Source{}, false},
		{"cam=rtsp://:554/s", Source{}, false},
		{"cam=rtsp://h/s#frag", Source{}, false},
		{"cam=rtsp:opaque", Source{}, false},
		{"cam=rtsp://h/s\x00", Source{}, false},
		{"cam=ONDEMAND:rtsp://h/s", Source{}, false},
	} {
		got, err := ParseSource(tc.spec)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSource(%q) = %+v, %v; want %+v ok=%v", tc.spec, got, err, tc.want, tc.ok)
		}
	}
}

func TestParseSourceErrorHidesPassword(t *testing.T) {
	for _, spec := range []string{
		"cam=rtsp://u:hunter2@h/s#frag",
		"cam=rtsp://u:hunter2@h:99999999/s",
		"cam=rtsp://u:hunter2@%zz/s",
		"cam=http://u:hunter2@h/s",
		"cam=rtsp://u:hunter2@/s",
	} {
		_, err := ParseSource(spec)
		if err == nil {
			t.Errorf("ParseSource(%q) accepted", spec)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseSource(%q) error shows the password: %v", spec, err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"rtsp://h/s", "rtsp://h/s"},
		{"rtsp://u:pw@h/s?x=1", "rtsp://u:xxxxx@h/s?x=1"},
		{"rtsp://u@h/s", "rtsp://u@h/s"},
		{"rtsp://u:p%zzw@h/s", "rtsp://xxxxx@h/s"},
		{"rtsp://u:p@w@h/s", "rtsp://u:xxxxx@h/s"},
		{"garbage", "garbage"},
		{"%zz:pw@h", "(unparsable URL)"},
	} {
		if got := redactURL(tc.in); got != tc.want {
			t.Errorf("redactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	s := Source{Stream: "cam", URL: "rtsp://u:pw@h/s", OnDemand: true}
	if got, want := s.String(), "cam=ondemand:rtsp://u:xxxxx@h/s"; got != want {
		t.Errorf("Source.String() = %q, want %q", got, want)
	}
}

func FuzzParseSource(f *testing.F) {
	for _, s := range []string{
		"cam=rtsp://10.0.0.5/stream1", "cam=ondemand:rtsp://u:p@h:554/s?q=1", "cam=rtsps://h/s",
		"=rtsp://h", "cam=", "cam=ondemand:", "a=b=c", "cam=rtsp://u:p@w@h/s",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		src, err := ParseSource(spec)
		if err != nil {
			if src != (Source{}) {
				t.Fatalf("ParseSource(%q) = %+v with error %v", spec, src, err)
			}
			return
		}
		if !relay.ValidName(src.Stream) {
			t.Fatalf("ParseSource(%q): invalid stream name %q accepted", spec, src.Stream)
		}
		if lower := strings.ToLower(src.URL); !strings.HasPrefix(lower, "rtsp://") && !strings.HasPrefix(lower, "rtsps://") {
			t.Fatalf("ParseSource(%q): URL %q is not rtsp:// or rtsps://", spec, src.URL)
		}
		// The spec is rebuilt from what was parsed: nothing is lost or added.
		prefix := ""
		if src.OnDemand {
			prefix = OnDemandPrefix
		}
		if spec != src.Stream+"="+prefix+src.URL {
			t.Fatalf("ParseSource(%q) = %+v does not add up to the spec", spec, src)
		}
		// What was accepted is what Run accepts.
		if _, err := (&Puller{Gate: newGate(nil, nil), Source: src}).settings(); err != nil {
			t.Fatalf("ParseSource(%q) accepted a source Run refuses: %v", spec, err)
		}
	})
}

func TestPullerConfigErrors(t *testing.T) {
	for _, p := range []*Puller{
		{Source: Source{Stream: "cam", URL: "rtsp://h/s"}},                           // no gate
		{Gate: newGate(nil, nil), Source: Source{Stream: "../x", URL: "rtsp://h/s"}}, // bad name
		{Gate: newGate(nil, nil), Source: Source{Stream: "cam", URL: "http://h/s"}},  // bad URL
		{Gate: newGate(nil, nil), Source: Source{Stream: "cam", URL: "rtsp://h/s"}, Transport: "sctp"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := p.Run(ctx)
		cancel()
		if err == nil {
			t.Errorf("Run(%+v) = nil, want a configuration error", p)
		}
	}
}

// Demand must never block, before Run, during it or after it.
func TestDemandNeverBlocks(t *testing.T) {
	p := &Puller{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 1000 {
			p.Demand()
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Demand blocked")
	}
	if !p.demanded(time.Minute) {
		t.Error("Demand was not recorded")
	}
	if (&Puller{}).demanded(time.Hour) {
		t.Error("a puller nobody asked for counts as demanded")
	}
}
