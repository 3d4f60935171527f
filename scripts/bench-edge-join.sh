#!/usr/bin/env bash
# Benchmarks how long a fresh edge takes to serve a playable stream: from
# starting the `relaymesh edge` process to the moment its index.m3u8 answers
# 200, its media playlist lists parts, and the init segment and the last
# listed part both fetch 200 (see scripts/edgejoin).
#
# It builds relaymesh and scripts/edgejoin once, starts an origin on free
# loopback ports with a mesh and relay listener, publishes a live 720p30
# H.264 + AAC stream to it with ffmpeg (-re, testsrc2 + sine, libx264
# veryfast, a GOP of GOP seconds, 2.5 Mb/s), waits until it is live and, by default,
# until the origin's window is full (12 segments: what a fresh subscriber
# is replayed in a long-running show). Then, for each mode, RUNS times:
# start a fresh edge (new node name and ports), poll every 5 ms until
# playable, stop it with SIGINT and wait for it.
#
#   prewarm   the default edge (--prewarm 3): it subscribes to the mesh's
#             most watched streams before reporting ready
#   ondemand  --prewarm 0: the first viewer request triggers the pull
#
# Every process the script starts is killed on exit, by PID.
#
# Usage (from anywhere):
#   scripts/bench-edge-join.sh
#   RUNS=20 MODES=ondemand scripts/bench-edge-join.sh
# Environment: RUNS (default 10, 1..100), MODES (default "prewarm ondemand"),
# WINDOW (complete segments to wait for before the first run, default 12;
# 0: start as soon as the stream is live), GOP (key-frame interval in
# seconds, 1 or 2, default 1: what most encoders for low latency send; with
# 2 s more runs arrive when the open segment already holds PART-HOLD-BACK),
# FFMPEG (default ffmpeg),
# EDGEJOIN_FLAGS (extra edgejoin flags, e.g. -v or "-log-level debug").
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

RUNS=${RUNS:-10}
MODES=${MODES:-prewarm ondemand}
WINDOW=${WINDOW:-12}
GOP=${GOP:-1}
FFMPEG=${FFMPEG:-ffmpeg}
EDGEJOIN_FLAGS=${EDGEJOIN_FLAGS:-}
if ! [[ $RUNS =~ ^[0-9]+$ && $WINDOW =~ ^[0-9]+$ && $GOP =~ ^[12]$ ]] || ((RUNS < 1 || RUNS > 100 || WINDOW > 12)); then
	echo "bench-edge-join: RUNS=$RUNS WINDOW=$WINDOW GOP=$GOP: want RUNS 1..100, WINDOW 0..12, GOP 1 or 2" >&2
	exit 2
fi
nmodes=$(wc -w <<<"$MODES")
# The push outlasts the benchmark: start-up, window fill, and each run's
# join, stop (the mesh leave is bounded by 2 s) and pause, with margin.
push_s=$((60 + RUNS * nmodes * 8))

bench_init bench-edge-join

echo "== load average at start (other work on this machine skews the figures): $(cut -d" " -f1-3 /proc/loadavg)"

echo "== building relaymesh and edgejoin"
go build -o "$tmp/relaymesh" ./cmd/relaymesh
go build -o "$tmp/edgejoin" ./scripts/edgejoin

ports=()
while ((${#ports[@]} < 4)); do
	p=$(freeport)
	[[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
done
http_port=${ports[0]} rtmp_port=${ports[1]} mesh_port=${ports[2]} relay_port=${ports[3]}
key="bench-edge-join-$RANDOM$RANDOM"

echo "== origin: http 127.0.0.1:$http_port, rtmp :$rtmp_port, mesh :$mesh_port, relay :$relay_port"
"$tmp/relaymesh" origin --node-name origin --http "127.0.0.1:$http_port" --rtmp "127.0.0.1:$rtmp_port" \
	--srt "" --rtsp "" --mesh "127.0.0.1:$mesh_port" --relay "127.0.0.1:$relay_port" \
	--cluster-key "$key" >"$tmp/origin.log" 2>&1 &
origin_pid=$!
pids+=("$origin_pid")
for _ in $(seq 1 100); do
	curl -fsS -o /dev/null "http://127.0.0.1:$http_port/healthz" 2>/dev/null && break
	kill -0 "$origin_pid" 2>/dev/null || { cat "$tmp/origin.log" >&2; exit 1; }
	sleep 0.1
done

"$FFMPEG" -hide_banner -loglevel error -nostdin -re \
	-f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
	-c:v libx264 -preset veryfast -g $((GOP * 30)) -keyint_min $((GOP * 30)) -sc_threshold 0 -b:v 2500k \
	-c:a aac -b:a 128k -t "$push_s" -f flv "rtmp://127.0.0.1:$rtmp_port/live/bench" \
	>"$tmp/ffmpeg.log" 2>&1 &
ffmpeg_pid=$!
pids+=("$ffmpeg_pid")

media="http://127.0.0.1:$http_port/live/bench/media.m3u8"
echo "== waiting for the stream to be live"
wait_live "$media" "$ffmpeg_pid" "$tmp/ffmpeg.log" "$tmp/origin.log"

summaries=()
first=1
cpu_start=$(date +%s%N) ffmpeg_t0=$(cpu_ticks "$ffmpeg_pid") origin_t0=$(cpu_ticks "$origin_pid")
for mode in $MODES; do
	case $mode in
	prewarm) extra=() ;;
	ondemand) extra=(--prewarm 0) ;;
	*)
		echo "bench-edge-join: unknown mode $mode (want prewarm or ondemand)" >&2
		exit 2
		;;
	esac
	wait_window=0
	if ((first && WINDOW > 0)); then
		echo "== waiting for the origin's window to hold $WINDOW segments"
		wait_window=$WINDOW
	fi
	first=0
	echo "== mode $mode: $RUNS runs"
	out="$tmp/edgejoin-$mode.txt"
	# shellcheck disable=SC2086 # EDGEJOIN_FLAGS is split on purpose
	if ! "$tmp/edgejoin" -bin "$tmp/relaymesh" -join "127.0.0.1:$mesh_port" -cluster-key "$key" \
		-runs "$RUNS" -label "$mode" -origin "$media" -wait-window "$wait_window" \
		-origin-log "$tmp/origin.log" -origin-pid "$origin_pid" $EDGEJOIN_FLAGS -- "${extra[@]}" >"$out"; then
		sed 's/^/  /' "$out"
		echo "bench-edge-join: mode $mode failed; origin log tail:" >&2
		tail -n 40 "$tmp/origin.log" >&2
		exit 1
	fi
	sed 's/^/  /' "$out"
	summaries+=("$(grep '^edgejoin ' "$out")")
	kill -0 "$ffmpeg_pid" 2>/dev/null || {
		echo "bench-edge-join: ffmpeg stopped during mode $mode; results may not be from a live stream" >&2
		cat "$tmp/ffmpeg.log" >&2
		exit 1
	}
done

el_ms=$((($(date +%s%N) - cpu_start) / 1000000))
echo "== CPU while benchmarking (${el_ms} ms): ffmpeg $((($(cpu_ticks "$ffmpeg_pid") - ffmpeg_t0) * 1000 * 100 / hz / el_ms))% of one core, origin $((($(cpu_ticks "$origin_pid") - origin_t0) * 1000 * 100 / hz / el_ms))%"
echo "== summary ($(nproc) cores; key-frame interval $GOP s, parts 200 ms)"
printf '%s\n' "${summaries[@]}"
echo "load average at end: $(cut -d" " -f1-3 /proc/loadavg)"
