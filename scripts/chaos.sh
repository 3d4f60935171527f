#!/usr/bin/env bash
# The chaos drill: nodes of a mesh are killed, frozen and restarted at
# random while steered LL-HLS viewers watch, to see who loses parts,
# who stalls and for how long. The goal (issue 9): zero parts lost for
# viewers whose node survived the event.
#
# It builds relaymesh and scripts/viewers and starts, on free loopback
# ports, a primary origin (origin-a), a standby origin (origin-b, with
# --standby-for origin-a) and edge-1, edge-2 and edge-3. Every node gets
# --capacity CAPACITY (default VIEWERS: one node can hold everyone),
# --steering-ttl 3s, --drain-timeout DRAIN_TIMEOUT, --grace 30s (the
# default) and --join with the mesh address of every other node, so that a
# node restarted while another is down finds the mesh. One ffmpeg encoder
# (a live 640x360 30 fps H.264 + AAC test pattern, about 0.7 Mb/s, key
# frame every 2 s) publishes stream "chaos" to both origins at once with
# the tee muxer, as docs/standby.md says:
#
#   -flags +global_header -f tee '[f=flv:onfail=ignore]rtmp://A/live/chaos|[f=flv:onfail=ignore]rtmp://B/live/chaos|...'
#
# Encoder reconnects. A tee output whose origin dies fails and is dropped
# for good (onfail=ignore). So that a restarted origin gets the stream back,
# as an encoder's automatic reconnect would give it, the same tee also
# writes a local MPEG-TS copy of its output for each origin (UDP on
# loopback, key frames with their SPS/PPS); once an origin has been
# restarted, an "uplink" loop pushes that copy unchanged (-c copy: the same
# frames, the same key frames) to it over RTMP, and pushes it again within
# a second whenever the push ends (origin down, refused, hit again). The
# encoder itself never stops, so the other origin is never disturbed.
#
# Viewers. scripts/viewers (hls.js 1.7.4 low-latency and content steering
# behaviour; see scripts/viewers/main.go) enter at edge-1's index.m3u8,
# VIEWERS of them evenly over the first 10 s, and stay for DURATION: no
# churn. The entry URL is only used on arrival, and every viewer has
# arrived before the first event, so the entry node may be hit like any
# other; from then on viewers move only as steering and their failover
# (fallback pathways, penalty box) move them.
#
# Events. From the viewers' start, after a gap drawn uniformly from
# MIN_GAP..MAX_GAP (default 20s..40s), one node drawn from all five hit
# by one of KINDS (default kill,stop,term), drawn likewise:
#
#   kill  kill -9, restart after DOWN (default 5s) with the same flags
#         and ports;
#   stop  SIGSTOP, SIGCONT after STOP (default 5s);
#   term  SIGTERM (a graceful drain: /readyz turns 503, steering moves the
#         viewers; the node exits after at most DRAIN_TIMEOUT, default
#         10s), restart once it has exited.
#
# Events do not overlap (the next one waits until the previous node is
# back and ready, and at least 5 s more), so at least one origin and one
# edge are always up. No event starts in the last 20 s. The plan depends
# only on SEED (default: random, printed; SEED=N replays a plan with the
# same bash) and the knobs. Each event is logged with its wall-clock time
# and its time into the run, the viewers on the node at that moment, the
# signals' and the restart's times and /readyz; and it is written to an
# events file that scripts/viewers reads at the end (-events).
#
# State checks. After each event and every 10 s: which origin publishes
# the stream and which stands by (relaymesh status), and whether the
# nodes' media playlists agree: a segment number that two nodes list with
# PROGRAM-DATE-TIMEs more than 0.5 s apart means they serve different
# media under one number, and viewers moving between them jump. Two
# origins publishing at once (a split brain) and diverging playlists are
# problems.
#
# Report. The viewers' summary; per viewer, the parts it skipped (fell
# behind the window: lost), the media it missed or got again by
# PROGRAM-DATE-TIME (a jump of 0.1 s or more from the end of one part to
# the start of the next: media lost under a part number that looked
# right, e.g. on moving between nodes whose playlists diverge; a standby
# takeover repeats up to a GOP by design), and its longest stall, as
# histograms or lists of viewers, and the viewers whose playback ended,
# failed or was not playing at the end; for each event, what the viewers
# on the hit node (by the host of their last part before the event) and
# those elsewhere saw until the next event: parts lost, media gaps and
# repeats, stalls, the longest, ends; and the viewers on each node at the
# event (every viewer's hosts over time is in the viewers' JSON). A line
# "chaos: PROBLEM ..." marks each event after which a viewer elsewhere
# lost parts or media, stalled SURVIVOR_STALL (default 1s) or more, or
# ended or failed; any viewer on the hit node that ended or failed; a
# node that did not come back or drain in time; a split brain; diverging
# playlists; viewers not playing at the end. After each come the node
# logs around it: every line of the nodes concerned, the others' warnings
# and errors (for an event: from 2 s before it to 20 s after). Then one
# line for docs/benchmarks.md:
#
#   chaos duration=5m viewers=200 seed=... events=9 kill=3 stop=3 term=3 restarts=6/6 elsewhere_lost_parts=0 ... elsewhere_media_gap_s=0.0 ... split_brain_checks=0/40 diverged_checks=0/40 problems=0
#
# Node logs, the events file, the uplinks' logs and the viewers' JSON
# (with every viewer's record: -per-viewer) are in the temp dir, removed
# on exit; KEEP=DIR copies them there. The script exits non-zero only when
# the drill could not run (a build, the first start of a node, ffmpeg or
# the viewers failed); what relaymesh does under fire is reported, not
# judged by the exit status.
#
# Every process the script starts is stopped on exit, by PID (SIGINT: a
# relaymesh node then stops at once instead of draining; a stopped node
# gets SIGCONT first). Ctrl-C takes effect once the current step ends (at
# most DOWN or STOP).
#
# Usage (from anywhere):
#   scripts/chaos.sh
#   DURATION=2m SEED=7 scripts/chaos.sh
#   KINDS=kill VIEWERS=100 KEEP=/tmp/chaos-logs scripts/chaos.sh
# Environment: DURATION (default 5m, 1m..2h), VIEWERS (default 200,
# 1..2000), SEED (a whole number; default random), MIN_GAP and MAX_GAP
# (default 20s and 40s, 5s..10m), KINDS (comma-separated of kill, stop,
# term; default all three), DOWN (kill: time down, default 5s, 0s..1m),
# STOP (stop: time stopped, default 5s, 1s..1m), DRAIN_TIMEOUT (default
# 10s, 0s..2m), CAPACITY (viewers per node, default VIEWERS),
# SURVIVOR_STALL (whole seconds, default 1s), KEEP (a directory to copy the
# logs and reports to), RELAYMESH (a relaymesh binary to use instead of
# building ./cmd/relaymesh), FFMPEG (default ffmpeg), VIEWERS_FLAGS
# (extra scripts/viewers flags, e.g. -v).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

DURATION=${DURATION:-5m}
VIEWERS=${VIEWERS:-200}
SEED=${SEED:-$(((RANDOM << 15 | RANDOM) % 1000000))}
MIN_GAP=${MIN_GAP:-20s}
MAX_GAP=${MAX_GAP:-40s}
KINDS=${KINDS:-kill,stop,term}
DOWN=${DOWN:-5s}
STOP=${STOP:-5s}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-10s}
CAPACITY=${CAPACITY:-$VIEWERS}
SURVIVOR_STALL=${SURVIVOR_STALL:-1s}
KEEP=${KEEP:-}
RELAYMESH=${RELAYMESH:-}
FFMPEG=${FFMPEG:-ffmpeg}
VIEWERS_FLAGS=${VIEWERS_FLAGS:-}
ttl=3s
gop_s=2
ramp_s=10
tail_s=20  # no event starts in the last tail_s seconds
ready_s=30 # a restarted node must be ready within this

usage_error() {
	echo "chaos: $*" >&2
	exit 2
}
for v in DURATION MIN_GAP MAX_GAP DOWN STOP DRAIN_TIMEOUT SURVIVOR_STALL; do
	hms_seconds "${!v}" >/dev/null || usage_error "$v=${!v}: want whole seconds or minutes (30s, 2m)"
done
[[ $VIEWERS =~ ^[0-9]+$ && $CAPACITY =~ ^[0-9]+$ ]] || usage_error "VIEWERS and CAPACITY must be whole numbers"
[[ $SEED =~ ^[0-9]+$ ]] || usage_error "SEED=$SEED: want a whole number"
duration_s=$(hms_seconds "$DURATION") min_gap_s=$(hms_seconds "$MIN_GAP") max_gap_s=$(hms_seconds "$MAX_GAP")
down_s=$(hms_seconds "$DOWN") stop_s=$(hms_seconds "$STOP") drain_s=$(hms_seconds "$DRAIN_TIMEOUT")
survivor_stall_s=$(hms_seconds "$SURVIVOR_STALL")
((duration_s >= 60 && duration_s <= 7200)) || usage_error "DURATION=$DURATION: want 1m..2h"
((VIEWERS >= 1 && VIEWERS <= 2000)) || usage_error "VIEWERS=$VIEWERS: want 1..2000"
((CAPACITY >= 1 && CAPACITY <= 100000)) || usage_error "CAPACITY=$CAPACITY: want 1..100000"
((min_gap_s >= 5 && max_gap_s <= 600 && min_gap_s <= max_gap_s)) ||
	usage_error "MIN_GAP=$MIN_GAP MAX_GAP=$MAX_GAP: want 5s <= MIN_GAP <= MAX_GAP <= 10m"
((min_gap_s + tail_s <= duration_s)) || usage_error "MIN_GAP=$MIN_GAP: no event fits in DURATION=$DURATION (the last ${tail_s}s have none)"
((down_s <= 60)) || usage_error "DOWN=$DOWN: want 0s..1m"
((stop_s >= 1 && stop_s <= 60)) || usage_error "STOP=$STOP: want 1s..1m"
((drain_s <= 120)) || usage_error "DRAIN_TIMEOUT=$DRAIN_TIMEOUT: want 0s..2m"
kinds=()
IFS=, read -r -a kinds_in <<<"$KINDS"
for k in "${kinds_in[@]}"; do
	case $k in
	kill | stop | term) [[ " ${kinds[*]} " == *" $k "* ]] || kinds+=("$k") ;;
	*) usage_error "KINDS=$KINDS: want a comma-separated list of kill, stop and term" ;;
	esac
done
((${#kinds[@]} > 0)) || usage_error "KINDS is empty"
[[ -z $RELAYMESH || -x $RELAYMESH ]] || usage_error "RELAYMESH=$RELAYMESH is not an executable"
if [[ -n $KEEP ]]; then
	if ! mkdir -p "$KEEP" 2>/dev/null || [[ ! -w $KEEP ]]; then
		usage_error "KEEP=$KEEP: cannot write there"
	fi
fi
# The viewers stop at DURATION; the push outlasts them: start-up (at most
# a minute) and the run.
push_s=$((duration_s + 120))

bench_init chaos
# The uplink loops are subshells, which ignore SIGINT: they get SIGTERM,
# before bench_cleanup stops everything else.
uplink_pids=()
declare -A node_pid=() uplink_pid=()
chaos_cleanup() {
	local pid
	# A node stopped by a "stop" event would not see its SIGINT.
	for pid in "${node_pid[@]}"; do
		kill -CONT "$pid" 2>/dev/null || true
	done
	for pid in "${uplink_pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${uplink_pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n $KEEP && -d $tmp ]]; then
		cp "$tmp"/*.log "$tmp"/*.jsonl "$tmp"/*.txt "$tmp"/*.err "$tmp"/events "$KEEP"/ 2>/dev/null || true
		echo "chaos: logs and reports copied to $KEEP"
	fi
	bench_cleanup
}
trap chaos_cleanup EXIT

# now_ms: Unix time in ms. stamp: the wall clock and the time into the
# run, for the log.
now_ms() { date +%s%3N; }
stamp() {
	local ms
	ms=$(now_ms)
	if [[ -n ${t0:-} ]]; then
		printf '%s +%6.1fs' "$(date -u -d "@${ms:0:10}" +%H:%M:%S).${ms:10:3}" "$(((ms - t0) / 100))e-1"
	else
		printf '%s' "$(date -u -d "@${ms:0:10}" +%H:%M:%S).${ms:10:3}"
	fi
}

build_tools

# Ports: http, mesh, relay for each node, rtmp for each origin, and the
# encoder's two local copies (UDP; freeport checks TCP, and nothing else
# here uses UDP below the ephemeral range but the nodes, on these ports).
nodes=(origin-a origin-b edge-1 edge-2 edge-3)
freeports 19
declare -A node_http node_mesh node_relay node_rtmp node_pid node_role uplink_pid
i=0
for n in "${nodes[@]}"; do
	node_http[$n]=${ports[$i]} node_mesh[$n]=${ports[$((i + 1))]} node_relay[$n]=${ports[$((i + 2))]}
	i=$((i + 3))
	node_role[$n]=edge
done
node_role[origin-a]=origin node_role[origin-b]=origin
node_rtmp[origin-a]=${ports[15]} node_rtmp[origin-b]=${ports[16]}
declare -A copy_port=([origin-a]=${ports[17]} [origin-b]=${ports[18]})
key="chaos-$RANDOM$RANDOM"
stream=chaos

# node_args NAME: the node's command line, the same at every start.
node_args() {
	local n=$1 m seeds=""
	for m in "${nodes[@]}"; do
		[[ $m == "$n" ]] || seeds+="${seeds:+,}127.0.0.1:${node_mesh[$m]}"
	done
	args=("${node_role[$n]}" --node-name "$n" --http "127.0.0.1:${node_http[$n]}" --mesh "127.0.0.1:${node_mesh[$n]}"
		--relay "127.0.0.1:${node_relay[$n]}" --cluster-key "$key" --join "$seeds" --capacity "$CAPACITY"
		--steering-ttl "$ttl" --drain-timeout "${drain_s}s" --grace 30s)
	if [[ ${node_role[$n]} == origin ]]; then
		args+=(--rtmp "127.0.0.1:${node_rtmp[$n]}" --srt "" --rtsp "")
	fi
	if [[ $n == origin-b ]]; then
		args+=(--standby-for origin-a)
	fi
}

# start_node NAME: starts the node (its log is appended to, across
# restarts).
start_node() {
	local n=$1 args
	node_args "$n"
	echo "----- chaos: $(stamp) starting $n" >>"$tmp/$n.log"
	"$tmp/relaymesh" "${args[@]}" >>"$tmp/$n.log" 2>&1 &
	node_pid[$n]=$!
	pids+=("${node_pid[$n]}")
}

# ready NAME: whether its /readyz answers 200.
ready() { curl -fs -o /dev/null --max-time 1 "http://127.0.0.1:${node_http[$1]}/readyz" 2>/dev/null; }

# wait_ready NAME SECONDS: until the node's /readyz answers 200; fails if
# it does not in time or the process is gone.
wait_ready() {
	local n=$1 end=$(($(now_ms) + $2 * 1000))
	while (($(now_ms) < end)); do
		ready "$n" && return 0
		kill -0 "${node_pid[$n]}" 2>/dev/null || return 1
		sleep 0.05
	done
	return 1
}

# died NAME: a node did not start; print its log's tail and fail.
died() {
	echo "chaos: $1 did not start or get ready; the end of its log:" >&2
	tail -n 40 "$tmp/$1.log" >&2
	exit 1
}

for n in "${nodes[@]}"; do
	echo "== $n: http 127.0.0.1:${node_http[$n]}, mesh :${node_mesh[$n]}${node_rtmp[$n]:+, rtmp :${node_rtmp[$n]}}"
	start_node "$n"
	if [[ $n == origin-a ]]; then
		wait_ready origin-a 20 || died origin-a
	fi
done

# The encoder: RTMP to both origins (the documented tee), and a local
# MPEG-TS copy per origin for the uplink loops.
gop=$((gop_s * 30))
tee_out="[f=flv:onfail=ignore]rtmp://127.0.0.1:${node_rtmp[origin-a]}/live/$stream"
tee_out+="|[f=flv:onfail=ignore]rtmp://127.0.0.1:${node_rtmp[origin-b]}/live/$stream"
for n in origin-a origin-b; do
	tee_out+="|[f=mpegts:onfail=ignore:bsfs/v=dump_extra]udp://127.0.0.1:${copy_port[$n]}?pkt_size=1316"
done
echo "== encoder: -f tee '$tee_out'"
"$FFMPEG" -hide_banner -loglevel warning -nostdin -re \
	-f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
	-c:v libx264 -preset veryfast -pix_fmt yuv420p -g "$gop" -keyint_min "$gop" -sc_threshold 0 \
	-b:v 640k -maxrate 640k -bufsize 1280k -c:a aac -b:a 64k -t "$push_s" \
	-map 0:v -map 1:a -flags +global_header -f tee "$tee_out" >"$tmp/ffmpeg.log" 2>&1 &
ffmpeg_pid=$!
pids+=("$ffmpeg_pid")
push_end=$(($(date +%s) + push_s))

# start_uplink ORIGIN: once, a loop that pushes the encoder's copy for
# ORIGIN to it, again a second after each push ends, until the encoder
# stops; each attempt is logged to uplink-ORIGIN.log.
start_uplink() {
	local n=$1
	[[ -z ${uplink_pid[$n]:-} ]] || return 0
	(
		child=
		trap '[[ -n $child ]] && kill -INT "$child" 2>/dev/null; exit 0' TERM
		while (($(date +%s) < push_end)) && kill -0 "$ffmpeg_pid" 2>/dev/null; do
			echo "----- chaos: $(date -u +%H:%M:%S.%3N) pushing to $n"
			"$FFMPEG" -hide_banner -loglevel error -nostdin -analyzeduration 2500000 -probesize 1000000 \
				-i "udp://127.0.0.1:${copy_port[$n]}?fifo_size=100000&overrun_nonfatal=1" \
				-map 0 -c copy -f flv "rtmp://127.0.0.1:${node_rtmp[$n]}/live/$stream" </dev/null 2>&1 &
			child=$!
			wait "$child" || echo "----- chaos: $(date -u +%H:%M:%S.%3N) the push ended ($?)"
			child=
			sleep 1
		done
	) >>"$tmp/uplink-$n.log" 2>&1 &
	uplink_pid[$n]=$!
	uplink_pids+=("${uplink_pid[$n]}")
	pids+=("${uplink_pid[$n]}")
}

echo "== waiting for the stream to be live and every node ready"
wait_live "http://127.0.0.1:${node_http[origin-a]}/live/$stream/media.m3u8" "$ffmpeg_pid" "$tmp/ffmpeg.log" "$tmp/origin-a.log"
for n in "${nodes[@]}"; do
	wait_ready "$n" 20 || died "$n"
done

# roles: which origin publishes the stream and which stands by, as one
# live node's /api/mesh says (relaymesh status).
roles() {
	local n out
	for n in edge-1 edge-2 edge-3 origin-a origin-b; do
		if ! kill -0 "${node_pid[$n]}" 2>/dev/null || ! ready "$n"; then
			continue
		fi
		out=$("$tmp/relaymesh" status --api "http://127.0.0.1:${node_http[$n]}" 2>/dev/null) || continue
		awk -v s="$stream(" '{
			for (i = 1; i <= NF; i++) if (index($i, s) == 1 && ($i ~ /primary|standby/ || $(i+1) ~ /primary|standby/)) {
				r = ($i ~ /primary/ || $(i+1) ~ /primary/) ? "primary" : "standby"; out = out " " $1 "=" r
			}
		} END { print (out == "" ? " none" : out) }' <<<"$out"
		return 0
	done
	echo " unknown (no node answered)"
}
# Settle: the standby leaves the stream to its partner for 2 s.
sleep 3
echo "== stream roles:$(roles)"

# The plan: event times (s after the viewers' start), nodes and kinds,
# from SEED alone.
RANDOM=$SEED
plan_at=() plan_node=() plan_kind=()
at=0
while :; do
	at=$((at + min_gap_s + RANDOM % (max_gap_s - min_gap_s + 1)))
	((at <= duration_s - tail_s)) || break
	plan_at+=("$at")
	plan_node+=("${nodes[$((RANDOM % ${#nodes[@]}))]}")
	plan_kind+=("${kinds[$((RANDOM % ${#kinds[@]}))]}")
done
echo "== plan (seed $SEED): ${#plan_at[@]} events"
for i in "${!plan_at[@]}"; do
	echo "  +${plan_at[$i]}s ${plan_kind[$i]} ${plan_node[$i]}"
done

# names: replaces 127.0.0.1:PORT of each node's viewer listener by its
# name, on stdin.
names_sed=()
for n in "${nodes[@]}"; do
	names_sed+=(-e "s/127\.0\.0\.1:${node_http[$n]}\b/$n/g")
done
names() { sed "${names_sed[@]}"; }

# on_node NAME: the viewers whose last part came from the node, from the
# viewers' latest report.
on_node() {
	local v c
	v=$(tail -n 1 "$tmp/viewers.jsonl" 2>/dev/null || true)
	c=$(sed -n "s/.*\"hosts\":{[^}]*\"127\.0\.0\.1:${node_http[$1]}\":\([0-9]*\).*/\1/p" <<<"$v")
	echo "${c:-0}"
}

events="$tmp/events"
{
	echo "# UNIX_MS HOST:PORT KIND (scripts/chaos.sh, seed $SEED); the nodes:"
	for n in "${nodes[@]}"; do
		echo "#   127.0.0.1:${node_http[$n]} $n"
	done
} >"$events"
# problem EVENT FROM_MS TO_MS NODES DESC: a problem after event EVENT
# (its index, "before" the first or at the "end"); the logs from FROM_MS
# to TO_MS go with it, every line of NODES and the others' warnings.
problems=()
problem() { problems+=("$1|$2|$3|$4|$5"); }
# event_problem NODE DESC: a problem with the current event's node; the
# logs from 2 s before the event to 20 s after.
event_problem() { problem "$ev_idx" $((ev_ms[$ev_idx] - 2000)) $((ev_ms[$ev_idx] + 20000)) "$1" "$2"; }
restarts=0 restarted=0
declare -A event_count=([kill]=0 [stop]=0 [term]=0)

# restart NAME: starts the node again and waits until it is ready; for an
# origin, makes sure the uplink loop pushes the encoder to it.
restart() {
	local n=$1 t
	t=$(now_ms)
	start_node "$n"
	restarts=$((restarts + 1))
	[[ ${node_role[$n]} == origin ]] && start_uplink "$n"
	if wait_ready "$n" "$ready_s"; then
		restarted=$((restarted + 1))
		echo "  $(stamp) $n restarted (pid ${node_pid[$n]}), ready after $(($(now_ms) - t)) ms"
	else
		echo "  $(stamp) $n restarted (pid ${node_pid[$n]}) but NOT ready after ${ready_s}s"
		event_problem "$n" "$n did not get ready within ${ready_s}s of its restart"
	fi
}

# segments NODE: "NODE MSN SECONDS" for each complete segment the node's
# media playlist lists, SECONDS its PROGRAM-DATE-TIME (seconds into the
# month). It fails when the node answers an error (a node that has just
# woken and yielded holds no stream for a moment).
segments() {
	curl -fsS --max-time 2 "http://127.0.0.1:${node_http[$1]}/live/$stream/media.m3u8" 2>/dev/null |
		awk -v n="$1" '
			/^#EXT-X-PROGRAM-DATE-TIME:/ {
				split(substr($0, 26), a, /[-T:Z]/)
				pdt = a[3] * 86400 + a[4] * 3600 + a[5] * 60 + a[6]
			}
			/^seg[0-9]+\.m4s/ { m = $0; gsub(/[^0-9]/, "", m); printf "%s %s %.3f\n", n, m, pdt }'
}

# diverged: with every node's segments on stdin, the newest segment
# number two nodes list with PROGRAM-DATE-TIMEs more than half a second
# apart (different media under one number), and each node's time for it;
# nothing if they agree.
diverged() {
	awk '{ t[$2, $1] = $3; seen[$2] = 1; if (!($1 in nn)) { nn[$1] = 1; order[++k] = $1 } }
		END {
			best = -1
			for (m in seen) {
				lo = ""; hi = ""
				for (i = 1; i <= k; i++) if ((m, order[i]) in t) {
					v = t[m, order[i]]
					if (lo == "" || v < lo) lo = v
					if (hi == "" || v > hi) hi = v
				}
				if (hi - lo > 0.5 && m + 0 > best) best = m + 0
			}
			if (best < 0) exit
			out = "seg" best ":"
			for (i = 1; i <= k; i++) if ((best, order[i]) in t) {
				v = t[best, order[i]] % 86400
				out = out sprintf(" %s=%02d:%02d:%06.3f", order[i], int(v / 3600), int(v % 3600 / 60), v % 60)
			}
			print out
		}'
}

# check_state: which origin publishes the stream (relaymesh status), and
# whether the nodes' playlists agree. Two origins publishing at once (a
# split brain), and playlists that give one segment number different
# times, are problems, reported when they start (with the logs since the
# previous check) and noted when they end.
split=0 split_samples=0 diverge=0 diverge_samples=0 last_check_ms='' checks=0
check_state() {
	local r d n now k=${ev_idx:-before} segs=""
	checks=$((checks + 1))
	r=$(roles)
	now=$(now_ms)
	echo "  $(stamp) stream roles:$r"
	for n in "${nodes[@]}"; do
		kill -0 "${node_pid[$n]}" 2>/dev/null && segs+=$(segments "$n" || true)$'\n'
	done
	d=$(diverged <<<"$segs")
	if (($(grep -o '=primary' <<<"$r" | wc -l) >= 2)); then
		split_samples=$((split_samples + 1))
		if ((split == 0)); then
			echo "  $(stamp) SPLIT BRAIN: both origins publish the stream"
			problem "$k" $((${last_check_ms:-$now} - 2000)) $((now + 1000)) "origin-a origin-b" \
				"split brain from between +$(((${last_check_ms:-$now} - t0) / 1000))s and +$(((now - t0) / 1000))s: both origins publish the stream ($r )"
		fi
		split=1
	elif ((split == 1)); then
		echo "  $(stamp) the split brain is over"
		split=0
	fi
	if [[ -n $d ]]; then
		diverge_samples=$((diverge_samples + 1))
		echo "  $(stamp) PLAYLISTS DIVERGE: $d"
		if ((diverge == 0)); then
			problem "$k" $((${last_check_ms:-$now} - 2000)) $((now + 1000)) "" \
				"from between +$(((${last_check_ms:-$now} - t0) / 1000))s and +$(((now - t0) / 1000))s the nodes' playlists diverge: one segment number, different times: $d"
		fi
		diverge=1
	elif ((diverge == 1)); then
		echo "  $(stamp) the playlists agree again"
		diverge=0
	fi
	last_check_ms=$now
}

# hit I: carries out planned event I.
hit() {
	local i=$1 n=${plan_node[$1]} kind=${plan_kind[$1]} pid t rc
	ev_idx=$i
	pid=${node_pid[$n]}
	event_count[$kind]=$((event_count[$kind] + 1))
	echo "== $(stamp) event $((i + 1))/${#plan_at[@]}: $kind $n (pid $pid; $(on_node "$n") viewers on it)"
	ev_ms[$i]=$(now_ms)
	echo "${ev_ms[$i]} 127.0.0.1:${node_http[$n]} $kind" >>"$events"
	case $kind in
	kill)
		kill -KILL "$pid"
		wait "$pid" 2>/dev/null || true
		bench_forget "$pid"
		echo "  $(stamp) $n killed; restarting in ${down_s}s"
		sleep "$down_s"
		restart "$n"
		;;
	stop)
		kill -STOP "$pid"
		sleep "$stop_s"
		kill -CONT "$pid"
		echo "  $(stamp) $n continued after ${stop_s}s stopped"
		if wait_ready "$n" 10; then
			echo "  $(stamp) $n ready"
		else
			echo "  $(stamp) $n NOT ready 10 s after SIGCONT"
			event_problem "$n" "$n not ready 10 s after SIGCONT"
		fi
		;;
	term)
		kill -TERM "$pid"
		t=$(now_ms)
		while kill -0 "$pid" 2>/dev/null && (($(now_ms) - t < (drain_s + 15) * 1000)); do
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "  $(stamp) $n still running $((drain_s + 15))s after SIGTERM (--drain-timeout ${drain_s}s): killed"
			event_problem "$n" "$n did not exit within --drain-timeout ${drain_s}s + 15 s of SIGTERM"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rc=0
		wait "$pid" 2>/dev/null || rc=$?
		bench_forget "$pid"
		echo "  $(stamp) $n drained and exited ($rc) after $(($(now_ms) - t)) ms"
		((rc == 0)) || event_problem "$n" "$n exited $rc after SIGTERM, not 0"
		restart "$n"
		;;
	esac
	check_state
}

entry="http://127.0.0.1:${node_http[edge-1]}/live/$stream/index.m3u8"
echo "== viewers: $VIEWERS over the first ${ramp_s}s, for $DURATION (entry $entry, edge-1)"
t0=$(now_ms)
# shellcheck disable=SC2086 # VIEWERS_FLAGS is split on purpose
"$tmp/viewers" -entry "$entry" -start 0 -viewers "$VIEWERS" -ramp "${ramp_s}s" -duration "${duration_s}s" \
	-report 1s -out "$tmp/viewers.jsonl" -per-viewer -events "$events" -seed "$SEED" $VIEWERS_FLAGS \
	>"$tmp/viewers.txt" 2>"$tmp/viewers.err" &
viewers_pid=$!
pids+=("$viewers_pid")

declare -A ev_ms
next=0 next_print=10
while kill -0 "$viewers_pid" 2>/dev/null; do
	el_ms=$(($(now_ms) - t0))
	if ((next < ${#plan_at[@]} && el_ms >= plan_at[next] * 1000)); then
		kill -0 "$ffmpeg_pid" 2>/dev/null || {
			echo "chaos: the encoder stopped at +$((el_ms / 1000))s; its log:" >&2
			cat "$tmp/ffmpeg.log" >&2
			exit 1
		}
		hit "$next"
		next=$((next + 1))
		# The next event comes 5 s after this one ended at the earliest.
		el_s=$((($(now_ms) - t0) / 1000 + 5))
		if ((next < ${#plan_at[@]} && plan_at[next] < el_s)); then
			echo "  (event $((next + 1)) moved from +${plan_at[$next]}s to +${el_s}s)"
			plan_at[next]=$el_s
		fi
		continue
	fi
	if ((el_ms >= next_print * 1000)); then
		[[ -s $tmp/viewers.txt ]] && echo "  $(grep '^t=' "$tmp/viewers.txt" | tail -n 1 | names)"
		check_state
		next_print=$((next_print + 10))
	fi
	if ((el_ms > (duration_s + 60) * 1000)); then
		echo "chaos: the viewers did not stop after ${duration_s}s" >&2
		exit 1
	fi
	sleep 0.2
done
skipped_events=$((${#plan_at[@]} - next))
((skipped_events == 0)) || echo "== $skipped_events planned events did not fit before the end"
viewers_rc=0
wait "$viewers_pid" || viewers_rc=$?
summary=$(grep '^viewers n=' "$tmp/viewers.txt" || true)
per_viewer=$(grep '^per-viewer ' "$tmp/viewers.txt" || true)
events_sum=$(grep '^events n=' "$tmp/viewers.txt" || true)
if ((viewers_rc != 0)) || [[ -z $summary || -z $events_sum ]]; then
	echo "chaos: the viewers failed (exit $viewers_rc); their output, errors and edge-1's log tail:" >&2
	tail -n 20 "$tmp/viewers.txt" >&2
	cat "$tmp/viewers.err" >&2
	tail -n 40 "$tmp/edge-1.log" >&2
	exit 1
fi
kill -0 "$ffmpeg_pid" 2>/dev/null || {
	echo "chaos: the encoder stopped during the drill; its log:" >&2
	cat "$tmp/ffmpeg.log" >&2
}

echo "== viewers"
echo "  $summary" | names
echo "  $per_viewer"
echo "== events (on it: viewers whose last part before the event came from the node hit; elsewhere: the others; each until the next event)"
grep -E '^(before the first event|event t=)' "$tmp/viewers.txt" | names | sed 's/^/  /'

# field NAME LINE: a name=value of a summary line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }
# Problems the viewers saw, per event, from the event lines.
g='([0-9]+) viewers: lost ([0-9]+) parts \(([0-9]+) viewers\), media gaps ([0-9.]+) s \(([0-9]+) viewers, largest ([0-9.]+) s\), repeats ([0-9.]+) s \(([0-9]+) viewers, largest ([0-9.]+) s\), ([0-9]+) stalls \(([0-9]+) viewers\), longest ([0-9.]+) s, [0-9.]+ s in all, ended ([0-9]+), failed ([0-9]+)'
re="^event t=[0-9.]+ ([^ ]+) ([a-z]+): on it $g \| elsewhere $g"
# ge A B: whether the number A is at least B.
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }'; }
i=0
while IFS= read -r line; do
	if [[ $line =~ $re ]]; then
		m=("${BASH_REMATCH[@]}")
		# On the node: 3 viewers ... 15 ended, 16 failed; elsewhere: 17
		# viewers, 18 parts lost, 19 by viewers, 20 media gap s, 21 by
		# viewers, 22 largest, 26 stalls, 27 by viewers, 28 longest, 29
		# ended, 30 failed.
		what=()
		((m[18] == 0)) || what+=("${m[18]} parts lost by ${m[19]} viewers elsewhere")
		ge "${m[20]}" 0.1 && what+=("viewers elsewhere missed ${m[20]} s of media (${m[21]} viewers, largest jump ${m[22]} s by PROGRAM-DATE-TIME)")
		ge "${m[28]}" "$survivor_stall_s" && what+=("viewers elsewhere stalled up to ${m[28]} s (${m[27]} of ${m[17]})")
		((m[29] + m[30] == 0)) || what+=("elsewhere ${m[29]} viewers' playback ended and ${m[30]} failed")
		((m[15] + m[16] == 0)) || what+=("on ${m[1]} ${m[15]} viewers' playback ended and ${m[16]} failed")
		if ((${#what[@]} > 0)); then
			problem "$i" $((ev_ms[$i] - 2000)) $((ev_ms[$i] + 20000)) "${plan_node[$i]}" "$(
				IFS=';'
				echo "${what[*]}"
			)"
		fi
		i=$((i + 1))
	else
		echo "chaos: cannot read the viewers' event line: $line" >&2
	fi
done < <(grep '^event t=' "$tmp/viewers.txt" | names)
not_playing=$(field not_playing_at_end "$per_viewer")
not_playing_n=${not_playing%%\[*}
if ((${not_playing_n:-0} > 0)); then
	end_ms=$(now_ms)
	problem end $((end_ms - 30000)) "$end_ms" "" "$not_playing_n viewers were not playing at the end: ${not_playing#*\[}"
fi

# log_window FROM_MS TO_MS NODES: the nodes' log lines between the
# times: all of those of NODES (space-separated), the others' warnings and
# errors; at most 60 lines a node.
iso() { date -u -d "@${1:0:10}" "+%Y-%m-%dT%H:%M:%S.${1:10:3}Z"; }
log_window() {
	local from to n all
	from=$(iso "$1") to=$(iso "$2")
	for n in "${nodes[@]}"; do
		all=0
		[[ " $3 " == *" $n "* ]] && all=1
		awk -v f="time=$from" -v t="time=$to" -v all="$all" '
			/^----- chaos:/ { if (all) print; next }
			$1 >= f && $1 <= t && (all || / level=(WARN|ERROR) /) { print }' "$tmp/$n.log" |
			tail -n 60 | sed "s/^/    $n | /"
	done
}

if ((${#problems[@]} > 0)); then
	echo "== problems (with the nodes' logs around each: every line of the nodes concerned, the others' warnings and errors)"
	for p in "${problems[@]}"; do
		IFS='|' read -r idx from to which desc <<<"$p"
		case $idx in
		before) echo "chaos: PROBLEM before the first event: $desc" ;;
		end) echo "chaos: PROBLEM at the end: $desc" ;;
		*) echo "chaos: PROBLEM after event $((idx + 1)) (+$(((ev_ms[$idx] - t0) / 1000))s, ${plan_kind[$idx]} ${plan_node[$idx]}): $desc" ;;
		esac
		log_window "$from" "$to" "$which"
	done
	# The uplinks and the encoder, if they complained.
	for f in "$tmp"/uplink-*.log "$tmp/ffmpeg.log"; do
		[[ -s $f ]] && {
			echo "  $(basename "$f") (last lines):"
			grep -v 'PPS\|decode_slice_header\|no frame!\|Last message repeated' "$f" | tail -n 10 | sed 's/^/    /'
		}
	done
fi

echo "== summary ($(nproc) cores; seed $SEED; gaps ${min_gap_s}..${max_gap_s}s, kill down ${down_s}s, stop ${stop_s}s, drain timeout ${drain_s}s, capacity $CAPACITY, steering TTL $ttl, GOP ${gop_s} s)"
ended=$(field ended "$per_viewer") failed=$(field failed "$per_viewer")
echo "chaos duration=$DURATION viewers=$VIEWERS seed=$SEED events=$next kill=${event_count[kill]} stop=${event_count[stop]} term=${event_count[term]} restarts=$restarted/$restarts" \
	"elsewhere_lost_parts=$(field elsewhere_lost_parts "$events_sum") elsewhere_lost_viewers=$(field elsewhere_lost_viewers "$events_sum")" \
	"elsewhere_media_gap_s=$(field elsewhere_media_gap_s "$events_sum") elsewhere_gap_viewers=$(field elsewhere_gap_viewers "$events_sum") elsewhere_media_repeat_s=$(field elsewhere_media_repeat_s "$events_sum")" \
	"elsewhere_stalls=$(field elsewhere_stalls "$events_sum") elsewhere_longest_stall_s=$(field elsewhere_longest_stall_s "$events_sum")" \
	"on_node_lost_parts=$(field on_node_lost_parts "$events_sum") on_node_media_gap_s=$(field on_node_media_gap_s "$events_sum") on_node_stalls=$(field on_node_stalls "$events_sum") on_node_longest_stall_s=$(field on_node_longest_stall_s "$events_sum")" \
	"stalls=$(field stalls "$summary") stall_s=$(field stall_s "$summary") skipped_parts=$(field skipped_parts "$summary")" \
	"ended=${ended%%\[*} failed=${failed%%\[*} not_playing_at_end=${not_playing_n:-0} split_brain_checks=$split_samples/$checks diverged_checks=$diverge_samples/$checks problems=${#problems[@]}"
echo "load average at end: $(cut -d" " -f1-3 /proc/loadavg)"
