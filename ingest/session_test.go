package ingest

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relaymesh/relaymesh/relay"
)

func TestKeysCheck(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "keys")
	if err := os.WriteFile(file, []byte("# stream key\nshop k-shop\n\n  cam   k-cam  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open, _ := LoadKeys("", "")
	global, _ := LoadKeys("g", "")
	perStream, err := LoadKeys("", file)
	if err != nil {
		t.Fatal(err)
	}
	both, _ := LoadKeys("g", file)
	for _, tc := range []struct {
		name        string
		keys        *Keys
		stream, key string
		ok          bool
	}{
		{"nil keys admit all", nil, "shop", "", true},
		{"zero keys admit all", open, "shop", "whatever", true},
		{"global right", global, "shop", "g", true},
		{"global wrong", global, "shop", "G", false},
		{"global missing", global, "shop", "", false},
		{"listed right", perStream, "cam", "k-cam", true},
		{"listed wrong", perStream, "cam", "k-shop", false},
		{"unlisted without global", perStream, "other", "", false},
		{"listed stream ignores global", both, "shop", "g", false},
		{"listed stream with both", both, "shop", "k-shop", true},
		{"unlisted takes global", both, "other", "g", true},
		{"prefix of key", global, "shop", "", false},
	} {
		err := tc.keys.Check(tc.stream, tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("%s: Check(%q, %q) = %v", tc.name, tc.stream, tc.key, err)
		}
		if err != nil && !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s: %v is not ErrUnauthorized", tc.name, err)
		}
	}

	// Reload picks up a changed file and keeps the old keys on a bad one.
	if err := os.WriteFile(file, []byte("cam new-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := perStream.Reload(); err != nil {
		t.Fatal(err)
	}
	if perStream.Check("cam", "new-key") != nil || perStream.Check("cam", "k-cam") == nil || perStream.Check("shop", "k-shop") == nil {
		t.Fatal("reload did not replace the keys")
	}
	if err := os.WriteFile(file, []byte("cam\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := perStream.Reload(); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("reload of a bad file: %v", err)
	}
	if perStream.Check("cam", "new-key") != nil {
		t.Fatal("a bad file replaced the keys in use")
	}
	if _, err := LoadKeys("", filepath.Join(dir, "missing")); err == nil {
		t.Fatal("LoadKeys of a missing file succeeded")
	}
}

func TestParseKeys(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{"", true},
		{"# only a comment\n", true},
		{"a b\nc d\n", true},
		{"a b c\n", false},
		{"a\n", false},
		{"a b\na c\n", false},
		{"../x k\n", false},
		{"a/b k\n", false},
	} {
		if _, err := ParseKeys([]byte(tc.in)); (err == nil) != tc.ok {
			t.Errorf("ParseKeys(%q): %v", tc.in, err)
		}
	}
}

func FuzzParseKeys(f *testing.F) {
	f.Add([]byte("shop k\n# c\ncam k2\n"))
	f.Add([]byte("a b c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseKeys(data)
		if err != nil {
			return
		}
		for name, key := range m {
			if !relay.ValidName(name) || key == "" || strings.ContainsAny(key, " \t\n") {
				t.Fatalf("accepted stream %q key %q", name, key)
			}
		}
	})
}

func newGate(t *testing.T) *Gate {
	t.Helper()
	reg := newTestRegistry()
	t.Cleanup(reg.Close)
	return &Gate{Registry: reg}
}

// manualClock is a settable Gate.Now.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestGateAdmit(t *testing.T) {
	g := newGate(t)
	g.Keys, _ = LoadKeys("secret", "")
	g.Limits.MaxStreams = 2
	if _, err := g.Admit(Request{Stream: "a", Key: "nope"}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong key: %v", err)
	}
	if g.Registry.Get("a") != nil {
		t.Fatal("a refused publish created the stream")
	}
	pulled, err := g.Admit(Request{Stream: "pulled", Proto: "pull", Configured: true})
	if err != nil {
		t.Fatalf("a configured pull needs no key: %v", err)
	}
	pulled.Close()
	if _, err := g.Admit(Request{Stream: "../a", Key: "secret"}); !errors.Is(err, relay.ErrBadStreamName) {
		t.Fatalf("bad name: %v", err)
	}
	a, err := g.Admit(Request{Stream: "a", Key: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(Request{Stream: "a", Key: "secret"}); !errors.Is(err, relay.ErrStreamBusy) {
		t.Fatalf("second publisher: %v", err)
	}
	b, err := g.Admit(Request{Stream: "b", Key: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Admit(Request{Stream: "c", Key: "secret"}); !errors.Is(err, ErrTooManyStreams) {
		t.Fatalf("third stream: %v", err)
	}
	b.Close()
	c, err := g.Admit(Request{Stream: "c", Key: "secret"})
	if err != nil {
		t.Fatalf("after a stream ended: %v", err)
	}
	a.Close()
	if err := c.SetTracks([]Track{h264Track()}); err != nil {
		t.Fatal(err)
	}
	for k := range 3 {
		ts := time.Duration(k) * time.Second / 30
		if err := c.WriteH264(0, ts, ts, videoAU(k, k == 0)); err != nil {
			t.Fatal(err)
		}
	}
	c.Drop(errors.New("a bad packet"))
	live := g.Stats()
	c.Close()
	if g.Live() != 0 {
		t.Fatalf("%d live after closing all", g.Live())
	}
	stats := map[string]PublisherStats{}
	for _, s := range g.Stats() {
		stats[s.Stream] = s
	}
	if st := stats["c"]; st.Live || st.Frames != 3 || st.Bytes == 0 || st.Dropped != 1 {
		t.Fatalf("stats of c after it ended: %+v", st)
	}
	for _, s := range live {
		if s.Stream == "c" && (!s.Live || s.Proto != "") {
			t.Fatalf("stats of c while live: %+v", s)
		}
	}
	refused := g.Refused()
	for _, r := range []struct {
		reason string
		n      int64
	}{{"unauthorized", 1}, {"bad_name", 1}, {"busy", 1}, {"too_many_streams", 1}} {
		if got := refused[Refusal{Reason: r.reason}]; got != r.n {
			t.Errorf("refused %s: %d, want %d (all: %v)", r.reason, got, r.n, refused)
		}
	}
}

func TestGateTakeover(t *testing.T) {
	g := newGate(t)
	g.Takeover = true
	g.Limits.MaxStreams = 1
	old, err := g.Admit(Request{Stream: "cam"})
	if err != nil {
		t.Fatal(err)
	}
	if err := old.SetTracks([]Track{h264Track()}); err != nil {
		t.Fatal(err)
	}
	frame := time.Second / 30
	for k := 0; k < 45; k++ {
		ts := time.Duration(k) * frame
		if err := old.WriteH264(0, ts, ts, videoAU(k, k%30 == 0)); err != nil {
			t.Fatal(err)
		}
	}
	// The newest publisher wins, even at the stream limit.
	nu, err := g.Admit(Request{Stream: "cam"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the old session was not told to stop")
	}
	if !errors.Is(old.Err(), ErrTakenOver) {
		t.Fatalf("old session ended with %v", old.Err())
	}
	if err := old.WriteH264(0, 2*time.Second, 2*time.Second, videoAU(60, true)); !errors.Is(err, ErrTakenOver) {
		t.Fatalf("write after takeover: %v", err)
	}
	before := len(g.Registry.Get("cam").Snapshot().Segments)
	old.Close() // must not end the new publisher's stream
	if !g.Registry.HasPublisher("cam") || !nu.Resumed() || g.Live() != 1 {
		t.Fatal("closing the old session disturbed the new one")
	}
	if err := nu.SetTracks([]Track{h264Track()}); err != nil {
		t.Fatal(err)
	}
	for k := 0; k < 40; k++ {
		ts := time.Duration(k) * frame
		if err := nu.WriteH264(0, ts, ts, videoAU(k, k%30 == 0)); err != nil {
			t.Fatal(err)
		}
	}
	nu.Close()
	segs := g.Registry.Get("cam").Snapshot().Segments
	if len(segs) <= before || !segs[before].Discontinuity {
		t.Fatalf("new publisher's first segment: %d segments, %d before", len(segs), before)
	}
}

func TestSessionLimits(t *testing.T) {
	clk := &manualClock{now: testEpoch}
	g := newGate(t)
	g.Now = clk.Now
	g.Limits = Limits{MaxFrameSize: 1000, MaxBitrate: 100_000}
	s, err := g.Admit(Request{Stream: "cam"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.WriteH264(0, 0, 0, videoAU(0, true)); err == nil {
		t.Fatal("write before SetTracks succeeded")
	}
	if err := s.SetTracks([]Track{h264Track()}); err != nil {
		t.Fatal(err)
	}
	// An oversized frame is dropped, not fatal.
	big := [][]byte{append([]byte{0x65}, make([]byte, 2000)...)}
	if err := s.WriteH264(0, 0, 0, big); err != nil {
		t.Fatalf("oversized frame ended the session: %v", err)
	}
	if s.pk.Init() == nil || len(s.pub.Stream.Snapshot().Segments) != 0 {
		t.Fatal("oversized frame was packaged")
	}
	// 900-byte frames at 30 fps are 216 kbit/s, above 100 kbit/s: the
	// session ends once a 5 s window is measured.
	frame := time.Second / 30
	var ended error
	for k := 0; k < 300 && ended == nil; k++ {
		clk.Add(frame)
		au := [][]byte{append([]byte{0x41}, make([]byte, 900)...)}
		if k%30 == 0 {
			au = [][]byte{testSPS, testPPS, append([]byte{0x65}, make([]byte, 900)...)}
		}
		ended = s.WriteH264(0, time.Duration(k)*frame, time.Duration(k)*frame, au)
	}
	if !errors.Is(ended, ErrBitrate) || !errors.Is(s.Err(), ErrBitrate) {
		t.Fatalf("over the bitrate limit: %v", ended)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed")
	}
}

// A publishing session that its partner took over is demoted: its
// publication ends, it goes on packaging aside, and it can be promoted
// again, continuing the stream after a discontinuity.
func TestSessionDemoteAndPromote(t *testing.T) {
	g := newGate(t)
	s, err := g.Admit(Request{Stream: "cam"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetTracks([]Track{h264Track()}); err != nil {
		t.Fatal(err)
	}
	frame := time.Second / 30
	k := 0
	write := func(n int) {
		for end := k + n; k < end; k++ {
			ts := time.Duration(k) * frame
			if err := s.WriteH264(0, ts, ts, videoAU(k, k%30 == 0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(95)
	if g.Publishing("cam") != s || g.Held("cam") != nil {
		t.Fatal("a publishing session is not listed as publishing")
	}
	if err := s.Demote(); err != nil {
		t.Fatal(err)
	}
	if g.Registry.HasPublisher("cam") || g.Publishing("cam") != nil || g.Held("cam") != s {
		t.Fatal("a demoted session still publishes, or is not held")
	}
	if err := s.Demote(); err == nil {
		t.Fatal("a held session was demoted again")
	}
	st := g.Registry.Get("cam")
	before := st.Snapshot()
	write(95)
	if after := st.Snapshot(); after.NextPart != before.NextPart {
		t.Fatalf("a held session wrote to the stream: %d parts, were %d", after.NextPart, before.NextPart)
	}

	pub, err := g.Registry.Publish("cam")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(pub, time.Time{}); err != nil {
		t.Fatal(err)
	}
	write(35)
	snap := st.Snapshot()
	segs := snap.Segments
	if g.Publishing("cam") != s || len(segs) <= len(before.Segments) || !segs[len(before.Segments)].Discontinuity {
		t.Fatalf("the promoted session does not continue the stream after a discontinuity: %d segments, %d before",
			len(segs), len(before.Segments))
	}
	for i := 1; i < len(segs); i++ {
		if segs[i].MSN != segs[i-1].MSN+1 {
			t.Fatalf("segments %d and %d are not consecutive", segs[i-1].MSN, segs[i].MSN)
		}
	}
}
