#!/usr/bin/env bash
# Benchmarks glass-to-glass latency in a real player: hls.js 1.7.4 (the copy
# relaymesh embeds) in headless Chromium (scripts/latency), playing an
# origin, an edge one hop from it and an edge two hops from it, all on
# loopback:
#
#   ffmpeg --RTMP--> origin --QUIC--> edge-1 --QUIC--> edge-2 (--parent edge-1)
#                      |                 |                |
#                   Chromium          Chromium         Chromium   (one at a time)
#
# Two players: "defaults" (a bare page: new Hls({lowLatencyMode: true}))
# and "builtin" (relaymesh's player page, /live/{stream}/, with the hls.js
# settings of edge/player/page.js). Each run opens a fresh browser on one
# node's index.m3u8 and plays DURATION from the first frame. Glass-to-glass
# is Date.now() - hls.playingDate (PROGRAM-DATE-TIME, the origin's wall
# clock when the segment's first frame arrived at the RTMP ingest, plus the
# position in the segment), sampled every 250 ms; its p50 and max are over
# the samples after the first SKIP of playback. First frame is from
# navigation start to the first frame presented; stalls are 'waiting'
# events after playback started. Runs go round-robin (run 1 of every target
# and player, then run 2, ...) so that a change in the machine's load hits
# all alike.
#
# Each viewer must stay on the node it opened. Every node runs with
# --origin-offload=false, so that the origin serves a newcomer's
# index.m3u8 instead of redirecting it to an edge; and the browser refuses
# the player's content steering manifest (scripts/latency without
# -steering), so that hls.js stays on the pathway it started on. (Steering
# alone is not enough on a busy machine: it drops a node above 95% CPU from
# the list, and the viewer moves, see docs/routing.md.) Each run's line
# lists the host:port that served its parts and segments, and the script
# checks that it is the target's.
#
# Every process the script starts is stopped on exit, by PID.
#
# Usage (from anywhere):
#   scripts/bench-latency.sh
#   RUNS=5 DURATION=30s TARGETS="edge-2" PLAYERS=builtin scripts/bench-latency.sh
# Environment: RUNS (1..20, default 3), DURATION (10s..2m, default 20s),
# SKIP (default 5s), GOP_S (keyframe interval in seconds, 1..4, default 1),
# PART_TARGET (origin --part-target, default the node's own), TARGETS
# (default "origin edge-1 edge-2"), PLAYERS (default "defaults builtin"),
# FFMPEG (default ffmpeg), CHROMIUM (default chromium), RELAYMESH (a
# prebuilt binary instead of building ./cmd/relaymesh), KEEP (a directory
# to copy the per-run JSON records and logs to).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

RUNS=${RUNS:-3}
DURATION=${DURATION:-20s}
SKIP=${SKIP:-5s}
GOP_S=${GOP_S:-1}
PART_TARGET=${PART_TARGET:-}
TARGETS=${TARGETS:-origin edge-1 edge-2}
PLAYERS=${PLAYERS:-defaults builtin}
FFMPEG=${FFMPEG:-ffmpeg}
CHROMIUM=${CHROMIUM:-chromium}
KEEP=${KEEP:-}

dur_s=$(seconds "$DURATION")
skip_s=$(seconds "$SKIP")
if ! [[ $RUNS =~ ^[0-9]+$ && $dur_s =~ ^[0-9]+$ && $skip_s =~ ^[0-9]+$ && $GOP_S =~ ^[0-9]+$ ]] ||
	((RUNS < 1 || RUNS > 20 || dur_s < 10 || dur_s > 120 || skip_s >= dur_s || GOP_S < 1 || GOP_S > 4)); then
	echo "bench-latency: RUNS=$RUNS DURATION=$DURATION SKIP=$SKIP GOP_S=$GOP_S: want RUNS 1..20, DURATION 10s..2m in whole seconds, SKIP below DURATION, GOP_S 1..4" >&2
	exit 2
fi
for t in $TARGETS; do
	case $t in origin | edge-1 | edge-2) ;; *)
		echo "bench-latency: TARGETS: unknown target $t (want origin, edge-1, edge-2)" >&2
		exit 2
		;;
	esac
done
for p in $PLAYERS; do
	case $p in defaults | builtin) ;; *)
		echo "bench-latency: PLAYERS: unknown player $p (want defaults, builtin)" >&2
		exit 2
		;;
	esac
done
command -v "$CHROMIUM" >/dev/null || {
	echo "bench-latency: $CHROMIUM not found (apt-get install chromium)" >&2
	exit 2
}
n_targets=$(wc -w <<<"$TARGETS")
n_players=$(wc -w <<<"$PLAYERS")
# Start-up (three nodes, first segments), then every run with up to 25 s
# of browser start and first frame on top of DURATION, and a margin.
push_s=$((40 + RUNS * n_targets * n_players * (dur_s + 25)))

bench_init bench-latency

echo "== load average at start (other work on this machine skews the figures): $(cut -d" " -f1-3 /proc/loadavg)"
if [[ -n ${RELAYMESH:-} ]]; then
	echo "== building latency (relaymesh: $RELAYMESH)"
	cp "$RELAYMESH" "$tmp/relaymesh"
else
	echo "== building relaymesh and latency"
	go build -o "$tmp/relaymesh" ./cmd/relaymesh
fi
go build -o "$tmp/latency" ./scripts/latency

key="bench-latency-$RANDOM$RANDOM"
freeports 10
o_http=${ports[0]} o_rtmp=${ports[1]} o_mesh=${ports[2]} o_relay=${ports[3]}
e1_http=${ports[4]} e1_mesh=${ports[5]} e1_relay=${ports[6]}
e2_http=${ports[7]} e2_mesh=${ports[8]} e2_relay=${ports[9]}

# --origin-offload=false on every node: each node ranks itself first for a
# viewer that arrives there, so the player stays where it was sent.
common=(--cluster-key "$key" --origin-offload=false --log-level info)
origin_cmd=("$tmp/relaymesh" origin --node-name origin --http "127.0.0.1:$o_http" --rtmp "127.0.0.1:$o_rtmp"
	--srt "" --rtsp "" --mesh "127.0.0.1:$o_mesh" --relay "127.0.0.1:$o_relay" "${common[@]}")
if [[ -n $PART_TARGET ]]; then
	origin_cmd+=(--part-target "$PART_TARGET")
fi
edge1_cmd=("$tmp/relaymesh" edge --node-name edge-1 --http "127.0.0.1:$e1_http" --mesh "127.0.0.1:$e1_mesh"
	--relay "127.0.0.1:$e1_relay" --join "127.0.0.1:$o_mesh" "${common[@]}")
edge2_cmd=("$tmp/relaymesh" edge --node-name edge-2 --http "127.0.0.1:$e2_http" --mesh "127.0.0.1:$e2_mesh"
	--relay "127.0.0.1:$e2_relay" --join "127.0.0.1:$o_mesh" --parent edge-1 "${common[@]}")

echo "== origin: $(printf '%q ' "${origin_cmd[@]:1}")"
"${origin_cmd[@]}" >"$tmp/origin.log" 2>&1 &
origin_pid=$!
pids+=("$origin_pid")
wait_http "http://127.0.0.1:$o_http/healthz" "$origin_pid"

gop=$((30 * GOP_S))
echo "== ffmpeg: 640x360 30 fps H.264 700 kb/s, GOP $gop frames ($GOP_S s), AAC 64 kb/s, ${push_s} s"
"$FFMPEG" -hide_banner -loglevel error -nostdin -re \
	-f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
	-c:v libx264 -preset veryfast -g "$gop" -keyint_min "$gop" -sc_threshold 0 -b:v 700k -maxrate 700k -bufsize 1400k \
	-c:a aac -b:a 64k -t "$push_s" -f flv "rtmp://127.0.0.1:$o_rtmp/live/bench" \
	>"$tmp/ffmpeg.log" 2>&1 &
ffmpeg_pid=$!
pids+=("$ffmpeg_pid")
wait_parts "http://127.0.0.1:$o_http/live/bench/media.m3u8"

echo "== edge-1: $(printf '%q ' "${edge1_cmd[@]:1}")"
"${edge1_cmd[@]}" >"$tmp/edge-1.log" 2>&1 &
edge1_pid=$!
pids+=("$edge1_pid")
wait_http "http://127.0.0.1:$e1_http/healthz" "$edge1_pid"
wait_parts "http://127.0.0.1:$e1_http/live/bench/media.m3u8"

# edge-2 must find edge-1 among the stream's holders: wait until the
# origin's view of the mesh lists the stream on edge-1.
wait_holder "http://127.0.0.1:$o_http/api/mesh" edge-1 bench

echo "== edge-2: $(printf '%q ' "${edge2_cmd[@]:1}")"
"${edge2_cmd[@]}" >"$tmp/edge-2.log" 2>&1 &
edge2_pid=$!
pids+=("$edge2_pid")
wait_http "http://127.0.0.1:$e2_http/healthz" "$edge2_pid"
wait_parts "http://127.0.0.1:$e2_http/live/bench/media.m3u8"
if ! grep 'msg="relaying stream"' "$tmp/edge-2.log" | tail -n 1 | grep -q 'upstream=edge-1'; then
	fail "edge-2 does not relay from edge-1: $(grep 'relaying stream' "$tmp/edge-2.log" || echo 'no relaying line')"
fi
echo "   $(grep 'msg="relaying stream"' "$tmp/edge-1.log" | tail -n 1 | sed 's/^time=[^ ]* //')"
echo "   $(grep 'msg="relaying stream"' "$tmp/edge-2.log" | tail -n 1 | sed 's/^time=[^ ]* //')"
echo "   $(curl -fsS "http://127.0.0.1:$o_http/live/bench/media.m3u8" | grep -E '^#EXT-X-(PART-INF|SERVER-CONTROL)')"

# http_of TARGET: the node's HTTP port.
http_of() {
	case $1 in
	origin) echo "$o_http" ;;
	edge-1) echo "$e1_http" ;;
	edge-2) echo "$e2_http" ;;
	esac
}

echo "== $RUNS run(s) of $DURATION per target and player (p50/max after the first $SKIP)"
: >"$tmp/lines.txt"
: >"$tmp/budget.txt"
for run in $(seq 1 "$RUNS"); do
	for target in $TARGETS; do
		for player in $PLAYERS; do
			port=$(http_of "$target")
			out="$tmp/run-$target-$player-$run"
			if ! "$tmp/latency" -url "http://127.0.0.1:$port/live/bench/index.m3u8" -player "$player" \
				-label "$target" -duration "$DURATION" -skip "$SKIP" -chromium "$CHROMIUM" \
				-json "$out.json" >"$out.txt" 2>"$out.err"; then
				cat "$out.txt" "$out.err" >&2
				fail "run $run of $player at $target failed"
			fi
			kill -0 "$ffmpeg_pid" 2>/dev/null || fail "ffmpeg stopped during the runs"
			line=$(grep '^latency ' "$out.txt")
			# Every part and segment must come from the target node.
			hosts=$(tr ' ' '\n' <<<"$line" | sed -n 's/^hosts=//p')
			if ! [[ $hosts =~ ^127\.0\.0\.1:$port=[0-9]+$ ]]; then
				fail "run $run of $player at $target was served by $hosts, not 127.0.0.1:$port"
			fi
			echo "run=$run $line"
			echo "    $(grep '^budget ' "$out.txt")"
			echo "run=$run $line" >>"$tmp/lines.txt"
			grep '^budget ' "$out.txt" >>"$tmp/budget.txt"
		done
	done
done
if [[ -n $KEEP ]]; then
	mkdir -p "$KEEP"
	cp "$tmp"/run-* "$tmp"/*.log "$tmp/lines.txt" "$tmp/budget.txt" "$KEEP/"
fi

# summary TARGET PLAYER: one line over the runs of that pair.
summary() {
	grep " target=$1 player=$2 " "$tmp/lines.txt" | tr ' ' '\n' | awk -F= -v t="$1" -v p="$2" '
		function ms(v) { sub(/ms$/, "", v); return v + 0 }
		function median(a, n,  i, j, x) {
			for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		$1 == "run" { n++ }
		$1 == "first_frame" { ff[n] = ms($2); if (ms($2) > ffmax) ffmax = ms($2) }
		$1 == "g2g_p50" { g[n] = ms($2); if (n == 1 || ms($2) < glo) glo = ms($2); if (ms($2) > ghi) ghi = ms($2) }
		$1 == "g2g_max" { if (ms($2) > gmax) gmax = ms($2) }
		$1 == "stalls" { stalls += $2 }
		$1 == "stalled" { stalled += ms($2) }
		END {
			printf "%s %s: runs=%d g2g_p50 median=%.0fms range=%.0f-%.0fms g2g_max=%.0fms first_frame median=%.0fms max=%.0fms stalls=%d stalled=%.0fms\n",
				t, p, n, median(g, n), glo, ghi, gmax, median(ff, n), ffmax, stalls, stalled
		}'
}

echo "== summary (RUNS=$RUNS, DURATION=$DURATION, SKIP=$SKIP, GOP_S=$GOP_S, PART_TARGET=${PART_TARGET:-default}, $(nproc) cores, load average $(cut -d" " -f1-3 /proc/loadavg))"
for target in $TARGETS; do
	for player in $PLAYERS; do
		summary "$target" "$player"
	done
done
