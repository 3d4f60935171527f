// Package rtsptest runs a minimal RTSP server for tests, standing in for
// an IP camera or another RTSP server: an encoder publishes to it with
// ANNOUNCE/RECORD and readers play what it publishes. relaymesh's RTSP
// pull is tested against it.
package rtsptest

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/pion/rtp"
)

// Server is an RTSP server with one stream, whatever the path. Readers
// must log in with User and Pass when User is set.
type Server struct {
	// Addr is the TCP address to listen on; UDPRTP and UDPRTCP, if set,
	// offer the UDP transport.
	Addr, UDPRTP, UDPRTCP string
	User, Pass            string

	srv       *gortsplib.Server
	describes atomic.Int32

	mu        sync.Mutex
	stream    *gortsplib.ServerStream
	publisher *gortsplib.ServerSession
}

// Start listens. A port just released by a previous server may still be
// held for a moment, so binding is retried for up to 5 s.
func (s *Server) Start() error {
	s.srv = &gortsplib.Server{
		Handler: (*handler)(s), RTSPAddress: s.Addr, UDPRTPAddress: s.UDPRTP, UDPRTCPAddress: s.UDPRTCP,
	}
	var err error
	for range 50 {
		if err = s.srv.Start(); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("start RTSP test server on %s: %w", s.Addr, err)
}

// Close stops the server and disconnects everyone.
func (s *Server) Close() { s.srv.Close() }

// Describes counts DESCRIBE requests: how often a reader connected.
func (s *Server) Describes() int { return int(s.describes.Load()) }

type handler Server

func (h *handler) authorized(c *gortsplib.ServerConn, req *base.Request) bool {
	return h.User == "" || c.VerifyCredentials(req, h.User, h.Pass)
}

func (h *handler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stream != nil && ctx.Session == h.publisher {
		h.stream.Close()
		h.stream = nil
	}
}

func (h *handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	h.describes.Add(1)
	if !h.authorized(ctx.Conn, ctx.Request) {
		return &base.Response{StatusCode: base.StatusUnauthorized}, nil, liberrors.ErrServerAuth{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stream == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, h.stream, nil
}

func (h *handler) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stream != nil {
		h.stream.Close()
		h.publisher.Close()
	}
	h.stream = &gortsplib.ServerStream{Server: h.srv, Desc: ctx.Description}
	if err := h.stream.Initialize(); err != nil {
		return &base.Response{StatusCode: base.StatusBadRequest}, err
	}
	h.publisher = ctx.Session
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (h *handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Session.State() == gortsplib.ServerSessionStatePreRecord {
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	}
	if !h.authorized(ctx.Conn, ctx.Request) {
		return &base.Response{StatusCode: base.StatusUnauthorized}, nil, liberrors.ErrServerAuth{}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stream == nil {
		return &base.Response{StatusCode: base.StatusNotFound}, nil, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, h.stream, nil
}

func (h *handler) OnPlay(*gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	return &base.Response{StatusCode: base.StatusOK}, nil
}

func (h *handler) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	h.mu.Lock()
	stream := h.stream
	h.mu.Unlock()
	ctx.Session.OnPacketRTPAny(func(medi *description.Media, _ format.Format, pkt *rtp.Packet) {
		stream.WritePacketRTP(medi, pkt) //nolint:errcheck // readers come and go
	})
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnPacketsLost and OnDecodeError keep the library from logging.
func (h *handler) OnPacketsLost(*gortsplib.ServerHandlerOnPacketsLostCtx) {}
func (h *handler) OnDecodeError(*gortsplib.ServerHandlerOnDecodeErrorCtx) {}
