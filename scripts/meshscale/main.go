// Command meshscale is a scale model of relaymesh's control plane. It runs
// N real mesh nodes in one process on 127.0.0.1 and measures how fast the
// mesh converges and how many bytes its gossip costs.
//
// Every node is a mesh.Mesh from package mesh, created with mesh.New and
// run with Join and Run exactly as cmd/relaymesh wires a node (one
// memberlist per node on its own kernel-chosen port, the same memberlist
// timing, the same wire formats, gossip encrypted with a key derived from
// -key), so the gossiped state and its bytes are the real ones. Only what
// a node reports through mesh.Config.Local is simulated (model.go):
//
//   - -origins origins (default one per ten nodes), each publishing
//     -streams streams;
//   - edges, each holding -relayed of those streams (relayed copies, drawn
//     at random), with viewer counts, a region, addresses and a public URL
//     of realistic length;
//   - on a -churn share of the nodes, viewer counts that change at every
//     sample, as on a busy edge; mesh then gossips the node's load (node
//     meta) and its stream list once a second. The counts encode when they
//     were sampled, so an observer can tell how old its view is.
//
// A run:
//
//  1. boot: starts the nodes one after another, each joining the first and
//     a random earlier one, and waits until every node sees every other
//     with its full stream list;
//  2. steady state: waits -settle, then for -window counts memberlist's
//     bytes (see traffic in count.go: UDP sent and received, push/pull TCP
//     sent), the process's CPU time, and every 2 s the age of the load
//     samples each node holds about the others;
//  3. join (-trials times): starts one more edge holding -relayed streams;
//     from just before mesh.New until every boot node lists it (join), and
//     lists it with its whole stream list (join_streams); then stops it as
//     a node that leaves (Run's context ends: Leave, then Shutdown) and
//     measures until every boot node has dropped it (leave);
//  4. failure (-trials times): starts one more edge as a child process
//     (this program with -child), waits until every boot node lists it,
//     then SIGKILLs it and measures until every boot node has declared it
//     dead and dropped it (fail) — memberlist's failure detection and the
//     dead message's spread;
//  5. drain (-trials times): a boot edge reports state draining and calls
//     mesh.Update, as `relaymesh drain` does (cmd/relaymesh/drain.go); the
//     time until every other boot node sees it draining (drain). It is
//     then made ready again.
//
// Each convergence figure is, per trial, the time until the last observer
// saw the event (observers polled every -poll); the summary gives p50 and
// max over trials (nearest rank). Byte figures are process totals divided
// by the nodes and the window: the mean per node.
//
// It prints progress, one line per trial, then one summary line:
//
//	meshscale n=200 origins=20 streams=400 relayed=20 churn=1.00 encrypted=true ... join_ms=P50/MAX ... out_Bps=...
//
// All nodes share this machine's cores, so when the process is CPU-bound
// (see cpu_pct) the convergence figures are pessimistic for real nodes,
// each on its own machine.
//
// Usage:
//
//	go run ./scripts/meshscale -n 100 [-streams 20] [-relayed 20] [-churn 1] [-trials 3] [-window 20s]
//
// scripts/bench-mesh-scale.sh runs it for 50, 100 and 200 nodes.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	metrics "github.com/hashicorp/go-metrics"

	"github.com/relaymesh/relaymesh/mesh"
)

// options are the flags.
type options struct {
	model
	Key          string
	Trials       int
	Settle       time.Duration
	Window       time.Duration
	Poll         time.Duration
	BootTimeout  time.Duration
	EventTimeout time.Duration
	Verbose      bool
	CPUProfile   string
	GOGC         int
}

func main() {
	var o options
	flag.IntVar(&o.Nodes, "n", 50, "nodes in the mesh (origins included), 2..1000")
	flag.IntVar(&o.Origins, "origins", 0, "origins among them (0: one per ten nodes, at least one)")
	flag.IntVar(&o.Streams, "streams", 20, "streams published on each origin")
	flag.IntVar(&o.Relayed, "relayed", 20, "streams each edge holds (relayed copies)")
	flag.Float64Var(&o.Churn, "churn", 1, "share of nodes whose viewer counts change all the time, 0..1")
	flag.StringVar(&o.Key, "key", "meshscale", `cluster key: gossip is encrypted as on real nodes ("" for none)`)
	flag.IntVar(&o.Trials, "trials", 3, "trials of each event (join, failure, drain)")
	flag.DurationVar(&o.Settle, "settle", 5*time.Second, "wait after boot before measuring")
	flag.DurationVar(&o.Window, "window", 20*time.Second, "how long gossip bytes are counted in steady state")
	flag.DurationVar(&o.Poll, "poll", 10*time.Millisecond, "how often every node's view is checked during an event")
	flag.DurationVar(&o.BootTimeout, "boot-timeout", 3*time.Minute, "bound on the boot's convergence")
	flag.DurationVar(&o.EventTimeout, "event-timeout", time.Minute, "bound on each event's convergence")
	flag.BoolVar(&o.Verbose, "v", false, "print every node's log (memberlist's too)")
	flag.IntVar(&o.GOGC, "gogc", 400, "GOGC for this process: N nodes share one heap, so GC work is shared; higher spends less CPU on it")
	flag.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of the steady-state window to this file")
	child := flag.String("child", "", "internal: run one edge of this name until killed (a failure trial)")
	childJoin := flag.String("child-join", "", "internal: the child's seed (host:port)")
	childIndex := flag.Int("child-index", 0, "internal: the child's index in the model")
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "meshscale:", err)
		os.Exit(2)
	}
	if o.Origins == 0 {
		o.Origins = max(1, o.Nodes/10)
	}
	debug.SetGCPercent(o.GOGC)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lg := &logs{w: os.Stderr}
	log := slog.New(lg.handler(o.Verbose))
	var err error
	if *child != "" {
		err = runChild(ctx, o, log, *child, *childIndex, *childJoin)
	} else {
		tr := &traffic{}
		mc := metrics.DefaultConfig("")
		mc.EnableHostname, mc.EnableHostnameLabel, mc.EnableRuntimeMetrics = false, false, false
		if _, err := metrics.NewGlobal(mc, tr); err != nil {
			fmt.Fprintln(os.Stderr, "meshscale: set up byte counters:", err)
			os.Exit(1)
		}
		err = (&scale{o: o, tr: tr, logs: lg, log: log}).run(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshscale:", err)
		os.Exit(1)
	}
}

func (o *options) validate() error {
	switch {
	case o.Nodes < 2 || o.Nodes > 1000:
		return fmt.Errorf("-n %d: choose 2..1000", o.Nodes)
	case o.Origins < 0 || o.Origins >= o.Nodes:
		return fmt.Errorf("-origins %d: choose 0..%d (0: one per ten nodes)", o.Origins, o.Nodes-1)
	case o.Streams < 1 || o.Streams > 1000:
		return fmt.Errorf("-streams %d: choose 1..1000", o.Streams)
	case o.Relayed < 0 || o.Relayed > 1000:
		return fmt.Errorf("-relayed %d: choose 0..1000", o.Relayed)
	case !(o.Churn >= 0 && o.Churn <= 1):
		return fmt.Errorf("-churn %v: choose 0..1", o.Churn)
	case o.Trials < 0 || o.Trials > 20:
		return fmt.Errorf("-trials %d: choose 0..20", o.Trials)
	case o.Window < time.Second || o.Window > 10*time.Minute:
		return fmt.Errorf("-window %v: choose 1s..10m", o.Window)
	case o.Settle < 0 || o.Settle > 10*time.Minute:
		return fmt.Errorf("-settle %v: choose 0..10m", o.Settle)
	case o.GOGC < 50 || o.GOGC > 10000:
		return fmt.Errorf("-gogc %d: choose 50..10000", o.GOGC)
	case o.Poll < time.Millisecond || o.Poll > time.Second:
		return fmt.Errorf("-poll %v: choose 1ms..1s", o.Poll)
	case o.BootTimeout <= 0 || o.EventTimeout <= 0 || o.BootTimeout > time.Hour || o.EventTimeout > 10*time.Minute:
		return errors.New("-boot-timeout (up to 1h) and -event-timeout (up to 10m) must be positive")
	}
	return nil
}

// node is one running mesh node in this process.
type node struct {
	spec     *spec
	m        *mesh.Mesh
	draining atomic.Bool
	cancel   context.CancelFunc
	done     chan struct{} // closed when Run has returned
}

// startNode creates a node as cmd/relaymesh does (mesh.New on a loopback
// port, Join, Run), with sp's simulated state as Local.
func startNode(ctx context.Context, sp *spec, key string, log *slog.Logger, seeds ...string) (*node, error) {
	n := &node{spec: sp, done: make(chan struct{})}
	m, err := mesh.New(mesh.Config{
		NodeName: sp.Name, Bind: "127.0.0.1:0", ClusterKey: key, Logger: log,
		Local: func() mesh.NodeState { return sp.state(time.Now(), n.draining.Load()) },
	})
	if err != nil {
		return nil, fmt.Errorf("start node %s: %w", sp.Name, err)
	}
	n.m = m
	if len(seeds) > 0 {
		if _, err := m.Join(ctx, seeds); err != nil {
			m.Close()
			return nil, fmt.Errorf("node %s: join %v: %w", sp.Name, seeds, err)
		}
	}
	rctx, cancel := context.WithCancel(ctx)
	n.cancel = cancel
	go func() {
		defer close(n.done)
		m.Run(rctx) // leaves the mesh (bounded by 2 s) when rctx ends
	}()
	return n, nil
}

// stop leaves the mesh and shuts the node down.
func (n *node) stop() {
	n.cancel()
	<-n.done
}

// stopAll stops nodes at once, waiting at most bound for them.
func stopAll(nodes []*node, bound time.Duration) error {
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(n.stop)
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-time.After(bound):
		return fmt.Errorf("nodes still stopping after %v", bound)
	}
}

// pred is what an observer must see for an event to have reached it.
type pred func(obs *node) bool

func listed(name string) pred {
	return func(obs *node) bool { _, ok := obs.m.Node(name); return ok }
}

func listedWith(name string, streams int) pred {
	return func(obs *node) bool { s, ok := obs.m.Node(name); return ok && len(s.Streams) == streams }
}

func gone(name string) pred {
	return func(obs *node) bool { _, ok := obs.m.Node(name); return !ok }
}

func inState(name string, st mesh.State) pred {
	return func(obs *node) bool { s, ok := obs.m.Node(name); return ok && s.State == st }
}

// watch polls every observer every poll until each has seen each pred,
// or until bound after t0; it returns, per pred, when each observer first
// saw it (negative: never).
func watch(ctx context.Context, obs []*node, t0 time.Time, bound, poll time.Duration, preds ...pred) []trial {
	out := make([]trial, len(preds))
	for i := range out {
		out[i] = make(trial, len(obs))
		for j := range out[i] {
			out[i][j] = -1
		}
	}
	left := len(preds) * len(obs)
	tk := time.NewTicker(poll)
	defer tk.Stop()
	for {
		now := time.Now()
		for pi, p := range preds {
			for oi, o := range obs {
				if out[pi][oi] < 0 && p(o) {
					out[pi][oi] = now.Sub(t0)
					left--
				}
			}
		}
		if left == 0 || now.Sub(t0) > bound {
			return out
		}
		select {
		case <-ctx.Done():
			return out
		case <-tk.C:
		}
	}
}

// scale is one run of the model.
type scale struct {
	o     options
	tr    *traffic
	logs  *logs
	log   *slog.Logger
	nodes []*node
	self  string // this program, for the failure trials' children
}

func (s *scale) run(ctx context.Context) (err error) {
	o := s.o
	if s.self, err = os.Executable(); err != nil {
		return fmt.Errorf("find this program for the failure trials: %w", err)
	}
	specs := o.specs()
	edgeBytes, originBytes := listBytes(o.extra("edge-999", o.Nodes)), listBytes(specs[0])
	fmt.Printf("== meshscale: %d nodes (%d origins x %d streams = %d streams; edges hold %d each), churn %.2f, encrypted %t, GOMAXPROCS %d, load average %s\n",
		o.Nodes, o.Origins, o.Streams, o.Origins*o.Streams, o.Relayed, o.Churn, o.Key != "", runtime.GOMAXPROCS(0), loadavg())
	fmt.Printf("== stream-list message: edge %d bytes, origin %d bytes (lists over 1000 bytes travel by push/pull only)\n", edgeBytes, originBytes)
	defer func() {
		s.logs.quiet.Store(true) // every node leaving at once is noisy
		if e := stopAll(s.nodes, 15*time.Second); e != nil && err == nil {
			err = e
		}
	}()

	// 1. Boot.
	rng := rand.New(rand.NewPCG(1, 3))
	t0 := time.Now()
	for i, sp := range specs {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var seeds []string
		if i > 0 {
			seeds = []string{s.nodes[0].m.Addr(), s.nodes[rng.IntN(i)].m.Addr()}
		}
		n, err := startNode(ctx, sp, o.Key, s.log, seeds...)
		if err != nil {
			return err
		}
		s.nodes = append(s.nodes, n)
	}
	started := time.Since(t0)
	if err := s.waitConverged(ctx, t0.Add(o.BootTimeout)); err != nil {
		return err
	}
	boot := time.Since(t0)
	fmt.Printf("boot: %d nodes started in %.1f s, every node saw every other with its streams after %.1f s\n",
		o.Nodes, started.Seconds(), boot.Seconds())
	if err := sleep(ctx, o.Settle); err != nil {
		return err
	}

	// 2. Steady state.
	st, err := s.steady(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("steady: %.0f s: per node UDP out %.0f B/s (%.1f packets/s), UDP in %.0f B/s, push/pull out %.0f B/s (%.2f states/s, largest %.1f kB); CPU %.0f%% of one core (%.0f µs/s per node); load sample age p50 %v p99 %v (meta), p50 %v p99 %v (stream list); memberlist warnings %d, errors %d, suspect messages %d, dead messages %d (no node failed); stream-list broadcasts per node: room %.1f/s, sent %.1f/s, queued %.1f\n",
		st.dur.Seconds(), st.udpOut, st.udpPkts, st.udpIn, st.tcpOut, st.tcpMsgs, float64(st.stateMax)/1000,
		st.cpuPct, st.cpuPerNode, st.metaP50, st.metaP99, st.listP50, st.listP99, st.warns, st.errs, st.suspects, st.deads,
		st.bcastRooms, st.bcastSent, st.bcastQueued)

	// 3.–5. Events.
	joins, joinStreams, leaves, err := s.joinTrials(ctx, rng)
	if err != nil {
		return err
	}
	fails, err := s.failTrials(ctx, rng)
	if err != nil {
		return err
	}
	drains, err := s.drainTrials(ctx)
	if err != nil {
		return err
	}

	fmt.Printf("meshscale n=%d origins=%d streams=%d relayed=%d churn=%.2f encrypted=%t list_bytes=%d/%d boot_s=%.1f"+
		" join_ms=%s join_streams_ms=%s leave_ms=%s fail_ms=%s drain_ms=%s"+
		" meta_age_ms=%d/%d list_age_ms=%d/%d"+
		" udp_out_Bps=%.0f udp_in_Bps=%.0f tcp_out_Bps=%.0f out_Bps=%.0f udp_pkts_s=%.1f pushpull_max_kB=%.1f"+
		" cpu_pct=%.0f ml_warn_err=%d/%d false_suspect=%d list_room_s=%.1f list_sent_s=%.1f list_queued=%.1f\n",
		o.Nodes, o.Origins, o.Origins*o.Streams, o.Relayed, o.Churn, o.Key != "", edgeBytes, originBytes, boot.Seconds(),
		summarize(joins), summarize(joinStreams), summarize(leaves), summarize(fails), summarize(drains),
		st.metaP50.Milliseconds(), st.metaP99.Milliseconds(), st.listP50.Milliseconds(), st.listP99.Milliseconds(),
		st.udpOut, st.udpIn, st.tcpOut, st.udpOut+st.tcpOut, st.udpPkts, float64(st.stateMax)/1000,
		st.cpuPct, st.warns, st.errs, st.suspects, st.bcastRooms, st.bcastSent, st.bcastQueued)
	return nil
}

// waitConverged waits until every node sees every other with its full
// stream list.
func (s *scale) waitConverged(ctx context.Context, deadline time.Time) error {
	for {
		missing := 0
		for _, obs := range s.nodes {
			for _, n := range s.nodes {
				if n != obs && !listedWith(n.spec.Name, len(n.spec.Streams))(obs) {
					missing++
				}
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("boot: %d (observer, node) pairs still missing at the bound", missing)
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

// steadyFigures are the steady-state measurements, per node.
type steadyFigures struct {
	dur                                time.Duration
	udpOut, udpPkts, udpIn             float64 // bytes, packets per second
	tcpOut, tcpMsgs                    float64
	stateMax                           int64
	cpuPct, cpuPerNode                 float64 // % of one core; µs per second per node
	metaP50, metaP99, listP50, listP99 time.Duration
	warns, errs                        int64 // memberlist's warnings and errors in the window
	suspects, deads                    int64 // suspect and dead messages processed in the window, all nodes
	// Stream-list broadcasts, per node: how often memberlist left room for
	// them, how many went out a second, and the mean queue at the end.
	bcastRooms, bcastSent, bcastQueued float64
}

func (s *scale) steady(ctx context.Context) (steadyFigures, error) {
	byName := make(map[string]*spec, len(s.nodes))
	for _, n := range s.nodes {
		byName[n.spec.Name] = n.spec
	}
	var metaAges, listAges []time.Duration
	sample := func() {
		now := time.Now()
		for _, obs := range s.nodes {
			for _, ns := range obs.m.Nodes() {
				sp := byName[ns.Name]
				if ns.Name == obs.spec.Name || sp == nil || !sp.Churns {
					continue
				}
				if age, ok := sampleAge(ns.Viewers, sp.Base, now); ok {
					metaAges = append(metaAges, age)
				}
				if len(ns.Streams) > 0 && len(sp.Streams) > 0 && ns.Streams[0].Name == sp.Streams[0].Name {
					if age, ok := sampleAge(ns.Streams[0].Viewers, sp.Streams[0].Viewers, now); ok {
						listAges = append(listAges, age)
					}
				}
			}
		}
	}

	if s.o.CPUProfile != "" {
		f, err := os.Create(s.o.CPUProfile)
		if err != nil {
			return steadyFigures{}, fmt.Errorf("-cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return steadyFigures{}, fmt.Errorf("-cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	s.tr.stateMax.Store(0)
	warn0, err0 := s.logs.warns.Load(), s.logs.errs.Load()
	bcast := func() (b mesh.BroadcastStats) {
		for _, n := range s.nodes {
			x := n.m.BroadcastStats()
			b.Queued += x.Queued
			b.Rooms += x.Rooms
			b.Sent += x.Sent
			b.Bytes += x.Bytes
		}
		return b
	}
	b0 := bcast()
	c0, cpu0, w0 := s.tr.snapshot(), cpuTime(), time.Now()
	tk := time.NewTicker(2 * time.Second)
	defer tk.Stop()
	for time.Since(w0) < s.o.Window {
		select {
		case <-ctx.Done():
			return steadyFigures{}, ctx.Err()
		case <-tk.C:
			sample()
		}
	}
	c, cpu, dur := s.tr.snapshot().sub(c0), cpuTime()-cpu0, time.Since(w0)
	n := len(s.nodes)
	b1 := bcast()
	return steadyFigures{
		dur:    dur,
		udpOut: perNodeRate(c.UDPOut, n, dur), udpPkts: perNodeRate(c.UDPOutPkts, n, dur),
		udpIn:  perNodeRate(c.UDPIn, n, dur),
		tcpOut: perNodeRate(c.TCPOut, n, dur), tcpMsgs: perNodeRate(c.TCPOutMsgs, n, dur),
		stateMax:   s.tr.stateMax.Load(),
		cpuPct:     100 * cpu.Seconds() / dur.Seconds(),
		cpuPerNode: float64(cpu.Microseconds()) / float64(n) / dur.Seconds(),
		metaP50:    percentile(metaAges, 50), metaP99: percentile(metaAges, 99),
		listP50: percentile(listAges, 50), listP99: percentile(listAges, 99),
		warns: s.logs.warns.Load() - warn0, errs: s.logs.errs.Load() - err0,
		bcastRooms:  perNodeRate(int64(b1.Rooms-b0.Rooms), n, dur),
		bcastSent:   perNodeRate(int64(b1.Sent-b0.Sent), n, dur),
		bcastQueued: float64(b1.Queued) / float64(n),
	}, nil
}

func (s *scale) joinTrials(ctx context.Context, rng *rand.Rand) (joins, joinStreams, leaves []trial, err error) {
	o := s.o
	for t := range o.Trials {
		sp := o.extra(fmt.Sprintf("join-%d", t+1), o.Nodes+t)
		seed := s.nodes[rng.IntN(len(s.nodes))].m.Addr()
		t0 := time.Now()
		j, err := startNode(ctx, sp, o.Key, s.log, seed)
		if err != nil {
			return nil, nil, nil, err
		}
		joined := time.Since(t0)
		r := watch(ctx, s.nodes, t0, o.EventTimeout, o.Poll, listed(sp.Name), listedWith(sp.Name, len(sp.Streams)))
		joins, joinStreams = append(joins, r[0]), append(joinStreams, r[1])

		t1 := time.Now()
		stopped := make(chan struct{})
		go func() {
			j.stop()
			close(stopped)
		}()
		l := watch(ctx, s.nodes, t1, o.EventTimeout, o.Poll, gone(sp.Name))[0]
		<-stopped
		leaves = append(leaves, l)
		fmt.Printf("join %d: Join returned after %v; listed by all %s (median %v); with its %d streams %s (median %v); after its leave, dropped by all %s (median %v)\n",
			t+1, joined.Round(time.Millisecond), allString(r[0]), r[0].median(), len(sp.Streams), allString(r[1]), r[1].median(),
			allString(l), l.median())
		if err := sleep(ctx, time.Second); err != nil {
			return nil, nil, nil, err
		}
	}
	return joins, joinStreams, leaves, nil
}

// failTrials kills a node for real: a child process running one mesh
// node gets SIGKILL, so it neither leaves nor answers another probe.
func (s *scale) failTrials(ctx context.Context, rng *rand.Rand) ([]trial, error) {
	o := s.o
	var fails []trial
	for t := range o.Trials {
		name, index := fmt.Sprintf("fail-%d", t+1), o.Nodes+100+t
		seed := s.nodes[rng.IntN(len(s.nodes))].m.Addr()
		cmd := exec.CommandContext(ctx, s.self, "-child", name, "-child-index", strconv.Itoa(index), "-child-join", seed,
			"-n", strconv.Itoa(o.Nodes), "-origins", strconv.Itoa(o.Origins), "-streams", strconv.Itoa(o.Streams),
			"-relayed", strconv.Itoa(o.Relayed), "-churn", strconv.FormatFloat(o.Churn, 'f', -1, 64), "-key", o.Key)
		cmd.Stderr = os.Stderr
		// If this process dies, so does the child.
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, fmt.Errorf("failure trial %d: %w", t+1, err)
		}
		if err := cmd.Start(); err != nil {
			return nil, fmt.Errorf("failure trial %d: start the child: %w", t+1, err)
		}
		said, waited := make(chan string, 1), make(chan error, 1)
		go func() {
			// The child prints "joined" once its Join has returned.
			line, _ := bufio.NewReader(out).ReadString('\n')
			said <- strings.TrimSpace(line)
			waited <- cmd.Wait()
		}()
		kill := func() {
			cmd.Process.Kill()
			<-waited
		}
		select {
		case line := <-said:
			if line != "joined" {
				kill()
				return nil, fmt.Errorf("failure trial %d: the child did not join (it said %q)", t+1, line)
			}
		case <-time.After(30 * time.Second):
			kill()
			return nil, fmt.Errorf("failure trial %d: the child did not join within 30 s", t+1)
		}
		sp := o.extra(name, index)
		r := watch(ctx, s.nodes, time.Now(), o.EventTimeout, o.Poll, listedWith(name, len(sp.Streams)))[0]
		if _, ok := r.all(); !ok {
			kill()
			return nil, fmt.Errorf("failure trial %d: not every node saw %s join within %v", t+1, name, o.EventTimeout)
		}
		// Let it take part in probing for a while, as a live node does.
		if err := sleep(ctx, 2*time.Second); err != nil {
			kill()
			return nil, err
		}
		t0 := time.Now()
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			kill()
			return nil, fmt.Errorf("failure trial %d: kill the child: %w", t+1, err)
		}
		f := watch(ctx, s.nodes, t0, o.EventTimeout, o.Poll, gone(name))[0]
		<-waited
		fails = append(fails, f)
		fmt.Printf("fail %d: after SIGKILL, declared dead and dropped by all %s (median %v)\n", t+1, allString(f), f.median())
		if err := sleep(ctx, time.Second); err != nil {
			return nil, err
		}
	}
	return fails, nil
}

// drainTrials drains boot edges, one per trial, from the last.
func (s *scale) drainTrials(ctx context.Context) ([]trial, error) {
	o := s.o
	var drains []trial
	for t := range o.Trials {
		d := s.nodes[len(s.nodes)-1-t]
		others := make([]*node, 0, len(s.nodes)-1)
		for _, n := range s.nodes {
			if n != d {
				others = append(others, n)
			}
		}
		t0 := time.Now()
		d.draining.Store(true)
		d.m.Update()
		r := watch(ctx, others, t0, o.EventTimeout, o.Poll, inState(d.spec.Name, mesh.StateDraining))[0]
		drains = append(drains, r)
		fmt.Printf("drain %d: %s seen draining by all %s (median %v)\n", t+1, d.spec.Name, allString(r), r.median())
		d.draining.Store(false)
		d.m.Update()
		watch(ctx, others, time.Now(), o.EventTimeout, o.Poll, inState(d.spec.Name, mesh.StateReady))
		if err := sleep(ctx, time.Second); err != nil {
			return nil, err
		}
	}
	return drains, nil
}

// runChild is a failure trial's victim: one edge that joins and runs until
// it is killed (bounded, in case nobody does).
func runChild(ctx context.Context, o options, log *slog.Logger, name string, index int, seed string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	n, err := startNode(ctx, o.extra(name, index), o.Key, log, seed)
	if err != nil {
		return err
	}
	fmt.Println("joined")
	<-n.done
	return nil
}

func allString(t trial) string {
	if d, ok := t.all(); ok {
		return "after " + d.Round(time.Millisecond).String()
	}
	missed := 0
	for _, d := range t {
		if d < 0 {
			missed++
		}
	}
	return fmt.Sprintf("NOT within the bound (%d of %d observers missed it)", missed, len(t))
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// cpuTime is the CPU time this process has used (user + system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}
