# shellcheck shell=bash disable=SC2034
# Shared by the benchmark scripts (sourced, not run): a temp dir removed on
# exit, the PIDs a script started (stopped on exit, and only those), free
# loopback ports and duration parsing.

# bench_init NAME sets $tmp and $pids and installs the exit traps.
bench_init() {
	bench_name=$1
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
	pids=()
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}


# fail MESSAGE: the drill cannot go on; prints the end of every log in
# $tmp and exits 1. Needs bench_init.
fail() {
	echo "$bench_name: $*" >&2
	local f
	for f in "$tmp"/*.log; do
		echo "--- $(basename "$f") (last 30 lines)" >&2
		tail -n 30 "$f" >&2
	done
	exit 1
}

# wait_http URL PID: until URL answers 2xx, or the process dies, or 10 s.
wait_http() {
	local i
	for i in $(seq 1 100); do
		curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
		kill -0 "$2" 2>/dev/null || fail "process $2 exited while waiting for $1"
		sleep 0.1
	done
	fail "$1 did not answer within 10 s"
}

# wait_parts URL: until the media playlist lists parts (30 s at most).
wait_parts() {
	local i
	for i in $(seq 1 300); do
		curl -fsS --max-time 5 "$1" 2>/dev/null | grep -q '^#EXT-X-PART:' && return 0
		sleep 0.1
	done
	fail "$1 listed no parts within 30 s"
}

# push_pattern GOP_S SECONDS URL: publishes a live 640x360 30 fps H.264 +
# AAC test pattern (about 0.7 Mb/s, a key frame every GOP_S seconds) over
# RTMP for SECONDS, in the background; sets ffmpeg_pid and adds it to pids.
# Its log is $tmp/ffmpeg.log.
push_pattern() {
	local gop=$(($1 * 30))
	"${FFMPEG:-ffmpeg}" -hide_banner -loglevel error -nostdin -re \
		-f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440:sample_rate=48000 \
		-c:v libx264 -preset veryfast -pix_fmt yuv420p -g "$gop" -keyint_min "$gop" -sc_threshold 0 \
		-b:v 640k -maxrate 640k -bufsize 1280k -c:a aac -b:a 64k -t "$2" \
		-f flv "$3" >"$tmp/ffmpeg.log" 2>&1 &
	ffmpeg_pid=$!
	pids+=("$ffmpeg_pid")
}

# wait_holder API NODE STREAM: until the mesh view at API (a node's
# /api/mesh) lists STREAM on NODE, so that a node started next finds NODE
# among the stream's holders (10 s at most).
wait_holder() {
	local i
	for i in $(seq 1 100); do
		if curl -fsS --max-time 2 "$1" |
			jq -e --arg n "$2" --arg s "$3" '.[] | select(.name == $n) | .streams // [] | map(.name) | index($s)' >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.1
	done
	fail "the mesh never listed $3 on $2"
}

bench_cleanup() {
	local pid
	# SIGINT: a relaymesh node stops at once (SIGTERM would drain it first).
	for pid in "${pids[@]}"; do
		kill -INT "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$tmp"
}

# freeport prints a loopback port nobody listens on over TCP, below the
# kernel's ephemeral range: a port there may be taken by an outgoing
# connection (hundreds of viewers make many) between picking and binding.
freeport() {
	local p i low=32768
	read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
	((low > 11000)) || low=32768
	for i in $(seq 1 100); do
		p=$((10000 + RANDOM % (low - 10000)))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
	echo "$bench_name: no free port found" >&2
	return 1
}

# freeports N sets the array $ports to N distinct free ports (freeport).
freeports() {
	local p
	ports=()
	while ((${#ports[@]} < $1)); do
		p=$(freeport) || return 1
		[[ " ${ports[*]} " == *" $p "* ]] || ports+=("$p")
	done
}

# build_tools puts relaymesh ($RELAYMESH if set, else built from
# ./cmd/relaymesh) and scripts/viewers into $tmp, after noting the load
# average: other work on this machine skews every figure.
build_tools() {
	echo "== load average at start (other work on this machine skews the figures): $(cut -d" " -f1-3 /proc/loadavg)"
	if [[ -n ${RELAYMESH:-} ]]; then
		echo "== building viewers (relaymesh: $RELAYMESH)"
		cp "$RELAYMESH" "$tmp/relaymesh"
	else
		echo "== building relaymesh and viewers"
		go build -o "$tmp/relaymesh" ./cmd/relaymesh
	fi
	go build -o "$tmp/viewers" ./scripts/viewers
}

# seconds turns a go duration of whole seconds or minutes (30s, 1m, 45) into
# seconds.
seconds() {
	case $1 in
	*m) echo $((${1%m} * 60)) ;;
	*s) echo "${1%s}" ;;
	*) echo "$1" ;;
	esac
}

# wait_live URL PID LOG...: waits up to 20 s until the media playlist at URL
# lists a part, while process PID (the encoder) runs; otherwise prints the
# LOG files and exits 1.
wait_live() {
	local url=$1 pid=$2 i
	shift 2
	for i in $(seq 1 200); do
		if curl -fsSL --max-time 5 "$url" 2>/dev/null | grep -q '^#EXT-X-PART:'; then
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "$bench_name: the stream did not go live; logs:" >&2
	cat "$@" >&2
	exit 1
}

# cpu_ticks PID: CPU time the process has used, in clock ticks (Linux).
cpu_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}
hz=$(getconf CLK_TCK)

# hms_seconds turns whole seconds, minutes or hours (45, 30s, 2m, 1h) into
# seconds; it fails on anything else.
hms_seconds() {
	[[ $1 =~ ^([0-9]+)([smh]?)$ ]] || return 1
	local n=$((10#${BASH_REMATCH[1]}))
	case ${BASH_REMATCH[2]} in
	m) n=$((n * 60)) ;;
	h) n=$((n * 3600)) ;;
	esac
	echo "$n"
}

# rss_kb PID: the process's resident set (VmRSS) in kB; nothing once it is
# gone (Linux).
rss_kb() {
	awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

# metric NAME: the value of the unlabelled series NAME in the Prometheus
# text format on stdin, rounded to a whole number; nothing if absent.
metric() {
	awk -v n="$1" '$1 == n { printf "%.0f\n", $2; exit }'
}

# bench_forget PID: a process of $pids that the script has waited for
# (killed and reaped) is no longer stopped on exit: its PID may be reused.
bench_forget() {
	local i
	for i in "${!pids[@]}"; do
		[[ ${pids[$i]} != "$1" ]] || unset 'pids[i]'
	done
}
