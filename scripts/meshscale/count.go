package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	metrics "github.com/hashicorp/go-metrics"
)

// traffic counts memberlist's own byte counters, process-wide (every node
// in this process). memberlist reports them through go-metrics' global
// sink, which main points here:
//
//   - memberlist.udp.sent: each UDP packet a node sends, after encryption,
//     before the transport's label header (2 bytes + the label);
//   - memberlist.udp.received: each UDP packet the transport reads,
//     label header included;
//   - memberlist.tcp.sent: each push/pull state a node sends (both sides of
//     an exchange send one), after encryption. Received TCP bytes are not
//     reported; in a closed mesh they equal the sent ones.
//
// IP and UDP/TCP headers are in none of them.
type traffic struct {
	udpOut, udpOutPkts atomic.Int64
	udpIn, udpInPkts   atomic.Int64
	tcpOut, tcpOutMsgs atomic.Int64
	stateMax           atomic.Int64 // largest push/pull state sent
	// suspect and dead messages processed (memberlist.msg.suspect, .dead),
	// summed over nodes: with no node failing, suspicions are false alarms
	// (probes answered too late: an overloaded process).
	suspects, deads atomic.Int64
}

var _ metrics.MetricSink = (*traffic)(nil)

// counts is a snapshot of traffic's counters.
type counts struct {
	UDPOut, UDPOutPkts, UDPIn, UDPInPkts, TCPOut, TCPOutMsgs int64
	Suspects, Deads                                          int64
}

func (t *traffic) snapshot() counts {
	return counts{
		UDPOut: t.udpOut.Load(), UDPOutPkts: t.udpOutPkts.Load(),
		UDPIn: t.udpIn.Load(), UDPInPkts: t.udpInPkts.Load(),
		TCPOut: t.tcpOut.Load(), TCPOutMsgs: t.tcpOutMsgs.Load(),
		Suspects: t.suspects.Load(), Deads: t.deads.Load(),
	}
}

func (a counts) sub(b counts) counts {
	return counts{
		UDPOut: a.UDPOut - b.UDPOut, UDPOutPkts: a.UDPOutPkts - b.UDPOutPkts,
		UDPIn: a.UDPIn - b.UDPIn, UDPInPkts: a.UDPInPkts - b.UDPInPkts,
		TCPOut: a.TCPOut - b.TCPOut, TCPOutMsgs: a.TCPOutMsgs - b.TCPOutMsgs,
		Suspects: a.Suspects - b.Suspects, Deads: a.Deads - b.Deads,
	}
}

// metricName is the key without go-metrics' prefixes (main sets none, but
// a service name would come first).
func metricName(key []string) string {
	if len(key) > 3 {
		key = key[len(key)-3:]
	}
	return strings.Join(key, ".")
}

func (t *traffic) IncrCounterWithLabels(key []string, val float32, _ []metrics.Label) {
	n := int64(val)
	switch metricName(key) {
	case "memberlist.udp.sent":
		t.udpOut.Add(n)
		t.udpOutPkts.Add(1)
	case "memberlist.udp.received":
		t.udpIn.Add(n)
		t.udpInPkts.Add(1)
	case "memberlist.msg.suspect":
		t.suspects.Add(1)
	case "memberlist.msg.dead":
		t.deads.Add(1)
	case "memberlist.tcp.sent":
		t.tcpOut.Add(n)
		t.tcpOutMsgs.Add(1)
		for {
			old := t.stateMax.Load()
			if n <= old || t.stateMax.CompareAndSwap(old, n) {
				break
			}
		}
	}
}

func (t *traffic) SetGaugeWithLabels([]string, float32, []metrics.Label) {}

func (t *traffic) IncrCounter(key []string, val float32) { t.IncrCounterWithLabels(key, val, nil) }
func (t *traffic) SetGauge(key []string, val float32)    { t.SetGaugeWithLabels(key, val, nil) }
func (t *traffic) EmitKey([]string, float32)             {}
func (t *traffic) AddSample([]string, float32)           {}
func (t *traffic) AddSampleWithLabels([]string, float32, []metrics.Label) {
}

// logs is where every node's log goes: records at warn and above are
// printed; memberlist's own lines (which mesh logs at debug) are counted
// when they are warnings or errors, and the first few printed, since they
// are what an overloaded gossip layer says ("handler queue full",
// "Suspect", "Failed to send").
type logs struct {
	mu      sync.Mutex
	w       io.Writer
	printed int
	warns   atomic.Int64 // memberlist [WARN] lines
	errs    atomic.Int64 // memberlist [ERR] lines
	quiet   atomic.Bool  // count, print nothing (while stopping)
}

// maxPrinted bounds the memberlist lines printed per run.
const maxPrinted = 10

func (l *logs) handler(verbose bool) slog.Handler {
	return &logHandler{l: l, verbose: verbose}
}

// logHandler is one logger's view of logs: memberlist marks the handler
// mesh derives with component=memberlist.
type logHandler struct {
	l          *logs
	verbose    bool
	memberlist bool
	attrs      []slog.Attr
}

func (h *logHandler) Enabled(_ context.Context, level slog.Level) bool {
	return h.memberlist || h.verbose || level >= slog.LevelWarn
}

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	print := h.verbose || r.Level >= slog.LevelWarn
	if h.memberlist {
		switch {
		case strings.Contains(r.Message, "[WARN]"):
			h.l.warns.Add(1)
		case strings.Contains(r.Message, "[ERR"):
			h.l.errs.Add(1)
		default:
			if !h.verbose {
				return nil
			}
		}
		print = true
	}
	if !print || h.l.quiet.Load() {
		return nil
	}
	h.l.mu.Lock()
	defer h.l.mu.Unlock()
	if h.memberlist && !h.verbose {
		if h.l.printed >= maxPrinted {
			return nil
		}
		h.l.printed++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s", r.Time.Format("15:04:05.000"), r.Level, r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s", a)
	}
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s", a)
		return true
	})
	b.WriteByte('\n')
	_, err := io.WriteString(h.l.w, b.String())
	return err
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	for _, a := range as {
		if a.Key == "component" && a.Value.String() == "memberlist" {
			c.memberlist = true
		}
	}
	return &c
}

func (h *logHandler) WithGroup(string) slog.Handler { return h }
