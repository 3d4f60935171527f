package relay

import (
	"context"
	"errors"
	"github.com/relaymesh/relaymesh/internal/logbuf"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestRegistry(grace time.Duration) (*Registry, *logbuf.Buffer) {
	logs := &logbuf.Buffer{}
	r := NewRegistry(RegistryConfig{
		PartTarget: testPartTarget,
		Grace:      grace,
		Linger:     2 * grace,
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	return r, logs
}

func TestRegistryDefaults(t *testing.T) {
	r := NewRegistry(RegistryConfig{})
	p, err := r.Publish("cam")
	if err != nil {
		t.Fatal(err)
	}
	// Streams advertise the default 200 ms aim plus the slack parts need.
	if p.Stream.PartTarget != 200*time.Millisecond+PartSlack {
		t.Fatalf("stream PartTarget %v", p.Stream.PartTarget)
	}
	r.Close()
}

func TestPublish(t *testing.T) {
	r, _ := newTestRegistry(time.Minute)
	defer r.Close()

	p1, err := r.Publish("cam")
	if err != nil {
		t.Fatalf("Publish: %v", err)
	}
	if p1.Resumed || p1.Generation != 1 || p1.MediaStart != 0 {
		t.Fatalf("first publication Resumed %v Generation %d MediaStart %v", p1.Resumed, p1.Generation, p1.MediaStart)
	}
	if r.Get("cam") != p1.Stream || p1.Stream.Name != "cam" {
		t.Fatal("Get does not return the published stream")
	}
	if st, err := r.Lookup(context.Background(), "cam"); err != nil || st != p1.Stream {
		t.Fatalf("Lookup = %v, %v", st, err)
	}
	if _, err := r.Lookup(context.Background(), "nope"); !errors.Is(err, ErrNoStream) {
		t.Fatalf("Lookup of an unknown stream: %v", err)
	}
	if got := r.Names(); !slices.Equal(got, []string{"cam"}) {
		t.Fatalf("Names %v", got)
	}

	// A second publisher while the first is live is refused.
	if _, err := r.Publish("cam"); !errors.Is(err, ErrStreamBusy) {
		t.Fatalf("second Publish: %v, want ErrStreamBusy", err)
	}

	newWriter(p1.Stream).open(false)
	p1.Stream.Cut(&Part{Duration: time.Second, Data: []byte("x")}, nil)
	p1.SetMediaEnd(7 * time.Second)
	p1.Close()
	p1.Close() // idempotent
	if s := p1.Stream.Snapshot(); s.Live || s.Gone {
		t.Fatalf("after Close: Live %v Gone %v", s.Live, s.Gone)
	}

	// After Close the name is free again; the new publication continues
	// the same stream.
	p2, err := r.Publish("cam")
	if err != nil {
		t.Fatalf("Publish after Close: %v", err)
	}
	if !p2.Resumed || p2.Generation != 2 || p2.MediaStart != 7*time.Second || p2.Stream != p1.Stream {
		t.Fatalf("second publication Resumed %v Generation %d MediaStart %v same stream %v",
			p2.Resumed, p2.Generation, p2.MediaStart, p2.Stream == p1.Stream)
	}
	// Closing the old publication again must not free the new one's claim.
	p1.Close()
	if _, err := r.Publish("cam"); !errors.Is(err, ErrStreamBusy) {
		t.Fatalf("Publish while the second publisher is live: %v", err)
	}
	p2.Close()
	p3, err := r.Publish("cam")
	if err != nil || p3.Generation != 3 || !p3.Resumed {
		t.Fatalf("third publication: %+v, %v", p3, err)
	}
	// A publication that never advanced its timeline hands on where it started.
	if p3.MediaStart != 7*time.Second {
		t.Fatalf("third publication MediaStart %v, want 7s", p3.MediaStart)
	}
}

func TestPublishBadName(t *testing.T) {
	r, _ := newTestRegistry(time.Minute)
	defer r.Close()
	for _, name := range []string{"", "..", ".", ".hidden", "a/b", "a b", "a%2f", strings.Repeat("a", 129), "é"} {
		if _, err := r.Publish(name); !errors.Is(err, ErrBadStreamName) {
			t.Errorf("Publish(%q): %v, want ErrBadStreamName", name, err)
		}
	}
	if len(r.Names()) != 0 {
		t.Fatalf("bad names registered: %v", r.Names())
	}
}

// After the grace period the show has ended: its window stays servable,
// with no more media, for the linger time, and is then removed. A new
// publisher starts a new stream.
func TestGraceExpiryEndsShow(t *testing.T) {
	const grace = 100 * time.Millisecond
	r, logs := newTestRegistry(grace)
	defer r.Close()

	p, err := r.Publish("cam")
	if err != nil {
		t.Fatal(err)
	}
	st := p.Stream
	newWriter(st).open(false)
	st.Cut(&Part{Duration: time.Second, Data: []byte("x")}, nil)

	got := make(chan *Snapshot, 1)
	go func() {
		s, err := st.Wait(context.Background(), func(*Snapshot) bool { return false })
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		got <- s
	}()

	closed := time.Now()
	p.Close()
	if r.Get("cam") == nil {
		t.Fatal("stream removed at Close; it should outlive its publisher for the grace period")
	}
	select {
	case s := <-got:
		if !s.Ended || s.Live || s.Gone {
			t.Fatalf("blocked Wait returned Ended %v Live %v Gone %v, want an ended stream", s.Ended, s.Live, s.Gone)
		}
		if el := time.Since(closed); el < grace {
			t.Fatalf("show ended after %v, before the %v grace", el, grace)
		}
		if len(s.Segments) != 1 || !s.Segments[0].Complete {
			t.Fatalf("ended window %+v, want the one segment, complete", s.Segments)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked Wait did not return after the grace period")
	}
	if r.Get("cam") != st || !strings.Contains(logs.String(), "show ended") {
		t.Fatalf("the ended stream should linger; logs:\n%s", logs)
	}
	st.Cut(&Part{Duration: time.Second, Data: []byte("late")}, nil)
	if n := len(st.Snapshot().Segments[0].Parts); n != 1 {
		t.Fatalf("an ended stream took a part: %d parts", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.Get("cam") != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r.Get("cam") != nil || !st.Snapshot().Gone {
		t.Fatal("ended stream still registered after lingering")
	}

	// A new publisher starts afresh, also while an ended show lingers.
	for range 2 {
		p2, err := r.Publish("cam")
		if err != nil {
			t.Fatal(err)
		}
		if p2.Resumed || p2.Generation != 1 || p2.Stream == st {
			t.Fatalf("publication after the end: Resumed %v Generation %d same stream %v", p2.Resumed, p2.Generation, p2.Stream == st)
		}
		st = p2.Stream
		p2.Close()
		for !st.Snapshot().Ended {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func TestRepublishWithinGraceKeepsStream(t *testing.T) {
	const grace = 100 * time.Millisecond
	r, _ := newTestRegistry(grace)
	defer r.Close()
	p1, _ := r.Publish("cam")
	p1.Close()
	p2, err := r.Publish("cam")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * grace)
	if r.Get("cam") != p2.Stream || p2.Stream.Snapshot().Gone {
		t.Fatal("the grace timer of the first publication removed the stream of the second")
	}
}

// A publication that continues a window begins at its next media sequence
// number: how two origins publishing one name tell which took it over.
func TestFirstMSN(t *testing.T) {
	r, _ := newTestRegistry(time.Minute)
	defer r.Close()
	if _, ok := r.FirstMSN("cam"); ok {
		t.Fatal("FirstMSN of an unknown stream")
	}
	p1, _ := r.Publish("cam")
	if first, ok := r.FirstMSN("cam"); !ok || first != 0 || p1.FirstMSN != 0 {
		t.Fatalf("first publication: FirstMSN %d %v, want 0", first, ok)
	}
	p1.Cut(nil, &SegmentHeader{Start: time.Now()})
	for i := range 3 {
		var next *SegmentHeader
		if i < 2 {
			next = &SegmentHeader{Start: time.Now()}
		}
		p1.Cut(&Part{Duration: time.Second, Data: []byte("x")}, next)
	}
	p1.Close()
	if _, ok := r.FirstMSN("cam"); ok {
		t.Fatal("FirstMSN of a stream without a publisher")
	}
	p2, _ := r.Publish("cam")
	if first, ok := r.FirstMSN("cam"); !ok || first != 3 || p2.FirstMSN != 3 {
		t.Fatalf("continuing publication: FirstMSN %d %v, want 3", first, ok)
	}
}

func TestRegistryClose(t *testing.T) {
	r, _ := newTestRegistry(time.Minute)
	p, _ := r.Publish("cam")
	q, _ := r.Publish("other")
	q.Close()
	r.Close()
	if !p.Stream.Snapshot().Gone || !q.Stream.Snapshot().Gone {
		t.Fatal("Close did not mark streams gone")
	}
	if len(r.Names()) != 0 {
		t.Fatalf("streams left after Close: %v", r.Names())
	}
	if _, err := r.Publish("cam"); err == nil {
		t.Fatal("Publish after Close succeeded")
	}
	p.Close() // must not panic or resurrect anything
	if len(r.Names()) != 0 {
		t.Fatal("Close of a publication after registry Close registered a stream")
	}
}

func TestValidName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"cam", true},
		{"Cam_1-2.backup", true},
		{"_", true},
		{"0", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{".", false},
		{"..", false},
		{".cam", false},
		{"-cam", false},
		{"cam/x", false},
		{"cam\x00", false},
		{"cam\n", false},
		{"cam ", false},
		{"cam%2e", false},
		{"cam?x", false},
		{"cam#x", false},
		{"kamera\u00e9", false},
	} {
		if got := ValidName(tc.name); got != tc.ok {
			t.Errorf("ValidName(%q) = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

// validNameRef restates ValidName's documented rule without a regexp.
func validNameRef(name string) bool {
	if len(name) < 1 || len(name) > 128 || name[0] == '.' || name[0] == '-' {
		return false
	}
	for _, c := range []byte(name) {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"cam", "..", ".", "a..b", "a/b", "a\n", strings.Repeat("x", 128), strings.Repeat("x", 129), "_.-", "é", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		ok := ValidName(name)
		if ok != validNameRef(name) {
			t.Fatalf("ValidName(%q) = %v, reference says %v", name, ok, !ok)
		}
		if !ok {
			return
		}
		// A valid name is a safe URL path element as it is.
		if name == "." || name == ".." || strings.ContainsAny(name, "/\\%?#") {
			t.Fatalf("ValidName accepted %q", name)
		}
		if url.PathEscape(name) != name {
			t.Fatalf("valid name %q needs escaping in a URL path", name)
		}
	})
}

func TestTakeover(t *testing.T) {
	r := NewRegistry(RegistryConfig{Grace: time.Minute})
	defer r.Close()
	old, err := r.Publish("cam")
	if err != nil {
		t.Fatal(err)
	}
	if !old.Cut(nil, &SegmentHeader{Start: time.Now()}) {
		t.Fatal("Cut by the current publisher refused")
	}
	old.SetMediaEnd(3 * time.Second)
	if _, err := r.Publish("cam"); !errors.Is(err, ErrStreamBusy) {
		t.Fatalf("Publish on a live stream: %v", err)
	}
	nu, err := r.Takeover("cam")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.Done():
	default:
		t.Fatal("the old publication's Done is open")
	}
	if old.Cut(&Part{Duration: time.Second}, nil) {
		t.Fatal("a revoked publication could still write")
	}
	if !nu.Resumed || nu.MediaStart != 3*time.Second || nu.Generation != 2 {
		t.Fatalf("new publication %+v", nu)
	}
	old.Close()
	if !r.HasPublisher("cam") || !nu.Stream.Snapshot().Live {
		t.Fatal("closing the old publication ended the new one")
	}
	if a, b := nu.NewInitID(), nu.NewInitID(); a == b {
		t.Fatal("init IDs repeat")
	}
	nu.Close()
	if r.HasPublisher("cam") {
		t.Fatal("publisher still set after Close")
	}
}
