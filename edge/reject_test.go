package edge

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/relaymesh/relaymesh/relay"
)

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A hostile request gets its error status and one log line naming the
// peer; a flood of them does not flood the log.
func TestRejectedRequestsAreLoggedOnce(t *testing.T) {
	reg := relay.NewRegistry(relay.RegistryConfig{Logger: slog.New(slog.DiscardHandler)})
	defer reg.Close()
	if _, err := reg.Publish("cam"); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	srv := &Server{Streams: reg, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	for range 50 {
		for _, target := range []string{"/live/cam/media.m3u8?_HLS_part=1", "/live/%2e%2e/media.m3u8"} {
			req := httptest.NewRequest(http.MethodGet, target, nil)
			req.RemoteAddr = "192.0.2.7:4242"
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, req)
			if rec.Code != http.StatusBadRequest && rec.Code != http.StatusNotFound {
				t.Fatalf("%s: %d", target, rec.Code)
			}
		}
	}
	out := logs.String()
	if n := strings.Count(out, "rejected viewer request"); n != 1 {
		t.Fatalf("%d log lines for 100 hostile requests, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "peer=192.0.2.7:4242") || !strings.Contains(out, "_HLS_part") {
		t.Errorf("log line does not name the peer and request:\n%s", out)
	}
}
