#!/usr/bin/env bash
# Overlays across two "hosts", in one run: vswitchd to vswitchd over VXLAN
# and over GRE, beside the kernel's own VXLAN to VXLAN (issue 19).
#
#   benches/tunnels.sh [-r RUNS] [-t SECS] [-o FILE.csv] [--no-build]
#
#   -r  runs of every test (default 3), interleaved: vxlan, gre, kernel,
#       then again, so a slow moment of the machine hits all three alike
#   -t  seconds of each iperf3 test (default 10)
#   -o  also save the raw results (one line per run and test) as CSV
#   --no-build  use target/release/{vswitchd,vsctl} as they are
#
# Four labs; the first three are two host namespaces joined by an underlay
# veth (198.19.0.1/24 - 198.19.0.2/24, MTU 1500) with a container namespace
# behind each host (198.18.0.1/24 and 198.18.0.2/24):
#
#   vxlan   each host runs its own vswitchd (release build, --detach, run
#           directory and database in a temporary directory): br0 with the
#           container (add-container-port ... --mtu 1450) and a tunnel port
#           type=vxlan options:remote_ip=<other host> options:key=42
#   gre     the same with type=gre; container MTU 1458
#   kernel  no vswitchd: a kernel `vxlan` device (id 42, dstport 4789,
#           local/remote the underlay addresses) and a veth to the container
#           (MTU 1450) on a Linux bridge in each host, as e2e_tunnels
#           measures the kernel beside us
#   bridge  the reference for what an overlay of vswitchds could reach:
#           one host, one vswitchd, both containers (MTU 1450) on its br0,
#           no tunnel. An overlay does this lab's work twice (a switch on
#           each host) plus the tunnel's, on the same two CPUs
#
# Tests, container 1 -> container 2, one at a time: iperf3 TCP 1 stream,
# TCP 4 streams (-P 4), UDP 64-byte datagrams as fast as they go (-u -l 64
# -b 0; the receiver's packets per second and loss); and, when asked for
# (TUNNEL_TESTS=ping), the average round trip of 500 pings 2 ms apart. During each test the
# CPU time of each vswitchd (utime + stime from /proc/PID/stat) is read,
# as % of one core. Prints the medians, the ratios vxlan/kernel,
# gre/kernel and bridge/kernel, and the daemons' CPU.
#
# Lab rules: every namespace is vsbt<pid>-*, made here and deleted on exit
# (also on failure or interrupt); addresses only in 198.18.0.0/15 and only
# inside those namespaces; nothing is added to the root namespace (sysctls
# only inside ours: IPv6 off); every iperf3 is bounded by -t and a timeout
# and killed by pid; the daemons are started here and stopped by pid.
# Root only.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=3 SECS=10 OUT="" BUILD=1
usage() {
    echo "usage: $0 [-r RUNS] [-t SECS] [-o FILE.csv] [--no-build]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case $1 in
        -r) [ $# -ge 2 ] || usage; RUNS=$2; shift 2 ;;
        -t) [ $# -ge 2 ] || usage; SECS=$2; shift 2 ;;
        -o) [ $# -ge 2 ] || usage; OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) usage ;;
        *) echo "tunnels: unknown argument $1" >&2; usage ;;
    esac
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "tunnels: -r wants a positive number, not $RUNS" >&2; exit 2; }
[[ $SECS =~ ^[1-9][0-9]*$ ]] || { echo "tunnels: -t wants a positive number of seconds, not $SECS" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "tunnels: needs root (network namespaces)" >&2; exit 1; }
for tool in ip iperf3 timeout ss python3; do
    command -v "$tool" >/dev/null || { echo "tunnels: $tool is not installed" >&2; exit 1; }
done
if [ -n "$OUT" ]; then
    : >"$OUT" || { echo "tunnels: cannot write $OUT" >&2; exit 1; }
fi

if [ "$BUILD" = 1 ]; then
    # Another build may be running on this machine: one at a time.
    flock /tmp/cargo.lock cargo build --release -q -p vswitchd -p vsctl
fi
VSWITCHD=$PWD/target/release/vswitchd
VSCTL=$PWD/target/release/vsctl
for bin in "$VSWITCHD" "$VSCTL"; do
    [ -x "$bin" ] || { echo "tunnels: $bin not found; build it (or drop --no-build)" >&2; exit 1; }
done

# ---------------------------------------------------------------- names, cleanup

P="vsbt$$"
# TUNNEL_KINDS / TUNNEL_TESTS (space-separated) narrow a run, e.g. to
# compare one change on vxlan tcp1 against the kernel; only the labs asked
# for are built.
read -r -a KINDS <<<"${TUNNEL_KINDS:-vxlan gre kernel bridge}"
read -r -a TESTS <<<"${TUNNEL_TESTS:-tcp1 tcp4 udp64}"
declare -A TAG=([vxlan]=vx [gre]=gr [kernel]=kv [bridge]=br)
declare -A MTU=([vxlan]=1450 [gre]=1458 [kernel]=1450 [bridge]=1450)
for kind in "${KINDS[@]}"; do
    [ -n "${TAG[$kind]:-}" ] || { echo "tunnels: unknown lab $kind in TUNNEL_KINDS (vxlan gre kernel bridge)" >&2; exit 2; }
done
TMP=$(mktemp -d /tmp/vswitch-tunnels.XXXXXX)
CSV=$TMP/results.csv
CREATED_NS=()
declare -A DAEMON_PID=() # vx-h1, vx-h2, gr-h1, gr-h2 -> the daemon's pid
SERVER="" CLIENT=""

# Whether PID is a live vswitchd (not a zombie, not a reused pid).
is_vswitchd() {
    [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = vswitchd ] &&
        [ "$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" != Z ]
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    local pid ns who f
    for pid in $CLIENT $SERVER; do kill "$pid" 2>/dev/null; done
    # Daemons whose pid file exists but whose start did not finish here.
    for f in "$TMP"/*/vswitchd.pid; do
        [ -f "$f" ] || continue
        who=$(basename "$(dirname "$f")")
        [ -n "${DAEMON_PID[$who]:-}" ] || DAEMON_PID[$who]=$(cat "$f" 2>/dev/null)
    done
    if [ "$rc" = 1 ]; then
        for who in "${!DAEMON_PID[@]}"; do
            [ -s "$TMP/$who/vswitchd.log" ] || continue
            echo "tunnels: the last lines of vswitchd $who's log:" >&2
            tail -n 15 "$TMP/$who/vswitchd.log" | sed 's/^/    /' >&2
        done
    fi
    for who in "${!DAEMON_PID[@]}"; do
        pid=${DAEMON_PID[$who]}
        is_vswitchd "$pid" && kill -TERM "$pid"
    done
    for _ in $(seq 50); do
        local running=0
        for who in "${!DAEMON_PID[@]}"; do is_vswitchd "${DAEMON_PID[$who]}" && running=1; done
        [ $running = 0 ] && break
        sleep 0.1
    done
    for who in "${!DAEMON_PID[@]}"; do
        pid=${DAEMON_PID[$who]}
        is_vswitchd "$pid" && { echo "tunnels: vswitchd $who ignored SIGTERM; killing it" >&2; kill -KILL "$pid"; }
    done
    for pid in $CLIENT $SERVER; do wait "$pid" 2>/dev/null; done
    # Anything still running inside our namespaces was started here.
    for ns in "${CREATED_NS[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    done
    for ((i = ${#CREATED_NS[@]} - 1; i >= 0; i--)); do ip netns del "${CREATED_NS[$i]}" 2>/dev/null; done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    echo "tunnels: $*" >&2
    exit 1
}

mkns() {
    ip netns add "$1" || die "cannot create namespace $1"
    CREATED_NS+=("$1")
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null
    ip -n "$1" link set lo up
}

# The underlay: a veth "ul" from host 1 to host 2, made inside host 1.
underlay() {
    ip -n "$1" link add ul type veth peer name ul netns "$2"
    ip -n "$1" addr add 198.19.0.1/24 dev ul
    ip -n "$2" addr add 198.19.0.2/24 dev ul
    ip -n "$1" link set ul up
    ip -n "$2" link set ul up
}

vsctl_of() { "$VSCTL" --run-dir "$TMP/$1" "${@:2}"; }

# vsctl on daemon WHO: any failure ends the run, quoted.
vs() {
    local who=$1 out
    shift
    out=$(vsctl_of "$who" "$@" 2>&1) || die "vsctl ($who) $* failed: $out"
}

# vswitchd for WHO in namespace NS, detached; its pid from the pid file.
start_daemon() {
    local who=$1 ns=$2 dir="$TMP/$1" pid
    mkdir -p "$dir"
    ip netns exec "$ns" "$VSWITCHD" --detach --run-dir "$dir" --db "$dir/conf.db" </dev/null >"$dir/start.log" 2>&1 ||
        die "vswitchd $who did not start: $(cat "$dir/start.log")"
    pid=$(cat "$dir/vswitchd.pid" 2>/dev/null) || die "vswitchd $who wrote no pid file"
    is_vswitchd "$pid" || die "vswitchd $who (pid file: $pid) is not running"
    DAEMON_PID[$who]=$pid
}

# Whether container 1 of lab TAG reaches container 2 (a few tries: the
# first frames wait for ARP on both sides of the tunnel).
overlay_pings() {
    local i
    for i in 1 2 3; do
        ip netns exec "$P-$1-c1" ping -n -q -c 2 -i 0.2 -W 1 198.18.0.2 >/dev/null 2>&1 && return 0
    done
    return 1
}

# Two hosts with a vswitchd each, a container behind each, a KIND tunnel.
setup_ours() {
    local kind=$1 t=${TAG[$1]} n other
    for ns in h1 h2 c1 c2; do mkns "$P-$t-$ns"; done
    underlay "$P-$t-h1" "$P-$t-h2"
    for n in 1 2; do
        other=$((3 - n))
        start_daemon "$t-h$n" "$P-$t-h$n"
        vs "$t-h$n" add-br br0
        vs "$t-h$n" add-container-port br0 eth0 "$P-$t-c$n" --ip "198.18.0.$n/24" --mtu "${MTU[$kind]}"
        vs "$t-h$n" add-port br0 "to-h$other" -- set interface "to-h$other" "type=$kind" \
            "options:remote_ip=198.19.0.$other" options:key=42
    done
    overlay_pings "$t" || die "$kind: container 1 cannot ping container 2 across vswitchd's tunnel"
}

# One host with a vswitchd and both containers on its bridge: no tunnel.
setup_bridge() {
    local t=${TAG[bridge]} n
    for ns in h1 c1 c2; do mkns "$P-$t-$ns"; done
    start_daemon "$t-h1" "$P-$t-h1"
    vs "$t-h1" add-br br0
    for n in 1 2; do
        vs "$t-h1" add-container-port br0 eth0 "$P-$t-c$n" --ip "198.18.0.$n/24" --mtu "${MTU[bridge]}"
    done
    overlay_pings "$t" || die "bridge: container 1 cannot ping container 2 through one vswitchd"
}

# Two hosts with the kernel's VXLAN: vxlan0 and the container's veth on a
# Linux bridge in each host.
setup_kernel() {
    local t=${TAG[kernel]} n other h c
    for ns in h1 h2 c1 c2; do mkns "$P-$t-$ns"; done
    underlay "$P-$t-h1" "$P-$t-h2"
    for n in 1 2; do
        other=$((3 - n)) h=$P-$t-h$n c=$P-$t-c$n
        ip -n "$h" link add vxlan0 type vxlan id 42 dstport 4789 local "198.19.0.$n" remote "198.19.0.$other" dev ul
        ip -n "$h" link add br0 type bridge
        ip -n "$h" link add vc mtu "${MTU[kernel]}" type veth peer name eth0 netns "$c"
        for dev in vxlan0 vc; do
            ip -n "$h" link set "$dev" master br0
            ip -n "$h" link set "$dev" up
        done
        ip -n "$h" link set br0 up
        ip -n "$c" link set eth0 mtu "${MTU[kernel]}"
        ip -n "$c" addr add "198.18.0.$n/24" dev eth0
        ip -n "$c" link set eth0 up
    done
    overlay_pings "$t" || die "kernel: container 1 cannot ping container 2 across the kernel's vxlan"
}

# ---------------------------------------------------------------- measuring

HZ=$(getconf CLK_TCK)

# utime + stime of daemon WHO, in ticks (all its threads).
ticks() {
    local pid=${DAEMON_PID[$1]}
    is_vswitchd "$pid" || die "vswitchd $1 (pid $pid) is gone"
    sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}'
}

wait_listen() { # NS PORT
    local i
    for i in $(seq 50); do
        ip netns exec "$1" ss -Hltn "sport = :$2" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

# "gbps retransmits rx_pps tx_pps loss_pct error" from an iperf3 JSON report.
parse_iperf() { # FILE tcp|udp
    python3 - "$1" "$2" <<'EOF'
import json, sys

path, kind = sys.argv[1], sys.argv[2]
try:
    j = json.load(open(path))
except Exception as e:
    print("- - - - - no_json"); sys.exit()
e = j.get("end", {})
if kind == "tcp":
    r, s = e.get("sum_received", {}), e.get("sum_sent", {})
    if not r.get("seconds") or not r.get("bytes"):
        print("- - - - -", (j.get("error") or "no_result").replace(" ", "_").replace(",", ";")); sys.exit()
    print(f"{r['bits_per_second'] / 1e9:.3f} {s.get('retransmits', '-')} - - - -")
else:
    s = e.get("sum", {})
    if not s.get("seconds"):
        print("- - - - -", (j.get("error") or "no_result").replace(" ", "_").replace(",", ";")); sys.exit()
    packets, lost, secs = s.get("packets", 0), s.get("lost_packets", 0), s["seconds"]
    # What the receiver got: the datagrams sent less those it counted lost.
    print(f"- - {(packets - lost) / secs:.0f} {packets / secs:.0f} {s.get('lost_percent', 0.0):.2f} -")
EOF
}

FAILED=0
echo "kind,run,test,secs,gbps,retransmits,rx_pps,tx_pps,loss_pct,cpu_h1_pct,cpu_h2_pct,error,ping_avg_us" >"$CSV"

# Round trips from container 1 to container 2: 500 pings 2 ms apart
# (bounded by -c and -w), the average in microseconds.
measure_ping() {
    local kind=$1 run=$2 t=${TAG[$1]} out avg
    out=$(ip netns exec "$P-$t-c1" ping -n -q -c 500 -i 0.002 -w 10 198.18.0.2 2>&1) || true
    avg=$(sed -n 's|^rtt [^=]*= [0-9.]*/\([0-9.]*\)/.*|\1|p' <<<"$out")
    if [ -z "$avg" ]; then
        FAILED=$((FAILED + 1))
        echo "  $kind ping run $run FAILED: $(tail -n 2 <<<"$out" | tr '\n' ' ')" >&2
        echo "$kind,$run,ping,,,,,,,,,no_reply," >>"$CSV"
        return
    fi
    avg=$(awk -v ms="$avg" 'BEGIN { printf "%.0f", ms * 1000 }')
    echo "$kind,$run,ping,,,,,,,,,,$avg" >>"$CSV"
    printf '  %-6s %-5s %8s us average round trip\n' "$kind" ping "$avg"
}

# One iperf3 test from container 1 to container 2 of KIND's lab.
measure() {
    local kind=$1 run=$2 test=$3 t=${TAG[$1]} mode=tcp
    local c1=$P-$t-c1 c2=$P-$t-c2 json="$TMP/$kind.r$run.$test.json"
    local args=()
    case $test in
        tcp4) args=(-P 4) ;;
        udp64) args=(-u -l 64 -b 0) mode=udp ;;
    esac
    ip netns exec "$c2" timeout -k 2 $((SECS + 30)) iperf3 -s -1 -B 198.18.0.2 -p 5201 </dev/null >/dev/null 2>&1 &
    SERVER=$!
    wait_listen "$c2" 5201 || die "$kind: the iperf3 server did not listen within 5 s"
    local ours=0 hosts=2 a0=0 b0=0 a1=0 b1=0 s0 s1 rc=0
    [ "$kind" = kernel ] || ours=1
    [ "$kind" != bridge ] || hosts=1
    if [ $ours = 1 ]; then a0=$(ticks "$t-h1"); [ $hosts = 1 ] || b0=$(ticks "$t-h2"); fi
    s0=$(date +%s.%N)
    ip netns exec "$c1" timeout -k 2 $((SECS + 15)) iperf3 -c 198.18.0.2 -p 5201 -J --connect-timeout 3000 \
        -t "$SECS" "${args[@]}" </dev/null >"$json" 2>"$json.err" &
    CLIENT=$!
    wait "$CLIENT" || rc=$?
    CLIENT=""
    s1=$(date +%s.%N)
    if [ $ours = 1 ]; then a1=$(ticks "$t-h1"); [ $hosts = 1 ] || b1=$(ticks "$t-h2"); fi
    # The one-off server ends with its test; if not, it is stopped.
    for _ in $(seq 50); do
        kill -0 "$SERVER" 2>/dev/null || break
        sleep 0.1
    done
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=""

    local gbps retr rx tx loss err cpu1=- cpu2=-
    read -r gbps retr rx tx loss err < <(parse_iperf "$json" $mode)
    if [ $ours = 1 ]; then
        cpu1=$(awk -v a="$a0" -v b="$a1" -v hz="$HZ" -v s0="$s0" -v s1="$s1" 'BEGIN { printf "%.1f", 100 * (b - a) / hz / (s1 - s0) }')
        [ $hosts = 1 ] ||
            cpu2=$(awk -v a="$b0" -v b="$b1" -v hz="$HZ" -v s0="$s0" -v s1="$s1" 'BEGIN { printf "%.1f", 100 * (b - a) / hz / (s1 - s0) }')
    fi
    if [ "$err" != - ] || [ "$rc" != 0 ]; then
        [ "$err" != - ] || err="iperf3_exit_$rc"
        FAILED=$((FAILED + 1))
        echo "  $kind $test run $run FAILED: $err $(head -c 300 "$json.err" 2>/dev/null)" >&2
    fi
    local fields=("$kind" "$run" "$test" "$SECS" "$gbps" "$retr" "$rx" "$tx" "$loss" "$cpu1" "$cpu2" "$err" "") i
    for i in "${!fields[@]}"; do [ "${fields[$i]}" != - ] || fields[$i]=""; done
    (IFS=,; echo "${fields[*]}") >>"$CSV"
    case $mode in
        tcp) printf '  %-6s %-5s %8s Gbit/s  retr %-6s' "$kind" "$test" "$gbps" "$retr" ;;
        udp) printf '  %-6s %-5s %8s pps rx (%s pps tx, loss %s%%)' "$kind" "$test" "$rx" "$tx" "$loss" ;;
    esac
    if [ $ours = 1 ]; then printf '  vswitchd CPU h1 %s%% h2 %s%%' "$cpu1" "$cpu2"; fi
    printf '\n'
}

# ---------------------------------------------------------------- run

echo "tunnels: setting up ${KINDS[*]} (namespaces $P-*)"
for kind in "${KINDS[@]}"; do
    case $kind in
        vxlan | gre) setup_ours "$kind" ;;
        kernel) setup_kernel ;;
        bridge) setup_bridge ;;
    esac
done
echo "tunnels: $RUNS run(s) of ${TESTS[*]}, $SECS s each, container 1 -> container 2"
for run in $(seq "$RUNS"); do
    for kind in "${KINDS[@]}"; do
        echo "run $run/$RUNS, $kind"
        for test in "${TESTS[@]}"; do
            if [ "$test" = ping ]; then measure_ping "$kind" "$run"; else measure "$kind" "$run" "$test"; fi
            sleep 1
        done
    done
done

python3 - "$CSV" "$RUNS" "$SECS" "$(uname -r)" "$(nproc)" <<'EOF'
import csv, statistics, sys

path, runs, secs, kernel, ncpu = sys.argv[1:]
rows = list(csv.DictReader(open(path)))
kinds = [k for k in ["vxlan", "gre", "kernel", "bridge"] if any(r["kind"] == k for r in rows)]
tests = ["tcp1", "tcp4", "udp64"]

def med(kind, test, col):
    vals = [float(r[col]) for r in rows if r["kind"] == kind and r["test"] == test and r[col] and not r["error"]]
    return statistics.median(vals) if vals else None

def fmt(v, digits=2):
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}"

print(f"\n{runs} run(s) of {secs} s, medians; kernel {kernel}, {ncpu} CPUs; vswitchd release build")
print("underlay veth MTU 1500; containers MTU 1450 (vxlan, kernel, bridge), 1458 (gre); iperf3 container 1 -> container 2")
print("bridge: one vswitchd with both containers, no tunnel (an overlay does its work on each host, plus the tunnel's)\n")
cols = [("tcp1", "gbps", "TCP 1 Gb/s"), ("tcp4", "gbps", "TCP 4 Gb/s"),
        ("udp64", "rx_pps", "UDP64 rx pps"), ("udp64", "loss_pct", "UDP64 loss %")]
print(f"{'overlay':10}" + "".join(f"{name:>15}" for _, _, name in cols))
for kind in kinds:
    print(f"{kind:10}" + "".join(f"{fmt(med(kind, t, c)):>15}" for t, c, _ in cols))

print()
ratio_cols = [c for c in cols if c[1] != "loss_pct"]
print(f"{'ratio':14}" + "".join(f"{name:>15}" for _, _, name in ratio_cols))
for kind in [k for k in ["vxlan", "gre", "bridge"] if k in kinds]:
    cells = []
    for t, c, _ in ratio_cols:
        a, b = med(kind, t, c), med("kernel", t, c)
        cells.append(None if a is None or not b else a / b)
    print(f"{kind + '/kernel':14}" + "".join(f"{fmt(x, 3):>15}" for x in cells))

print("\nvswitchd CPU during each test, % of one core (host 1 = sender side / host 2 = receiver side;")
print("bridge: its one vswitchd / -), medians")
print(f"{'overlay':10}" + "".join(f"{name:>15}" for name in ["TCP 1", "TCP 4", "UDP64"]))
for kind in [k for k in ["vxlan", "gre", "bridge"] if k in kinds]:
    cells = [f"{fmt(med(kind, t, 'cpu_h1_pct'), 0)} / {fmt(med(kind, t, 'cpu_h2_pct'), 0)}" for t in tests]
    print(f"{kind:10}" + "".join(f"{c:>15}" for c in cells))

if any(r["test"] == "ping" for r in rows):
    print("\nping container 1 -> container 2 (500 pings 2 ms apart), average round trip in us, medians")
    for kind in kinds:
        print(f"{kind:10}{fmt(med(kind, 'ping', 'ping_avg_us'), 0):>15}")

failed = [r for r in rows if r["error"]]
if failed:
    print(f"\n{len(failed)} test run(s) failed and are left out of the medians:")
    for r in failed:
        print(f"  {r['kind']} {r['test']} run {r['run']}: {r['error']}")
EOF

if [ -n "$OUT" ]; then
    cp "$CSV" "$OUT"
    echo "raw results: $OUT"
fi
[ "$FAILED" = 0 ] || die "$FAILED test run(s) failed"
