#!/usr/bin/env bash
# Serving capacity: how many LL-HLS viewers one core of relaymesh holds at
# zero stalls, against nginx serving the same bytes as static files to
# polling viewers, both in the same run (issue 10, measure 4 of the
# design: within 1.5x of nginx).
#
# The machine is split in two: the server under test is pinned to
# SERVER_CORE and scripts/capload, the load generator, to GEN_CORE
# (taskset). Everything else is pinned to the generator's core and counted
# in its busy share: the encoder (ffmpeg -c copy, so nearly free) and, for
# nginx, the mirror that copies the stream into nginx's root. The relaymesh
# origin stays on the server's core in both phases: it ingests the stream
# there while relaymesh serves and while nginx serves (other_cpu).
#
#  1. It builds relaymesh and scripts/capload, encodes a 20 s 640x360 30 fps
#     clip (H.264 600 kb/s, key frame every GOP seconds, AAC 64 kb/s: about
#     0.7 Mb/s) into FLV, starts an origin on SERVER_CORE (no mesh, 200 ms
#     parts) and pushes the clip in a loop with ffmpeg -re -stream_loop -1
#     -c copy over RTMP, pinned to GEN_CORE. FLV, not MPEG-TS: -re paces FLV
#     frame by frame, while TS audio comes in bursts that make the parts
#     arrive up to a quarter second early or late.
#  2. relaymesh: capload -mode llhls, viewers that play like hls.js in
#     low-latency mode (blocking reload with _HLS_msn/_HLS_part for the next
#     part, every part in order, one keep-alive connection each), ramped
#     through STEPS; each step adds viewers over SPREAD, waits SETTLE and
#     measures for HOLD.
#  3. nginx (Debian's, one worker, master and worker on SERVER_CORE,
#     sendfile, keep-alive, no access log, open_file_cache for the
#     immutable parts): capload -mode mirror copies the origin's
#     multivariant playlist, init section, parts and media playlists into
#     a tmpfs directory byte for byte (each part and then the playlist
#     renamed into place), and capload -mode poll plays from nginx with the
#     same request mix minus the blocking: a plain media playlist reload
#     every PART-TARGET (one playlist request per part, as with blocking
#     reloads), then the new parts. Same STEPS, up to its own limit.
#
# Each step's line gives viewers, stalls, errors, requests/s (playlists,
# parts), Mbit/s, the smallest buffer left when a part arrived, the
# generator's CPU and its core's busy share (gen_core), and the server's
# CPU (process), its core's busy share, RSS and VmHWM, and the server's
# cost per viewer above its idle baseline (µs of CPU per viewer-second,
# kB of RSS). A stall is a simulated buffer (started three parts behind
# the live edge, drained in real time) running dry. A step counts when it
# has zero stalls, zero errors, every viewer playing, and the generator's
# core under 90 % busy; a phase stops at the first step that does not.
# "Viewers per core" is the largest step that counted. A phase that
# stopped because the generator saturated (gen_saturated) gives only a
# lower bound for that server, printed as ">=N", and the ratio is then a
# bound as well.
#
# Beside the measurement, each step extrapolates the server's core to
# 100 % busy (core_est_viewers): a ceiling blind to bursts, but one the
# generator does not bound; est_ratio compares those. The last line, for
# docs/benchmarks.md (per server: viewers per core, why the ramp stopped
# and the generator's core there, then the held step's figures):
#
#   capacity cores=2 gop=1s part=200ms hold=20s relaymesh_viewers=2800 relaymesh_stop=stalls@3200 relaymesh_stop_gen_core=68.8% relaymesh_core_est_viewers=2851 relaymesh_cpu_us_per_viewer_s=345 relaymesh_rss_kb_per_viewer=41.6 relaymesh_req_s=27993 relaymesh_server_core=98.2% relaymesh_gen_core=58.0% nginx_viewers=>=4000 nginx_stop=gen_saturated@4500 ... ratio=<=0.70 est_ratio=0.65
#
# Every process the script starts is stopped on exit, by PID.
#
# Usage (from anywhere; a quiet machine with at least 2 cores):
#   scripts/bench-capacity.sh
#   STEPS=50,100 HOLD=5s SETTLE=2s scripts/bench-capacity.sh   # a smoke run
# Environment: STEPS (increasing viewer counts, default
# 200,400,...,8000), HOLD (measuring window per step, default 15s, 5s..5m),
# SETTLE (default 4s), SPREAD (arrivals of a step, default 3s), GOP (key
# frame interval in seconds, 1 or 2, default 1), SERVER_CORE (default 0),
# GEN_CORE (default 1), OUT (a file to copy every step line and the
# summary to), RELAYMESH (a relaymesh binary to use instead of building
# ./cmd/relaymesh), FFMPEG (default ffmpeg), NGINX (default nginx).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

STEPS=${STEPS:-200,400,600,800,1000,1200,1400,1600,1800,2000,2400,2800,3200,3600,4000,4500,5000,5600,6300,7000,8000}
HOLD=${HOLD:-15s}
SETTLE=${SETTLE:-4s}
SPREAD=${SPREAD:-3s}
GOP=${GOP:-1}
SERVER_CORE=${SERVER_CORE:-0}
GEN_CORE=${GEN_CORE:-1}
OUT=${OUT:-}
RELAYMESH=${RELAYMESH:-}
FFMPEG=${FFMPEG:-ffmpeg}
NGINX=${NGINX:-nginx}
part_target=200ms
max_gen_core=90

usage_error() {
	echo "bench-capacity: $*" >&2
	exit 2
}
[[ $STEPS =~ ^[0-9]+(,[0-9]+)*$ ]] || usage_error "STEPS=$STEPS: want increasing viewer counts, e.g. 100,200,400"
max_step=${STEPS##*,}
for v in HOLD SETTLE SPREAD; do
	hms_seconds "${!v}" >/dev/null || usage_error "$v=${!v}: want whole seconds or minutes (15s, 1m)"
done
hold_s=$(hms_seconds "$HOLD")
((hold_s >= 5 && hold_s <= 300)) || usage_error "HOLD=$HOLD: want 5s..5m"
[[ $GOP == 1 || $GOP == 2 ]] || usage_error "GOP=$GOP: want 1 or 2 (seconds)"
cores=$(nproc --all)
for v in SERVER_CORE GEN_CORE; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} >= cores)); then
		usage_error "$v=${!v}: want a core number below $cores"
	fi
done
((SERVER_CORE != GEN_CORE)) || usage_error "SERVER_CORE and GEN_CORE must differ"
[[ -z $RELAYMESH || -x $RELAYMESH ]] || usage_error "RELAYMESH=$RELAYMESH is not an executable"
for tool in taskset "$FFMPEG" "$NGINX" curl; do
	command -v "$tool" >/dev/null || usage_error "$tool is not installed"
done
if [[ -n $OUT ]]; then
	: >>"$OUT" 2>/dev/null || usage_error "OUT=$OUT: cannot write there"
fi
# A viewer is a connection: the generator and each server need a file
# descriptor per viewer, and some to spare.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
((max_step + 200 <= $(ulimit -n))) ||
	usage_error "STEPS up to $max_step need more open files than ulimit -n allows ($(ulimit -n))"

bench_init bench-capacity
# nginx's root on tmpfs, like relaymesh's memory: neither touches a disk.
www=$(mktemp -d /dev/shm/bench-capacity.XXXXXX)
trap 'rm -rf "$www"; bench_cleanup' EXIT
chmod 755 "$www"

echo "== load average at start (other work on this machine skews the figures): $(cut -d" " -f1-3 /proc/loadavg)"
if [[ -n $RELAYMESH ]]; then
	echo "== building capload (relaymesh: $RELAYMESH)"
	cp "$RELAYMESH" "$tmp/relaymesh"
else
	echo "== building relaymesh and capload"
	go build -o "$tmp/relaymesh" ./cmd/relaymesh
fi
go build -o "$tmp/capload" ./scripts/capload

echo "== encoding a 20 s 640x360 clip (GOP ${GOP} s, about 0.7 Mb/s) to loop"
gop_frames=$((GOP * 30))
"$FFMPEG" -hide_banner -loglevel error -nostdin -y \
	-f lavfi -i testsrc2=size=640x360:rate=30:duration=20 -f lavfi -i sine=frequency=440:sample_rate=48000:duration=20 \
	-c:v libx264 -threads 1 -preset veryfast -pix_fmt yuv420p -g "$gop_frames" -keyint_min "$gop_frames" -sc_threshold 0 \
	-b:v 600k -maxrate 640k -bufsize 1200k -c:a aac -b:a 64k -f flv "$tmp/clip.flv"

freeports 3
http_port=${ports[0]} rtmp_port=${ports[1]} nginx_port=${ports[2]}

# died NAME LOG: a process stopped; print its log's tail and fail.
died() {
	echo "bench-capacity: $1 exited; the end of its log:" >&2
	tail -n 40 "$2" >&2
	exit 1
}

echo "== origin on core $SERVER_CORE: http 127.0.0.1:$http_port, rtmp :$rtmp_port, parts $part_target"
taskset -c "$SERVER_CORE" "$tmp/relaymesh" origin --node-name capacity --http "127.0.0.1:$http_port" \
	--rtmp "127.0.0.1:$rtmp_port" --srt "" --rtsp "" --rtsp-udp "" --mesh "" --relay "" \
	--part-target "$part_target" >"$tmp/origin.log" 2>&1 &
origin_pid=$!
pids+=("$origin_pid")
for _ in $(seq 1 100); do
	curl -fsS -o /dev/null "http://127.0.0.1:$http_port/healthz" 2>/dev/null && break
	kill -0 "$origin_pid" 2>/dev/null || died origin "$tmp/origin.log"
	sleep 0.1
done

echo "== ffmpeg on core $GEN_CORE: the clip in a loop, -re -c copy"
taskset -c "$GEN_CORE" "$FFMPEG" -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$tmp/clip.flv" \
	-c copy -f flv "rtmp://127.0.0.1:$rtmp_port/live/bench" >"$tmp/ffmpeg.log" 2>&1 &
ffmpeg_pid=$!
pids+=("$ffmpeg_pid")
wait_live "http://127.0.0.1:$http_port/live/bench/media.m3u8" "$ffmpeg_pid" "$tmp/ffmpeg.log" "$tmp/origin.log"
# The playlist's window fills: three target durations of parts.
sleep 8

# show_new NAME prints the lines of $tmp/NAME.txt after the first $shown
# and moves $shown on.
show_new() {
	local total
	total=$(wc -l <"$tmp/$1.txt")
	if ((total > shown)); then
		sed -n "$((shown + 1)),${total}p" "$tmp/$1.txt" | sed "s/^/  $1 /"
		shown=$total
	fi
}

# ramp NAME MODE URL SERVER_PIDS [OTHER_PIDS]: runs capload through STEPS
# on the generator's core; its lines go to the terminal and $tmp/NAME.txt.
ramp() {
	local name=$1 mode=$2 url=$3 spids=$4 others=${5:-} pid rc=0
	echo "== $name: capload -mode $mode on core $GEN_CORE, steps $STEPS, each: ${SPREAD} arrivals, ${SETTLE} settle, ${HOLD} measured"
	: >"$tmp/$name.txt"
	taskset -c "$GEN_CORE" "$tmp/capload" -url "$url" -mode "$mode" -steps "$STEPS" -spread "$SPREAD" \
		-settle "$SETTLE" -hold "$HOLD" -server-pids "$spids" -other-pids "$others" \
		-server-core "$SERVER_CORE" -gen-core "$GEN_CORE" -max-gen-core "$max_gen_core" \
		>"$tmp/$name.txt" 2>"$tmp/$name.err" &
	pid=$!
	pids+=("$pid")
	# Its lines as they come, then the rest once it has stopped.
	shown=0
	while kill -0 "$pid" 2>/dev/null; do
		show_new "$name"
		sleep 1
	done
	wait "$pid" || rc=$?
	bench_forget "$pid"
	show_new "$name"
	[[ -z $OUT ]] || sed "s/^/$name /" "$tmp/$name.txt" >>"$OUT"
	if ((rc != 0)) || ! grep -q '^capload ' "$tmp/$name.txt"; then
		echo "bench-capacity: capload against $name failed (exit $rc); its errors:" >&2
		tail -n 20 "$tmp/$name.err" >&2
		exit 1
	fi
	kill -0 "$ffmpeg_pid" 2>/dev/null || died ffmpeg "$tmp/ffmpeg.log"
}

ramp relaymesh llhls "http://127.0.0.1:$http_port/live/bench/index.m3u8" "$origin_pid"
kill -0 "$origin_pid" 2>/dev/null || died origin "$tmp/origin.log"

echo "== mirror on core $GEN_CORE: the origin's playlists and parts into $www/live/bench"
taskset -c "$GEN_CORE" "$tmp/capload" -mode mirror -url "http://127.0.0.1:$http_port/live/bench/index.m3u8" \
	-dir "$www/live/bench" >"$tmp/mirror.log" 2>&1 &
mirror_pid=$!
pids+=("$mirror_pid")
for _ in $(seq 1 100); do
	[[ -s $www/live/bench/media.m3u8 ]] && break
	kill -0 "$mirror_pid" 2>/dev/null || died mirror "$tmp/mirror.log"
	sleep 0.1
done
chmod -R a+rX "$www"

mkdir -p "$tmp/nginx"
cat >"$tmp/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
worker_rlimit_nofile $((max_step * 2 + 1000));
events {
	worker_connections $((max_step + 500));
}
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	tcp_nodelay on;
	keepalive_timeout 65s;
	keepalive_requests 1000000;
	client_body_temp_path $tmp/nginx/body;
	proxy_temp_path $tmp/nginx/proxy;
	fastcgi_temp_path $tmp/nginx/fastcgi;
	uwsgi_temp_path $tmp/nginx/uwsgi;
	scgi_temp_path $tmp/nginx/scgi;
	types {
		application/vnd.apple.mpegurl m3u8;
		video/mp4 mp4 m4s;
	}
	server {
		listen 127.0.0.1:$nginx_port;
		root $www;
		add_header Access-Control-Allow-Origin "*";
		# Parts and init sections never change once written.
		location / {
			open_file_cache max=2000 inactive=30s;
		}
		# Playlists are replaced (renamed over) with every part.
		location ~ \.m3u8\$ {
			add_header Cache-Control "no-cache";
			add_header Access-Control-Allow-Origin "*";
		}
	}
}
EOF
echo "== nginx ($("$NGINX" -v 2>&1 | sed 's/.*: //'), one worker) on core $SERVER_CORE: http 127.0.0.1:$nginx_port"
taskset -c "$SERVER_CORE" "$NGINX" -p "$tmp/nginx/" -e "$tmp/nginx/error.log" -c "$tmp/nginx/nginx.conf" \
	>"$tmp/nginx/out.log" 2>&1 &
nginx_pid=$!
pids+=("$nginx_pid")
for _ in $(seq 1 100); do
	curl -fsS -o /dev/null "http://127.0.0.1:$nginx_port/live/bench/media.m3u8" 2>/dev/null && break
	kill -0 "$nginx_pid" 2>/dev/null || died nginx "$tmp/nginx/error.log"
	sleep 0.1
done
worker_pid=$(pgrep -P "$nginx_pid" | head -n 1 || true)
[[ -n $worker_pid ]] || died nginx "$tmp/nginx/error.log"
# The same bytes: the mirror's playlist is the origin's.
cmp -s <(curl -fsS "http://127.0.0.1:$nginx_port/live/bench/init1.mp4") \
	<(curl -fsS "http://127.0.0.1:$http_port/live/bench/init1.mp4") ||
	echo "bench-capacity: WARNING: nginx's init1.mp4 differs from the origin's" >&2

ramp nginx poll "http://127.0.0.1:$nginx_port/live/bench/index.m3u8" "$nginx_pid,$worker_pid" "$origin_pid"
kill -0 "$mirror_pid" 2>/dev/null || died mirror "$tmp/mirror.log"
kill -0 "$nginx_pid" 2>/dev/null || died nginx "$tmp/nginx/error.log"

# field NAME LINE: a name=value of a capload line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

declare -A held bound
summary="capacity cores=$cores gop=${GOP}s part=$part_target hold=$HOLD"
echo "== results (viewers per core: the largest step with zero stalls and errors while the generator's core stayed under ${max_gen_core} %)"
for name in relaymesh nginx; do
	line=$(grep '^capload ' "$tmp/$name.txt")
	idle=$(grep '^idle ' "$tmp/$name.txt" || true)
	held[$name]=$(field held "$line")
	stop=$(field stop "$line")
	bound[$name]=""
	[[ $stop != gen_saturated* ]] || bound[$name]=">="
	# The generator's core at the step that ended the ramp: the proof that
	# it was not the bottleneck.
	last=$(grep '^step ' "$tmp/$name.txt" | tail -n 1)
	printf '  %-9s viewers/core %s%s (stopped: %s; generator core %s there); at %s viewers: req/s %s (playlists %s, parts %s), server CPU %s (core %s), %s µs CPU per viewer-s, %s kB RSS per viewer (RSS %s MB, HWM %s MB), generator core %s, smallest buffer %s ms, server core extrapolated to 100 %%: %s viewers; idle: server CPU %s, core %s, RSS %s MB\n' \
		"$name" "${bound[$name]}" "${held[$name]}" "$stop" "$(field gen_core "$last")" "${held[$name]}" \
		"$(field req_s "$line")" "$(field playlist_s "$line")" "$(field part_s "$line")" \
		"$(field server_cpu "$line")" "$(field server_core "$line")" "$(field cpu_us_per_viewer_s "$line")" \
		"$(field rss_kb_per_viewer "$line")" "$(field server_rss_mb "$line")" "$(field server_hwm_mb "$line")" \
		"$(field gen_core "$line")" "$(field min_buffer_ms "$line")" "$(field core_est_viewers "$line")" \
		"$(field server_cpu "$idle")" "$(field server_core "$idle")" "$(field server_rss_mb "$idle")"
	summary+=" ${name}_viewers=${bound[$name]}${held[$name]} ${name}_stop=$stop ${name}_stop_gen_core=$(field gen_core "$last")"
	for f in core_est_viewers cpu_us_per_viewer_s rss_kb_per_viewer req_s server_core gen_core; do
		v=$(field "$f" "$line")
		summary+=" ${name}_$f=${v:-NA}"
	done
done
ratio=NA
if ((held[nginx] > 0)); then
	ratio=$(awk -v a="${held[relaymesh]}" -v b="${held[nginx]}" 'BEGIN { printf "%.2f", a / b }')
	# A lower bound for nginx makes the ratio an upper bound, and one for
	# relaymesh a lower bound; both: no bound at all.
	if [[ -n ${bound[nginx]} && -z ${bound[relaymesh]} ]]; then
		ratio="<=$ratio"
	elif [[ -z ${bound[nginx]} && -n ${bound[relaymesh]} ]]; then
		ratio=">=$ratio"
	elif [[ -n ${bound[nginx]} ]]; then
		ratio="~$ratio(both_generator_bound)"
	fi
fi
summary+=" ratio=$ratio"
# The same ratio from each server's core extrapolated to 100 % busy: an
# estimate, but one the generator does not bound.
est_r=$(field core_est_viewers "$(grep '^capload ' "$tmp/relaymesh.txt")")
est_n=$(field core_est_viewers "$(grep '^capload ' "$tmp/nginx.txt")")
if [[ -n $est_r && -n $est_n ]]; then
	summary+=" est_ratio=$(awk -v a="$est_r" -v b="$est_n" 'BEGIN { printf "%.2f", a / b }')"
fi
if [[ -n ${bound[relaymesh]}${bound[nginx]} ]]; then
	echo "bench-capacity: NOTE: the generator's core reached ${max_gen_core} % before the server stalled (gen_saturated): that figure is a lower bound" >&2
fi
echo "== summary (relaymesh: LL-HLS blocking reload; nginx: the same files polled every PART-TARGET; the origin ingests on core $SERVER_CORE in both phases; ffmpeg and the mirror on core $GEN_CORE)"
echo "$summary"
[[ -z $OUT ]] || echo "$summary" >>"$OUT"
echo "load average at end: $(cut -d" " -f1-3 /proc/loadavg)"
