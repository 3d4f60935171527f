package main

// The viewer HTTP server's limits, and the --debug-addr pprof listener.
//
// Viewers are untrusted and numerous, so each connection must cost little
// and be reclaimed quickly when it misbehaves. net/http runs one goroutine
// per connection; what a bad client holds is that goroutine, its buffers
// and a file descriptor. There is no cap on connections: an attacker could
// fill it and lock real viewers out. Timeouts reclaim bad connections
// instead (see httpLimits), and the open-file limit is large enough for
// thousands of them (see warnLowFileLimit).

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"syscall"
	"time"
)

// httpLimits bound what one viewer connection may take.
type httpLimits struct {
	// Header bounds the request line and headers, from the first byte of
	// a request (from the connection's start, for its first request).
	// Slowloris clients, and connections that send nothing at all, are
	// closed when it passes.
	Header time.Duration
	// Body bounds a request with a body, headers included. Viewers send
	// none; the admin POSTs send none either, but net/http reads up to
	// 256 KiB of an unread body after the handler, at the client's pace.
	Body time.Duration
	// Idle bounds the wait for the next request on a keep-alive
	// connection. Players reuse theirs every part (200 ms).
	Idle time.Duration
	// Send bounds sending one response, from its first byte; see
	// withSendDeadline.
	Send time.Duration
	// MaxHeader is the largest request line and headers accepted; LL-HLS
	// requests are a few hundred bytes, with cookies a few KiB.
	MaxHeader int
}

// viewerLimits are the limits of the viewer listener.
func viewerLimits() httpLimits {
	return httpLimits{
		Header:    5 * time.Second,
		Body:      10 * time.Second,
		Idle:      60 * time.Second,
		Send:      30 * time.Second,
		MaxHeader: 16 << 10,
	}
}

// newHTTPServer returns a server for h with the limits lim. Request
// contexts derive from base, so cancelling it ends requests held open
// (blocking reloads, profiles) at shutdown.
func newHTTPServer(h http.Handler, lim httpLimits, log *slog.Logger, base context.Context) *http.Server {
	return &http.Server{
		Handler:           withSendDeadline(h, lim.Send),
		ReadHeaderTimeout: lim.Header,
		ReadTimeout:       lim.Body,
		IdleTimeout:       lim.Idle,
		MaxHeaderBytes:    lim.MaxHeader,
		// No WriteTimeout: it runs from the end of the request headers,
		// so it would cut blocking playlist reloads and hinted-part
		// requests, which the edge holds for up to three target
		// durations (6 s at 2 s segments, 30 s for a 10 s GOP). The
		// handler sets a deadline per response instead.
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context { return base },
	}
}

// withSendDeadline gives every response at most send to go out, counted
// from its first byte.
//
// The hold before the first byte has no write deadline: the edge bounds it
// itself (3 × target duration, then 503), and the request context ends it
// when the client goes. Once the response starts, a client that stops
// reading (its TCP window full) is dropped after send, which frees the
// goroutine and the segment its response pins. net/http clears the
// deadline after each response, so a keep-alive connection starts afresh.
//
// The read deadline is left alone. ReadTimeout does not end holds: once
// the request is read, net/http clears the read deadline for the read it
// keeps pending to notice a client hanging up (TestHTTPDeadlines). A read
// deadline set from a handler would apply to that read, and its expiry
// would cancel the request context (golang/go#70834).
func withSendDeadline(h http.Handler, send time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), send: send}
		h.ServeHTTP(dw, r)
		// Headers-only answers (HEAD, 304, an empty 200) are written after
		// the handler returns: bound that too.
		dw.start()
	})
}

// deadlineWriter sets the write deadline when the response starts.
type deadlineWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	send    time.Duration
	started bool
}

func (w *deadlineWriter) start() {
	if !w.started {
		w.started = true
		w.rc.SetWriteDeadline(time.Now().Add(w.send)) //nolint:errcheck // both HTTP/1 and HTTP/2 support it
	}
}

func (w *deadlineWriter) WriteHeader(code int) {
	w.start()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.start()
	return w.ResponseWriter.Write(b)
}

// Flush lets handlers that assert http.Flusher stream through the wrapper.
func (w *deadlineWriter) Flush() {
	w.start()
	w.rc.Flush() //nolint:errcheck // as http.Flusher, which has no error
}

// Unwrap lets http.ResponseController reach the connection.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// serveUntil serves srv on ln until ctx ends, then shuts it down: it
// cancels base (the requests' context), so held requests end at once,
// and waits up to 5 s for responses in flight. name prefixes errors.
func serveUntil(ctx context.Context, name string, srv *http.Server, ln net.Listener, cancelBase context.CancelFunc) error {
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "") // HTTP/2 is negotiated over TLS by ALPN
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("%s: %w", name, err)
	case <-ctx.Done():
	}
	cancelBase()
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
	}
	<-errc
	return nil
}

// listenDebug binds --debug-addr. pprof shows memory contents, goroutine
// stacks and the command line (with any secret given as a flag), so a
// listener other hosts can reach is worth a warning.
func listenDebug(addr string, log *slog.Logger) (net.Listener, error) {
	ln, err := listen("debug-addr", addr)
	if err != nil {
		return nil, err
	}
	if !loopback(ln.Addr().String()) {
		log.Warn("--debug-addr is reachable from other hosts, and pprof exposes memory, goroutine stacks and the command line: bind it to 127.0.0.1 unless a firewall guards it",
			"addr", ln.Addr().String())
	}
	log.Info("debug listening", "addr", ln.Addr().String(), "pprof", "http://"+ln.Addr().String()+"/debug/pprof/")
	return ln, nil
}

// debugHandler serves net/http/pprof, and nothing else, on its own mux,
// with the patterns pprof itself registers. (Importing net/http/pprof also
// registers them on http.DefaultServeMux; relaymesh never serves that mux.)
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index) // and the named profiles: heap, goroutine, ...
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return mux
}

// newDebugServer serves debugHandler. It has no send deadline: CPU
// profiles and traces stream for their ?seconds=N, and pprof refuses an N
// beyond a server's WriteTimeout.
func newDebugServer(log *slog.Logger, base context.Context) *http.Server {
	return &http.Server{
		Handler:           debugHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return base },
	}
}

// minOpenFiles is the open-file limit below which a node warns: every
// viewer connection takes a descriptor, and so does every bad one until a
// timeout reclaims it.
const minOpenFiles = 8192

// warnLowFileLimit warns when the open-file limit is low. The Go runtime
// already raised the soft limit to the hard one at start (since Go 1.19),
// and restores the original for child processes; calling Setrlimit here
// would add nothing and would stop that restore. The hard limit can only
// be raised by the operator.
func warnLowFileLimit(log *slog.Logger) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		log.Debug("cannot read the open-file limit", "err", err)
		return
	}
	if lim.Cur < minOpenFiles {
		log.Warn("the open-file limit is low: each viewer connection takes one, and past it new viewers wait until one closes; raise it (LimitNOFILE= in a systemd unit, ulimit -n, docker --ulimit nofile=)",
			"limit", lim.Cur, "hard", lim.Max, "want", minOpenFiles)
	}
}
