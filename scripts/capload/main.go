//go:build linux

// Command capload is the lean LL-HLS load generator of the serving-capacity
// benchmark (scripts/bench-capacity.sh): it drives more viewers from one
// core than one core of relaymesh can serve, so that the server, not the
// generator, runs out first.
//
// Each viewer is one HTTP/1.1 keep-alive connection. All of them are
// driven by one goroutine locked to its thread (engine.go): non-blocking
// sockets in one epoll set, requests built in reused buffers, response
// heads parsed in place, part bodies read into a shared scratch buffer and
// dropped; nothing is allocated per request once a viewer's buffers have
// grown. Per request that is a write, a read (or a few for a large part)
// and a share of an epoll_wait: about what the server spends in the
// kernel for the same request, which a static file server barely adds to.
//
// A viewer plays like hls.js in low-latency mode, as scripts/viewers does,
// minus steering and error policies: the multivariant playlist (-url),
// its first variant's media playlist without directives, a start three
// parts (PART-HOLD-BACK) behind the last listed part, the init section
// once, then every part in order. Past the last listed part it reloads the
// media playlist:
//
//   - -mode llhls: a blocking reload, _HLS_msn and _HLS_part naming the
//     part it needs next (never _HLS_skip, never gzip: the bytes are the
//     same as a static copy's);
//   - -mode poll: a plain reload every -poll (default PART-TARGET, so one
//     playlist request per part as with blocking), for a static file
//     server: the same request mix minus the blocking.
//
// Each viewer keeps a simulated buffer: playback starts with the first
// part, the playhead moves in real time and each part adds its duration.
// A part that arrives after the buffer ran dry ends a stall; a viewer
// still dry at the end of a measuring window is counted as stalled too.
// Errors (refused connections, timeouts, non-200 answers, a connection
// the server closed) restart the viewer's session a second later and are
// counted.
//
// Viewers ramp in steps (-steps 200,400,600): each step adds viewers
// evenly over -spread, waits -settle, then measures for -hold and prints
// one line: viewers, playing, stalls, errors, requests/s by kind, Mbit/s,
// the smallest buffer any viewer had left when a part arrived, the
// generator's own CPU (process and its whole core, -gen-core) and, for
// -server-pids, the server's CPU, the server core's busy share
// (-server-core), its RSS and VmHWM, and per viewer the server CPU (µs
// per viewer-second) and RSS (kB) above an idle baseline measured for
// -baseline before the first step; -other-pids (processes that share the
// server's core, such as the origin behind a static server) are reported
// apart as other_cpu. A step passes with zero stalls, zero
// errors, every viewer playing and the generator's core under
// -max-gen-core percent; the ramp stops at the first step that does not.
// The last line is the summary:
//
//	capload mode=llhls held=600 stop=stalls@800 ...(the held step's figures)
//
// held is the largest step that passed (0 if none), stop says why the ramp
// ended (stalls, errors, not_playing or gen_saturated at which step, or
// max when every step passed).
//
// -mode mirror is the benchmark's copier for the static server: it follows
// the relaymesh stream at -url with blocking reloads (net/http; not the
// hot path) and writes the multivariant playlist (its variant renamed
// media.m3u8), the init sections, every part and then each media playlist,
// byte for byte, into -dir, each file written aside and renamed into
// place, so a poller never sees a listed part missing. Old parts are
// pruned.
//
// Usage:
//
//	capload -url http://127.0.0.1:8080/live/bench/index.m3u8 -mode llhls -steps 100,200 -server-pids 1234
//	capload -url http://127.0.0.1:8081/live/bench/index.m3u8 -mode poll -steps 100,200 -server-pids 1235,1236
//	capload -url http://127.0.0.1:8080/live/bench/index.m3u8 -mode mirror -dir /dev/shm/www/live/bench
//
// Linux only: epoll and /proc.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is the parsed command line.
type config struct {
	addr, indexPath string
	rawURL          string
	mode            mode
	mirror          bool
	dir             string
	steps           []int
	spread, settle  time.Duration
	hold, baseline  time.Duration
	poll            time.Duration
	timeout         time.Duration
	blockTimeout    time.Duration
	serverPIDs      []string
	otherPIDs       []string
	serverCore      int
	genCore         int
	maxGenCore      float64
	verbose         bool
	cpuProfile      string
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("capload", flag.ContinueOnError)
	var c config
	var modeName, steps, pids, others string
	fs.StringVar(&c.rawURL, "url", "", "the multivariant playlist, http://HOST:PORT/live/{stream}/index.m3u8")
	fs.StringVar(&modeName, "mode", "llhls", "llhls (blocking reload), poll (plain reloads every -poll) or mirror (copy the stream into -dir)")
	fs.StringVar(&c.dir, "dir", "", "mirror: the directory to write the stream's files into")
	fs.StringVar(&steps, "steps", "100", "comma-separated viewer counts to ramp through, increasing")
	fs.DurationVar(&c.spread, "spread", 2*time.Second, "a step's new viewers arrive evenly over this")
	fs.DurationVar(&c.settle, "settle", 5*time.Second, "wait after a step's arrivals before measuring")
	fs.DurationVar(&c.hold, "hold", 20*time.Second, "measuring window of each step")
	fs.DurationVar(&c.baseline, "baseline", 5*time.Second, "idle measurement of the server before the first step (0: none)")
	fs.DurationVar(&c.poll, "poll", 0, "poll: playlist reload interval (default PART-TARGET)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "deadline of a part or plain playlist request")
	fs.DurationVar(&c.blockTimeout, "block-timeout", 3*time.Second, "deadline of a blocking playlist request")
	fs.StringVar(&pids, "server-pids", "", "comma-separated PIDs whose CPU and memory make up the server")
	fs.StringVar(&others, "other-pids", "", "comma-separated PIDs sharing the server's core, whose CPU is reported apart (other_cpu)")
	fs.IntVar(&c.serverCore, "server-core", -1, "the server's core, to report its busy share (-1: none)")
	fs.IntVar(&c.genCore, "gen-core", -1, "this generator's core, to report its busy share (-1: none)")
	fs.Float64Var(&c.maxGenCore, "max-gen-core", 90, "a step whose generator core is at least this busy (%) does not count")
	fs.BoolVar(&c.verbose, "v", false, "log viewer errors")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the generator's own CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	u, err := url.Parse(c.rawURL)
	if err != nil || u.Scheme != "http" || u.Host == "" || !strings.HasPrefix(u.Path, "/") {
		return nil, fmt.Errorf("-url %q: want http://HOST:PORT/path/index.m3u8", c.rawURL)
	}
	c.addr = u.Host
	if u.Port() == "" {
		c.addr += ":80"
	}
	c.indexPath = u.RequestURI()
	switch modeName {
	case "llhls":
		c.mode = modeLLHLS
	case "poll":
		c.mode = modePoll
	case "mirror":
		c.mirror = true
		if c.dir == "" {
			return nil, errors.New("-mode mirror needs -dir")
		}
		return &c, nil
	default:
		return nil, fmt.Errorf("-mode %q: want llhls, poll or mirror", modeName)
	}
	if c.steps, err = parseSteps(steps); err != nil {
		return nil, err
	}
	if c.serverPIDs, err = parsePIDs("-server-pids", pids); err != nil {
		return nil, err
	}
	if c.otherPIDs, err = parsePIDs("-other-pids", others); err != nil {
		return nil, err
	}
	switch {
	case c.spread < 0 || c.settle < 0 || c.baseline < 0:
		return nil, errors.New("-spread, -settle and -baseline cannot be negative")
	case c.hold < time.Second:
		return nil, fmt.Errorf("-hold %v: at least 1s", c.hold)
	case c.poll < 0 || (c.poll > 0 && c.poll < 10*time.Millisecond):
		return nil, fmt.Errorf("-poll %v: at least 10ms (or 0 for PART-TARGET)", c.poll)
	case c.timeout <= 0 || c.blockTimeout <= 0:
		return nil, errors.New("-timeout and -block-timeout must be positive")
	case c.maxGenCore <= 0 || c.maxGenCore > 100:
		return nil, fmt.Errorf("-max-gen-core %v: want 1..100", c.maxGenCore)
	}
	return &c, nil
}

// parseSteps reads increasing positive viewer counts.
func parseSteps(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || n > 1_000_000 {
			return nil, fmt.Errorf("-steps: %q is not a viewer count (1..1000000)", f)
		}
		if len(out) > 0 && n <= out[len(out)-1] {
			return nil, fmt.Errorf("-steps: %d after %d: steps must increase", n, out[len(out)-1])
		}
		out = append(out, n)
	}
	return out, nil
}

// parsePIDs reads a comma-separated list of PIDs.
func parsePIDs(flagName, s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if n, err := strconv.Atoi(p); err != nil || n <= 0 {
			return nil, fmt.Errorf("%s: %q is not a PID", flagName, p)
		}
		out = append(out, p)
	}
	return out, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "capload:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "capload:", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "capload:", err)
			os.Exit(2)
		}
		defer pprof.StopCPUProfile()
	}
	if cfg.mirror {
		err = runMirror(ctx, cfg, log)
	} else {
		err = runRamp(ctx, cfg, log, os.Stdout)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "capload:", err)
		os.Exit(1)
	}
}
