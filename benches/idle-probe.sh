#!/usr/bin/env bash
# What vswitchd costs when nothing flows: CPU (% of one core) and memory
# with two veth ports configured, the performance issue's idle target
# (<= 1% of a core, RSS <= 50 MiB with 2 ports).
#
#   benches/idle-probe.sh [-t SECS]
#
# Builds h1 - veth - vswitchd - veth - h2 in namespaces of its own, checks
# that a ping crosses, then leaves the switch alone for SECS (default 60)
# and reads the daemon's CPU time from /proc before and after. Root only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=60
while getopts "t:" opt; do
    case $opt in
        t) SECS=$OPTARG ;;
        *) echo "usage: $0 [-t SECS]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "idle-probe: needs root (network namespaces)" >&2; exit 1; }
cargo build --release -q -p vswitchd -p vsctl
BIN=$PWD/target/release
P=idle$$
RUN=$(mktemp -d /tmp/vswitch-idle.XXXXXX)
DAEMON=
cleanup() {
    status=$?
    if [ "$status" != 0 ] && [ -f "$RUN/log" ]; then
        echo "idle-probe: failed; vswitchd's log:" >&2
        cat "$RUN/log" >&2
    fi
    if [ -n "$DAEMON" ]; then kill "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; fi
    for ns in "$P-sw" "$P-h1" "$P-h2"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$RUN"
}
trap cleanup EXIT
for ns in sw h1 h2; do ip netns add "$P-$ns"; done
for i in 1 2; do
    ip link add "p$i" netns "$P-sw" type veth peer name eth0 netns "$P-h$i"
    ip -n "$P-h$i" addr add "198.18.0.$i/24" dev eth0
    ip -n "$P-h$i" link set eth0 up
    ip -n "$P-sw" link set "p$i" up
done
ip netns exec "$P-sw" "$BIN/vswitchd" --run-dir "$RUN" --db "$RUN/conf.db" >"$RUN/log" 2>&1 &
DAEMON=$!
VSCTL=("$BIN/vsctl" --run-dir "$RUN")
for _ in $(seq 50); do "${VSCTL[@]}" list-br >/dev/null 2>&1 && break; sleep 0.1; done
"${VSCTL[@]}" add-br br0 -- add-port br0 p1 -- add-port br0 p2
ip netns exec "$P-h1" ping -c 3 -i 0.2 -W 1 -q 198.18.0.2 >/dev/null || { echo "idle-probe: no ping across the switch" >&2; exit 1; }
sleep 2

ticks() {
    [ -r "/proc/$DAEMON/stat" ] || { echo "idle-probe: vswitchd (pid $DAEMON) is gone" >&2; exit 1; }
    awk '{print $14 + $15}' "/proc/$DAEMON/stat"
}
HZ=$(getconf CLK_TCK)
t0=$(ticks)
s0=$(date +%s.%N)
sleep "$SECS"
t1=$(ticks)
s1=$(date +%s.%N)
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$DAEMON/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$DAEMON/status")
cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" -v s0="$s0" -v s1="$s1" 'BEGIN { printf "%.2f", 100 * (b - a) / hz / (s1 - s0) }')
awk -v secs="$SECS" -v cpu="$cpu" -v ticks=$((t1 - t0)) -v hz="$HZ" -v rss="$rss" -v hwm="$hwm" 'BEGIN {
    printf "idle for %s s with 2 ports: CPU %s%% of one core (%d ticks at %d Hz), RSS %.1f MiB (peak %.1f MiB)\n", secs, cpu, ticks, hz, rss / 1024, hwm / 1024
}'

awk -v cpu="$cpu" -v rss="$rss" 'BEGIN {
    printf "targets: CPU <= 1%%: %s; RSS <= 50 MiB: %s\n", (cpu <= 1 ? "met" : "NOT met"), (rss <= 50 * 1024 ? "met" : "NOT met")
}'
"${VSCTL[@]}" memory-show
