#!/usr/bin/env bash
# The soak drill: a mesh serves steered LL-HLS viewers who come and go all
# the time, for half an hour, to see whether memory, goroutines or open
# files creep up. The goal (issue 9): RSS and goroutines flat, within 10 %
# after warm-up.
#
# It builds relaymesh and scripts/viewers, starts an origin and edge-1 and
# edge-2 on free loopback ports (each with --capacity CAPACITY and
# --steering-ttl 3s), publishes a live 640x360 30 fps H.264 + AAC stream
# (about 0.7 Mb/s, key frame every 2 s) to the origin with ffmpeg, and
# waits until the stream is live and every node's /readyz answers 200.
# Then scripts/viewers (hls.js 1.7.4 low-latency and content steering
# behaviour) arrives at the origin's index.m3u8: VIEWERS viewers over the
# first 10 s, each of whom leaves after an exponentially distributed
# lifetime of mean LIFETIME and is replaced at once by a newcomer (its own
# connections, a new session), for DURATION.
#
# Every SAMPLE (from the viewers' start, the last one at DURATION) it
# takes, on every node: RSS (VmRSS of /proc/PID/status), the Go heap in
# use (go_memstats_heap_inuse_bytes of the node's /metrics), goroutines
# (go_goroutines), open files (process_open_fds; /proc/PID/fd when
# absent), the node's viewers (relaymesh_node_viewers) and its CPU since
# the previous sample; it prints one line per sample, with the viewers'
# running totals, and appends the rows to a TSV (copied to OUT after every
# sample if set; the temp dir goes on exit). At the end it prints the
# table, then for each node the mean of the first samples at or after
# WARMUP against the mean of the last (a third of the samples, at most 5,
# each: one sample of RSS lands anywhere on the garbage collector's
# sawtooth), with the % change and the maximum after WARMUP; the viewers'
# summary; and one line for docs/benchmarks.md:
#
#   soak duration=30m warmup=2m viewers=60 lifetime=60s capacity=50 joined=... left=... stalls=0 stall_s=0.00 errors=0 sheds=0 origin_rss_mb=32.8→33.9(+3.4%,max_34.3) origin_heap_mb=... origin_goroutines=77→81(+5.4%,max_90) origin_fds=51→55(+8.2%,max_64) edge-1_...
#
# A line starting "soak: WARNING" follows when a node's RSS, Go heap or
# goroutines grew more than 10 % between those means (a
# finding, not a failure). The script exits non-zero only when the drill
# could not run: a build, a node, ffmpeg or the viewers failed, or a node
# or ffmpeg stopped during the drill.
#
# Every process the script starts is stopped on exit, by PID (SIGINT: a
# relaymesh node then stops at once instead of draining).
#
# Usage (from anywhere):
#   scripts/soak.sh
#   DURATION=4m SAMPLE=20s WARMUP=1m scripts/soak.sh
#   DURATION=2h OUT=/tmp/soak.tsv scripts/soak.sh
# Environment: DURATION (default 30m, 1m..2h), SAMPLE (default 30s,
# 5s..10m), WARMUP (default 2m; at least one SAMPLE must fit between it
# and DURATION), VIEWERS (default 60, 1..2000), LIFETIME (mean viewer
# lifetime, default 60s, 1s..1h), CAPACITY (viewers per node, default 50),
# OUT (a file to copy the samples TSV to), RELAYMESH (a relaymesh binary
# to use instead of building ./cmd/relaymesh), FFMPEG (default ffmpeg),
# VIEWERS_FLAGS (extra scripts/viewers flags, e.g. -v).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

DURATION=${DURATION:-30m}
SAMPLE=${SAMPLE:-30s}
WARMUP=${WARMUP:-2m}
VIEWERS=${VIEWERS:-60}
LIFETIME=${LIFETIME:-60s}
CAPACITY=${CAPACITY:-50}
OUT=${OUT:-}
RELAYMESH=${RELAYMESH:-}
FFMPEG=${FFMPEG:-ffmpeg}
VIEWERS_FLAGS=${VIEWERS_FLAGS:-}
ttl=3s
gop_s=2
ramp_s=10

usage_error() {
	echo "soak: $*" >&2
	exit 2
}
for v in DURATION SAMPLE WARMUP LIFETIME; do
	hms_seconds "${!v}" >/dev/null || usage_error "$v=${!v}: want whole seconds, minutes or hours (30s, 2m, 1h)"
done
[[ $VIEWERS =~ ^[0-9]+$ && $CAPACITY =~ ^[0-9]+$ ]] || usage_error "VIEWERS and CAPACITY must be whole numbers"
duration_s=$(hms_seconds "$DURATION") sample_s=$(hms_seconds "$SAMPLE")
warmup_s=$(hms_seconds "$WARMUP") lifetime_s=$(hms_seconds "$LIFETIME")
((duration_s >= 60 && duration_s <= 7200)) || usage_error "DURATION=$DURATION: want 1m..2h"
((sample_s >= 5 && sample_s <= 600)) || usage_error "SAMPLE=$SAMPLE: want 5s..10m"
((warmup_s + sample_s <= duration_s)) ||
	usage_error "WARMUP=$WARMUP: want at least one SAMPLE ($SAMPLE) between it and DURATION ($DURATION)"
((VIEWERS >= 1 && VIEWERS <= 2000)) || usage_error "VIEWERS=$VIEWERS: want 1..2000"
((lifetime_s >= 1 && lifetime_s <= 3600)) || usage_error "LIFETIME=$LIFETIME: want 1s..1h"
((CAPACITY >= 1 && CAPACITY <= 100000)) || usage_error "CAPACITY=$CAPACITY: want 1..100000"
[[ -z $RELAYMESH || -x $RELAYMESH ]] || usage_error "RELAYMESH=$RELAYMESH is not an executable"
if [[ -n $OUT ]]; then
	: >>"$OUT" 2>/dev/null || usage_error "OUT=$OUT: cannot write there"
fi
# The viewers outlast the last sample (at DURATION) by a few seconds, and
# the push outlasts them: start-up (at most a minute) and the run.
viewers_s=$((duration_s + 3))
push_s=$((duration_s + 120))

bench_init soak

build_tools

# Ports: origin http, rtmp, mesh, relay; then http, mesh, relay per edge.
freeports 10
origin_mesh=${ports[2]} rtmp_port=${ports[1]}
key="soak-$RANDOM$RANDOM"
nodes=(origin edge-1 edge-2)
declare -A node_http node_pid

# died NAME: a node stopped; print its log's tail and fail.
died() {
	echo "soak: $1 exited; the end of its log:" >&2
	tail -n 40 "$tmp/$1.log" >&2
	exit 1
}

node_http[origin]=${ports[0]}
echo "== origin: http 127.0.0.1:${node_http[origin]}, rtmp :$rtmp_port, mesh :$origin_mesh; capacity $CAPACITY, steering TTL $ttl"
"$tmp/relaymesh" origin --node-name origin --http "127.0.0.1:${node_http[origin]}" --rtmp "127.0.0.1:$rtmp_port" \
	--srt "" --rtsp "" --mesh "127.0.0.1:$origin_mesh" --relay "127.0.0.1:${ports[3]}" \
	--cluster-key "$key" --capacity "$CAPACITY" --steering-ttl "$ttl" >"$tmp/origin.log" 2>&1 &
node_pid[origin]=$!
pids+=("${node_pid[origin]}")
for _ in $(seq 1 100); do
	curl -fsS -o /dev/null "http://127.0.0.1:${node_http[origin]}/healthz" 2>/dev/null && break
	kill -0 "${node_pid[origin]}" 2>/dev/null || died origin
	sleep 0.1
done

push_pattern "$gop_s" "$push_s" "rtmp://127.0.0.1:$rtmp_port/live/bench"

for n in 1 2; do
	i=$((4 + (n - 1) * 3))
	node_http[edge-$n]=${ports[$i]}
	echo "== edge-$n: http 127.0.0.1:${ports[$i]}"
	"$tmp/relaymesh" edge --node-name "edge-$n" --http "127.0.0.1:${ports[$i]}" --mesh "127.0.0.1:${ports[$((i + 1))]}" \
		--relay "127.0.0.1:${ports[$((i + 2))]}" --cluster-key "$key" --join "127.0.0.1:$origin_mesh" \
		--capacity "$CAPACITY" --steering-ttl "$ttl" >"$tmp/edge-$n.log" 2>&1 &
	node_pid[edge-$n]=$!
	pids+=("${node_pid[edge-$n]}")
done

# wait_ready NAME: until the node's /readyz answers 200 (20 s at most).
wait_ready() {
	for _ in $(seq 1 200); do
		curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:${node_http[$1]}/readyz" 2>/dev/null && return 0
		kill -0 "${node_pid[$1]}" 2>/dev/null || died "$1"
		sleep 0.1
	done
	echo "soak: $1's /readyz did not answer 200 within 20 s; its log:" >&2
	cat "$tmp/$1.log" >&2
	exit 1
}

media="http://127.0.0.1:${node_http[origin]}/live/bench/media.m3u8"
echo "== waiting for the stream to be live and the nodes ready"
wait_live "$media" "$ffmpeg_pid" "$tmp/ffmpeg.log" "$tmp/origin.log"
for n in "${nodes[@]}"; do
	wait_ready "$n"
done

# jf NAME JSON: a number of the viewers' JSON report (0 before the first).
jf() {
	local x
	x=$(sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2")
	echo "${x:-0}"
}

# sample T: takes every node's figures at T seconds into the drill,
# appends a row per node to the TSV and prints one line.
samples="$tmp/soak-samples.tsv"
printf 't_s\tnode\trss_kb\tgoroutines\topen_fds\tnode_viewers\tcpu_pct\theap_kb\n' >"$samples"
declare -A last_ticks last_ns
sample() {
	local t=$1 n pid m rss gor fds vw heap ticks ns cpu cpu_h line="" v
	for n in "${nodes[@]}"; do
		pid=${node_pid[$n]}
		kill -0 "$pid" 2>/dev/null || died "$n"
		m=$(curl -fsS --max-time 5 "http://127.0.0.1:${node_http[$n]}/metrics" 2>/dev/null || true)
		[[ -n $m ]] || echo "soak: $n's /metrics did not answer at +${t}s" >&2
		rss=$(rss_kb "$pid") gor=$(metric go_goroutines <<<"$m")
		fds=$(metric process_open_fds <<<"$m") vw=$(metric relaymesh_node_viewers <<<"$m")
		heap=$(metric go_memstats_heap_inuse_bytes <<<"$m")
		[[ -z $heap ]] || heap=$(awk -v b="$heap" 'BEGIN { printf "%d", b / 1024 }')
		[[ -n $fds ]] || fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
		ticks=$(cpu_ticks "$pid") ns=$(date +%s%N)
		cpu=NA cpu_h='?'
		if [[ -n ${last_ticks[$n]:-} ]] && ((ns > last_ns[$n])); then
			cpu=$(((ticks - last_ticks[$n]) * 100 * 1000000000 / hz / (ns - last_ns[$n])))
			cpu_h=$cpu%
		fi
		last_ticks[$n]=$ticks last_ns[$n]=$ns
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$n" "${rss:-NA}" "${gor:-NA}" "${fds:-NA}" "${vw:-NA}" "$cpu" "${heap:-NA}" >>"$samples"
		line+=" | $n $(awk -v k="${rss:-0}" -v h="${heap:-0}" 'BEGIN { printf "%.1fMB heap=%.1fMB", k / 1024, h / 1024 }') gor=${gor:-?} fds=${fds:-?} viewers=${vw:-?} cpu=$cpu_h"
	done
	# The viewers' running totals, from their latest JSON report.
	v=$(tail -n 1 "$tmp/viewers.jsonl" 2>/dev/null || true)
	printf '  +%5ss%s | swarm active=%s joined=%s left=%s stalls=%s stall_s=%s\n' "$t" "$line" \
		"$(jf active "$v")" "$(jf joined "$v")" "$(jf left "$v")" "$(jf stalls "$v")" "$(jf stall_s "$v")"
}

entry="http://127.0.0.1:${node_http[origin]}/live/bench/index.m3u8"
echo "== viewers: $VIEWERS over the first ${ramp_s}s, each leaving after ${lifetime_s}s on average and replaced at once, for $DURATION (entry $entry)"
echo "== sampling every ${sample_s}s; warm-up ${warmup_s}s; samples in $samples (removed on exit: OUT=FILE keeps a copy)"
t0=$(date +%s%3N)
# shellcheck disable=SC2086 # VIEWERS_FLAGS is split on purpose
"$tmp/viewers" -entry "$entry" -start 0 -viewers "$VIEWERS" -ramp "${ramp_s}s" -lifetime "${lifetime_s}s" \
	-duration "${viewers_s}s" -report 1s -out "$tmp/viewers.jsonl" $VIEWERS_FLAGS >"$tmp/viewers.txt" 2>"$tmp/viewers.err" &
viewers_pid=$!
pids+=("$viewers_pid")

next=0
while kill -0 "$viewers_pid" 2>/dev/null; do
	el_ms=$(($(date +%s%3N) - t0))
	if ((next <= duration_s && el_ms >= next * 1000)); then
		kill -0 "$ffmpeg_pid" 2>/dev/null || {
			echo "soak: ffmpeg stopped at +$((el_ms / 1000))s; its log:" >&2
			cat "$tmp/ffmpeg.log" >&2
			exit 1
		}
		sample "$next"
		# OUT keeps the samples so far should the drill be cut short.
		[[ -z $OUT ]] || cp "$samples" "$OUT"
		# A slow sample skips the slots it overran.
		while ((next <= duration_s && el_ms >= next * 1000)); do
			next=$((next + sample_s))
		done
	fi
	if ((el_ms > (viewers_s + 60) * 1000)); then
		echo "soak: the viewers did not stop after ${viewers_s}s" >&2
		exit 1
	fi
	sleep 0.2
done
viewers_rc=0
wait "$viewers_pid" || viewers_rc=$?
summary=$(grep '^viewers n=' "$tmp/viewers.txt" || true)
if ((viewers_rc != 0)) || [[ -z $summary ]]; then
	echo "soak: the viewers failed (exit $viewers_rc); their output, errors and the origin log tail:" >&2
	tail -n 20 "$tmp/viewers.txt" >&2
	cat "$tmp/viewers.err" >&2
	tail -n 40 "$tmp/origin.log" >&2
	exit 1
fi
for n in "${nodes[@]}"; do
	kill -0 "${node_pid[$n]}" 2>/dev/null || died "$n"
done
if [[ -n $OUT ]]; then
	cp "$samples" "$OUT"
fi

echo "== samples (rss in kB; cpu in % of one core since the previous sample)"
column -t -s $'\t' "$samples" | sed 's/^/  /'

# field NAME: a name=value of the viewers' summary line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$summary"; }

# The comparison, per node, in awk. One sample of RSS or heap lands
# anywhere on the garbage collector's sawtooth, so it compares means: of
# the first W samples at or after the warm-up against the last W (W = a
# third of them, 1..5), with the maximum after the warm-up. It prints a
# human line, then "piece" (for the summary line) and "warn" lines.
analysis=$(awk -F'\t' -v warm="$warmup_s" -v order="${nodes[*]}" '
NR == 1 { next }
$1 >= warm {
	n = $2
	k[n]++
	for (c = 3; c <= 8; c++) v[n, c, k[n]] = $c
}
# mean(n, c, from, to): the mean of column c over samples from..to, "NA"
# when none has it.
function mean(n, c, from, to,   i, s, m) {
	for (i = from; i <= to; i++) if (v[n, c, i] != "NA") { s += v[n, c, i]; m++ }
	return m ? s / m : "NA"
}
function top(n, c,   i, x) {
	for (i = 1; i <= k[n]; i++) if (v[n, c, i] != "NA" && (x == "" || v[n, c, i] + 0 > x)) x = v[n, c, i] + 0
	return x == "" ? "NA" : x
}
function pct(a, b) { return a > 0 ? (b - a) * 100 / a : 0 }
# fig(name, a, b, m, div, fmt): "a→b(+p%,max_m)" with the values divided by div.
function fig(a, b, m, div, fmt) {
	if (a == "NA" || b == "NA") return "NA"
	return sprintf(fmt "→" fmt "(%+.1f%%,max_" fmt ")", a / div, b / div, pct(a, b), m / div)
}
END {
	split(order, ns, " ")
	for (i = 1; i in ns; i++) {
		n = ns[i]
		if (!(n in k) || mean(n, 3, 1, k[n]) == "NA" || mean(n, 4, 1, k[n]) == "NA") { print "missing " n; continue }
		w = int(k[n] / 3); if (w < 1) w = 1; if (w > 5) w = 5
		r0 = mean(n, 3, 1, w); r1 = mean(n, 3, k[n] - w + 1, k[n])
		h0 = mean(n, 8, 1, w); h1 = mean(n, 8, k[n] - w + 1, k[n])
		g0 = mean(n, 4, 1, w); g1 = mean(n, 4, k[n] - w + 1, k[n])
		f0 = mean(n, 5, 1, w); f1 = mean(n, 5, k[n] - w + 1, k[n])
		rss = fig(r0, r1, top(n, 3), 1024, "%.1f"); heap = fig(h0, h1, top(n, 8), 1024, "%.1f")
		gor = fig(g0, g1, top(n, 4), 1, "%.0f"); fds = fig(f0, f1, top(n, 5), 1, "%.0f")
		printf "human   %s: RSS MB %s; Go heap in use MB %s; goroutines %s; open files %s; node viewers %s → %s\n",
			n, rss, heap, gor, fds, v[n, 6, 1], v[n, 6, k[n]]
		printf "piece %s_rss_mb=%s %s_heap_mb=%s %s_goroutines=%s %s_fds=%s\n", n, rss, n, heap, n, gor, n, fds
		if (pct(r0, r1) > 10)
			printf "warn soak: WARNING: %s RSS grew %.1f%% after warm-up (mean %.1f → %.1f MB), more than 10%%\n", n, pct(r0, r1), r0 / 1024, r1 / 1024
		if (h0 != "NA" && h1 != "NA" && pct(h0, h1) > 10)
			printf "warn soak: WARNING: %s Go heap grew %.1f%% after warm-up (mean %.1f → %.1f MB), more than 10%%\n", n, pct(h0, h1), h0 / 1024, h1 / 1024
		if (pct(g0, g1) > 10)
			printf "warn soak: WARNING: %s goroutines grew %.1f%% after warm-up (mean %.0f → %.0f), more than 10%%\n", n, pct(g0, g1), g0, g1
	}
}' "$samples")
if grep -q '^missing ' <<<"$analysis"; then
	echo "soak: no usable sample after the warm-up for: $(sed -n 's/^missing //p' <<<"$analysis" | tr '\n' ' ')" >&2
	exit 1
fi

echo "== after warm-up (mean of the first samples at or after +${warmup_s}s → mean of the last; max after warm-up)"
sed -n 's/^human /  /p' <<<"$analysis"
echo "== viewers"
echo "  $summary"
echo "== summary ($(nproc) cores; capacity $CAPACITY, steering TTL $ttl, GOP ${gop_s} s, samples every ${sample_s}s, warm-up ${warmup_s}s)"
pieces=$(sed -n 's/^piece //p' <<<"$analysis" | tr '\n' ' ')
echo "soak duration=$DURATION warmup=$WARMUP viewers=$VIEWERS lifetime=${lifetime_s}s capacity=$CAPACITY joined=$(field joined) left=$(field left) stalls=$(field stalls) stall_s=$(field stall_s) errors=$(field errors) sheds=$(field sheds) ${pieces% }"
sed -n 's/^warn //p' <<<"$analysis"
echo "load average at end: $(cut -d" " -f1-3 /proc/loadavg)"
