//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// engine drives every viewer from one goroutine locked to its thread: one
// epoll set of non-blocking sockets, level-triggered, one read per ready
// socket into a shared scratch buffer, and a timer heap for polls and
// retries. Compared with a goroutine and net.Conn per viewer this saves,
// per request, the speculative read that finds nothing, the deadline
// timer and two goroutine switches: about half the generator's CPU, which
// is what lets one core outrun a static file server.
type engine struct {
	cfg *config
	c   *counters
	log *slog.Logger
	sa  syscall.SockaddrInet4

	want atomic.Int64 // viewers the ramp asks for

	mu sync.Mutex // guards vs' length for the reporter
	vs []*viewer

	epfd    int
	events  []syscall.EpollEvent
	scratch []byte
	timers  timerHeap
	host    []byte
}

func newEngine(cfg *config, c *counters, log *slog.Logger) (*engine, error) {
	addr, err := net.ResolveTCPAddr("tcp4", cfg.addr)
	if err != nil || addr.IP.To4() == nil {
		return nil, fmt.Errorf("-url host %q: want an IPv4 address and port", cfg.addr)
	}
	e := &engine{cfg: cfg, c: c, log: log, events: make([]syscall.EpollEvent, 1024),
		scratch: make([]byte, 256<<10), host: []byte(cfg.addr)}
	e.sa.Port = addr.Port
	copy(e.sa.Addr[:], addr.IP.To4())
	return e, nil
}

// viewers returns the viewers so far (the slice only grows).
func (e *engine) viewers() []*viewer {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.vs
}

// run is the loop; it returns when ctx ends, with every socket closed.
func (e *engine) run(ctx context.Context) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	e.epfd = fd
	defer func() {
		for _, v := range e.viewers() {
			e.disconnect(v)
		}
		syscall.Close(e.epfd)
	}()
	lastSweep := time.Now()
	for ctx.Err() == nil {
		// Short waits: new viewers, the stop and the deadline sweep are
		// noticed within 10 ms without a wake-up channel.
		wait := 10 * time.Millisecond
		if at, ok := e.timers.peek(); ok {
			wait = min(wait, max(time.Until(at), 0))
		}
		n, err := syscall.EpollWait(e.epfd, e.events, int((wait+time.Millisecond-1)/time.Millisecond))
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("epoll_wait: %w", err)
		}
		now := time.Now()
		for i := 0; i < n; i++ {
			ev := e.events[i]
			v := e.vs[ev.Fd]
			if v.fd < 0 {
				continue
			}
			if !v.conn {
				e.connected(v, now)
				continue
			}
			if ev.Events&(syscall.EPOLLIN|syscall.EPOLLERR|syscall.EPOLLHUP) != 0 {
				e.readable(v, now)
			}
		}
		for {
			t, ok := e.timers.popDue(now)
			if !ok {
				break
			}
			v := e.vs[t.v]
			if t.gen == v.gen && v.st == stSleep {
				e.act(v, v.wake(e.cfg, e.c, t.then, now), now)
			}
		}
		if now.Sub(lastSweep) >= 50*time.Millisecond {
			lastSweep = now
			e.sweep(now)
		}
		e.spawn(now)
	}
	return nil
}

// spawn starts the viewers the ramp has asked for since the last turn.
func (e *engine) spawn(now time.Time) {
	for int64(len(e.vs)) < e.want.Load() {
		v := &viewer{id: len(e.vs), fd: -1, index: []byte(e.cfg.indexPath),
			path: make([]byte, 0, 256), req: make([]byte, 0, 512)}
		v.rr.head = make([]byte, 0, 1024)
		v.rr.body = make([]byte, 0, 8<<10)
		e.mu.Lock()
		e.vs = append(e.vs, v)
		e.mu.Unlock()
		e.act(v, v.request(stIndex, v.index, true, e.cfg.timeout), now)
	}
}

// sweep fails the requests whose deadline has passed.
func (e *engine) sweep(now time.Time) {
	t := now.UnixNano()
	for _, v := range e.vs {
		if v.deadline != 0 && t > v.deadline {
			e.c.timeouts.Add(1)
			e.fail(v, errors.New("timed out"), now)
		}
	}
}

// act carries out a viewer's next step.
func (e *engine) act(v *viewer, a action, now time.Time) {
	v.st = a.st
	if a.st == stSleep {
		v.deadline = 0
		e.timers.push(timer{at: now.Add(a.sleep), v: int32(v.id), gen: v.gen, then: a.then})
		return
	}
	v.rr.reset(a.keep)
	v.since = now
	v.deadline = now.Add(a.timeout).UnixNano()
	v.req = appendRequest(v.req[:0], a.path, e.host)
	if v.fd < 0 {
		if err := e.dial(v); err != nil {
			e.fail(v, err, now)
		}
		return // the request goes out once connected
	}
	e.send(v, now)
}

// dial starts a non-blocking connect; the socket reports writable when
// it is done.
func (e *engine) dial(v *viewer) error {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	syscall.SetsockoptInt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, 1)
	if err := syscall.Connect(fd, &e.sa); err != nil && !errors.Is(err, syscall.EINPROGRESS) {
		syscall.Close(fd)
		return fmt.Errorf("connecting to %s: %w", e.cfg.addr, err)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLOUT, Fd: int32(v.id)}
	if err := syscall.EpollCtl(e.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		syscall.Close(fd)
		return fmt.Errorf("epoll add: %w", err)
	}
	v.fd, v.conn = fd, false
	return nil
}

// connected finishes a connect and sends the waiting request.
func (e *engine) connected(v *viewer, now time.Time) {
	soErr, err := syscall.GetsockoptInt(v.fd, syscall.SOL_SOCKET, syscall.SO_ERROR)
	if err == nil && soErr != 0 {
		err = syscall.Errno(soErr)
	}
	if err != nil {
		e.fail(v, fmt.Errorf("connecting to %s: %w", e.cfg.addr, err), now)
		return
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(v.id)}
	if err := syscall.EpollCtl(e.epfd, syscall.EPOLL_CTL_MOD, v.fd, &ev); err != nil {
		e.fail(v, fmt.Errorf("epoll mod: %w", err), now)
		return
	}
	v.conn = true
	e.send(v, now)
}

func (e *engine) send(v *viewer, now time.Time) {
	n, errno := rawIO(syscall.SYS_WRITE, v.fd, v.req)
	if errno != 0 || n != len(v.req) {
		// A request of a few hundred bytes always fits an idle socket's
		// send buffer; anything else is a broken connection.
		e.fail(v, fmt.Errorf("sending a request: wrote %d of %d: %v", n, len(v.req), errno), now)
	}
}

// readable reads once and, when the response is complete, acts on it.
func (e *engine) readable(v *viewer, now time.Time) {
	n, errno := rawIO(syscall.SYS_READ, v.fd, e.scratch)
	switch {
	case errno == syscall.EAGAIN || errno == syscall.EINTR:
		return
	case errno != 0:
		e.fail(v, fmt.Errorf("reading: %w", errno), now)
		return
	case n == 0:
		e.fail(v, errors.New("the server closed the connection"), now)
		return
	}
	if v.st == stSleep || v.st == stIdle {
		e.fail(v, errExtraBytes, now)
		return
	}
	e.c.bytes.Add(int64(n))
	done, err := v.rr.feed(e.scratch[:n])
	if err != nil {
		e.fail(v, err, now)
		return
	}
	if !done {
		return
	}
	v.deadline = 0
	if v.rr.h.close {
		e.disconnect(v)
	}
	a, err := v.complete(e.cfg, e.c, now)
	if err != nil {
		e.fail(v, err, now)
		return
	}
	e.act(v, a, now)
}

// fail counts an error, closes the connection and starts the viewer again
// through the multivariant playlist a second later, as a new session.
func (e *engine) fail(v *viewer, err error, now time.Time) {
	e.c.errors.Add(1)
	if e.cfg.verbose {
		e.log.Info("viewer restarts", "viewer", v.id, "state", v.st, "err", err)
	}
	e.disconnect(v)
	v.restart()
	e.act(v, action{st: stSleep, sleep: time.Second, then: stIndex}, now)
}

func (e *engine) disconnect(v *viewer) {
	if v.fd >= 0 {
		syscall.Close(v.fd) // closing removes it from the epoll set
		v.fd, v.conn = -1, false
	}
}

// rawIO is read(2) or write(2) on a non-blocking socket without the Go
// scheduler's system call bookkeeping: the call never blocks.
func rawIO(trap uintptr, fd int, b []byte) (int, syscall.Errno) {
	if len(b) == 0 {
		return 0, 0
	}
	n, _, errno := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), errno
}

// timer is a viewer's sleep.
type timer struct {
	at   time.Time
	v    int32
	gen  uint32
	then state
}

// timerHeap is a binary min-heap by time, without container/heap's
// interface boxing.
type timerHeap []timer

func (h timerHeap) peek() (time.Time, bool) {
	if len(h) == 0 {
		return time.Time{}, false
	}
	return h[0].at, true
}

func (h *timerHeap) push(t timer) {
	*h = append(*h, t)
	s := *h
	for i := len(s) - 1; i > 0; {
		p := (i - 1) / 2
		if !s[i].at.Before(s[p].at) {
			break
		}
		s[i], s[p] = s[p], s[i]
		i = p
	}
}

// popDue removes and returns the earliest timer if it is due at now.
func (h *timerHeap) popDue(now time.Time) (timer, bool) {
	s := *h
	if len(s) == 0 || s[0].at.After(now) {
		return timer{}, false
	}
	t := s[0]
	last := len(s) - 1
	s[0] = s[last]
	s = s[:last]
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s) && s[l].at.Before(s[m].at) {
			m = l
		}
		if r < len(s) && s[r].at.Before(s[m].at) {
			m = r
		}
		if m == i {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return t, true
}
