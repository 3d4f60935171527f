#!/usr/bin/env bash
# The mesh scale model (issue 10, docs/scaling.md): runs SIZES real
# relaymesh mesh nodes (package mesh, as cmd/relaymesh wires it: memberlist
# on loopback, gossip encrypted) in one process with scripts/meshscale,
# for each size in turn, and measures:
#
#   - convergence after a join (every node lists the new edge; and with its
#     whole stream list), after a graceful leave, after a failure (a node
#     in a child process gets SIGKILL: until every node has declared it
#     dead) and after a drain (every node sees the state "draining");
#   - gossip bytes per node per second in steady state, sent and received,
#     as memberlist counts them (UDP packets after encryption; push/pull
#     state over TCP), with every node's viewer counts changing (CHURN);
#   - how old the load figures are that each node holds about the others.
#
# Origins are one per ten nodes, each publishing STREAMS streams; every
# edge holds RELAYED of them, so the gossiped stream lists grow with the
# mesh. All nodes share this machine's cores: a summary with a high
# cpu_pct (200 is both cores) or false_suspect above 0 was CPU-bound, and
# its convergence figures are pessimistic for nodes on their own machines.
#
# Every process the script starts is stopped on exit, by PID; meshscale
# kills its own child nodes and stops its nodes (they leave the mesh).
#
# It prints each run's progress and trial lines, then one summary line per
# size for docs/scaling.md:
#
#   meshscale n=50 origins=5 streams=100 relayed=20 churn=1.00 encrypted=true list_bytes=... boot_s=... join_ms=P50/MAX join_streams_ms=... leave_ms=... fail_ms=... drain_ms=... meta_age_ms=P50/P99 list_age_ms=... udp_out_Bps=... udp_in_Bps=... tcp_out_Bps=... out_Bps=... udp_pkts_s=... pushpull_max_kB=... cpu_pct=... ml_warn_err=W/E false_suspect=...
#
# Usage (from anywhere):
#   scripts/bench-mesh-scale.sh
#   SIZES="50" TRIALS=5 scripts/bench-mesh-scale.sh
#   SIZES="100" RELAYED=80 scripts/bench-mesh-scale.sh     # lists past one UDP packet
# Environment: SIZES (default "50 100 200", each 2..1000), STREAMS (per
# origin, default 20, 1..1000), RELAYED (per edge, default 20, 0..1000),
# CHURN (share of nodes whose viewer counts change, default 1, 0..1),
# TRIALS (default 3, 1..20), WINDOW (steady-state byte count, default 20s,
# 5s..10m), MESHSCALE_FLAGS (extra scripts/meshscale flags, e.g. -v).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

SIZES=${SIZES:-50 100 200}
STREAMS=${STREAMS:-20}
RELAYED=${RELAYED:-20}
CHURN=${CHURN:-1}
TRIALS=${TRIALS:-3}
WINDOW=${WINDOW:-20s}
MESHSCALE_FLAGS=${MESHSCALE_FLAGS:-}

usage_error() {
	echo "bench-mesh-scale: $*" >&2
	exit 2
}
# whole NAME VALUE LO HI fails unless VALUE is a whole number in LO..HI.
whole() {
	[[ $2 =~ ^[0-9]+$ ]] || usage_error "$1=$2: want a whole number from $3 to $4"
	((10#$2 >= $3 && 10#$2 <= $4)) || usage_error "$1=$2: want a whole number from $3 to $4"
}
[[ -n ${SIZES// /} ]] || usage_error "SIZES is empty"
for n in $SIZES; do
	whole SIZES "$n" 2 1000
done
whole STREAMS "$STREAMS" 1 1000
whole RELAYED "$RELAYED" 0 1000
whole TRIALS "$TRIALS" 1 20
[[ $CHURN =~ ^(0(\.[0-9]+)?|1(\.0*)?)$ ]] || usage_error "CHURN=$CHURN: want a share from 0 to 1"
window_s=$(hms_seconds "$WINDOW") || usage_error "WINDOW=$WINDOW: want whole seconds or minutes (20s, 1m)"
((window_s >= 5 && window_s <= 600)) || usage_error "WINDOW=$WINDOW: want 5s..10m"

bench_init bench-mesh-scale

echo "== load average at start (other work on this machine skews the figures): $(cut -d" " -f1-3 /proc/loadavg)"
echo "== building meshscale"
go build -o "$tmp/meshscale" ./scripts/meshscale

summaries=()
for n in $SIZES; do
	echo "== $n nodes"
	out="$tmp/meshscale-$n.txt"
	# In the background and waited for, so that the exit trap can stop it
	# by PID. MESHSCALE_FLAGS is split on purpose.
	# shellcheck disable=SC2086
	"$tmp/meshscale" -n "$n" -streams "$STREAMS" -relayed "$RELAYED" -churn "$CHURN" \
		-trials "$TRIALS" -window "${window_s}s" $MESHSCALE_FLAGS >"$out" &
	pids+=("$!")
	if ! wait "$!"; then
		sed 's/^/  /' "$out"
		echo "bench-mesh-scale: the $n-node run failed" >&2
		exit 1
	fi
	sed 's/^/  /' "$out"
	line=$(grep '^meshscale n=' "$out") || {
		echo "bench-mesh-scale: the $n-node run printed no summary" >&2
		exit 1
	}
	summaries+=("$line")
done

echo "== summary ($(nproc) cores, all nodes in one process; go $(go env GOVERSION))"
printf '%s\n' "${summaries[@]}"
echo "load average at end: $(cut -d" " -f1-3 /proc/loadavg)"
