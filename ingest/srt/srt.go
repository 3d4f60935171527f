// Package srt is the SRT ingest listener. It accepts encoders that publish
// MPEG-TS over SRT with a stream id of publish:{stream}[:{key}] or
// #!::r={stream},m=publish[,s={key}], admits them through the ingest.Gate
// during the SRT handshake (so a refused encoder sees the reason and
// exits), demuxes their MPEG-TS and feeds the ingest.Session. Playback over
// SRT is not offered: viewers use LL-HLS.
package srt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/relaymesh/relaymesh/ingest"
	"github.com/relaymesh/relaymesh/internal/ratelog"
	"github.com/relaymesh/relaymesh/relay"
)

// Defaults of the Server's zero fields.
const (
	DefaultLatency = 120 * time.Millisecond
	DefaultTimeout = 10 * time.Second
)

// MaxLatency is the highest latency the SRT handshake can carry (16 bits
// of milliseconds).
const MaxLatency = 65535 * time.Millisecond

// Passphrase lengths SRT allows (SRTO_PASSPHRASE).
const (
	MinPassphrase = 10
	MaxPassphrase = 79
)

// Server accepts SRT publishers.
type Server struct {
	Gate   *ingest.Gate
	Logger *slog.Logger
	// Latency is the SRT receiver latency, the buffer that absorbs
	// retransmissions (default 120ms). A caller asking for more gets more.
	Latency time.Duration
	// Passphrase encrypts every connection; empty means none. SRT takes 10
	// to 79 characters. Callers must then use the same passphrase.
	Passphrase string
	// Timeout is how long a publisher may send nothing (and how long it has
	// to announce its tracks) before it is disconnected (default 10s).
	Timeout time.Duration
}

// Listener is a bound SRT (UDP) socket that Serve accepts publishers on.
type Listener struct {
	ln gosrt.Listener
}

// Addr returns the bound address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops the listener and every connection it accepted.
func (l *Listener) Close() error {
	l.ln.Close()
	return nil
}

// Listen binds addr (host:port) for SRT.
func (s *Server) Listen(addr string) (*Listener, error) {
	if n := len(s.Passphrase); n != 0 && (n < MinPassphrase || n > MaxPassphrase) {
		return nil, fmt.Errorf("srt listen: passphrase of %d characters; SRT takes %d to %d", n, MinPassphrase, MaxPassphrase)
	}
	latency := s.Latency
	if latency <= 0 {
		latency = DefaultLatency
	}
	if latency > MaxLatency {
		return nil, fmt.Errorf("srt listen: latency %s is above the %s the SRT handshake can carry", latency, MaxLatency)
	}
	cfg := gosrt.DefaultConfig()
	cfg.ReceiverLatency = latency
	cfg.PeerLatency = latency
	ln, err := gosrt.Listen("srt", addr, cfg)
	if err != nil {
		return nil, fmt.Errorf("srt listen on %s: %w", addr, err)
	}
	return &Listener{ln: ln}, nil
}

// ListenAndServe listens on addr and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := s.Listen(addr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// Serve accepts publishers on ln until ctx ends, then closes ln and every
// connection and returns nil once their handlers have returned. Serve
// owns ln: it is closed when Serve returns.
func (s *Server) Serve(ctx context.Context, ln *Listener) error {
	if s.Gate == nil {
		ln.Close()
		return errors.New("srt serve: no ingest gate")
	}
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("proto", "srt")
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var malformed ratelog.Limiter // anyone can send these, as fast as they like
	for {
		req, err := accept2(ln.ln)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var pe panicError
			if errors.As(err, &pe) {
				if ok, suppressed := malformed.Allow(); ok {
					log.Warn("srt: malformed handshake dropped", "err", err, "suppressed", suppressed)
				}
				continue
			}
			return fmt.Errorf("srt accept: %w", err)
		}
		c, ok := s.admit(req, log)
		if !ok {
			continue
		}
		wg.Go(func() { c.serve(connCtx, timeout) })
	}
}

// panicError is a library panic turned into an error.
type panicError struct{ v any }

func (e panicError) Error() string { return fmt.Sprintf("panic in gosrt: %v", e.v) }

// accept2 waits for the next handshake. gosrt v0.9.0 parses handshake
// packets inside Accept2 and panics on a truncated extension, which anyone
// can send in one datagram; that must cost the datagram, not the node.
func accept2(ln gosrt.Listener) (req gosrt.ConnRequest, err error) {
	defer func() {
		if v := recover(); v != nil {
			req, err = nil, panicError{v}
		}
	}()
	return ln.Accept2()
}

// refusal is why a handshake is rejected: the code the caller is sent and
// the reason logged here.
type refusal struct {
	code gosrt.RejectionReason
	err  error
}

// admit answers a handshake: it checks the stream id, the encryption and
// the gate, and either rejects the caller or accepts it with its session.
// Every request is answered, since gosrt keeps unanswered ones forever.
func (s *Server) admit(req gosrt.ConnRequest, log *slog.Logger) (c *conn, ok bool) {
	peer := "unknown"
	if a := req.RemoteAddr(); a != nil {
		peer = a.String()
	}
	log = log.With("peer", peer)
	var sess *ingest.Session
	defer func() {
		// Crypto and handshake data come from the caller; a bug parsing
		// them must cost this caller only.
		if v := recover(); v != nil {
			log.Error("srt handshake handler panicked; caller rejected", "panic", fmt.Sprint(v))
			if sess != nil {
				sess.Close()
			}
			req.Reject(gosrt.REJX_ISE)
			c, ok = nil, false
		}
	}()

	stream, key, ref := s.check(req)
	if stream != "" {
		log = log.With("stream", stream)
	}
	if ref == nil {
		var err error
		sess, err = s.Gate.Admit(ingest.Request{Stream: stream, Key: key, Proto: "srt", Peer: peer})
		if err != nil {
			ref = &refusal{code: rejectCode(err), err: err}
		}
	}
	if ref != nil {
		log.Warn("srt publish refused", "err", ref.err, "reject", rejectName(ref.code))
		req.Reject(ref.code)
		return nil, false
	}
	sc, err := req.Accept()
	if err != nil {
		sess.Close()
		log.Warn("srt accept failed", "err", err)
		return nil, false
	}
	return &conn{sc: sc, sess: sess}, true
}

// check reads the stream id and sets up decryption.
func (s *Server) check(req gosrt.ConnRequest) (stream, key string, _ *refusal) {
	if req.Version() != 5 {
		return "", "", &refusal{gosrt.REJX_BAD_REQUEST, fmt.Errorf("SRT handshake v%d carries no stream id; use an SRT 1.3+ caller with streamid=publish:{stream}", req.Version())}
	}
	stream, key, err := parseStreamID(req.StreamId())
	if err != nil {
		return "", "", &refusal{rejectCode(err), err}
	}
	switch {
	case s.Passphrase == "" && req.IsEncrypted():
		return stream, key, &refusal{gosrt.REJ_UNSECURE, errors.New("caller encrypts but this node has no SRT passphrase; drop the passphrase")}
	case s.Passphrase != "" && !req.IsEncrypted():
		return stream, key, &refusal{gosrt.REJ_UNSECURE, errors.New("this node requires an SRT passphrase; set passphrase= on the caller")}
	case s.Passphrase != "":
		if err := req.SetPassphrase(s.Passphrase); err != nil {
			return stream, key, &refusal{gosrt.REJ_BADSECRET, fmt.Errorf("wrong SRT passphrase: %w", err)}
		}
	}
	return stream, key, nil
}

// rejectCode maps why a publish was refused to the SRT rejection code
// (the access-control REJX_* codes, which libsrt callers print).
func rejectCode(err error) gosrt.RejectionReason {
	switch {
	case errors.Is(err, ingest.ErrUnauthorized):
		return gosrt.REJX_UNAUTHORIZED
	case errors.Is(err, ingest.ErrTooManyStreams):
		return gosrt.REJX_OVERLOAD
	case errors.Is(err, relay.ErrStreamBusy), errors.Is(err, ingest.ErrLiveElsewhere):
		return gosrt.REJX_CONFLICT
	case errors.Is(err, errReadMode), errors.Is(err, errBadMode):
		return gosrt.REJX_BAD_MODE
	case errors.Is(err, errStreamID), errors.Is(err, relay.ErrBadStreamName):
		return gosrt.REJX_BAD_REQUEST
	}
	return gosrt.REJX_ISE
}

// rejectName names a rejection code for the log.
func rejectName(r gosrt.RejectionReason) string {
	switch r {
	case gosrt.REJ_UNSECURE:
		return "REJ_UNSECURE"
	case gosrt.REJ_BADSECRET:
		return "REJ_BADSECRET"
	case gosrt.REJX_BAD_REQUEST:
		return "REJX_BAD_REQUEST"
	case gosrt.REJX_UNAUTHORIZED:
		return "REJX_UNAUTHORIZED"
	case gosrt.REJX_OVERLOAD:
		return "REJX_OVERLOAD"
	case gosrt.REJX_BAD_MODE:
		return "REJX_BAD_MODE"
	case gosrt.REJX_CONFLICT:
		return "REJX_CONFLICT"
	case gosrt.REJX_ISE:
		return "REJX_ISE"
	}
	return fmt.Sprint(uint32(r))
}
