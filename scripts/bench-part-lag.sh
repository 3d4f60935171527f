#!/usr/bin/env bash
# Benchmarks the part lag of an origin: how long after its media ends each
# LL-HLS part is listed in the media playlist (see scripts/partlag).
#
# It builds relaymesh, starts an origin on free loopback ports, publishes a
# 720p30 H.264 + AAC stream to it with ffmpeg over RTMP (or SRT or RTSP,
# see PROTOS), and follows the live edge with scripts/partlag. Two modes,
# run in this order by default:
#
#   live  ffmpeg encodes testsrc2 + sine in real time (-re, libx264 veryfast,
#         GOP 60) and pushes it;
#   copy  the same encode is written once to a Matroska clip, which is then
#         pushed with `ffmpeg -re -i clip.mkv -c copy`, so no encoder runs
#         beside the origin while measuring. (Matroska keeps every frame
#         its own packet, so -re paces frames one by one whatever the
#         protocol; SRT's MPEG-TS is muxed with -muxdelay 0 and
#         -pes_payload_size 0 so that audio frames are not bundled.)
#
# Each mode gets a fresh origin. Every process the script starts is killed
# on exit, by PID.
#
# Usage (from anywhere):
#   scripts/bench-part-lag.sh                # both modes, 30 s each
#   DURATION=20s MODES="copy" scripts/bench-part-lag.sh
#   MODES=copy PROTOS="rtmp srt rtsp" scripts/bench-part-lag.sh
# Environment: DURATION (go duration, default 30s; s or m units), WARMUP
# (default 3s), MODES (default "live copy"), PROTOS (default "rtmp"; any of
# rtmp srt rtsp), BFRAMES (x264 B-frames; default: x264's own), FFMPEG
# (default ffmpeg), PARTLAG_FLAGS (extra flags for partlag, e.g. -v).
#
# PROGRAM-DATE-TIME is the wall clock when a segment's first frame reached
# the origin, so the lag is the origin's own work (demux, packaging,
# listing), not the protocol's buffering: SRT's receiver latency is spent
# before a frame arrives.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

DURATION=${DURATION:-30s}
WARMUP=${WARMUP:-3s}
MODES=${MODES:-live copy}
PROTOS=${PROTOS:-rtmp}
BFRAMES=${BFRAMES:-}
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
if [[ -n $BFRAMES ]]; then
	encode_args+=(-bf "$BFRAMES")
fi
sources=(
	-f lavfi -i testsrc2=size=1280x720:rate=30
	-f lavfi -i sine=frequency=440:sample_rate=48000
)

if [[ " $MODES " == *" copy "* ]]; then
	clip_s=$((dur_s + 10)) # 40 s for the default 30 s
	echo "== encoding a ${clip_s} s Matroska clip for copy mode"
	"$FFMPEG" -hide_banner -loglevel error -nostdin -y "${sources[@]}" \
		"${encode_args[@]}" -t "$clip_s" -f matroska "$tmp/clip.mkv"
	((push_s = push_s < clip_s ? push_s : clip_s))
fi

summaries=()
for mode in $MODES; do
for proto in $PROTOS; do
	http_port=$(freeport)
	ingest_port=$(freeport)
	while [[ $ingest_port == "$http_port" ]]; do ingest_port=$(freeport); done
	run="$mode-$proto"
	echo "== $run: origin http 127.0.0.1:$http_port, $proto 127.0.0.1:$ingest_port"

	listeners=(--rtmp "" --srt "" --rtsp "")
	case $proto in
	rtmp)
		listeners[1]="127.0.0.1:$ingest_port"
		dst=(-f flv "rtmp://127.0.0.1:$ingest_port/live/bench")
		;;
	srt)
		listeners[3]="127.0.0.1:$ingest_port"
		dst=(-f mpegts -muxdelay 0 -pes_payload_size 0 "srt://127.0.0.1:$ingest_port?streamid=publish:bench")
		;;
	rtsp)
		listeners[5]="127.0.0.1:$ingest_port"
		dst=(-f rtsp -rtsp_transport tcp "rtsp://127.0.0.1:$ingest_port/live/bench")
		;;
	*)
		echo "bench-part-lag: unknown protocol $proto (want rtmp, srt or rtsp)" >&2
		exit 2
		;;
	esac
	"$tmp/relaymesh" origin --http "127.0.0.1:$http_port" "${listeners[@]}" --rtsp-udp "" \
		--mesh "" --relay "" --log-level warn \
		>"$tmp/origin-$run.log" 2>&1 &
	origin_pid=$!
	pids+=("$origin_pid")
	for _ in $(seq 1 100); do
		curl -fsS -o /dev/null "http://127.0.0.1:$http_port/healthz" 2>/dev/null && break
		kill -0 "$origin_pid" 2>/dev/null || { cat "$tmp/origin-$run.log" >&2; exit 1; }
		sleep 0.1
	done

	case $mode in
	live)
		"$FFMPEG" -hide_banner -loglevel error -nostdin -re "${sources[@]}" \
			"${encode_args[@]}" -t "$push_s" "${dst[@]}" \
			>"$tmp/ffmpeg-$run.log" 2>&1 &
		;;
	copy)
		"$FFMPEG" -hide_banner -loglevel error -nostdin -re -i "$tmp/clip.mkv" \
			-c copy -t "$push_s" "${dst[@]}" \
			>"$tmp/ffmpeg-$run.log" 2>&1 &
		;;
	*)
		echo "bench-part-lag: unknown mode $mode (want live or copy)" >&2
		exit 2
		;;
	esac
	ffmpeg_pid=$!
	pids+=("$ffmpeg_pid")

	out="$tmp/partlag-$run.txt"
	# shellcheck disable=SC2086 # PARTLAG_FLAGS is split on purpose
	if ! go run ./scripts/partlag -url "http://127.0.0.1:$http_port/live/bench/media.m3u8" \
		-duration "$DURATION" -warmup "$WARMUP" $PARTLAG_FLAGS >"$out"; then
		cat "$out"
		echo "bench-part-lag: partlag failed in $run; ffmpeg and origin logs:" >&2
		cat "$tmp/ffmpeg-$run.log" "$tmp/origin-$run.log" >&2
		exit 1
	fi
	sed 's/^/  /' "$out"
	summaries+=("$run: $(grep '^partlag ' "$out")")

	kill "$ffmpeg_pid" "$origin_pid" 2>/dev/null || true
	wait "$ffmpeg_pid" 2>/dev/null || true
	wait "$origin_pid" 2>/dev/null || true
	pids=() # both reaped: never signal their PIDs again
done
done

echo "== summary (DURATION=$DURATION, WARMUP=$WARMUP, $(nproc) cores)"
printf '%s\n' "${summaries[@]}"
