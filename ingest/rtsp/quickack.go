package rtsp

import (
	"context"
	"net"
	"syscall"
)

// Publishers that interleave RTP in the RTSP connection (ffmpeg
// -rtsp_transport tcp) write each RTP packet on its own, and most leave
// Nagle's algorithm on (ffmpeg does not set TCP_NODELAY): a packet written
// while an earlier one is still unacknowledged waits in the publisher's
// kernel until the ACK comes. With delayed ACKs on the receiving side, that
// is up to 40 ms on Linux, in the middle of a frame: the frame reaches the
// packager late, and a few parts per hundred are listed 40 ms early or
// late against the wall clock. Acknowledging at once (TCP_QUICKACK) frees
// the held packets within a round trip. The option does not stick (the
// kernel goes back to delayed ACKs once the connection looks interactive),
// so it is set again after every read.

// quickAckListener hands out connections that acknowledge every read at
// once, where the platform allows it; elsewhere connections pass as they
// are.
type quickAckListener struct{ net.Listener }

func (l quickAckListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	return withQuickAck(c), nil
}

// dialQuickAck dials like net.Dialer and acknowledges reads at once: a
// camera sending interleaved RTP with Nagle on stalls the same way.
func dialQuickAck(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return withQuickAck(c), nil
}

func withQuickAck(c net.Conn) net.Conn {
	if !quickAckSupported {
		return c
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &quickAckConn{Conn: c, raw: raw}
}

// quickAckConn asks for an immediate ACK after each read that got data.
type quickAckConn struct {
	net.Conn
	raw syscall.RawConn
}

func (c *quickAckConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		// Best effort: a failure (connection closing) changes nothing the
		// next read would not report.
		_ = c.raw.Control(setQuickAck)
	}
	return n, err
}
