// Package rtmp is the RTMP ingest listener. It accepts publishers at
// rtmp://HOST/live/{stream}, claims the stream in the relay registry and
// feeds an ingest.Packager. Playback over RTMP is not offered: viewers use
// LL-HLS.
package rtmp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/relaymesh/relaymesh/ingest"
	"github.com/relaymesh/relaymesh/internal/ratelog"
	"github.com/relaymesh/relaymesh/relay"
)

// App is the RTMP application publishers use: rtmp://HOST/live/{stream}.
const App = "live"

// Server accepts RTMP publishers.
type Server struct {
	Registry *relay.Registry
	Packager ingest.PackagerConfig
	Logger   *slog.Logger
	// Timeout bounds the handshake and any silence from a publisher
	// (default 10s).
	Timeout time.Duration
}

// Serve accepts connections on ln until ctx ends, then closes every
// connection and waits for their handlers.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.Timeout <= 0 {
		s.Timeout = 10 * time.Second
	}
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("proto", "rtmp")

	var wg sync.WaitGroup
	defer wg.Wait()
	connCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("rtmp accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(connCtx, conn, log.With("peer", conn.RemoteAddr().String()))
		}()
	}
}

func (s *Server) handle(ctx context.Context, conn net.Conn, log *slog.Logger) {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer func() {
		// gortmplib parses hostile bytes; a bug there must cost one
		// connection, never the node.
		if v := recover(); v != nil {
			log.Error("rtmp connection handler panicked; connection dropped", "panic", fmt.Sprint(v))
		}
	}()
	err := s.publish(conn, log)
	switch {
	case err == nil, ctx.Err() != nil:
	case errors.Is(err, errRefused):
		log.Warn("rtmp publish refused", "err", err)
	default:
		log.Info("rtmp connection closed", "err", err)
	}
}

var errRefused = errors.New("refused")

func (s *Server) publish(conn net.Conn, log *slog.Logger) error {
	conn.SetDeadline(time.Now().Add(s.Timeout))
	sc := &gortmplib.ServerConn{RW: conn}
	if err := sc.Initialize(); err != nil {
		return fmt.Errorf("rtmp handshake: %w", err)
	}
	if err := sc.Accept(); err != nil {
		return fmt.Errorf("rtmp connect: %w", err)
	}
	if !sc.Publish {
		return fmt.Errorf("%w: RTMP playback is not offered; play http://HOST:8080/live/{stream}/index.m3u8", errRefused)
	}
	name, err := streamName(sc.URL.Path)
	if err != nil {
		reject(sc, "NetStream.Publish.BadName", err.Error())
		return fmt.Errorf("%w: %v", errRefused, err)
	}
	log = log.With("stream", name)

	pub, err := s.Registry.Publish(name)
	if err != nil {
		reject(sc, "NetStream.Publish.BadName", err.Error())
		return fmt.Errorf("%w: %v", errRefused, err)
	}
	defer pub.Close()

	rd := &reader{read: func() (message.Message, error) {
		conn.SetReadDeadline(time.Now().Add(s.Timeout))
		return sc.Read()
	}}
	tracks, video, audio, err := rd.tracks()
	if err != nil {
		if errors.Is(err, errCodec) {
			reject(sc, "NetStream.Publish.Failed", err.Error())
			return fmt.Errorf("%w: %v", errRefused, err)
		}
		return fmt.Errorf("rtmp read tracks: %w", err)
	}
	pk, err := ingest.NewPackager(pub, tracks, s.Packager)
	if err != nil {
		reject(sc, "NetStream.Publish.Failed", err.Error())
		return fmt.Errorf("%w: %v", errRefused, err)
	}
	defer func() {
		pk.Close()
		pub.Close() // before the log line: by then the stream shows the publisher gone
		log.Info("rtmp publisher stopped")
	}()
	log.Info("rtmp publisher started", "codecs", pk.Init().Codecs, "resumed", pub.Resumed)
	var limit ratelog.Limiter
	drop := func(err error) {
		if ok, suppressed := limit.Allow(); ok {
			log.Warn("dropped bad input from publisher", "err", err, "suppressed", suppressed)
		}
	}
	if err := rd.run(pk, video, audio, drop); err != nil {
		return fmt.Errorf("rtmp read: %w", err)
	}
	return nil
}

// streamName takes {stream} out of /live/{stream}.
func streamName(path string) (string, error) {
	app, name, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok || app != App {
		return "", fmt.Errorf("publish to rtmp://HOST/%s/{stream}, not %q", App, path)
	}
	if !relay.ValidName(name) {
		return "", fmt.Errorf("stream %q: %w", name, relay.ErrBadStreamName)
	}
	return name, nil
}

// reject tells the encoder why, in an onStatus error it shows to its user.
func reject(sc *gortmplib.ServerConn, code, why string) {
	sc.Write(&message.CommandAMF0{ //nolint:errcheck // the connection closes next anyway
		ChunkStreamID:   5,
		Name:            "onStatus",
		MessageStreamID: 0x1000000,
		Arguments: []any{
			nil,
			amf0.Object{
				{Key: "level", Value: "error"},
				{Key: "code", Value: code},
				{Key: "description", Value: why},
			},
		},
	})
}
