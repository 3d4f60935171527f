// Command edgejoin measures how long a fresh relaymesh edge takes to serve
// a playable stream: from the moment it starts the edge process to the
// moment a player could start playing from it.
//
// Each run picks free loopback ports, records t0, starts
//
//	relaymesh edge --node-name PREFIX-LABEL-N --http 127.0.0.1:H --mesh 127.0.0.1:M
//	    --relay 127.0.0.1:Q --cluster-key K --join JOIN [extra args]
//
// (the timing therefore includes process start), and polls the edge every
// -poll (5 ms) until the stream is playable, which is when, in one pass,
//
//  1. index.m3u8 answers 200,
//  2. the media playlist it names (media.m3u8?rmsid=...) answers 200 and
//     lists at least one EXT-X-PART,
//  3. the init segment (EXT-X-MAP URI) and
//  4. the last EXT-X-PART listed both answer 200.
//
// t1 is taken when the last of those responses has been read; the run's
// figure is t1 - t0. A failed step sleeps -poll and starts over at step 1.
// The edge is then stopped with SIGINT (at once; SIGTERM would drain it)
// and waited for.
//
// To show where the time goes, every line the edge writes to stderr is
// stamped with its arrival time relative to t0 (the first occurrence of
// each message is kept), and so are the first times each step above
// succeeded. With -origin-log, the origin's log lines written during the
// run are read too; those carry the origin's own millisecond timestamps.
//
// Each run's time is also split into phases (see result.breakdown):
// process start, mesh join, pull start, QUIC dial and subscribe, window
// replay, and serving the playlist and media.
//
// It prints a few lines per run, the medians of every milestone and phase,
// then
//
//	edgejoin mode=LABEL n=10 min=... p50=... mean=... max=...
//
// Percentiles are nearest-rank. It exits 1 if a run did not become
// playable within -timeout.
//
// Usage:
//
//	go run ./scripts/edgejoin -bin ./relaymesh -join 127.0.0.1:7946 -cluster-key K \
//	    -origin http://127.0.0.1:8080/live/bench/media.m3u8 [-runs 10] [-label prewarm] [-- --prewarm 0]
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "relaymesh", "relaymesh binary")
	join := flag.String("join", "", "the origin's mesh address (host:port) given to --join")
	key := flag.String("cluster-key", "", "--cluster-key for the edge")
	stream := flag.String("stream", "bench", "stream name")
	runs := flag.Int("runs", 10, "number of runs")
	label := flag.String("label", "default", "mode label printed with the results and used in node names")
	prefix := flag.String("name-prefix", "edge-join", "node name prefix; each run's edge is PREFIX-LABEL-N-PID")
	poll := flag.Duration("poll", 5*time.Millisecond, "pause after a failed poll")
	timeout := flag.Duration("timeout", 10*time.Second, "a run fails if the stream is not playable by then")
	gap := flag.Duration("gap", 500*time.Millisecond, "pause between runs, after the previous edge has exited")
	jitter := flag.Duration("jitter", 2*time.Second, "a random extra pause of up to this much between runs, so that runs start at every point of a GOP")
	origin := flag.String("origin", "", "the origin's media playlist URL: its window is printed before each run")
	windowWait := flag.Int("wait-window", 0, "before the first run, wait (up to 60 s) until -origin lists this many complete segments")
	originLog := flag.String("origin-log", "", "the origin's log file: its lines written during each run are shown with the run")
	originPID := flag.Int("origin-pid", 0, "the origin's process id: its CPU time from t0 to t1 is shown with each run (Linux)")
	logLevel := flag.String("log-level", "info", "the edge's --log-level")
	verbose := flag.Bool("v", false, "print every edge log line with its arrival time")
	flag.Parse()
	if *join == "" || *runs < 1 {
		fmt.Fprintln(os.Stderr, "usage: edgejoin -bin relaymesh -join HOST:PORT [-cluster-key K] [-runs 10] [-label L] [-- extra edge flags]")
		os.Exit(2)
	}
	extra := flag.Args()
	stopOnSignal()

	if *origin != "" && *windowWait > 0 {
		if err := waitWindow(*origin, *windowWait, 60*time.Second); err != nil {
			fmt.Fprintln(os.Stderr, "edgejoin:", err)
			os.Exit(1)
		}
	}

	var results []time.Duration
	milestones := map[string][]time.Duration{}
	phases := map[string][]time.Duration{}
	cpu := map[string][]time.Duration{}
	var phaseOrder []string
	failed := 0
	for i := 1; i <= *runs; i++ {
		if *origin != "" {
			fmt.Printf("run %d %s: origin window %s\n", i, *label, describeWindow(*origin))
		}
		r := &run{
			bin: *bin, stream: *stream, label: *label, poll: *poll, timeout: *timeout,
			name: fmt.Sprintf("%s-%s-%d-%d", *prefix, *label, i, os.Getpid()),
			join: *join, key: *key, extra: extra, logLevel: *logLevel, originLog: *originLog,
			originPID: *originPID,
		}
		res, err := r.do(i == 1)
		res.print(os.Stdout, i, *label, *verbose)
		if err != nil {
			fmt.Printf("run %d %s: FAILED: %v\n", i, *label, err)
			failed++
		} else {
			results = append(results, res.playable)
			for _, m := range res.steps {
				milestones["step: "+m.name] = append(milestones["step: "+m.name], m.at)
			}
			for _, m := range res.edgeLog {
				milestones["edge: "+m.name] = append(milestones["edge: "+m.name], m.at)
			}
			if res.edgeCPU >= 0 {
				cpu["edge CPU t0..t1"] = append(cpu["edge CPU t0..t1"], res.edgeCPU)
			}
			if res.originCPU >= 0 {
				cpu["origin CPU t0..t1"] = append(cpu["origin CPU t0..t1"], res.originCPU)
			}
			if res.attached.name != "" {
				milestones["origin: relay subscriber attached"] = append(milestones["origin: relay subscriber attached"], res.attached.at)
			}
			for _, p := range res.phases {
				if phases[p.name] == nil {
					phaseOrder = append(phaseOrder, p.name)
				}
				phases[p.name] = append(phases[p.name], p.at)
			}
		}
		if i < *runs {
			// Without the jitter, runs that each take about a GOP start at
			// the same point of it, and every run waits alike.
			time.Sleep(*gap + rand.N(*jitter+1))
		}
	}

	if len(results) > 0 {
		sorted := append([]time.Duration(nil), results...)
		sort.Slice(sorted, func(a, b int) bool { return sorted[a] < sorted[b] })
		var sum time.Duration
		parts := make([]string, len(results))
		for i, d := range results {
			sum += d
			parts[i] = ms(d)
		}
		fmt.Printf("%s: runs (ms, in order): %s\n", *label, strings.Join(parts, " "))
		fmt.Printf("%s: median time of each milestone after t0 (n = runs where it was seen):\n", *label)
		names := make([]string, 0, len(milestones))
		for n := range milestones {
			names = append(names, n)
		}
		sort.Slice(names, func(a, b int) bool {
			return percentile(milestones[names[a]], 50) < percentile(milestones[names[b]], 50)
		})
		for _, n := range names {
			v := milestones[n]
			fmt.Printf("  %-40s p50 %8s  max %8s  (n=%d)\n", n, ms(percentile(v, 50)), ms(maxOf(v)), len(v))
		}
		fmt.Printf("%s: phases (p50, max, n):\n", *label)
		for _, n := range phaseOrder {
			v := phases[n]
			fmt.Printf("  %-40s p50 %8s  max %8s  (n=%d)\n", n, ms(percentile(v, 50)), ms(maxOf(v)), len(v))
		}
		for _, n := range []string{"edge CPU t0..t1", "origin CPU t0..t1"} {
			if v := cpu[n]; len(v) > 0 {
				fmt.Printf("  %-40s p50 %8s  max %8s  (n=%d)\n", n, ms(percentile(v, 50)), ms(maxOf(v)), len(v))
			}
		}
		fmt.Printf("edgejoin mode=%s n=%d min=%s p50=%s mean=%s max=%s failed=%d\n",
			*label, len(sorted), ms(sorted[0]), ms(percentile(sorted, 50)),
			ms(sum/time.Duration(len(sorted))), ms(sorted[len(sorted)-1]), failed)
	}
	if failed > 0 || len(results) == 0 {
		os.Exit(1)
	}
}

// run is one fresh edge.
type run struct {
	bin, stream, label, name, join, key, logLevel, originLog string
	extra                                                    []string
	poll, timeout                                            time.Duration
	originPID                                                int
}

// event is something that happened at a time relative to t0.
type event struct {
	name string
	at   time.Duration
}

type result struct {
	cmdline  string
	playable time.Duration
	attempts int
	steps    []event // first success of each step
	edgeLog  []event // first occurrence of each edge log message
	allLog   []event // every edge log line (name holds the line)
	origin   []event // origin log lines during the run, by their own clock
	attached event   // the origin's "relay subscriber attached" for this edge
	phases   []event // the breakdown: each phase's length (not a time after t0)
	exitTook time.Duration
	exitErr  error
	// CPU time (all threads, from /proc/PID/task/*/schedstat) from t0 to
	// t1: the edge's, and the origin's with -origin-pid; -1 if unknown.
	edgeCPU, originCPU time.Duration
}

func (r *run) do(showCmd bool) (*result, error) {
	res := &result{}
	httpPort, err := freeTCP()
	if err != nil {
		return res, err
	}
	meshPort, err := freeTCPUDP()
	if err != nil {
		return res, err
	}
	relayPort, err := freeUDP()
	if err != nil {
		return res, err
	}
	base := "http://127.0.0.1:" + strconv.Itoa(httpPort) + "/live/" + r.stream + "/"
	args := []string{"edge", "--node-name", r.name,
		"--http", "127.0.0.1:" + strconv.Itoa(httpPort),
		"--mesh", "127.0.0.1:" + strconv.Itoa(meshPort),
		"--relay", "127.0.0.1:" + strconv.Itoa(relayPort),
		"--cluster-key", r.key, "--join", r.join, "--log-level", r.logLevel}
	args = append(args, r.extra...)
	res.cmdline = r.bin + " " + strings.Join(quoteAll(args), " ")
	if showCmd {
		fmt.Printf("edge command: %s\n", res.cmdline)
	}

	var originOff int64
	if r.originLog != "" {
		if fi, err := os.Stat(r.originLog); err == nil {
			originOff = fi.Size()
		}
	}

	cmd := exec.Command(r.bin, args...)
	// The edge must not outlive this helper, however it ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
	pr, pw, err := os.Pipe()
	if err != nil {
		return res, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
	client := &http.Client{Transport: tr, Timeout: r.timeout}
	defer tr.CloseIdleConnections()

	var logMu sync.Mutex
	seenMsg := map[string]bool{}
	logDone := make(chan struct{})

	res.edgeCPU, res.originCPU = -1, -1
	origin0 := cpuTime(r.originPID)
	wall0 := time.Now()
	t0 := wall0
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		return res, fmt.Errorf("start edge: %w", err)
	}
	pw.Close()
	setCurrent(cmd)
	defer setCurrent(nil)
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			at := time.Since(t0)
			line := sc.Text()
			msg := logMsg(line)
			logMu.Lock()
			res.allLog = append(res.allLog, event{line, at})
			if msg != "" && !seenMsg[msg] {
				seenMsg[msg] = true
				res.edgeLog = append(res.edgeLog, event{msg, at})
			}
			logMu.Unlock()
		}
		pr.Close()
	}()

	stepSeen := map[string]bool{}
	step := func(name string) {
		if !stepSeen[name] {
			stepSeen[name] = true
			res.steps = append(res.steps, event{name, time.Since(t0)})
		}
	}
	deadline := t0.Add(r.timeout)
	var lastErr error
	for {
		res.attempts++
		err := attempt(client, base, step)
		if err == nil {
			res.playable = time.Since(t0)
			res.edgeCPU = cpuTime(cmd.Process.Pid)
			if o := cpuTime(r.originPID); o >= 0 && origin0 >= 0 {
				res.originCPU = o - origin0
			}
			break
		}
		lastErr = err
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(r.poll)
	}

	// Let the edge finish what it logs around readiness (it reports
	// "node ready" only after pre-warming), without holding up t1.
	waitFor := time.Now().Add(time.Second)
	for time.Now().Before(waitFor) {
		logMu.Lock()
		ready := seenMsg["node ready"]
		logMu.Unlock()
		if ready {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	tr.CloseIdleConnections()

	stopAt := time.Now()
	cmd.Process.Signal(syscall.SIGINT)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case res.exitErr = <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		res.exitErr = fmt.Errorf("did not exit within 10 s of SIGINT; killed: %v", <-exited)
	}
	res.exitTook = time.Since(stopAt)
	<-logDone

	if r.originLog != "" {
		res.origin, res.attached = readOriginLog(r.originLog, originOff, wall0, r.name)
	}
	if res.playable == 0 {
		return res, fmt.Errorf("not playable within %v; last error: %v", r.timeout, lastErr)
	}
	res.breakdown()
	return res, nil
}

// breakdown splits t1 - t0 into phases at the edge's log lines and the
// poller's steps: process start (exec to the mesh listener bound), mesh
// join, until the pull starts ("relaying stream": at once when
// pre-warming, at the next viewer request on demand), the QUIC dial and
// subscribe (until the origin logs the subscriber attached; the origin's
// clock has millisecond resolution, so this and the next phase are
// +-1 ms), the window replay (until index.m3u8 answers 200, which it does
// once the whole upstream window has arrived), and serving the playlist,
// init and last part. A phase whose end is unknown is left out and its
// time goes to the next one.
func (res *result) breakdown() {
	at := func(list []event, name string) (time.Duration, bool) {
		for _, e := range list {
			if e.name == name {
				return e.at, true
			}
		}
		return 0, false
	}
	type mark struct {
		phase string
		at    time.Duration
		ok    bool
	}
	var marks []mark
	add := func(phase string, d time.Duration, ok bool) { marks = append(marks, mark{phase, d, ok}) }
	d, ok := at(res.edgeLog, "mesh listening")
	add("process start to mesh listener", d, ok)
	d, ok = at(res.edgeLog, "joined the mesh")
	add("mesh join", d, ok)
	d, ok = at(res.edgeLog, "relaying stream")
	add("join to pull start", d, ok)
	add("QUIC dial + subscribe (origin clock)", res.attached.at, res.attached.name != "")
	d, ok = at(res.steps, "index.m3u8 200")
	add("window replay to index.m3u8 200", d, ok)
	add("media playlist, init, last part", res.playable, true)
	prev := time.Duration(0)
	for _, m := range marks {
		if !m.ok || m.at < prev {
			continue
		}
		res.phases = append(res.phases, event{m.phase, m.at - prev})
		prev = m.at
	}
}

// current is the edge being measured, stopped if this helper is
// interrupted.
var (
	currentMu sync.Mutex
	current   *exec.Cmd
)

func setCurrent(c *exec.Cmd) {
	currentMu.Lock()
	current = c
	currentMu.Unlock()
}

// stopOnSignal ends the running edge and exits when SIGINT or SIGTERM arrives.
func stopOnSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ch
		currentMu.Lock()
		if current != nil && current.Process != nil {
			current.Process.Signal(syscall.SIGINT)
		}
		currentMu.Unlock()
		os.Exit(130)
	}()
}

// cpuTime returns the CPU time a process's threads have used, or -1.
func cpuTime(pid int) time.Duration {
	if pid <= 0 {
		return -1
	}
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return -1
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
		if err != nil {
			continue // the thread just exited
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		sum += time.Duration(ns)
	}
	return sum
}

// attempt makes one pass over the four steps.
func attempt(c *http.Client, base string, step func(string)) error {
	step("first poll")
	body, code, err := get(c, base+"index.m3u8")
	if err != nil {
		return err
	}
	step("edge http answers")
	if code != http.StatusOK {
		return fmt.Errorf("index.m3u8: %d", code)
	}
	step("index.m3u8 200")
	variant := ""
	for _, l := range strings.Split(string(body), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			variant = l
			break
		}
	}
	if variant == "" {
		return errors.New("index.m3u8 names no variant")
	}
	mediaURL, err := resolve(base+"index.m3u8", variant)
	if err != nil {
		return err
	}
	body, code, err = get(c, mediaURL)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("media playlist: %d", code)
	}
	initURI, lastPart := "", ""
	for _, l := range strings.Split(string(body), "\n") {
		l = strings.TrimSpace(l)
		tag, val, _ := strings.Cut(l, ":")
		switch tag {
		case "#EXT-X-MAP":
			initURI = attr(val, "URI")
		case "#EXT-X-PART":
			lastPart = attr(val, "URI")
		}
	}
	if initURI == "" || lastPart == "" {
		return errors.New("media playlist lists no init or no parts yet")
	}
	step("media.m3u8 lists parts")
	for _, u := range []string{initURI, lastPart} {
		full, err := resolve(mediaURL, u)
		if err != nil {
			return err
		}
		_, code, err := get(c, full)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("%s: %d", u, code)
		}
	}
	step("init and last part 200")
	return nil
}

func get(c *http.Client, u string) ([]byte, int, error) {
	resp, err := c.Get(u)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, err
	}
	return body, resp.StatusCode, nil
}

func resolve(base, ref string) (string, error) {
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	r, err := url.Parse(ref)
	if err != nil {
		return "", err
	}
	return b.ResolveReference(r).String(), nil
}

// attr returns one attribute of an attribute list (quoted or not).
func attr(list, key string) string {
	for list != "" {
		k, rest, ok := strings.Cut(list, "=")
		if !ok {
			return ""
		}
		var v string
		if strings.HasPrefix(rest, `"`) {
			end := strings.IndexByte(rest[1:], '"')
			if end < 0 {
				return ""
			}
			v, rest = rest[1:1+end], strings.TrimPrefix(rest[2+end:], ",")
		} else {
			v, rest, _ = strings.Cut(rest, ",")
		}
		if strings.TrimSpace(k) == key {
			return v
		}
		list = rest
	}
	return ""
}

// logMsg returns the msg field of a log/slog text line.
func logMsg(line string) string {
	i := strings.Index(line, " msg=")
	if i < 0 {
		return ""
	}
	rest := line[i+5:]
	if strings.HasPrefix(rest, `"`) {
		if s, err := strconv.QuotedPrefix(rest); err == nil {
			u, _ := strconv.Unquote(s)
			return u
		}
		return ""
	}
	v, _, _ := strings.Cut(rest, " ")
	return v
}

// readOriginLog returns the origin's log lines from off on, timed by their
// own time= field relative to wall0.
// It also returns when the origin attached this edge's subscription
// (name "" if it did not).
func readOriginLog(path string, off int64, wall0 time.Time, node string) ([]event, event) {
	var attached event
	f, err := os.Open(path)
	if err != nil {
		return nil, attached
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, attached
	}
	var out []event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		ts, ok := strings.CutPrefix(line, "time=")
		if !ok {
			continue
		}
		ts, _, _ = strings.Cut(ts, " ")
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			continue
		}
		msg := logMsg(line)
		if msg == "" {
			continue
		}
		peer := field(line, "peer")
		if msg == "relay subscriber attached" && peer == node && attached.name == "" {
			attached = event{msg, t.Sub(wall0)}
		}
		if peer != "" {
			msg += " (peer " + peer + ")"
		}
		out = append(out, event{msg, t.Sub(wall0)})
	}
	return out, attached
}

// field returns an unquoted key=value field of a slog text line.
func field(line, key string) string {
	i := strings.Index(line, " "+key+"=")
	if i < 0 {
		return ""
	}
	v, _, _ := strings.Cut(line[i+len(key)+2:], " ")
	return strings.Trim(v, `"`)
}

func (res *result) print(w io.Writer, i int, label string, verbose bool) {
	if res.playable > 0 {
		fmt.Fprintf(w, "run %d %s: playable after %s (%d polls; edge exited %s after SIGINT",
			i, label, ms(res.playable), res.attempts, ms(res.exitTook))
		if res.exitErr != nil {
			fmt.Fprintf(w, ", exit: %v", res.exitErr)
		}
		fmt.Fprintln(w, ")")
		if res.edgeCPU >= 0 {
			fmt.Fprintf(w, "  CPU used from t0 to t1: edge %s", ms(res.edgeCPU))
			if res.originCPU >= 0 {
				fmt.Fprintf(w, ", origin %s", ms(res.originCPU))
			}
			fmt.Fprintf(w, " (wall %s, %d cores)\n", ms(res.playable), runtime.NumCPU())
		}
	}
	var b strings.Builder
	for _, e := range res.steps {
		fmt.Fprintf(&b, " %s +%s;", e.name, ms(e.at))
	}
	fmt.Fprintf(w, "  poll steps:%s\n", b.String())
	if len(res.phases) > 0 {
		b.Reset()
		for _, e := range res.phases {
			fmt.Fprintf(&b, " %s %s;", e.name, ms(e.at))
		}
		fmt.Fprintf(w, "  phases:%s\n", b.String())
	}
	b.Reset()
	for _, e := range res.edgeLog {
		if res.playable > 0 && e.at > res.playable+time.Second {
			break // shutdown
		}
		fmt.Fprintf(&b, " %s +%s;", e.name, ms(e.at))
	}
	fmt.Fprintf(w, "  edge log (arrival):%s\n", b.String())
	if len(res.origin) > 0 {
		b.Reset()
		for _, e := range res.origin {
			if res.playable > 0 && e.at > res.playable+time.Second {
				break
			}
			fmt.Fprintf(&b, " %s +%s;", e.name, msInt(e.at))
		}
		fmt.Fprintf(w, "  origin log (its ms clock):%s\n", b.String())
	}
	if verbose || res.playable == 0 {
		for _, e := range res.allLog {
			fmt.Fprintf(w, "    +%s %s\n", ms(e.at), e.name)
		}
	}
}

// waitWindow polls the origin's playlist until it lists n complete segments.
func waitWindow(u string, n int, limit time.Duration) error {
	end := time.Now().Add(limit)
	last := -1
	for time.Now().Before(end) {
		if segs, _, err := window(u); err == nil {
			if len(segs) >= n {
				fmt.Printf("origin window holds %d segments\n", len(segs))
				return nil
			}
			if len(segs) != last {
				last = len(segs)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("origin window did not reach %d segments within %v (has %d)", n, limit, last)
}

// window returns the complete segments' URIs and the summed EXTINF.
func window(u string) ([]string, float64, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	body, code, err := get(c, u)
	if err != nil {
		return nil, 0, err
	}
	if code != http.StatusOK {
		return nil, 0, fmt.Errorf("%s: %d", u, code)
	}
	var segs []string
	var secs float64
	for _, l := range strings.Split(string(body), "\n") {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, "#EXTINF:"); ok {
			v, _, _ = strings.Cut(v, ",")
			f, _ := strconv.ParseFloat(v, 64)
			secs += f
		} else if l != "" && !strings.HasPrefix(l, "#") {
			segs = append(segs, l)
		}
	}
	return segs, secs, nil
}

// describeWindow sums the sizes of the origin's complete segments (HEAD):
// this is what a fresh subscriber is sent before it is ready.
func describeWindow(u string) string {
	segs, secs, err := window(u)
	if err != nil {
		return "unknown: " + err.Error()
	}
	c := &http.Client{Timeout: 5 * time.Second}
	var bytes int64
	for _, s := range segs {
		full, err := resolve(u, s)
		if err != nil {
			continue
		}
		resp, err := c.Head(full)
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.ContentLength > 0 {
			bytes += resp.ContentLength
		}
	}
	return fmt.Sprintf("%d complete segments, %.1f s, %.2f MB (plus the open segment's parts)", len(segs), secs, float64(bytes)/1e6)
}

func freeTCP() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func freeUDP() (int, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer pc.Close()
	return pc.LocalAddr().(*net.UDPAddr).Port, nil
}

// freeTCPUDP returns a port free for both TCP and UDP (memberlist binds both).
func freeTCPUDP() (int, error) {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port, nil
		}
	}
	return 0, errors.New("no port free for both TCP and UDP")
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\"'$") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return out
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + "ms"
}

func msInt(d time.Duration) string {
	return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
}

func percentile(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), v...)
	sort.Slice(s, func(a, b int) bool { return s[a] < s[b] })
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}

func maxOf(v []time.Duration) time.Duration {
	m := v[0]
	for _, d := range v[1:] {
		m = max(m, d)
	}
	return m
}
