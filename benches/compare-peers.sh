#!/usr/bin/env bash
# vswitchd beside its peers on one veth topology, in one run, with the
# ratios the performance issue sets as targets:
#
#   benches/compare-peers.sh [-r RUNS] [-t SECS]     (IDLE_SECS=60: the idle probe)
#
# Measures, with ../shared/bench/peers.sh (the reference harness, which
# builds h1 - veth - switch - veth - h2 and runs iperf3, tcpreplay, ping and
# sockperf), the Linux bridge, OVS's userspace datapath with TSO (if OVS is
# installed), vswitchd on the veths (AF_PACKET), vswitchd with TAP ports,
# and vswitchd with 100 five-tuple ACL flows that do not match the test
# traffic in front of NORMAL. Then prints every figure as a ratio to the
# Linux bridge and to OVS, and whether each target is met. Last, the idle
# probe (benches/idle-probe.sh): CPU and RSS with 2 ports and no traffic.
# Root only; writes JSON to /tmp/vswitch-compare-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=3 SECS=10
while getopts "r:t:" opt; do
    case $opt in
        r) RUNS=$OPTARG ;;
        t) SECS=$OPTARG ;;
        *) echo "usage: $0 [-r RUNS] [-t SECS]" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "compare-peers: needs root (network namespaces)" >&2; exit 1; }
TESTS=tcp1,tcp4,udp64,l2pps,ping,udprr
PEERS=(linux-bridge)
command -v ovs-vswitchd >/dev/null && PEERS+=(ovs-netdev-tso)

# Peers, vswitchd on veths, vswitchd on TAPs: one run of peers.sh.
bash scripts/bench-peers.sh -r "$RUNS" -t "$SECS" -T $TESTS -o /tmp/vswitch-compare-main.json \
    "${PEERS[@]}" vswitchd vswitchd-tap

# vswitchd with 100 ACL flows (TCP from 10.0.N.0/24 to port N: never the
# test traffic) in front of the default NORMAL flow.
FLOWS=/tmp/vswitch-compare-flows.txt
for n in $(seq 1 100); do
    echo "priority=100,tcp,nw_src=10.0.$n.0/24,tp_dst=$n,actions=drop"
done >"$FLOWS"
BIN=$PWD/target/release
VSWITCHD_CTL="$BIN/vsctl --run-dir \$VSB_RUNDIR add-br br0 -- add-port br0 \$VSB_PORT1 -- add-port br0 \$VSB_PORT2 \
 && $BIN/vsctl --run-dir \$VSB_RUNDIR add-flows br0 $FLOWS" \
    bash scripts/bench-peers.sh -r "$RUNS" -t "$SECS" -T $TESTS -o /tmp/vswitch-compare-flows.json vswitchd

python3 - /tmp/vswitch-compare-main.json /tmp/vswitch-compare-flows.json <<'EOF'
import json, sys

main = json.load(open(sys.argv[1]))
flows = json.load(open(sys.argv[2]))
m = dict(main["medians"])
m["vswitchd+100flows"] = flows["medians"]["vswitchd"]
lb, ovs = m.get("linux-bridge", {}), m.get("ovs-netdev-tso", {})

cols = [
    ("tcp1_gbps", "TCP 1 Gb/s"),
    ("tcp4_gbps", "TCP 4 Gb/s"),
    ("udp64_rx_pps", "UDP64 rx pps"),
    ("udp64_loss_pct", "loss %"),
    ("l2pps_rx_pps", "L2 64B rx pps"),
    ("l2pps_loss_pct", "loss %"),
    ("ping_avg_us", "ping avg us"),
    ("udprr_p50_us", "UDP RR p50 us"),
]

def fmt(v):
    if v is None:
        return "-"
    return f"{v:,.0f}" if v >= 1000 else f"{v:.2f}"

print(f"\n{main['meta']['runs']} run(s) of {main['meta']['duration_s']} s, medians; kernel {main['meta']['kernel']}, {main['meta']['nproc']} CPUs\n")
print(f"{'datapath':20}" + "".join(f"{name:>15}" for _, name in cols))
for dp, row in m.items():
    print(f"{dp:20}" + "".join(f"{fmt(row.get(k)):>15}" for k, _ in cols))

def ratio(dp, key, base):
    a, b = m.get(dp, {}).get(key), base.get(key)
    return None if a is None or not b else a / b

print("\nratios")
print(f"{'datapath':36}" + "".join(f"{name:>15}" for k, name in cols if "loss" not in k))
for base_name, base in [("/ linux-bridge", lb), ("/ ovs-netdev-tso", ovs)]:
    if not base:
        continue
    for dp in ["vswitchd", "vswitchd-tap", "vswitchd+100flows"]:
        cells = [ratio(dp, k, base) for k, _ in cols if "loss" not in k]
        print(f"{dp + ' ' + base_name:36}" + "".join(f"{fmt(c):>15}" for c in cells))

targets = []
def target(text, value, ok):
    targets.append((text, value, ok))

v = m.get("vswitchd", {})
r = lambda key, base: ratio("vswitchd", key, base)
if lb:
    target("TCP 1 stream >= 1.0x Linux bridge", r("tcp1_gbps", lb), (r("tcp1_gbps", lb) or 0) >= 1.0)
    target("TCP 4 streams >= 0.8x Linux bridge", r("tcp4_gbps", lb), (r("tcp4_gbps", lb) or 0) >= 0.8)
    target("UDP 64 B rx >= 0.9x Linux bridge", r("udp64_rx_pps", lb), (r("udp64_rx_pps", lb) or 0) >= 0.9)
    target("UDP 64 B loss <= 1%", v.get("udp64_loss_pct"), (v.get("udp64_loss_pct") or 100) <= 1)
    target("64 B replay rx >= 1.0x Linux bridge", r("l2pps_rx_pps", lb), (r("l2pps_rx_pps", lb) or 0) >= 1.0)
    target("64 B replay loss <= 1%", v.get("l2pps_loss_pct"), (v.get("l2pps_loss_pct") or 100) <= 1)
    target("ping avg <= 1.5x Linux bridge", r("ping_avg_us", lb), (r("ping_avg_us", lb) or 9) <= 1.5)
    target("UDP RR p50 <= 1.0x Linux bridge", r("udprr_p50_us", lb), (r("udprr_p50_us", lb) or 9) <= 1.0)
if ovs:
    target("TCP 1 stream >= 1.5x OVS netdev TSO", r("tcp1_gbps", ovs), (r("tcp1_gbps", ovs) or 0) >= 1.5)
    target("TCP 4 streams >= 1.5x OVS netdev TSO", r("tcp4_gbps", ovs), (r("tcp4_gbps", ovs) or 0) >= 1.5)
for variant in ["vswitchd-tap", "vswitchd+100flows"]:
    for key in ["tcp1_gbps", "tcp4_gbps", "udp64_rx_pps", "l2pps_rx_pps"]:
        a, b = m.get(variant, {}).get(key), v.get(key)
        if a is not None and b:
            target(f"{variant} {key} within 10% of vswitchd", a / b, a / b >= 0.9)
    for key in ["ping_avg_us", "udprr_p50_us"]:
        a, b = m.get(variant, {}).get(key), v.get(key)
        if a is not None and b:
            target(f"{variant} {key} within 10% of vswitchd", a / b, a / b <= 1.1)

print("\ntargets")
for text, value, ok in targets:
    print(f"  {'met    ' if ok else 'NOT MET'}  {text:48} {fmt(value)}")
EOF

# The idle target: CPU and memory with 2 ports and no traffic.
echo
bash benches/idle-probe.sh -t "${IDLE_SECS:-60}"
