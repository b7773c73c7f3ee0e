#!/usr/bin/env bash
# Measures vswitchd beside the Linux bridge and OVS's userspace datapath on
# the same veth topology, in one run of ../shared/bench/peers.sh (see its
# README). Root only. Arguments go to peers.sh, e.g.:
#   scripts/bench-peers.sh -r 3 -T tcp1,tcp4,udp64,ping direct linux-bridge ovs-netdev vswitchd
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS=${PEERS:-../shared/bench/peers.sh}
[ -x "$PEERS" ] || [ -f "$PEERS" ] || { echo "bench: $PEERS not found (shared/ beside the checkout)" >&2; exit 1; }
cargo build --release -q -p vswitchd -p vsctl
BIN=$PWD/target/release
export VSWITCHD_CMD="$BIN/vswitchd --run-dir \$VSB_RUNDIR --db \$VSB_RUNDIR/conf.db"
export VSWITCHD_READY="$BIN/vsctl --run-dir \$VSB_RUNDIR list-br"
# For vswitchd-tap the ports are TAPs the daemon creates (vsb-t1, vsb-t2).
export VSWITCHD_CTL="T=; case \$VSB_PORT1 in vsb-t*) T='-- set interface '\$VSB_PORT1' type=tap -- set interface '\$VSB_PORT2' type=tap';; esac; \
$BIN/vsctl --run-dir \$VSB_RUNDIR add-br br0 -- add-port br0 \$VSB_PORT1 -- add-port br0 \$VSB_PORT2 \$T"
if [ $# -eq 0 ]; then
    set -- -r 3 -T tcp1,tcp4,udp64,ping direct linux-bridge ovs-netdev vswitchd
fi
exec bash "$PEERS" "$@"
