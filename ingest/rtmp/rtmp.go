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
	"github.com/relaymesh/relaymesh/relay"
)

// App is the RTMP application publishers use: rtmp://HOST/live/{stream}.
const App = "live"

// Server accepts RTMP publishers. The publish key, when the Gate needs
// one, goes on the stream name: rtmp://HOST/live/{stream}?key=KEY (in OBS,
// the stream key "{stream}?key=KEY").
type Server struct {
	Gate   *ingest.Gate
	Logger *slog.Logger
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
	case err == nil, ctx.Err() != nil, errors.Is(err, errRefused): // refusals are logged with the stream
	default:
		log.Info("rtmp connection closed", "err", err)
	}
}

var errRefused = errors.New("refused")

// refuse tells the encoder why, logs it and returns errRefused.
func refuse(sc *gortmplib.ServerConn, log *slog.Logger, code string, err error) error {
	reject(sc, code, err.Error())
	log.Warn("rtmp publish refused", "err", err)
	return fmt.Errorf("%w: %v", errRefused, err)
}

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
		return refuse(sc, log, "NetStream.Play.Failed", errors.New("RTMP playback is not offered; play http://HOST:8080/live/{stream}/index.m3u8"))
	}
	name, err := streamName(sc.URL.Path)
	if err != nil {
		return refuse(sc, log, "NetStream.Publish.BadName", err)
	}
	log = log.With("stream", name)

	sess, err := s.Gate.Admit(ingest.Request{
		Stream: name, Key: sc.URL.Query().Get("key"), Proto: "rtmp", Peer: conn.RemoteAddr().String(),
	})
	if err != nil {
		code := "NetStream.Publish.BadName"
		if errors.Is(err, ingest.ErrUnauthorized) || errors.Is(err, ingest.ErrTooManyStreams) {
			code = "NetStream.Publish.Rejected"
		}
		return refuse(sc, log, code, err)
	}
	defer sess.Close()
	// A takeover or a broken limit ends the session; the encoder is then
	// disconnected.
	stopped := make(chan struct{})
	defer close(stopped)
	go func() {
		select {
		case <-sess.Done():
			if err := sess.Err(); err != nil {
				log.Warn("rtmp publisher disconnected", "err", err)
			}
			conn.Close()
		case <-stopped:
		}
	}()

	rd := &reader{read: func() (message.Message, error) {
		conn.SetReadDeadline(time.Now().Add(s.Timeout))
		return sc.Read()
	}}
	tracks, video, audio, err := rd.tracks()
	if err != nil {
		if errors.Is(err, errCodec) {
			return refuse(sc, log, "NetStream.Publish.Failed", err)
		}
		return fmt.Errorf("rtmp read tracks: %w", err)
	}
	if err := sess.SetTracks(tracks); err != nil {
		return refuse(sc, log, "NetStream.Publish.Failed", err)
	}
	defer func() {
		sess.Close() // before the log line: by then the stream shows the publisher gone
		log.Info("rtmp publisher stopped")
	}()
	log.Info("rtmp publisher started", "codecs", sess.Codecs(), "resumed", sess.Resumed())
	if err := rd.run(sess, video, audio); err != nil {
		if serr := sess.Err(); serr != nil {
			return serr
		}
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
