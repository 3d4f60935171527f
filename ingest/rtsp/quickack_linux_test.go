package rtsp

import (
	"io"
	"net"
	"slices"
	"testing"
	"time"
)

// nagleStalls measures how long the second of two small writes, sent back
// to back by a client that leaves Nagle's algorithm on (as ffmpeg does),
// takes to follow the first to the server, over rounds of request and
// reply (which put the server's side in delayed-ACK mode). It returns the
// median.
func nagleStalls(t *testing.T, ln net.Listener) time.Duration {
	t.Helper()
	const rounds, size = 15, 100
	gaps := make(chan time.Duration, rounds)
	srvErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		buf := make([]byte, 2*size)
		for range rounds {
			if _, err := io.ReadFull(c, buf[:size]); err != nil {
				srvErr <- err
				return
			}
			first := time.Now()
			if _, err := io.ReadFull(c, buf[size:]); err != nil {
				srvErr <- err
				return
			}
			gaps <- time.Since(first)
			if _, err := c.Write([]byte{1}); err != nil {
				srvErr <- err
				return
			}
		}
		srvErr <- nil
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.(*net.TCPConn).SetNoDelay(false); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	msg, reply := make([]byte, size), make([]byte, 1)
	var all []time.Duration
	for range rounds {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, reply); err != nil {
			t.Fatalf("reply: %v (server: %v)", err, <-srvErr)
		}
		all = append(all, <-gaps)
	}
	if err := <-srvErr; err != nil {
		t.Fatal(err)
	}
	slices.Sort(all)
	return all[len(all)/2]
}

// TestQuickAckListener checks that a publisher's back-to-back writes are
// not held for the server's delayed ACK (40 ms on Linux): interleaved RTP
// packets of one frame would otherwise reach the packager tens of
// milliseconds apart.
func TestQuickAckListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if gap := nagleStalls(t, quickAckListener{ln}); gap > 20*time.Millisecond {
		t.Errorf("median gap between two writes %v, want well under the 40 ms delayed ACK", gap)
	}
}
