// Package rtsp is the RTSP ingest of an origin.
//
// Server accepts publishers (ANNOUNCE and RECORD, with RTP over TCP or
// UDP) at rtsp://HOST:8554/live/{stream}. Where the node requires publish
// keys, the key goes in the URL as ?key=KEY or as the password of Basic
// authentication with any user name (rtsp://user:KEY@HOST:8554/live/cam);
// a publisher that presents none is challenged for it. Playback over RTSP
// is not offered: viewers use LL-HLS.
//
// Puller reads a camera or another RTSP server and publishes what it reads
// under a stream name, always or only while viewers ask for it. Sources
// are given as
//
//	{stream}=rtsp://[user:pass@]host[:port]/path[?query]
//	{stream}=ondemand:rtsp://[user:pass@]host[:port]/path[?query]
//
// (rtsps:// works too); see ParseSource.
//
// Both package H.264 and H.265 video and AAC and Opus audio: the first
// video and the first audio track of a session; other tracks are ignored.
package rtsp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/auth"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/pion/rtp"

	"github.com/relaymesh/relaymesh/ingest"
	"github.com/relaymesh/relaymesh/internal/ratelog"
	"github.com/relaymesh/relaymesh/relay"
)

// Default UDP ports of the server, those most RTSP servers use.
const (
	DefaultUDPRTPAddress  = ":8000"
	DefaultUDPRTCPAddress = ":8001"
)

// authRealm names the realm of the Basic challenge encoders see.
const authRealm = "relaymesh"

// Server accepts RTSP publishers.
type Server struct {
	Gate   *ingest.Gate
	Logger *slog.Logger
	// Timeout bounds each request and response, the time from connecting
	// to RECORD, and silence from a recording publisher (default 10s).
	Timeout time.Duration
	// UDPRTPAddress and UDPRTCPAddress are where publishers using the UDP
	// transport send RTP and RTCP: an even port and the one after it
	// (default DefaultUDPRTPAddress and DefaultUDPRTCPAddress).
	UDPRTPAddress, UDPRTCPAddress string
	// NoUDP turns the UDP transport off: publishers must interleave RTP in
	// the TCP connection (ffmpeg -rtsp_transport tcp).
	NoUDP bool
}

// ListenAndServe listens on the TCP address addr (e.g. ":8554") and serves
// until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("rtsp listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve accepts RTSP connections on ln, and RTP over UDP unless NoUDP,
// until ctx ends; then it closes every connection and session, ends their
// publications and returns nil. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.Gate == nil {
		ln.Close()
		return errors.New("rtsp: Server.Gate is not set")
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("proto", "rtsp")
	h := &handler{
		gate:    s.Gate,
		log:     log,
		timeout: timeout,
		conns:   map[*gortsplib.ServerConn]*time.Timer{},
		pubs:    map[*gortsplib.ServerSession]*publisher{},
	}
	srv := &gortsplib.Server{
		Handler:      h,
		RTSPAddress:  ln.Addr().String(),
		ReadTimeout:  timeout,
		WriteTimeout: timeout,
		// Only Basic: the key is checked by the gate, which needs it in
		// the clear; Digest would need the key here.
		AuthMethods: []auth.VerifyMethod{auth.VerifyMethodBasic},
		// Interleaved RTP must not wait for delayed ACKs: see quickAckListener.
		Listen: func(string, string) (net.Listener, error) { return quickAckListener{ln}, nil },
	}
	if !s.NoUDP {
		srv.UDPRTPAddress, srv.UDPRTCPAddress = s.UDPRTPAddress, s.UDPRTCPAddress
		if srv.UDPRTPAddress == "" && srv.UDPRTCPAddress == "" {
			srv.UDPRTPAddress, srv.UDPRTCPAddress = DefaultUDPRTPAddress, DefaultUDPRTCPAddress
		}
	}
	if err := srv.Start(); err != nil {
		ln.Close() // Start fails before it takes ln over
		return fmt.Errorf("rtsp: start server: %w", err)
	}
	log.Debug("rtsp server started", "addr", ln.Addr().String(), "udp_rtp", srv.UDPRTPAddress, "udp_rtcp", srv.UDPRTCPAddress)
	stop := context.AfterFunc(ctx, srv.Close)
	defer stop()
	err := srv.Wait()
	srv.Close() // after a fatal error too: waits for every connection and session
	h.shutdown()
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("rtsp server: %w", err)
}

// handler answers gortsplib's callbacks. gortsplib calls them from the
// goroutines of connections, sessions and UDP listeners.
type handler struct {
	gate    *ingest.Gate
	log     *slog.Logger
	timeout time.Duration

	wg       sync.WaitGroup  // publisher watchers
	refusals ratelog.Limiter // refusals are anyone's to repeat at will

	mu    sync.Mutex
	conns map[*gortsplib.ServerConn]*time.Timer // setup deadline, until RECORD
	pubs  map[*gortsplib.ServerSession]*publisher
}

// publisher is an admitted RTSP session.
type publisher struct {
	sess   *ingest.Session
	ss     *gortsplib.ServerSession
	tracks []*track
}

var (
	_ gortsplib.ServerHandlerOnConnOpen     = (*handler)(nil)
	_ gortsplib.ServerHandlerOnConnClose    = (*handler)(nil)
	_ gortsplib.ServerHandlerOnSessionClose = (*handler)(nil)
	_ gortsplib.ServerHandlerOnDescribe     = (*handler)(nil)
	_ gortsplib.ServerHandlerOnAnnounce     = (*handler)(nil)
	_ gortsplib.ServerHandlerOnSetup        = (*handler)(nil)
	_ gortsplib.ServerHandlerOnRecord       = (*handler)(nil)
	_ gortsplib.ServerHandlerOnDecodeError  = (*handler)(nil)
	_ gortsplib.ServerHandlerOnPacketsLost  = (*handler)(nil)
)

// logRefusal logs a refused request, rate-limited: port scanners and
// misconfigured encoders repeat them at will.
func (h *handler) logRefusal(log *slog.Logger, level slog.Level, msg string, args ...any) {
	if ok, suppressed := h.refusals.Allow(); ok {
		log.Log(context.Background(), level, msg, append(args, "suppressed", suppressed)...)
	}
}

// errRefused makes gortsplib close the connection after the refusal is
// sent, so that encoders give up instead of retrying on the same
// connection.
var errRefused = errors.New("refused")

func peerOf(sc *gortsplib.ServerConn) string {
	return sc.NetConn().RemoteAddr().String()
}

// refusal is a response with a fixed reason phrase the encoder shows its
// user (ffmpeg: "method ANNOUNCE failed: 409 Stream Already Has A Publisher").
func refusal(code base.StatusCode, reason string) *base.Response {
	return &base.Response{StatusCode: code, StatusMessage: reason}
}

// OnConnOpen bounds how long a connection may take to start recording:
// the library sets no read deadline before RECORD, and skips bytes it
// cannot parse, so a silent or garbage-sending client would stay forever.
func (h *handler) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	sc := ctx.Conn
	peer := peerOf(sc)
	t := time.AfterFunc(h.timeout, func() {
		h.log.Debug("rtsp connection did not start recording in time; closed", "peer", peer, "timeout", h.timeout)
		sc.Close()
	})
	h.mu.Lock()
	h.conns[sc] = t
	h.mu.Unlock()
}

// OnConnClose drops the connection's setup deadline.
func (h *handler) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	h.recording(ctx.Conn)
	h.log.Debug("rtsp connection closed", "peer", peerOf(ctx.Conn), "err", ctx.Error)
}

// recording stops the setup deadline of a connection.
func (h *handler) recording(sc *gortsplib.ServerConn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t := h.conns[sc]; t != nil {
		t.Stop()
		delete(h.conns, sc)
	}
}

// OnDescribe refuses playback: viewers use LL-HLS.
func (h *handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	h.logRefusal(h.log, slog.LevelInfo, "rtsp playback refused: viewers use LL-HLS", "peer", peerOf(ctx.Conn), "path", ctx.Path)
	return refusal(base.StatusMethodNotAllowed, "RTSP Playback Not Offered, Play LL-HLS Over HTTP"), nil, errRefused
}

// OnAnnounce admits a publisher: stream name, codecs, then the gate (key,
// limits, takeover). Nothing is claimed before every check passed.
func (h *handler) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (res *base.Response, err error) {
	peer := peerOf(ctx.Conn)
	log := h.log.With("peer", peer)
	var sess *ingest.Session // admitted, until a publisher owns it
	defer func() {
		// A parser bug on hostile SDP must cost one connection, never the node.
		if v := recover(); v != nil {
			log.Error("rtsp ANNOUNCE handler panicked; connection dropped", "panic", fmt.Sprint(v))
			if sess != nil {
				sess.Close()
			}
			res, err = refusal(base.StatusInternalServerError, "Internal Server Error"), errRefused
		}
	}()
	name, err := streamName(ctx.Path)
	if err != nil {
		h.logRefusal(log, slog.LevelWarn, "rtsp publish refused", "path", ctx.Path, "err", err)
		if errors.Is(err, relay.ErrBadStreamName) {
			return refusal(base.StatusBadRequest, "Bad Stream Name"), errRefused
		}
		return refusal(base.StatusNotFound, "Publish To rtsp://HOST/"+App+"/STREAM"), errRefused
	}
	log = log.With("stream", name)
	tracks, ignored := selectTracks(ctx.Description.Medias)
	if len(tracks) == 0 {
		h.logRefusal(log, slog.LevelWarn, "rtsp publish refused: no H.264, H.265, AAC or Opus track", "tracks", ignored)
		return refusal(base.StatusUnsupportedMediaType, "No H.264, H.265, AAC Or Opus Track"), errRefused
	}
	key, given := publishKey(ctx.Query, ctx.Request.Header["Authorization"])
	sess, err = h.gate.Admit(ingest.Request{Stream: name, Key: key, Proto: "rtsp", Peer: peer})
	if err != nil {
		return h.refuse(log, err, given)
	}
	if err := sess.SetTracks(ingestTracks(tracks)); err != nil {
		// The SDP's parameter sets may be stale or broken; the packager
		// can still learn good ones in-band.
		if err2 := sess.SetTracks(withoutParams(tracks)); err2 != nil {
			sess.Close()
			h.logRefusal(log, slog.LevelWarn, "rtsp publish refused: tracks cannot be packaged", "err", err2)
			return refusal(base.StatusUnsupportedMediaType, "Tracks Cannot Be Packaged"), errRefused
		}
		log.Warn("parameter sets in the SDP cannot be packaged; waiting for in-band ones", "err", err)
	}
	pub := &publisher{sess: sess, ss: ctx.Session, tracks: tracks}
	h.mu.Lock()
	h.pubs[ctx.Session] = pub
	h.mu.Unlock()
	done := sess.Done()
	sess = nil // the publisher owns it now: OnSessionClose closes it
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		// Done closes when the session is taken over or over a limit, and
		// at the latest when OnSessionClose closes it.
		<-done
		ctx.Session.Close()
	}()
	if len(ignored) > 0 {
		pub.sess.Log.Info("rtsp tracks ignored", "tracks", ignored)
	}
	pub.sess.Log.Info("rtsp publisher announced", "tracks", len(tracks), "resumed", pub.sess.Resumed())
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// refuse answers an Admit error the way encoders understand. Each refusal
// is logged, as on the other protocols: they are what an operator audits
// (a wrong key may be someone guessing).
func (h *handler) refuse(log *slog.Logger, err error, keyGiven bool) (*base.Response, error) {
	switch {
	case errors.Is(err, ingest.ErrUnauthorized) && !keyGiven:
		// Challenge: ffmpeg and OBS retry with the password of
		// rtsp://user:KEY@HOST/live/{stream}, on this connection.
		log.Debug("rtsp publish key required; challenging")
		return &base.Response{
			StatusCode: base.StatusUnauthorized,
			Header: base.Header{
				"WWW-Authenticate": auth.GenerateWWWAuthenticate([]auth.ValidateMethod{auth.ValidateMethodBasic}, authRealm, ""),
			},
		}, nil
	case errors.Is(err, ingest.ErrUnauthorized):
		log.Warn("rtsp publish refused: wrong publish key", "err", err)
		return refusal(base.StatusUnauthorized, "Wrong Publish Key"), errRefused
	case errors.Is(err, relay.ErrStreamBusy):
		log.Warn("rtsp publish refused", "err", err)
		return refusal(409, "Stream Already Has A Publisher"), errRefused
	case errors.Is(err, ingest.ErrLiveElsewhere):
		log.Warn("rtsp publish refused", "err", err)
		return refusal(409, "Stream Is Live On Another Origin"), errRefused
	case errors.Is(err, relay.ErrBadStreamName):
		log.Warn("rtsp publish refused", "err", err)
		return refusal(base.StatusBadRequest, "Bad Stream Name"), errRefused
	case errors.Is(err, ingest.ErrTooManyStreams):
		log.Warn("rtsp publish refused", "err", err)
		return refusal(base.StatusServiceUnavailable, "Too Many Streams On This Node"), errRefused
	default:
		log.Warn("rtsp publish refused", "err", err)
		return refusal(base.StatusServiceUnavailable, "Service Unavailable"), errRefused
	}
}

func (h *handler) publisherOf(ss *gortsplib.ServerSession) *publisher {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pubs[ss]
}

// OnSetup accepts the tracks of an announced session and refuses
// playback.
func (h *handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Session.State() == gortsplib.ServerSessionStatePreRecord && h.publisherOf(ctx.Session) != nil {
		return &base.Response{StatusCode: base.StatusOK}, nil, nil
	}
	h.logRefusal(h.log, slog.LevelInfo, "rtsp playback refused: viewers use LL-HLS", "peer", peerOf(ctx.Conn), "path", ctx.Path)
	return refusal(base.StatusMethodNotAllowed, "RTSP Playback Not Offered, Play LL-HLS Over HTTP"), nil, errRefused
}

// OnRecord starts feeding the session.
func (h *handler) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	pub := h.publisherOf(ctx.Session)
	if pub == nil {
		return refusal(base.StatusBadRequest, "Not Announced"), errRefused
	}
	h.recording(ctx.Conn)
	for _, t := range pub.tracks {
		ctx.Session.OnPacketRTP(t.media, t.format, pub.onPacket(t))
	}
	transport := "?"
	if tr := ctx.Session.SetuppedTransport(); tr != nil {
		transport = strings.ToLower(tr.String())
	}
	pub.sess.Log.Info("rtsp publisher started", "transport", transport)
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// onPacket handles one track's RTP packets. gortsplib calls it from the
// connection's reader (TCP) or the UDP listener, one packet at a time.
func (p *publisher) onPacket(t *track) func(*rtp.Packet) {
	return func(pkt *rtp.Packet) {
		defer func() {
			// Depacketizers and parameter-set parsers see hostile bytes; a
			// bug there must cost one publisher, never the node.
			if v := recover(); v != nil {
				p.sess.Log.Error("rtsp packet handler panicked; publisher disconnected", "panic", fmt.Sprint(v))
				p.ss.Close()
			}
		}()
		pts, ok := p.ss.PacketPTS2(t.media, pkt)
		if !ok {
			return // the track's timeline starts at its first keyframe packet
		}
		if err := t.push(p.sess, pkt, pts); err != nil {
			var end errSessionOver
			if errors.As(err, &end) {
				p.ss.Close()
				return
			}
			p.sess.Drop(err)
		}
	}
}

// OnSessionClose ends the publication of an admitted session.
func (h *handler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	h.mu.Lock()
	pub := h.pubs[ctx.Session]
	delete(h.pubs, ctx.Session)
	h.mu.Unlock()
	if pub == nil {
		return
	}
	why := pub.sess.Err() // set when the session was taken over or broke a limit
	pub.sess.Close()
	if why == nil {
		why = ctx.Error
	}
	pub.sess.Log.Info("rtsp publisher stopped", "err", why)
}

// OnDecodeError logs RTP and RTCP the library could not parse.
func (h *handler) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	if pub := h.publisherOf(ctx.Session); pub != nil {
		pub.sess.Drop(ctx.Error)
	}
}

// OnPacketsLost logs RTP packet loss (UDP), rate-limited.
func (h *handler) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	if pub := h.publisherOf(ctx.Session); pub != nil {
		pub.sess.Drop(fmt.Errorf("%d RTP packets lost", ctx.Lost))
	}
}

// shutdown closes what the library left open and waits for the watchers.
// Called once the gortsplib server has stopped.
func (h *handler) shutdown() {
	h.mu.Lock()
	pubs := h.pubs
	h.pubs = map[*gortsplib.ServerSession]*publisher{}
	for sc, t := range h.conns {
		t.Stop()
		delete(h.conns, sc)
	}
	h.mu.Unlock()
	for _, pub := range pubs {
		pub.sess.Close()
	}
	h.wg.Wait()
}
