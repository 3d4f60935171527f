#!/usr/bin/env bash
# Ingest cost: the CPU and memory an origin spends per published stream,
# and an edge per relayed stream, with 1, 10 and 20 streams live (issue 10,
# point 6).
#
#   N x ffmpeg -c copy --RTMP--> origin --QUIC--> edge
#
# No viewers: what is measured is ingest and packaging at the origin
# (RTMP demux, CMAF parts and segments, the GOP cache, the relay feed) and
# the relay at the edge (QUIC receive, its own cache of each stream).
#
#  1. It builds relaymesh (build_tools) and encodes ONE clip once: CLIP_S
#     seconds of testsrc2 at CLIP_SIZE, 30 fps, libx264 veryfast at
#     CLIP_BITRATE, a key frame every second, AAC 128 kb/s, into FLV (-re
#     paces FLV frame by frame). Every publisher is `ffmpeg -re
#     -stream_loop -1 -i clip.flv -c copy -f flv rtmp://.../live/sK`, so the
#     encoders cost little; their total CPU is reported all the same.
#  2. It starts an origin (RTMP, mesh and relay on loopback, a cluster key,
#     SRT and RTSP off) and one edge joined to it (--prewarm 0, and --idle
#     1h so that streams nobody watches are kept for the whole run).
#  3. Baseline (N=0): both nodes idle in the mesh, SETTLE, then DURATION
#     measured.
#  4. Streams are added incrementally, never stopped: for each N of
#     STREAMS (increasing), publishers s(previous N + 1)..sN start 0.2 s
#     apart; the script waits until the origin's media playlist of each
#     lists parts, then makes the edge relay each new stream by fetching
#     its media.m3u8 there once (an edge subscribes on the first viewer
#     request) until it lists parts too. Then SETTLE, then DURATION
#     measured.
#
# Measured over each window: CPU time (utime + stime from /proc/PID/stat)
# of the origin, the edge and all publishers together, as % of one core;
# VmRSS of each node sampled every second (start, end, mean; VmHWM at the
# end); the whole machine's busy share (/proc/stat, % of all cores: other
# work on a shared machine shows there). Before and after each window
# (outside it) each node's /metrics is read: goroutines, Go heap in use,
# RTMP bytes in and relay bytes out, and how many streams the origin feeds
# to the edge (relaymesh_relay_subscribers), which must be N.
#
# Per stream figures are above the idle baseline: (CPU at N - CPU at 0) /
# N and (mean RSS at N - mean RSS at 0) / N. Go returns memory to the OS
# lazily, so RSS per stream is what a node holds, not what it must hold.
#
# Each step prints one line "ingest streams=N ..." and the end prints two
# markdown tables (cost per stream; goroutines, heap and traffic).
#
# Every process the script starts is stopped on exit, by PID.
#
# Usage (from anywhere; 2 cores or more; a quiet machine):
#   scripts/bench-ingest-cost.sh
#   STREAMS="1 5" SETTLE=3s DURATION=10s scripts/bench-ingest-cost.sh   # a smoke run
#   TASKSET_SERVER=0 TASKSET_FFMPEG=1 scripts/bench-ingest-cost.sh
# Environment: STREAMS (increasing stream counts, default "1 10 20", at
# most 100), SETTLE (default 10s), DURATION (measured window per step,
# default 30s, 5s..5m), CLIP_SIZE (default 1280x720), CLIP_BITRATE (video,
# default 2500k), CLIP_S (clip length in seconds, default 20),
# TASKSET_SERVER (a taskset CPU list for the origin and the edge, e.g. 0;
# default: not pinned), TASKSET_FFMPEG (the same for the publishers),
# RELAYMESH (a relaymesh binary instead of building ./cmd/relaymesh),
# FFMPEG (default ffmpeg).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

STREAMS=${STREAMS:-1 10 20}
SETTLE=${SETTLE:-10s}
DURATION=${DURATION:-30s}
CLIP_SIZE=${CLIP_SIZE:-1280x720}
CLIP_BITRATE=${CLIP_BITRATE:-2500k}
CLIP_S=${CLIP_S:-20}
TASKSET_SERVER=${TASKSET_SERVER:-}
TASKSET_FFMPEG=${TASKSET_FFMPEG:-}
RELAYMESH=${RELAYMESH:-}
FFMPEG=${FFMPEG:-ffmpeg}

usage_error() {
	echo "bench-ingest-cost: $*" >&2
	exit 2
}
prev=0
for n in $STREAMS; do
	if ! [[ $n =~ ^[0-9]+$ ]] || ((n <= prev || n > 100)); then
		usage_error "STREAMS=\"$STREAMS\": want increasing stream counts from 1 to 100, e.g. \"1 10 20\""
	fi
	prev=$n
done
((prev > 0)) || usage_error "STREAMS is empty"
for v in SETTLE DURATION; do
	hms_seconds "${!v}" >/dev/null || usage_error "$v=${!v}: want whole seconds or minutes (10s, 1m)"
done
settle_s=$(hms_seconds "$SETTLE")
dur_s=$(hms_seconds "$DURATION")
((dur_s >= 5 && dur_s <= 300)) || usage_error "DURATION=$DURATION: want 5s..5m"
((settle_s <= 300)) || usage_error "SETTLE=$SETTLE: want at most 5m"
[[ $CLIP_SIZE =~ ^[0-9]+x[0-9]+$ ]] || usage_error "CLIP_SIZE=$CLIP_SIZE: want WIDTHxHEIGHT"
[[ $CLIP_BITRATE =~ ^[0-9]+[kM]?$ ]] || usage_error "CLIP_BITRATE=$CLIP_BITRATE: want e.g. 2500k"
if ! [[ $CLIP_S =~ ^[0-9]+$ ]] || ((CLIP_S < 5 || CLIP_S > 120)); then
	usage_error "CLIP_S=$CLIP_S: want 5..120"
fi
[[ -z $RELAYMESH || -x $RELAYMESH ]] || usage_error "RELAYMESH=$RELAYMESH is not an executable"
server_pin=() ffmpeg_pin=()
if [[ -n $TASKSET_SERVER ]]; then
	server_pin=(taskset -c "$TASKSET_SERVER")
fi
if [[ -n $TASKSET_FFMPEG ]]; then
	ffmpeg_pin=(taskset -c "$TASKSET_FFMPEG")
fi
for tool in "$FFMPEG" curl ${TASKSET_SERVER:+taskset} ${TASKSET_FFMPEG:+taskset}; do
	command -v "$tool" >/dev/null || usage_error "$tool is not installed"
done
bench_init bench-ingest-cost
load_start=$(cut -d" " -f1-3 /proc/loadavg)
build_tools

gop=30
echo "== encoding one ${CLIP_S} s ${CLIP_SIZE} 30 fps clip (H.264 $CLIP_BITRATE, key frame every 1 s, AAC 128k) to loop"
"$FFMPEG" -hide_banner -loglevel error -nostdin -y \
	-f lavfi -i "testsrc2=size=$CLIP_SIZE:rate=30:duration=$CLIP_S" \
	-f lavfi -i "sine=frequency=440:sample_rate=48000:duration=$CLIP_S" \
	-c:v libx264 -preset veryfast -pix_fmt yuv420p -g "$gop" -keyint_min "$gop" -sc_threshold 0 \
	-b:v "$CLIP_BITRATE" -maxrate "$CLIP_BITRATE" -bufsize "$CLIP_BITRATE" -c:a aac -b:a 128k \
	-f flv "$tmp/clip.flv"
echo "   $(stat -c %s "$tmp/clip.flv") bytes: $(awk -v b="$(stat -c %s "$tmp/clip.flv")" -v s="$CLIP_S" 'BEGIN { printf "%.2f", b * 8 / s / 1e6 }') Mb/s per stream"

freeports 6
o_http=${ports[0]} o_rtmp=${ports[1]} o_mesh=${ports[2]} o_relay=${ports[3]}
e_http=${ports[4]} e_mesh=${ports[5]}
# The edge's relay port (UDP) must not be any of the above either.
e_relay=$(freeport)
while [[ " ${ports[*]} " == *" $e_relay "* ]]; do e_relay=$(freeport); done
key="bench-ingest-cost-$RANDOM$RANDOM"

origin_cmd=("$tmp/relaymesh" origin --node-name origin --http "127.0.0.1:$o_http" --rtmp "127.0.0.1:$o_rtmp"
	--srt "" --rtsp "" --rtsp-udp "" --mesh "127.0.0.1:$o_mesh" --relay "127.0.0.1:$o_relay" --cluster-key "$key")
edge_cmd=("$tmp/relaymesh" edge --node-name edge --http "127.0.0.1:$e_http" --mesh "127.0.0.1:$e_mesh"
	--relay "127.0.0.1:$e_relay" --cluster-key "$key" --join "127.0.0.1:$o_mesh" --prewarm 0 --idle 1h)

echo "== origin${TASKSET_SERVER:+ (cores $TASKSET_SERVER)}: $(printf '%q ' "${origin_cmd[@]:1}")"
"${server_pin[@]}" "${origin_cmd[@]}" >"$tmp/origin.log" 2>&1 &
origin_pid=$!
pids+=("$origin_pid")
wait_http "http://127.0.0.1:$o_http/healthz" "$origin_pid"

echo "== edge${TASKSET_SERVER:+ (cores $TASKSET_SERVER)}: $(printf '%q ' "${edge_cmd[@]:1}")"
"${server_pin[@]}" "${edge_cmd[@]}" >"$tmp/edge.log" 2>&1 &
edge_pid=$!
pids+=("$edge_pid")
wait_http "http://127.0.0.1:$e_http/healthz" "$edge_pid"

# scrape NODE_PORT FILE: a node's /metrics into FILE.
scrape() {
	curl -fsS --max-time 5 "http://127.0.0.1:$1/metrics" >"$2" 2>/dev/null || : >"$2"
}

# msum NAME FILE: the sum of every series of NAME in FILE (0 if none).
msum() {
	awk -v n="$1" '$1 == n || index($1, n "{") == 1 { s += $NF } END { printf "%.0f\n", s }' "$2"
}

# machine_ticks: busy and total clock ticks of all cores (/proc/stat).
machine_ticks() {
	awk '$1 == "cpu" { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t; exit }' /proc/stat
}

publishers=()

# ticks_of PID...: the CPU ticks of the processes, summed.
ticks_of() {
	local p s=0
	for p in "$@"; do s=$((s + $(cpu_ticks "$p"))); done
	echo "$s"
}

# measure N: SETTLE, then a DURATION window; prints the step's line and
# appends it to $tmp/steps.txt.
measure() {
	local n=$1 i t0 t1 el_ms o0 o1 e0 e1 f0 f1 mb0 mt0 mb1 mt1 ors ers o_rss e_rss
	echo "== N=$n: settling ${SETTLE}, then measuring ${DURATION}"
	sleep "$settle_s"
	scrape "$o_http" "$tmp/m-origin-$n-0.txt"
	scrape "$e_http" "$tmp/m-edge-$n-0.txt"
	o_rss=() e_rss=()
	read -r mb0 mt0 < <(machine_ticks)
	o0=$(cpu_ticks "$origin_pid") e0=$(cpu_ticks "$edge_pid") f0=$(ticks_of "${publishers[@]}")
	t0=$(date +%s%N)
	for ((i = 0; i <= dur_s; i++)); do
		if ((i > 0)); then
			# Sample on the second from t0, whatever the samples cost.
			sleep "$(awk -v t0="$t0" -v now="$(date +%s%N)" -v i="$i" 'BEGIN { d = (t0 + i * 1e9 - now) / 1e9; printf "%.3f", (d > 0 ? d : 0) }')"
		fi
		o_rss+=("$(rss_kb "$origin_pid")")
		e_rss+=("$(rss_kb "$edge_pid")")
	done
	o1=$(cpu_ticks "$origin_pid") e1=$(cpu_ticks "$edge_pid") f1=$(ticks_of "${publishers[@]}")
	t1=$(date +%s%N)
	read -r mb1 mt1 < <(machine_ticks)
	scrape "$o_http" "$tmp/m-origin-$n-1.txt"
	scrape "$e_http" "$tmp/m-edge-$n-1.txt"
	kill -0 "$origin_pid" 2>/dev/null || fail "the origin exited"
	kill -0 "$edge_pid" 2>/dev/null || fail "the edge exited"
	for i in "${publishers[@]}"; do
		kill -0 "$i" 2>/dev/null || fail "a publisher (PID $i) exited"
	done
	el_ms=$(((t1 - t0) / 1000000))
	ors=$(printf '%s\n' "${o_rss[@]}" | awk '{ s += $1; last = $1 } NR == 1 { first = $1 } END { printf "%.1f %.1f %.1f", first / 1024, last / 1024, s / NR / 1024 }')
	ers=$(printf '%s\n' "${e_rss[@]}" | awk '{ s += $1; last = $1 } NR == 1 { first = $1 } END { printf "%.1f %.1f %.1f", first / 1024, last / 1024, s / NR / 1024 }')
	local fo=$tmp/m-origin-$n fe=$tmp/m-edge-$n line
	line=$(awk -v n="$n" -v el="$el_ms" -v hz="$hz" -v o="$((o1 - o0))" -v e="$((e1 - e0))" -v f="$((f1 - f0))" \
		-v mb="$((mb1 - mb0))" -v mt="$((mt1 - mt0))" -v ors="$ors" -v ers="$ers" \
		-v ohwm="$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$origin_pid/status")" \
		-v ehwm="$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$edge_pid/status")" \
		-v og="$(msum go_goroutines "$fo-1.txt")" -v eg="$(msum go_goroutines "$fe-1.txt")" \
		-v oheap="$(msum go_memstats_heap_inuse_bytes "$fo-1.txt")" -v eheap="$(msum go_memstats_heap_inuse_bytes "$fe-1.txt")" \
		-v in0="$(msum relaymesh_ingest_bytes_total "$fo-0.txt")" -v in1="$(msum relaymesh_ingest_bytes_total "$fo-1.txt")" \
		-v eg0="$(msum relaymesh_relay_egress_bytes_total "$fo-0.txt")" -v eg1="$(msum relaymesh_relay_egress_bytes_total "$fo-1.txt")" \
		-v subs="$(msum relaymesh_relay_subscribers "$fo-1.txt")" '
		BEGIN {
			split(ors, a, " "); split(ers, b, " ")
			s = el / 1000
			printf "ingest streams=%d window_s=%.1f origin_cpu=%.1f%% edge_cpu=%.1f%% ffmpeg_cpu=%.1f%% machine_busy=%.1f%%", n, s, o / hz / s * 100, e / hz / s * 100, f / hz / s * 100, mb / mt * 100
			printf " origin_rss_mb=%s/%s/%s edge_rss_mb=%s/%s/%s origin_hwm_mb=%.1f edge_hwm_mb=%.1f", a[1], a[2], a[3], b[1], b[2], b[3], ohwm / 1024, ehwm / 1024
			printf " origin_goroutines=%d edge_goroutines=%d origin_heap_mb=%.1f edge_heap_mb=%.1f", og, eg, oheap / 1048576, eheap / 1048576
			printf " ingest_mbps=%.2f relay_egress_mbps=%.2f relayed_to_edge=%d\n", (in1 - in0) * 8 / s / 1e6, (eg1 - eg0) * 8 / s / 1e6, subs
		}')
	echo "$line"
	echo "$line" >>"$tmp/steps.txt"
	if ((n > 0)) && [[ $line != *" relayed_to_edge=$n"* ]]; then
		echo "bench-ingest-cost: WARNING: the origin feeds the edge ${line##*relayed_to_edge=} streams, not $n" >&2
	fi
}

: >"$tmp/steps.txt"
# The mesh forms (the edge sees the origin) before the baseline.
for _ in $(seq 1 100); do
	[[ $(curl -fsS --max-time 2 "http://127.0.0.1:$e_http/metrics" 2>/dev/null | metric relaymesh_mesh_members) == 2 ]] && break
	sleep 0.1
done
measure 0

have=0
for n in $STREAMS; do
	echo "== N=$n: starting publishers s$((have + 1))..s$n${TASKSET_FFMPEG:+ (cores $TASKSET_FFMPEG)}"
	for ((k = have + 1; k <= n; k++)); do
		"${ffmpeg_pin[@]}" "$FFMPEG" -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$tmp/clip.flv" \
			-c copy -f flv "rtmp://127.0.0.1:$o_rtmp/live/s$k" >"$tmp/ffmpeg-s$k.log" 2>&1 &
		publishers+=("$!")
		pids+=("$!")
		sleep 0.2
	done
	for ((k = have + 1; k <= n; k++)); do
		wait_parts "http://127.0.0.1:$o_http/live/s$k/media.m3u8"
	done
	echo "   live at the origin; the edge subscribes to s$((have + 1))..s$n"
	for ((k = have + 1; k <= n; k++)); do
		wait_parts "http://127.0.0.1:$e_http/live/s$k/media.m3u8"
	done
	have=$n
	measure "$n"
done
load_end=$(cut -d" " -f1-3 /proc/loadavg)

# field NAME LINE: a name=value of a step line, without a trailing %.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2" | tr -d %; }
# mean_rss NAME LINE: the mean of a start/end/mean RSS field.
mean_rss() { field "$1" "$2" | cut -d/ -f3; }

base=$(grep '^ingest streams=0 ' "$tmp/steps.txt")
echo "== summary: $(nproc) cores, clip $CLIP_SIZE 30 fps $CLIP_BITRATE + AAC 128k, GOP 1 s, SETTLE=$SETTLE DURATION=$DURATION, streams added incrementally${TASKSET_SERVER:+, nodes on cores $TASKSET_SERVER}${TASKSET_FFMPEG:+, ffmpeg on cores $TASKSET_FFMPEG}"
echo "CPU in % of one core; per stream: above the idle (N=0) baseline, divided by N; RSS: mean over the window, MB"
echo
echo "| streams | origin CPU % | origin CPU %/stream | origin RSS MB | origin RSS MB/stream | edge CPU % | edge CPU %/stream | edge RSS MB | edge RSS MB/stream | ffmpeg CPU % (all) | machine busy % |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
while read -r line; do
	n=$(field streams "$line")
	awk -v n="$n" -v oc="$(field origin_cpu "$line")" -v ec="$(field edge_cpu "$line")" \
		-v or="$(mean_rss origin_rss_mb "$line")" -v er="$(mean_rss edge_rss_mb "$line")" \
		-v oc0="$(field origin_cpu "$base")" -v ec0="$(field edge_cpu "$base")" \
		-v or0="$(mean_rss origin_rss_mb "$base")" -v er0="$(mean_rss edge_rss_mb "$base")" \
		-v fc="$(field ffmpeg_cpu "$line")" -v mb="$(field machine_busy "$line")" '
		function per(v, v0) { return n > 0 ? sprintf("%.2f", (v - v0) / n) : "-" }
		BEGIN { printf "| %d | %.1f | %s | %.1f | %s | %.1f | %s | %.1f | %s | %.1f | %.1f |\n", n, oc, per(oc, oc0), or, per(or, or0), ec, per(ec, ec0), er, per(er, er0), fc, mb }'
done <"$tmp/steps.txt"
echo
echo "| streams | origin goroutines | edge goroutines | origin heap MB | edge heap MB | origin RSS MB start→end (HWM) | edge RSS MB start→end (HWM) | RTMP in Mb/s | relay out Mb/s | streams fed to the edge |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
while read -r line; do
	IFS=/ read -r os oe _ <<<"$(field origin_rss_mb "$line")"
	IFS=/ read -r es ee _ <<<"$(field edge_rss_mb "$line")"
	printf '| %s | %s | %s | %s | %s | %s→%s (%s) | %s→%s (%s) | %s | %s | %s |\n' "$(field streams "$line")" \
		"$(field origin_goroutines "$line")" "$(field edge_goroutines "$line")" \
		"$(field origin_heap_mb "$line")" "$(field edge_heap_mb "$line")" \
		"$os" "$oe" "$(field origin_hwm_mb "$line")" "$es" "$ee" "$(field edge_hwm_mb "$line")" \
		"$(field ingest_mbps "$line")" "$(field relay_egress_mbps "$line")" "$(field relayed_to_edge "$line")"
done <"$tmp/steps.txt"
echo
echo "load average at start: $load_start; at end: $load_end"
