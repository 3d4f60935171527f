#!/usr/bin/env bash
# Benchmarks the relay overhead of two mesh hops: the part lag (see
# scripts/partlag) measured at the same time at an origin, at an edge that
# relays from it (edge-1) and at an edge that relays from edge-1 (edge-2,
# started with --parent edge-1), all on loopback:
#
#   ffmpeg --RTMP--> origin --QUIC--> edge-1 --QUIC--> edge-2
#                      |                 |                |
#                   partlag           partlag          partlag
#
# It builds relaymesh and partlag, starts the origin, publishes a live
# 720p30 H.264 + AAC stream to it (ffmpeg -re, testsrc2 + sine, libx264
# veryfast, GOP 60, 2.5 Mb/s), starts edge-1 (it pre-warms the stream),
# then edge-2, checks from edge-2's log that its upstream is edge-1, and
# runs three partlag clients concurrently, one per node, for DURATION after
# a WARMUP. It prints each node's p50/p95/max, the differences from the
# origin, and the same part's lag difference paired part by part (the same
# part URI is listed on every node, so the pairing removes the publisher's
# pacing jitter). Finally it fetches a complete segment and the init
# segment from the origin and from edge-2 and compares the bytes.
#
# Acceptance goal: edge-2's p95 part lag within 10 ms of the origin's.
#
# Every process the script starts is killed on exit, by PID.
#
# Usage (from anywhere):
#   scripts/bench-two-hop.sh
#   DURATION=60s scripts/bench-two-hop.sh
# Environment: DURATION (whole seconds, 10s..2m, default 30s), WARMUP
# (default 3s), FFMPEG (default ffmpeg), PARTLAG_FLAGS (extra partlag flags).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

DURATION=${DURATION:-30s}
WARMUP=${WARMUP:-3s}
FFMPEG=${FFMPEG:-ffmpeg}
PARTLAG_FLAGS=${PARTLAG_FLAGS:-}

dur_s=$(seconds "$DURATION")
warm_s=$(seconds "$WARMUP")
if ! [[ $dur_s =~ ^[0-9]+$ && $warm_s =~ ^[0-9]+$ ]] || ((dur_s < 10 || dur_s > 120 || warm_s > 30)); then
	echo "bench-two-hop: DURATION=$DURATION WARMUP=$WARMUP: want whole seconds, DURATION 10s..2m, WARMUP up to 30s" >&2
	exit 2
fi
# Start-up (origin, two edges, first segments), warmup, measurement, margin.
push_s=$((dur_s + warm_s + 30))

bench_init bench-two-hop

echo "== load average at start (other work on this machine skews the figures): $(cut -d" " -f1-3 /proc/loadavg)"

echo "== building relaymesh and partlag"
go build -o "$tmp/relaymesh" ./cmd/relaymesh
go build -o "$tmp/partlag" ./scripts/partlag

key="bench-two-hop-$RANDOM$RANDOM"
o_http=$(freeport) o_rtmp=$(freeport) o_mesh=$(freeport) o_relay=$(freeport)
e1_http=$(freeport) e1_mesh=$(freeport) e1_relay=$(freeport)
e2_http=$(freeport) e2_mesh=$(freeport) e2_relay=$(freeport)

origin_cmd=("$tmp/relaymesh" origin --node-name origin --http "127.0.0.1:$o_http" --rtmp "127.0.0.1:$o_rtmp"
	--srt "" --rtsp "" --mesh "127.0.0.1:$o_mesh" --relay "127.0.0.1:$o_relay" --cluster-key "$key")
edge1_cmd=("$tmp/relaymesh" edge --node-name edge-1 --http "127.0.0.1:$e1_http" --mesh "127.0.0.1:$e1_mesh"
	--relay "127.0.0.1:$e1_relay" --cluster-key "$key" --join "127.0.0.1:$o_mesh")
edge2_cmd=("$tmp/relaymesh" edge --node-name edge-2 --http "127.0.0.1:$e2_http" --mesh "127.0.0.1:$e2_mesh"
	--relay "127.0.0.1:$e2_relay" --cluster-key "$key" --join "127.0.0.1:$o_mesh" --parent edge-1)

echo "== origin: $(printf '%q ' "${origin_cmd[@]:1}")"
"${origin_cmd[@]}" >"$tmp/origin.log" 2>&1 &
origin_pid=$!
pids+=("$origin_pid")
wait_http "http://127.0.0.1:$o_http/healthz" "$origin_pid"

"$FFMPEG" -hide_banner -loglevel error -nostdin -re \
	-f lavfi -i testsrc2=size=1280x720:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
	-c:v libx264 -preset veryfast -g 60 -keyint_min 60 -sc_threshold 0 -b:v 2500k \
	-c:a aac -b:a 128k -t "$push_s" -f flv "rtmp://127.0.0.1:$o_rtmp/live/bench" \
	>"$tmp/ffmpeg.log" 2>&1 &
ffmpeg_pid=$!
pids+=("$ffmpeg_pid")
o_media="http://127.0.0.1:$o_http/live/bench/media.m3u8"
wait_parts "$o_media"

echo "== edge-1: $(printf '%q ' "${edge1_cmd[@]:1}")"
"${edge1_cmd[@]}" >"$tmp/edge-1.log" 2>&1 &
edge1_pid=$!
pids+=("$edge1_pid")
wait_http "http://127.0.0.1:$e1_http/healthz" "$edge1_pid"
e1_media="http://127.0.0.1:$e1_http/live/bench/media.m3u8"
wait_parts "$e1_media"

# edge-2 must find edge-1 among the stream's holders: wait until the
# origin's view of the mesh (gossip) lists the stream on edge-1.
wait_holder "http://127.0.0.1:$o_http/api/mesh" edge-1 bench

echo "== edge-2: $(printf '%q ' "${edge2_cmd[@]:1}")"
"${edge2_cmd[@]}" >"$tmp/edge-2.log" 2>&1 &
edge2_pid=$!
pids+=("$edge2_pid")
wait_http "http://127.0.0.1:$e2_http/healthz" "$edge2_pid"
e2_media="http://127.0.0.1:$e2_http/live/bench/media.m3u8"
wait_parts "$e2_media"
if ! grep 'msg="relaying stream"' "$tmp/edge-2.log" | tail -n 1 | grep -q 'upstream=edge-1'; then
	fail "edge-2 does not relay from edge-1: $(grep 'relaying stream' "$tmp/edge-2.log" || echo 'no relaying line')"
fi
echo "   $(grep 'msg="relaying stream"' "$tmp/edge-1.log" | tail -n 1 | sed 's/^time=[^ ]* //')"
echo "   $(grep 'msg="relaying stream"' "$tmp/edge-2.log" | tail -n 1 | sed 's/^time=[^ ]* //')"

echo "== measuring: three partlag clients at once, $DURATION after a $WARMUP warmup"
names=(origin edge-1 edge-2)
urls=("$o_media" "$e1_media" "$e2_media")
cpu_pids=("$ffmpeg_pid" "$origin_pid" "$edge1_pid" "$edge2_pid")
cpu_names=(ffmpeg origin edge-1 edge-2)
cpu_t0=()
for pid in "${cpu_pids[@]}"; do cpu_t0+=("$(cpu_ticks "$pid")"); done
cpu_start=$(date +%s%N)
lag_pids=()
for i in 0 1 2; do
	# shellcheck disable=SC2086 # PARTLAG_FLAGS is split on purpose
	"$tmp/partlag" -url "${urls[$i]}" -duration "$DURATION" -warmup "$WARMUP" \
		-csv "$tmp/parts-${names[$i]}.csv" $PARTLAG_FLAGS >"$tmp/partlag-${names[$i]}.txt" 2>"$tmp/partlag-${names[$i]}.err" &
	lag_pids+=("$!")
	pids+=("$!")
done
status=0
for pid in "${lag_pids[@]}"; do
	wait "$pid" || status=1
done
el_ms=$((($(date +%s%N) - cpu_start) / 1000000))
line="CPU during the measurement (${el_ms} ms, % of one core):"
for i in 0 1 2 3; do
	line+=" ${cpu_names[$i]} $((($(cpu_ticks "${cpu_pids[$i]}") - ${cpu_t0[$i]}) * 1000 * 100 / hz / el_ms))%"
done
for n in "${names[@]}"; do
	echo "-- $n"
	sed 's/^/  /' "$tmp/partlag-$n.txt" "$tmp/partlag-$n.err"
done
((status == 0)) || fail "a partlag client failed"
kill -0 "$ffmpeg_pid" 2>/dev/null || fail "ffmpeg stopped before the measurement ended"

# field NAME KEY: a value (in ms, without the unit) from a partlag summary line.
field() {
	grep '^partlag ' "$tmp/partlag-$1.txt" | tr ' ' '\n' | sed -n "s/^$2=\(.*\)ms$/\1/p"
}

# paired A B: the lag difference B - A of each part measured at both nodes.
paired() {
	awk -F, 'NR == FNR { if (FNR > 1) a[$3] = $4; next }
		FNR > 1 && ($3 in a) { printf "%.3f\n", $4 - a[$3] }' \
		"$tmp/parts-$1.csv" "$tmp/parts-$2.csv" | sort -g >"$tmp/diff-$1-$2.txt"
	awk '{ v[NR] = $1 }
		function rank(p,  k) { k = int(p / 100 * NR); if (k < p / 100 * NR) k++; if (k < 1) k = 1; return v[k] }
		END {
			if (NR == 0) { print "no parts in common"; exit }
			printf "n=%d min=%.1fms p50=%.1fms p95=%.1fms max=%.1fms\n", NR, v[1], rank(50), rank(95), v[NR]
		}' "$tmp/diff-$1-$2.txt"
}

echo "== part lag at each node (measured at the same time)"
printf '%-8s %5s %9s %9s %9s\n' node n p50 p95 max
for n in "${names[@]}"; do
	printf '%-8s %5s %7sms %7sms %7sms\n' "$n" "$(sed -n 's/^partlag n=\([0-9]*\) .*/\1/p' "$tmp/partlag-$n.txt")" \
		"$(field "$n" p50)" "$(field "$n" p95)" "$(field "$n" max)"
done
for n in edge-1 edge-2; do
	awk -v n="$n" -v a50="$(field origin p50)" -v a95="$(field origin p95)" -v amax="$(field origin max)" \
		-v b50="$(field "$n" p50)" -v b95="$(field "$n" p95)" -v bmax="$(field "$n" max)" \
		'BEGIN { printf "%s - origin: p50 %+.1f ms, p95 %+.1f ms, max %+.1f ms\n", n, b50 - a50, b95 - a95, bmax - amax }'
done
echo "same part, paired (lag at the edge - lag at the origin):"
echo "  edge-1: $(paired origin edge-1)"
echo "  edge-2: $(paired origin edge-2)"
echo "  edge-2 - edge-1: $(paired edge-1 edge-2)"
d95=$(awk -v a="$(field origin p95)" -v b="$(field edge-2 p95)" 'BEGIN { printf "%.1f", b - a }')
if awk -v d="$d95" 'BEGIN { exit !(d <= 10) }'; then
	echo "goal (edge-2 p95 within 10 ms of the origin's): met (${d95} ms)"
else
	echo "goal (edge-2 p95 within 10 ms of the origin's): MISSED (${d95} ms)"
fi

echo "== bytes: a complete segment and the init segment, origin vs edge-2"
# The newest complete segment both windows hold: the origin's second
# newest, so that edge-2 has certainly closed it too.
seg=$(curl -fsS --max-time 5 "$o_media" | grep -v '^#' | grep '^seg' | tail -n 2 | head -n 1)
init=$(curl -fsS --max-time 5 "$o_media" | sed -n 's/^#EXT-X-MAP:URI="\([^"]*\)".*/\1/p' | tail -n 1)
for f in "$seg" "$init"; do
	[[ -n $f ]] || fail "no segment or init listed at the origin"
	curl -fsS --max-time 5 -o "$tmp/origin-$f" "http://127.0.0.1:$o_http/live/bench/$f"
	curl -fsS --max-time 5 -o "$tmp/edge-2-$f" "http://127.0.0.1:$e2_http/live/bench/$f"
	if cmp -s "$tmp/origin-$f" "$tmp/edge-2-$f"; then same=yes; else same=no; fi
	printf '%s: origin %s bytes sha256 %.16s, edge-2 %s bytes sha256 %.16s, identical: %s\n' "$f" \
		"$(stat -c %s "$tmp/origin-$f")" "$(sha256sum "$tmp/origin-$f" | cut -d' ' -f1)" \
		"$(stat -c %s "$tmp/edge-2-$f")" "$(sha256sum "$tmp/edge-2-$f" | cut -d' ' -f1)" "$same"
done

echo "== $line"
echo "== summary (DURATION=$DURATION, WARMUP=$WARMUP, $(nproc) cores)"
for n in "${names[@]}"; do
	echo "$n: $(grep '^partlag ' "$tmp/partlag-$n.txt")"
done
echo "load average at end: $(cut -d" " -f1-3 /proc/loadavg)"
