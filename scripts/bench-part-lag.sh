#!/usr/bin/env bash
# Benchmarks the part lag of an origin: how long after its media ends each
# LL-HLS part is listed in the media playlist (see scripts/partlag).
#
# It builds relaymesh, starts an origin on free loopback ports, publishes a
# 720p30 H.264 + AAC stream to it over RTMP with ffmpeg, and follows the
# live edge with scripts/partlag. Two modes, run in this order by default:
#
#   live  ffmpeg encodes testsrc2 + sine in real time (-re, libx264 veryfast,
#         GOP 60) and pushes it;
#   copy  the same encode is written once to a FLV clip, which is then
#         pushed with `ffmpeg -re -i clip.flv -c copy`, so no encoder runs
#         beside the origin while measuring.
#
# Each mode gets a fresh origin. Every process the script starts is killed
# on exit, by PID.
#
# Usage (from anywhere):
#   scripts/bench-part-lag.sh                # both modes, 30 s each
#   DURATION=20s MODES="copy" scripts/bench-part-lag.sh
# Environment: DURATION (go duration, default 30s; s or m units), WARMUP
# (default 3s), MODES (default "live copy"), FFMPEG (default ffmpeg),
# PARTLAG_FLAGS (extra flags for partlag, e.g. -v).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

DURATION=${DURATION:-30s}
WARMUP=${WARMUP:-3s}
MODES=${MODES:-live copy}
FFMPEG=${FFMPEG:-ffmpeg}
PARTLAG_FLAGS=${PARTLAG_FLAGS:-}

dur_s=$(seconds "$DURATION")
warm_s=$(seconds "$WARMUP")
if ! [[ $dur_s =~ ^[0-9]+$ && $warm_s =~ ^[0-9]+$ ]] || ((dur_s < 5 || dur_s > 120)); then
	echo "bench-part-lag: DURATION=$DURATION WARMUP=$WARMUP: want whole seconds, DURATION 5s..2m" >&2
	exit 2
fi
# The push outlasts the measurement: start-up, warmup and a margin.
push_s=$((dur_s + warm_s + 7))

bench_init bench-part-lag

echo "== building relaymesh and partlag"
go build -o "$tmp/relaymesh" ./cmd/relaymesh
go build -o /dev/null ./scripts/partlag
# Warm go run's cache so that `go run` below does not compile while the
# stream is being measured.
go run ./scripts/partlag >/dev/null 2>&1 || true

encode_args=(
	-c:v libx264 -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 -b:v 2500k
	-c:a aac -b:a 128k
)
sources=(
	-f lavfi -i testsrc2=size=1280x720:rate=30
	-f lavfi -i sine=frequency=440:sample_rate=48000
)

if [[ " $MODES " == *" copy "* ]]; then
	clip_s=$((dur_s + 10)) # 40 s for the default 30 s
	echo "== encoding a ${clip_s} s FLV clip for copy mode"
	"$FFMPEG" -hide_banner -loglevel error -nostdin -y "${sources[@]}" \
		"${encode_args[@]}" -t "$clip_s" -f flv "$tmp/clip.flv"
	((push_s = push_s < clip_s ? push_s : clip_s))
fi

summaries=()
for mode in $MODES; do
	http_port=$(freeport)
	rtmp_port=$(freeport)
	while [[ $rtmp_port == "$http_port" ]]; do rtmp_port=$(freeport); done
	echo "== mode $mode: origin http 127.0.0.1:$http_port, rtmp 127.0.0.1:$rtmp_port"

	"$tmp/relaymesh" origin --http "127.0.0.1:$http_port" --rtmp "127.0.0.1:$rtmp_port" \
		--srt "" --rtsp "" --mesh "" --relay "" --log-level warn \
		>"$tmp/origin-$mode.log" 2>&1 &
	origin_pid=$!
	pids+=("$origin_pid")
	for _ in $(seq 1 100); do
		curl -fsS -o /dev/null "http://127.0.0.1:$http_port/healthz" 2>/dev/null && break
		kill -0 "$origin_pid" 2>/dev/null || { cat "$tmp/origin-$mode.log" >&2; exit 1; }
		sleep 0.1
	done

	rtmp_url="rtmp://127.0.0.1:$rtmp_port/live/bench"
	case $mode in
	live)
		"$FFMPEG" -hide_banner -loglevel error -nostdin -re "${sources[@]}" \
			"${encode_args[@]}" -t "$push_s" -f flv "$rtmp_url" \
			>"$tmp/ffmpeg-$mode.log" 2>&1 &
		;;
	copy)
		"$FFMPEG" -hide_banner -loglevel error -nostdin -re -i "$tmp/clip.flv" \
			-c copy -t "$push_s" -f flv "$rtmp_url" \
			>"$tmp/ffmpeg-$mode.log" 2>&1 &
		;;
	*)
		echo "bench-part-lag: unknown mode $mode (want live or copy)" >&2
		exit 2
		;;
	esac
	ffmpeg_pid=$!
	pids+=("$ffmpeg_pid")

	out="$tmp/partlag-$mode.txt"
	# shellcheck disable=SC2086 # PARTLAG_FLAGS is split on purpose
	if ! go run ./scripts/partlag -url "http://127.0.0.1:$http_port/live/bench/media.m3u8" \
		-duration "$DURATION" -warmup "$WARMUP" $PARTLAG_FLAGS >"$out"; then
		cat "$out"
		echo "bench-part-lag: partlag failed in mode $mode; ffmpeg and origin logs:" >&2
		cat "$tmp/ffmpeg-$mode.log" "$tmp/origin-$mode.log" >&2
		exit 1
	fi
	sed 's/^/  /' "$out"
	summaries+=("$mode: $(grep '^partlag ' "$out")")

	kill "$ffmpeg_pid" "$origin_pid" 2>/dev/null || true
	wait "$ffmpeg_pid" 2>/dev/null || true
	wait "$origin_pid" 2>/dev/null || true
	pids=() # both reaped: never signal their PIDs again
done

echo "== summary (DURATION=$DURATION, WARMUP=$WARMUP, $(nproc) cores)"
printf '%s\n' "${summaries[@]}"
