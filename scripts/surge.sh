#!/usr/bin/env bash
# The surge drill: a tenfold ramp of steered LL-HLS viewers while edges
# join, to see how fast a new edge takes viewers and whether anyone stalls.
#
# It builds relaymesh and scripts/viewers, starts an origin and edge-1 on
# free loopback ports (both with --capacity CAPACITY and --steering-ttl
# STEERING_TTL), publishes a live 640x360 30 fps H.264 + AAC stream (about
# 0.7 Mb/s, key frame every GOP_S seconds) to the origin with ffmpeg, and
# waits until the stream is live and both nodes' /readyz answer 200. Then
# scripts/viewers (hls.js 1.7.4 low-latency and content steering
# behaviour) arrives at the origin's index.m3u8, START viewers at once and
# then evenly up to VIEWERS over RAMP, for DURATION in all. The origin
# redirects and steers them. During the ramp edge-2 and edge-3 start
# (EDGE2_AT and EDGE3_AT after the viewers); for each the script records
# when the process started and when its /readyz first answered 200
# (polled every 20 ms).
#
# At the end it prints, for each added edge, ready_ms (start to /readyz
# 200), first_viewer_ms (start to the first part it served to a viewer,
# from the viewers' first_part_ms) and steered_after_ready_ms (the
# difference); the viewers' summary; the CPU each process used; and one
# line for docs/benchmarks.md:
#
#   surge viewers=300 ... stalls=0 stall_s=0.00 max_per_node=104 edge-2_steered_after_ready_ms=... edge-3_...
#
# Every process the script starts is stopped on exit, by PID (SIGINT: a
# relaymesh node then stops at once instead of draining).
#
# Usage (from anywhere):
#   scripts/surge.sh
#   GOP_S=1 VIEWERS=100 START=10 RAMP=30s DURATION=50s scripts/surge.sh
# Environment: GOP_S (1 or 2, default 2), START (viewers at once, default
# 30), VIEWERS (at the end of the ramp, default 300, 1..5000), RAMP
# (default 60s), DURATION (default 100s, 10s..1h, at least RAMP), EDGE2_AT
# and EDGE3_AT (default 20s and 40s, before DURATION), CAPACITY (viewers
# per node, default 120), STEERING_TTL (whole seconds, default 3s), FFMPEG
# (default ffmpeg), RELAYMESH (a relaymesh binary to use instead of
# building ./cmd/relaymesh), VIEWERS_FLAGS (extra scripts/viewers flags,
# e.g. -v).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

GOP_S=${GOP_S:-2}
START=${START:-30}
VIEWERS=${VIEWERS:-300}
RAMP=${RAMP:-60s}
DURATION=${DURATION:-100s}
EDGE2_AT=${EDGE2_AT:-20s}
EDGE3_AT=${EDGE3_AT:-40s}
CAPACITY=${CAPACITY:-120}
STEERING_TTL=${STEERING_TTL:-3s}
FFMPEG=${FFMPEG:-ffmpeg}
VIEWERS_FLAGS=${VIEWERS_FLAGS:-}

usage_error() {
	echo "surge: $*" >&2
	exit 2
}
is_secs() { [[ $1 =~ ^[0-9]+[sm]?$ ]]; }
for v in RAMP DURATION EDGE2_AT EDGE3_AT STEERING_TTL; do
	is_secs "${!v}" || usage_error "$v=${!v}: want whole seconds or minutes (30s, 2m)"
done
[[ $GOP_S == 1 || $GOP_S == 2 ]] || usage_error "GOP_S=$GOP_S: want 1 or 2"
[[ $START =~ ^[0-9]+$ && $VIEWERS =~ ^[0-9]+$ && $CAPACITY =~ ^[0-9]+$ ]] ||
	usage_error "START, VIEWERS and CAPACITY must be whole numbers"
ramp_s=$(seconds "$RAMP") duration_s=$(seconds "$DURATION") ttl_s=$(seconds "$STEERING_TTL")
edge2_s=$(seconds "$EDGE2_AT") edge3_s=$(seconds "$EDGE3_AT")
((VIEWERS >= 1 && VIEWERS <= 5000)) || usage_error "VIEWERS=$VIEWERS: want 1..5000"
((START <= VIEWERS)) || usage_error "START=$START: want at most VIEWERS ($VIEWERS)"
((CAPACITY >= 1 && CAPACITY <= 100000)) || usage_error "CAPACITY=$CAPACITY: want 1..100000"
((duration_s >= 10 && duration_s <= 3600)) || usage_error "DURATION=$DURATION: want 10s..1h"
((ramp_s <= duration_s)) || usage_error "RAMP=$RAMP is longer than DURATION=$DURATION"
((ttl_s >= 1 && ttl_s <= 60)) || usage_error "STEERING_TTL=$STEERING_TTL: want 1s..60s"
((edge2_s < duration_s && edge3_s < duration_s)) || usage_error "EDGE2_AT and EDGE3_AT must come before DURATION"
# The push outlasts the drill: start-up (at most a minute) and the run.
push_s=$((duration_s + 90))

bench_init surge

build_tools

# Ports: origin http, rtmp, mesh, relay; then http, mesh, relay per edge.
freeports 13
origin_http=${ports[0]} rtmp_port=${ports[1]} origin_mesh=${ports[2]} origin_relay=${ports[3]}
key="surge-$RANDOM$RANDOM"
ttl="${ttl_s}s"
declare -A edge_http edge_pid edge_start edge_ready_file

echo "== origin: http 127.0.0.1:$origin_http, rtmp :$rtmp_port, mesh :$origin_mesh; capacity $CAPACITY, steering TTL $ttl"
"$tmp/relaymesh" origin --node-name origin --http "127.0.0.1:$origin_http" --rtmp "127.0.0.1:$rtmp_port" \
	--srt "" --rtsp "" --mesh "127.0.0.1:$origin_mesh" --relay "127.0.0.1:$origin_relay" \
	--cluster-key "$key" --capacity "$CAPACITY" --steering-ttl "$ttl" >"$tmp/origin.log" 2>&1 &
origin_pid=$!
pids+=("$origin_pid")
for _ in $(seq 1 100); do
	curl -fsS -o /dev/null "http://127.0.0.1:$origin_http/healthz" 2>/dev/null && break
	kill -0 "$origin_pid" 2>/dev/null || {
		cat "$tmp/origin.log" >&2
		exit 1
	}
	sleep 0.1
done

push_pattern "$GOP_S" "$push_s" "rtmp://127.0.0.1:$rtmp_port/live/bench"

# start_edge N: starts edge-N on its ports, records its start time (Unix
# ms) and polls its /readyz every 20 ms in the background until it
# answers 200, writing that time to a file.
start_edge() {
	local n=$1 i=$((4 + ($1 - 1) * 3))
	local http=${ports[$i]} mesh=${ports[$((i + 1))]} relay=${ports[$((i + 2))]}
	edge_http[$n]=$http
	edge_ready_file[$n]="$tmp/edge-$n.ready"
	edge_start[$n]=$(date +%s%3N)
	"$tmp/relaymesh" edge --node-name "edge-$n" --http "127.0.0.1:$http" --mesh "127.0.0.1:$mesh" \
		--relay "127.0.0.1:$relay" --cluster-key "$key" --join "127.0.0.1:$origin_mesh" \
		--capacity "$CAPACITY" --steering-ttl "$ttl" >"$tmp/edge-$n.log" 2>&1 &
	edge_pid[$n]=$!
	pids+=("${edge_pid[$n]}")
	local pid=${edge_pid[$n]}
	# Background subshells ignore SIGINT: this one ends with its edge.
	(
		end=$(($(date +%s) + 60))
		while (($(date +%s) < end)) && kill -0 "$pid" 2>/dev/null; do
			if curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:$http/readyz" 2>/dev/null; then
				date +%s%3N >"$tmp/edge-$n.ready"
				exit 0
			fi
			sleep 0.02
		done
	) &
	pids+=("$!")
}

# wait_ready HOST:PORT NAME: until /readyz answers 200 (20 s at most).
wait_ready() {
	for _ in $(seq 1 200); do
		curl -fs -o /dev/null --max-time 1 "http://$1/readyz" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "surge: $2's /readyz did not answer 200 within 20 s; its log:" >&2
	cat "$tmp/$2.log" >&2
	exit 1
}

echo "== edge-1: http 127.0.0.1:${ports[4]}"
start_edge 1

media="http://127.0.0.1:$origin_http/live/bench/media.m3u8"
echo "== waiting for the stream to be live and the nodes ready"
wait_live "$media" "$ffmpeg_pid" "$tmp/ffmpeg.log" "$tmp/origin.log"
wait_ready "127.0.0.1:$origin_http" origin
wait_ready "127.0.0.1:${edge_http[1]}" edge-1

entry="http://127.0.0.1:$origin_http/live/bench/index.m3u8"
echo "== viewers: $START at once, $VIEWERS after $RAMP, for $DURATION (entry $entry); edge-2 at +$EDGE2_AT, edge-3 at +$EDGE3_AT"
cpu_start=$(date +%s%N) ffmpeg_t0=$(cpu_ticks "$ffmpeg_pid") origin_t0=$(cpu_ticks "$origin_pid") edge1_t0=$(cpu_ticks "${edge_pid[1]}")
viewers_t0=$(date +%s%3N)
# shellcheck disable=SC2086 # VIEWERS_FLAGS is split on purpose
"$tmp/viewers" -entry "$entry" -start "$START" -viewers "$VIEWERS" -ramp "${ramp_s}s" -duration "${duration_s}s" \
	-report 1s -out "$tmp/viewers.jsonl" $VIEWERS_FLAGS >"$tmp/viewers.txt" 2>"$tmp/viewers.err" &
viewers_pid=$!
pids+=("$viewers_pid")

# Start the edges on time and show progress every 5 s while the viewers
# run. The viewers' CPU is read as it goes: /proc forgets it at exit.
next_edge=2 next_print=5 viewers_ticks=0
while kill -0 "$viewers_pid" 2>/dev/null; do
	el_ms=$(($(date +%s%3N) - viewers_t0))
	if ((next_edge == 2 && el_ms >= edge2_s * 1000)); then
		echo "== +$((el_ms / 1000))s: starting edge-2 (http 127.0.0.1:${ports[7]})"
		start_edge 2
		edge2_t0=$(cpu_ticks "${edge_pid[2]}")
		next_edge=3
	elif ((next_edge == 3 && el_ms >= edge3_s * 1000)); then
		echo "== +$((el_ms / 1000))s: starting edge-3 (http 127.0.0.1:${ports[10]})"
		start_edge 3
		edge3_t0=$(cpu_ticks "${edge_pid[3]}")
		next_edge=4
	fi
	t=$(cpu_ticks "$viewers_pid")
	((t > viewers_ticks)) && viewers_ticks=$t
	if ((el_ms >= next_print * 1000)); then
		[[ -s $tmp/viewers.txt ]] && echo "  $(tail -n 1 "$tmp/viewers.txt")"
		next_print=$((next_print + 5))
	fi
	sleep 0.1
done
viewers_rc=0
wait "$viewers_pid" || viewers_rc=$?
el_ms=$((($(date +%s%N) - cpu_start) / 1000000))
cpu() { echo "$((($(cpu_ticks "$1") - $2) * 1000 * 100 / hz / el_ms))%"; }
cpu_line="ffmpeg $(cpu "$ffmpeg_pid" "$ffmpeg_t0"), origin $(cpu "$origin_pid" "$origin_t0"), edge-1 $(cpu "${edge_pid[1]}" "$edge1_t0")"
[[ -n ${edge2_t0:-} ]] && cpu_line+=", edge-2 $(cpu "${edge_pid[2]}" "$edge2_t0")"
[[ -n ${edge3_t0:-} ]] && cpu_line+=", edge-3 $(cpu "${edge_pid[3]}" "$edge3_t0")"
cpu_line+=", viewers $((viewers_ticks * 1000 * 100 / hz / el_ms))%"

summary=$(grep '^viewers n=' "$tmp/viewers.txt" || true)
final=$(grep '"final":true' "$tmp/viewers.jsonl" || true)
if ((viewers_rc != 0)) || [[ -z $summary || -z $final ]]; then
	echo "surge: the viewers failed (exit $viewers_rc); their output, errors and the origin log tail:" >&2
	cat "$tmp/viewers.txt" "$tmp/viewers.err" >&2
	tail -n 40 "$tmp/origin.log" >&2
	exit 1
fi
kill -0 "$ffmpeg_pid" 2>/dev/null || {
	echo "surge: ffmpeg stopped during the drill; results may not be from a live stream" >&2
	cat "$tmp/ffmpeg.log" >&2
}

# json_map KEY: the "host:port":number pairs of one object of the final
# report, one per line.
json_map() { sed -n "s/.*\"$1\":{\([^}]*\)}.*/\1/p" <<<"$final" | tr ',' '\n' | tr -d '"'; }
# field NAME: a name=value of the viewers' summary line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$summary"; }
# of MAP PORT: the number for 127.0.0.1:PORT in a json_map.
of() { sed -n "s/^127\.0\.0\.1:$2:\([0-9]*\)$/\1/p" <<<"$1"; }
first_parts=$(json_map first_part_ms)
peaks=$(json_map peak_hosts)

echo "== added edges (ms after each edge process started)"
edge_summary=""
for n in 2 3; do
	[[ -n ${edge_start[$n]:-} ]] || {
		edge_summary+=" edge-$n=not_started"
		continue
	}
	hostport="127.0.0.1:${edge_http[$n]}"
	ready=none first=none after=none
	[[ -s ${edge_ready_file[$n]} ]] && ready=$(($(cat "${edge_ready_file[$n]}") - edge_start[$n]))
	fp=$(of "$first_parts" "${edge_http[$n]}")
	[[ -n $fp ]] && first=$((fp - edge_start[$n]))
	[[ $ready != none && $first != none ]] && after=$((first - ready))
	peak=$(of "$peaks" "${edge_http[$n]}")
	echo "  edge-$n ($hostport): ready_ms=$ready first_viewer_ms=$first steered_after_ready_ms=$after peak_viewers=${peak:-0}"
	if [[ $ready == none ]]; then
		echo "  edge-$n never reported ready; the end of its log:"
		tail -n 5 "$tmp/edge-$n.log" | sed 's/^/    /'
	fi
	edge_summary+=" edge-${n}_ready_ms=$ready edge-${n}_steered_after_ready_ms=$after"
done
p=$(of "$peaks" "$origin_http")
peak_line="origin=${p:-0}"
for n in 1 2 3; do
	if [[ -n ${edge_http[$n]:-} ]]; then
		p=$(of "$peaks" "${edge_http[$n]}")
		peak_line+=" edge-$n=${p:-0}"
	fi
done
echo "== viewers (peak per node: $peak_line)"
echo "  $summary"
echo "== CPU while the viewers ran (${el_ms} ms, % of one core): $cpu_line"
echo "== summary ($(nproc) cores; GOP ${GOP_S} s, capacity $CAPACITY, steering TTL $ttl)"
echo "surge viewers=$VIEWERS start=$START ramp=${ramp_s}s gop=${GOP_S}s capacity=$CAPACITY ttl=$ttl stalls=$(field stalls) stall_s=$(field stall_s) max_per_node=$(field peak_per_host) switches=$(field switches) sheds=$(field sheds) errors=$(field errors)$edge_summary"
echo "load average at end: $(cut -d" " -f1-3 /proc/loadavg)"
