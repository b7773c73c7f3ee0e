#!/usr/bin/env bash
# The ceiling of GRE through kernel sockets on this machine (issue 19): how
# many GRE-sized datagrams the kernel alone carries from one namespace to
# another over a veth, with no switch, no TCP and no iperf3 on the CPUs.
# vswitchd's GRE ports send and receive through these same sockets, so a
# GRE overlay cannot go faster than this.
#
#   benches/gre-ceiling.sh [-r RUNS] [-t SECS] [--no-build]
#
# Each run, receiver (a raw IPv4 socket for protocol 47, recvmmsg of 32) in
# namespace b, sender in namespace a:
#   raw x1      one sender, a raw IPv4 socket, sendmmsg of 32 (vswitchd's way)
#   raw x2      two such senders at once (both CPUs busy)
#   packet x1   one sender through AF_PACKET with PACKET_QDISC_BYPASS, the
#               IPv4 header its own (the "packet socket on the underlay"
#               option: no route lookup, netfilter or neighbour code)
#   packet x2   two of those
#   xdp x1      kernel bypass on both ends: the receiver attaches an XDP
#               program to its veth that hands every frame to an AF_XDP
#               socket (no IP receive at all), the sender writes frames to
#               an AF_XDP socket's ring; copy mode, as a veth offers
# Every packet is 1,500 bytes (GRE with a key, a 1,472-byte carried frame);
# rates are also shown as the 1,406-byte TCP payloads such frames carry.
#
# Lab rules: namespaces vsgc<pid>-a/b, made here and deleted on exit; the
# veth lives only in them; 198.19.9.0/24 inside them only; every process is
# bounded by its own -t and a timeout, and waited for by pid. Root only.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=3 SECS=5 BUILD=1
usage() {
    echo "usage: $0 [-r RUNS] [-t SECS] [--no-build]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case $1 in
        -r) [ $# -ge 2 ] || usage; RUNS=$2; shift 2 ;;
        -t) [ $# -ge 2 ] || usage; SECS=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        *) usage ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "gre-ceiling: -r wants a positive number, not $RUNS" >&2; exit 2; }
[[ $SECS =~ ^[1-9][0-9]*$ ]] || { echo "gre-ceiling: -t wants a positive number of seconds, not $SECS" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "gre-ceiling: needs root (network namespaces)" >&2; exit 1; }

if [ "$BUILD" = 1 ]; then
    flock /tmp/cargo.lock cargo build --release -q -p vswitchd --example gre_ceiling
fi
PROBE=$PWD/target/release/examples/gre_ceiling
[ -x "$PROBE" ] || { echo "gre-ceiling: $PROBE not found; build it (or drop --no-build)" >&2; exit 1; }

P="vsgc$$"
TMP=$(mktemp -d /tmp/vswitch-gre-ceiling.XXXXXX)
CREATED_NS=()
PIDS=()
cleanup() {
    local rc=$? pid ns
    trap - EXIT INT TERM
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    # Anything still running inside our namespaces was started here.
    for ns in "${CREATED_NS[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for ns in a b; do
    ip netns add "$P-$ns"
    CREATED_NS+=("$P-$ns")
    ip -n "$P-$ns" link set lo up
done
ip -n "$P-a" link add ul type veth peer name ul netns "$P-b"
ip -n "$P-a" addr add 198.19.9.1/24 dev ul
ip -n "$P-b" addr add 198.19.9.2/24 dev ul
ip -n "$P-a" link set ul up
ip -n "$P-b" link set ul up
ip netns exec "$P-a" ping -n -q -c 1 -W 2 198.19.9.2 >/dev/null || { echo "gre-ceiling: the veth does not carry a ping" >&2; exit 1; }
MAC=$(ip -n "$P-b" -br link show ul | awk '{print $3}')

# One test: SENDERS senders of MODE; prints the receiver's line.
run() {
    local mode=$1 senders=$2 i receive=(recv "$SECS")
    [ "$mode" != xdp ] || receive=(xdp-recv ul "$SECS")
    ip netns exec "$P-b" timeout $((SECS + 10)) "$PROBE" "${receive[@]}" >"$TMP/recv" &
    local receiver=$!
    PIDS=("$receiver")
    sleep 0.3
    for i in $(seq "$senders"); do
        case $mode in
            raw) ip netns exec "$P-a" timeout $((SECS + 10)) "$PROBE" send 198.19.9.2 "$SECS" >"$TMP/send$i" & ;;
            packet) ip netns exec "$P-a" timeout $((SECS + 10)) "$PROBE" packet-send ul "$MAC" 198.19.9.1 198.19.9.2 "$SECS" >"$TMP/send$i" & ;;
            xdp) ip netns exec "$P-a" timeout $((SECS + 10)) "$PROBE" xdp-send ul "$MAC" 198.19.9.1 198.19.9.2 "$SECS" >"$TMP/send$i" & ;;
        esac
        PIDS+=("$!")
    done
    for i in "${!PIDS[@]}"; do wait "${PIDS[$i]}" || { echo "gre-ceiling: $mode x$senders failed" >&2; exit 1; }; done
    PIDS=()
    printf '  %-6s x%s  %s\n' "$mode" "$senders" "$(cat "$TMP/recv")"
}

echo "gre-ceiling: $RUNS run(s) of $SECS s, namespace $P-a -> $P-b over a veth, kernel $(uname -r), $(nproc) CPUs"
for r in $(seq "$RUNS"); do
    echo "run $r/$RUNS"
    run raw 1
    run raw 2
    run packet 1
    run packet 2
    run xdp 1
done
