#!/usr/bin/env bash
# Soak test: mixed traffic through two vswitchd "hosts" for a long time,
# sampling forwarding rates, each daemon's memory and every error counter.
# Run as root; not part of CI.
#
#   scripts/soak.sh [-d SECONDS] [-i SECONDS] [-o FILE.csv] [-w SECONDS] [-g PERCENT]
#
#   -d  how long the traffic runs (default 1800 = 30 min)
#   -i  sampling interval (default 30)
#   -o  CSV of the samples (default /tmp/vswitch-soak-<timestamp>.csv)
#   -w  warm-up: memory is judged on the samples from it on (default a
#       tenth of the duration but at least 60 s; at most half)
#   -g  memory growth that fails the run, in percent (default 10): the
#       mean of the last third of those samples against the first third's,
#       for each daemon's RSS and its allocator's bytes in use
#
# Binaries: ${VSWITCHD:-target/release/vswitchd} and ${VSCTL:-target/release/vsctl}
# (cargo build --release). Rates can be changed through the environment:
# SOAK_L2_TCP_RATE (200M), SOAK_L2_UDP_RATE (100M), SOAK_NAT_TCP_RATE (100M),
# SOAK_NAT_UDP_RATE (50M), SOAK_VXLAN_TCP_RATE (100M), SOAK_CHUNK (seconds
# per iperf3 run, 20), SOAK_HTTP_BATCH (connections per curl batch, 20),
# SOAK_UDP_LOSS_MAX (percent of UDP datagrams a class may lose, 1),
# SOAK_PING_LOSS_MAX (pings that may be lost in the whole run, 0).
#
# Topology (every namespace is sk<pid>-*, every address in 198.18.0.0/15):
#
#   host A (ns ha, vswitchd A)                         host B (ns hb, vswitchd B)
#   br0  gateway 198.18.0.1/24, ACL flows, NAT          br0
#     c1  198.18.0.11  --+ L2 + ACL                        t2 198.18.1.2 (mtu 1450)
#     c2  198.18.0.12  --+ (httpd :80 allowed, :81 denied) to-a vxlan key 42
#     n1  198.18.0.13  web server behind -p 8080:80        |
#     n2  198.18.0.14  masquerade + hairpin client         |
#     ext 198.19.10.254  "outside", on the uplink          |
#         (uplink ip 198.19.10.1: masquerade, port 8080)   |
#   br1                                                   |
#     t1  198.18.1.1 (mtu 1450)                            |
#     to-b vxlan key 42 ==== underlay veth 198.19.0.1 <-> 198.19.0.2
#
# Traffic classes, all at once, each run bounded in time:
#   l2     iperf3 TCP c1->c2 and UDP c2->c1 through the ACL flows in front of
#          NORMAL; short HTTP connections c1->c2:80 (allowed) and a probe to
#          c2:81 that the ACL must drop; pings c1->c2 and c1->gateway.
#   nat    iperf3 TCP and UDP n1->ext through the masquerade (the outside must
#          see 198.19.10.1); batches of short HTTP connections ext->uplink:8080
#          (the port mapping to n1:80), n2->ext:80 (masquerade) and
#          n2->uplink:8080 (hairpin); pings n1->ext.
#   vxlan  iperf3 TCP t1->t2 across the tunnel; pings t1->t2.
#   flows  once per sample a flow is added and the previous one deleted, so
#          the caches are invalidated while traffic runs.
#
# Rates in the table are what the switch received on the class's ports
# (dump-ports rx counters: every frame counted once, TCP GSO frames as one
# packet); per-run iperf3 figures are in the summary. RSS is VmRSS of each
# daemon, heap its allocator's bytes in use and buffers the bytes it holds
# for packets (both from `vsctl memory-show`); VmHWM is printed at the end.
# One sample can swing by a fifth with the allocator's timing, so memory
# is judged on means over a third of the run, not on single samples. Errors: switch drops other than the
# ACL's (by reason, plus tx drops and NAT drop flows), failed traffic tools
# (iperf3 runs, HTTP connections, the ACL probe getting through, vsctl),
# lost pings, UDP loss above the limit, ERROR lines or panics in the logs.
# Exits 0 only if both daemons lived, neither RSS nor heap grew more than
# -g, and no error appeared.
set -uo pipefail
export LC_ALL=C
cd "$(dirname "$0")/.."

DURATION=1800
INTERVAL=30
OUT=""
WARMUP=""
RSS_MAX_PCT=10

usage() {
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while getopts ":d:i:o:w:g:h" opt; do
    case $opt in
        d) DURATION=$OPTARG ;;
        i) INTERVAL=$OPTARG ;;
        o) OUT=$OPTARG ;;
        w) WARMUP=$OPTARG ;;
        g) RSS_MAX_PCT=$OPTARG ;;
        h) usage 0 ;;
        :) echo "soak: -$OPTARG needs a value" >&2; exit 2 ;;
        *) echo "soak: unknown option -$OPTARG (try -h)" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { echo "soak: unexpected argument: $1 (try -h)" >&2; exit 2; }
[ -n "$WARMUP" ] || WARMUP=$((DURATION / 10 > 60 ? DURATION / 10 : 60))
for v in DURATION INTERVAL WARMUP RSS_MAX_PCT; do
    [[ ${!v} =~ ^[0-9]+$ ]] || { echo "soak: $v must be a whole number, not '${!v}'" >&2; exit 2; }
done
[ "$INTERVAL" -ge 5 ] || { echo "soak: the interval must be at least 5 s" >&2; exit 2; }
[ "$DURATION" -ge $((2 * INTERVAL)) ] || { echo "soak: the duration must be at least two intervals" >&2; exit 2; }
[ "$WARMUP" -le $((DURATION / 2)) ] || WARMUP=$((DURATION / 2))
[ -n "$OUT" ] || OUT="/tmp/vswitch-soak-$(date +%Y%m%d-%H%M%S).csv"

L2_TCP_RATE=${SOAK_L2_TCP_RATE:-200M}
L2_UDP_RATE=${SOAK_L2_UDP_RATE:-100M}
NAT_TCP_RATE=${SOAK_NAT_TCP_RATE:-100M}
NAT_UDP_RATE=${SOAK_NAT_UDP_RATE:-50M}
VX_TCP_RATE=${SOAK_VXLAN_TCP_RATE:-100M}
CHUNK=${SOAK_CHUNK:-20}
HTTP_BATCH=${SOAK_HTTP_BATCH:-20}
UDP_LOSS_MAX=${SOAK_UDP_LOSS_MAX:-1}
PING_LOSS_MAX=${SOAK_PING_LOSS_MAX:-0}

if [ "$(id -u)" != 0 ]; then
    echo "soak: run as root (it creates network namespaces and veth pairs)" >&2
    exit 1
fi
VSWITCHD=${VSWITCHD:-target/release/vswitchd}
VSCTL=${VSCTL:-target/release/vsctl}
for bin in "$VSWITCHD" "$VSCTL"; do
    if [ ! -x "$bin" ]; then
        echo "soak: $bin not found; build it first:  cargo build --release -p vswitchd -p vsctl" >&2
        echo "      (or point VSWITCHD and VSCTL at the binaries)" >&2
        exit 1
    fi
done
VSWITCHD=$(realpath "$VSWITCHD")
VSCTL=$(realpath "$VSCTL")
missing=()
for tool in ip iperf3 ping curl jq busybox ss timeout awk; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "soak: missing tools: ${missing[*]}" >&2
    echo "      apt-get install iproute2 iperf3 iputils-ping curl jq busybox coreutils gawk" >&2
    exit 1
fi

# ---------------------------------------------------------------- names, cleanup

P="sk$$"
HA="$P-ha" HB="$P-hb"
C1="$P-c1" C2="$P-c2" N1="$P-n1" N2="$P-n2" EXT="$P-ext" T1="$P-t1" T2="$P-t2"
UL_A="${P}ua" UL_B="${P}ub" # the underlay veth's ends (in ha and hb only)
TMP=$(mktemp -d /tmp/vswitch-soak.XXXXXX)
EVDIR="$TMP/events"
mkdir -p "$EVDIR" "$TMP/a/run" "$TMP/b/run" "$TMP/www" "$TMP/s"
CREATED_NS=()
WORKER_PIDS=()
SERVER_PIDS=()
SLEEP_PID=""
declare -A DAEMON_PID=()   # A/B -> the daemon's pid
declare -A DAEMON_CHILD=() # A/B -> the pid we started (the same, as ip netns exec execs)

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    local pid ns i
    for pid in "${WORKER_PIDS[@]}" "${SERVER_PIDS[@]}" $SLEEP_PID; do kill "$pid" 2>/dev/null; done
    for i in "${!DAEMON_PID[@]}"; do kill -TERM "${DAEMON_PID[$i]}" 2>/dev/null; done
    for _ in $(seq 50); do
        local running=0
        for i in "${!DAEMON_PID[@]}"; do daemon_alive "$i" && running=1; done
        [ $running = 0 ] && break
        sleep 0.1
    done
    for i in "${!DAEMON_PID[@]}"; do
        daemon_alive "$i" && kill -KILL "${DAEMON_PID[$i]}" 2>/dev/null
        wait "${DAEMON_CHILD[$i]}" 2>/dev/null
    done
    # Whatever the workers left running inside our namespaces (iperf3,
    # curl, ping): every process there was started by this script.
    for ns in "${CREATED_NS[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    done
    for pid in "${WORKER_PIDS[@]}" "${SERVER_PIDS[@]}" $SLEEP_PID; do wait "$pid" 2>/dev/null; done
    for ((i = ${#CREATED_NS[@]} - 1; i >= 0; i--)); do ip netns del "${CREATED_NS[$i]}" 2>/dev/null; done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

die() {
    echo "soak: $*" >&2
    exit 1
}

# Whether daemon A or B is alive (a zombie is not).
daemon_alive() {
    local pid=${DAEMON_PID[$1]:-}
    [ -n "$pid" ] || return 1
    local state
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# /proc/PID/status field (kB) of daemon A or B; 0 if gone.
daemon_kb() {
    local pid=${DAEMON_PID[$1]:-0} v
    v=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null)
    echo "${v:-0}"
}

vsctl_of() { "$VSCTL" --run-dir "$TMP/$1/run" "${@:2}"; }

# "HEAP_KB BUFFERS_KB" of daemon A or B from memory-show; fails if it cannot.
daemon_memory() {
    vsctl_of "$1" --format json memory-show 2>>"$TMP/s/err" |
        jq -er '[((.heap_in_use // 0) / 1024 | floor), (.packet_buffers / 1024 | floor)] | @tsv'
}

# vsctl on daemon A or B during set-up: any failure ends the run, quoted.
vs() {
    local who=$1 out rc
    shift
    out=$(vsctl_of "$who" "$@" 2>&1)
    rc=$?
    if [ $rc -ne 0 ]; then
        echo "soak: vsctl ($who) $* failed with exit $rc:" >&2
        echo "$out" | sed 's/^/    /' >&2
        exit 1
    fi
    [ -z "$out" ] || printf '%s\n' "$out"
}

mkns() {
    ip netns add "$1" || die "cannot create namespace $1"
    CREATED_NS+=("$1")
    ip netns exec "$1" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 >/dev/null
    ip -n "$1" link set lo up
}

# The switch port that serves namespace NS on BRIDGE of daemon WHO.
port_of() {
    vsctl_of "$1" --format json show |
        jq -r --arg br "$2" --arg ns "$3" \
            '.[] | select(.name == $br) | .ports[] | select(.external_ids.container_netns == $ns) | .name'
}

start_daemon() {
    local who=$1 ns=$2 dir="$TMP/$1"
    RUST_LOG=${RUST_LOG:-info} ip netns exec "$ns" "$VSWITCHD" --run-dir "$dir/run" --db "$dir/conf.db" \
        </dev/null >/dev/null 2>"$dir/vswitchd.log" &
    DAEMON_CHILD[$who]=$!
    DAEMON_PID[$who]=$!
    local i
    for i in $(seq 200); do
        if vsctl_of "$who" list-br >/dev/null 2>&1; then break; fi
        daemon_alive "$who" || { cat "$dir/vswitchd.log" >&2; die "vswitchd $who exited during start-up"; }
        sleep 0.1
    done
    vsctl_of "$who" list-br >/dev/null 2>&1 || die "vswitchd $who did not answer within 20 s"
    # The pid file names the daemon (ip netns exec execs, so it is the same).
    local pidfile
    pidfile=$(cat "$dir/run/vswitchd.pid" 2>/dev/null)
    [[ $pidfile =~ ^[0-9]+$ ]] && DAEMON_PID[$who]=$pidfile
}

# ---------------------------------------------------------------- events

# One line per measurement: EPOCH CLASS KEY VALUE, a file per class.
ev() { printf '%s %s %s %s\n' "$EPOCHSECONDS" "$1" "$2" "$3" >>"$EVDIR/$1.log"; }
# A failure worth quoting in the report.
failmsg() { printf '%s t=%ss %s: %s\n' "$(date +%T)" "$((EPOCHSECONDS - T0))" "$1" "${2:0:300}" >>"$TMP/failures.log"; }

wait_listen() { # NS PORT
    local i
    for i in $(seq 40); do
        ip netns exec "$1" ss -Hltn "sport = :$2" 2>/dev/null | grep -q . && return 0
        sleep 0.1
    done
    return 1
}

# iperf_run CLASS MODE(tcp|udp) SERVER_NS BIND PORT CLIENT_NS SECS EXPECT_SRC IPERF3_ARGS...
# (EXPECT_SRC: the client address the server must see, or "").
# One iperf3 server for one test, a client for SECS, both bounded.
iperf_run() {
    local class=$1 mode=$2 sns=$3 bind=$4 port=$5 cns=$6 secs=$7 expect=$8
    shift 8
    local sj="$TMP/iperf-$class-server.json" cj="$TMP/iperf-$class-client.json"
    ip netns exec "$sns" iperf3 -s -1 -J -B "$bind" -p "$port" </dev/null >"$sj" 2>/dev/null &
    local spid=$!
    if ! wait_listen "$sns" "$port"; then
        ev "$class" run_fail 1
        failmsg "$class" "iperf3 server on $bind:$port did not listen within 4 s"
        kill "$spid" 2>/dev/null
        wait "$spid" 2>/dev/null
        return
    fi
    timeout -k 2 $((secs + 20)) ip netns exec "$cns" iperf3 -c "$bind" -p "$port" -J --connect-timeout 3000 \
        -t "$secs" "$@" </dev/null >"$cj" 2>"$TMP/iperf-$class.err"
    local rc=$?
    local i
    for i in $(seq 50); do
        kill -0 "$spid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$spid" 2>/dev/null
    wait "$spid" 2>/dev/null
    local bytes secs_run extra1 extra2 err
    if [ "$mode" = tcp ]; then
        read -r bytes secs_run extra1 err < <(jq -r '[(.end.sum_received.bytes // 0), (.end.sum_received.seconds // 0),
            (.end.sum_sent.retransmits // 0), ((.error // "") | gsub("\\s+"; "_"))] | @tsv' "$cj" 2>/dev/null)
    else
        read -r bytes secs_run extra1 extra2 err < <(jq -r '[(.end.sum.bytes // 0), (.end.sum.seconds // 0),
            (.end.sum.packets // 0), (.end.sum.lost_packets // 0), ((.error // "") | gsub("\\s+"; "_"))] | @tsv' \
            "$cj" 2>/dev/null)
    fi
    if [ $rc -ne 0 ] || [ -n "${err:-}" ] || [ "${bytes:-0}" = 0 ]; then
        ev "$class" run_fail 1
        failmsg "$class" "iperf3 -c $bind -p $port $* (from $cns) exit $rc: ${err:-}$(head -c 200 "$TMP/iperf-$class.err")"
        return
    fi
    ev "$class" run_ok 1
    ev "$class" bytes "$bytes"
    ev "$class" secs "$secs_run"
    if [ "$mode" = tcp ]; then
        ev "$class" retrans "$extra1"
    else
        ev "$class" udp_pkts "$extra1"
        ev "$class" udp_lost "$extra2"
    fi
    if [ -n "$expect" ]; then
        local seen
        seen=$(jq -r '.start.connected[0].remote_host // "none"' "$sj" 2>/dev/null)
        if [ "$seen" != "$expect" ]; then
            ev "$class" nat_wrong_src 1
            failmsg "$class" "the server saw the client as ${seen:-nothing}, not the masquerade address $expect"
        fi
    fi
}

worker_iperf() { # CLASS MODE SERVER_NS BIND PORT CLIENT_NS EXPECT_SRC IPERF3_ARGS...
    local left
    while :; do
        left=$((END - EPOCHSECONDS))
        [ $left -ge 5 ] || break
        iperf_run "$1" "$2" "$3" "$4" "$5" "$6" $((left < CHUNK ? left : CHUNK)) "$7" "${@:8}"
        sleep 1
    done
}

ping_path() { # CLASS NS ADDR COUNT
    local out sent recv
    out=$(timeout -k 2 $(($4 / 5 + 10)) ip netns exec "$2" ping -n -q -c "$4" -i 0.2 -W 1 "$3" 2>&1)
    sent=$(sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\1/p' <<<"$out")
    recv=$(sed -n 's/^\([0-9]*\) packets transmitted, \([0-9]*\) received.*/\2/p' <<<"$out")
    if [ -z "$sent" ]; then
        sent=$4 recv=0
        failmsg "$1" "ping $3 from $2 gave no summary: $(tr '\n' ' ' <<<"$out")"
    elif [ "$recv" -lt "$sent" ]; then
        failmsg "$1" "ping $3 from $2: $((sent - recv)) of $sent lost"
    fi
    ev "$1" ping_sent "$sent"
    ev "$1" ping_lost $((sent - recv))
}

worker_ping() {
    while [ $((EPOCHSECONDS + 6)) -le "$END" ]; do
        ping_path ping-l2 "$C1" 198.18.0.12 25 &
        ping_path ping-gw "$C1" 198.18.0.1 25 &
        ping_path ping-nat "$N1" 198.19.10.254 25 &
        ping_path ping-vxlan "$T1" 198.18.1.2 25 &
        wait
    done
}

# N short HTTP connections from NS to URL in one curl (busybox httpd closes
# each connection, so every transfer is a new TCP connection).
curl_batch() { # CLASS NS URL N
    local class=$1 ns=$2 url=$3 n=$4 args=() i codes ok
    for ((i = 1; i <= n; i++)); do args+=(-o /dev/null "$url?$i"); done
    codes=$(timeout -k 2 $((n * 3 + 10)) ip netns exec "$ns" curl -s --connect-timeout 2 --max-time 3 \
        -w '%{http_code}\n' "${args[@]}" 2>/dev/null)
    ok=$(grep -c '^200$' <<<"$codes")
    ev "$class" http_ok "$ok"
    ev "$class" http_fail $((n - ok))
    if [ "$ok" -lt "$n" ]; then
        failmsg "$class" "curl $url from $ns: $((n - ok)) of $n failed (codes: $(sort <<<"$codes" | uniq -c | tr -s ' \n' ' '))"
    fi
}

worker_http() {
    local code
    while [ $((EPOCHSECONDS + 4)) -le "$END" ]; do
        curl_batch http-portmap "$EXT" "http://198.19.10.1:8080/" "$HTTP_BATCH"
        curl_batch http-masq "$N2" "http://198.19.10.254/" "$HTTP_BATCH"
        curl_batch http-hairpin "$N2" "http://198.19.10.1:8080/" 5
        curl_batch http-l2 "$C1" "http://198.18.0.12/" 10
        # The ACL drops c1 -> c2:81, where an httpd listens: nothing may answer.
        code=$(timeout -k 2 10 ip netns exec "$C1" curl -s -o /dev/null --connect-timeout 1 --max-time 2 \
            -w '%{http_code}' "http://198.18.0.12:81/" 2>/dev/null)
        ev acl-probe probes 1
        if [ "$code" != 000 ]; then
            ev acl-probe acl_leak 1
            failmsg acl-probe "c1 reached c2:81 (HTTP $code) although a drop flow is in front of NORMAL"
        fi
        sleep 0.5
    done
}

# ---------------------------------------------------------------- set-up

echo "== soak: $DURATION s of mixed traffic, a sample every $INTERVAL s; namespaces $P-*; CSV $OUT"
for ns in "$HA" "$HB" "$C1" "$C2" "$N1" "$N2" "$EXT" "$T1" "$T2"; do mkns "$ns"; done
ip -n "$HA" link add "$UL_A" type veth peer name "$UL_B" netns "$HB" || die "cannot create the underlay veth"
ip -n "$HA" addr add 198.19.0.1/24 dev "$UL_A"
ip -n "$HB" addr add 198.19.0.2/24 dev "$UL_B"
ip -n "$HA" link set "$UL_A" up
ip -n "$HB" link set "$UL_B" up

start_daemon a "$HA"
start_daemon b "$HB"
echo "== vswitchd A pid ${DAEMON_PID[a]} in $HA, vswitchd B pid ${DAEMON_PID[b]} in $HB"

# Host A, br0: Docker's bridge network with an ACL in front of NORMAL.
vs a add-br br0 -- set bridge br0 gateway=198.18.0.1/24
vs a add-container-port br0 eth0 "$EXT" --ip 198.19.10.254/24
UPLINK=$(port_of a br0 "$EXT")
[ -n "$UPLINK" ] || die "no port for $EXT on A's br0 (vsctl show lists none)"
vs a set port "$UPLINK" ip=198.19.10.1/24 nexthop=198.19.10.254 \
    -- add-nat br0 masquerade --out-port "$UPLINK" \
    -- add-port-mapping br0 tcp 8080 198.18.0.13:80
vs a add-container-port br0 eth0 "$C1" --ip 198.18.0.11/24
vs a add-container-port br0 eth0 "$C2" --ip 198.18.0.12/24
vs a add-container-port br0 eth0 "$N1" --ip 198.18.0.13/24 --gateway 198.18.0.1
vs a add-container-port br0 eth0 "$N2" --ip 198.18.0.14/24 --gateway 198.18.0.1
P_C1=$(port_of a br0 "$C1") P_C2=$(port_of a br0 "$C2")
P_N1=$(port_of a br0 "$N1") P_N2=$(port_of a br0 "$N2")
for v in P_C1 P_C2 P_N1 P_N2; do [ -n "${!v}" ] || die "no switch port found for $v"; done
# 200 rules no packet matches, above the allow rule so every packet is
# classified through them (two masks: source hosts and destination ports).
{
    echo "# soak: ACL rules that never match"
    for i in $(seq 0 149); do
        echo "priority=250,ip,nw_src=198.18.$((128 + i / 100)).$((i % 100 + 1)),actions=drop"
    done
    for port in $(seq 1000 1049); do
        echo "priority=250,tcp,nw_dst=198.18.0.0/24,tp_dst=$port,actions=drop"
    done
} >"$TMP/acl.flows"
vs a add-flow br0 "priority=300,tcp,nw_src=198.18.0.11,nw_dst=198.18.0.12,tp_dst=81,actions=drop"
vs a add-flows br0 "$TMP/acl.flows"
vs a add-flow br0 "priority=200,ip,nw_src=198.18.0.0/24,nw_dst=198.18.0.0/24,actions=NORMAL"

# Host A, br1 and host B, br0: one L2 segment across the VXLAN tunnel.
vs a add-br br1
vs a add-container-port br1 eth0 "$T1" --ip 198.18.1.1/24 --mtu 1450
vs a add-port br1 to-b -- set interface to-b type=vxlan options:remote_ip=198.19.0.2 options:key=42
vs b add-br br0
vs b add-container-port br0 eth0 "$T2" --ip 198.18.1.2/24 --mtu 1450
vs b add-port br0 to-a -- set interface to-a type=vxlan options:remote_ip=198.19.0.1 options:key=42
P_T1=$(port_of a br1 "$T1")
[ -n "$P_T1" ] || die "no switch port found for $T1"

# Short-connection servers: busybox httpd closes every connection.
echo soak >"$TMP/www/index.html"
serve() { # NS IP:PORT
    ip netns exec "$1" busybox httpd -f -p "$2" -h "$TMP/www" </dev/null >/dev/null 2>&1 &
    SERVER_PIDS+=($!)
}
serve "$C2" 198.18.0.12:80
serve "$C2" 198.18.0.12:81
serve "$N1" 198.18.0.13:80
serve "$EXT" 198.19.10.254:80
sleep 0.5

# ---------------------------------------------------------------- preflight

PREFLIGHT_FAIL=0
check() { # DESCRIPTION COMMAND...
    local out
    if out=$("${@:2}" 2>&1); then
        printf '   ok      %s\n' "$1"
    else
        printf '   FAILED  %s\n           %s\n' "$1" "$(tr '\n' ' ' <<<"$out" | head -c 300)"
        printf '%s preflight: %s: %s\n' "$(date +%T)" "$1" "$(tr '\n' ' ' <<<"$out" | head -c 300)" >>"$TMP/failures.log"
        PREFLIGHT_FAIL=$((PREFLIGHT_FAIL + 1))
    fi
}
pings() { ip netns exec "$1" ping -n -q -c 3 -i 0.2 -W 1 "$2"; }
fetch() { ip netns exec "$1" curl -sS --connect-timeout 2 --max-time 4 -o /dev/null -w '%{http_code}\n' "$2" | grep -q '^200$'; }
refused() { ! ip netns exec "$1" curl -s --connect-timeout 1 --max-time 2 -o /dev/null "$2"; }
echo "== preflight"
check "L2: c1 pings c2 through the ACL" pings "$C1" 198.18.0.12
check "gateway: c1 pings 198.18.0.1 (answered by the switch)" pings "$C1" 198.18.0.1
check "masquerade: n1 pings the outside" pings "$N1" 198.19.10.254
check "masquerade: n2 fetches http://198.19.10.254/" fetch "$N2" http://198.19.10.254/
check "port mapping: outside fetches http://198.19.10.1:8080/ (n1:80)" fetch "$EXT" http://198.19.10.1:8080/
check "hairpin: n2 fetches http://198.19.10.1:8080/" fetch "$N2" http://198.19.10.1:8080/
check "ACL: c1 -> c2:81 is dropped" refused "$C1" http://198.18.0.12:81/
check "ACL: c1 fetches http://198.18.0.12/ (allowed)" fetch "$C1" http://198.18.0.12/
check "VXLAN: t1 (host A) pings t2 (host B)" pings "$T1" 198.18.1.2

# ---------------------------------------------------------------- sampling

# Reads every counter into the S_* variables (cumulative). Returns 1 if a
# vsctl call failed (the previous values are kept).
S_L2B=0 S_L2P=0 S_NATB=0 S_NATP=0 S_VXB=0 S_VXP=0 S_AB=0 S_BB=0
S_ERR=0 S_FLOWDROP_A0=0 S_ACL=0 S_NATDROP=0 S_FILLER=0 S_CT=0 S_UNEXPL=0
PORTS_JQ='def sel($names): ($names | split(" ")) as $n | [.[] | select(.port as $p | $n | any(. == $p))];
  def bytes: map(.rx_bytes) | add // 0; def pkts: map(.rx_packets) | add // 0;
  def errs: [.[] | .tx_dropped + (.link_lost // 0)
              + ([.drop_reasons | to_entries[] | select(.key != "flow_drop") | .value] | add // 0)] | add // 0;
  [(sel($a) | bytes), (sel($a) | pkts), (sel($b) | bytes), (sel($b) | pkts), bytes, pkts, errs,
   ([.[] | .drop_reasons.flow_drop // 0] | add // 0)] | @tsv'
read_counters() {
    local s="$TMP/s" i
    # One transaction per daemon: port and rule counters of the same instant.
    vsctl_of a --format json dump-ports br0 -- dump-ports br1 -- dump-flows br0 -- dump-conntrack br0 \
        >"$s/a.json" 2>>"$s/err" || return 1
    vsctl_of b --format json dump-ports br0 >"$s/b0.json" 2>>"$s/err" || return 1
    for i in 0:a0 1:a1 2:af 3:ct; do jq ".[${i%%:*}]" "$s/a.json" >"$s/${i#*:}.json" || return 1; done
    local l2b l2p natb natp ab ap aerr afd vxb vxp xb xp a1err a1fd bb bp berr bfd
    read -r l2b l2p natb natp ab ap aerr afd < <(jq -r --arg a "$P_C1 $P_C2" \
        --arg b "$P_N1 $P_N2 $UPLINK" "$PORTS_JQ" "$s/a0.json") || return 1
    read -r vxb vxp xb xp _ _ a1err a1fd < <(jq -r --arg a "$P_T1 to-b" --arg b "" "$PORTS_JQ" "$s/a1.json") || return 1
    read -r _ _ _ _ bb bp berr bfd < <(jq -r --arg a "" --arg b "" "$PORTS_JQ" "$s/b0.json") || return 1
    local acl natdrop filler ct
    read -r acl natdrop filler < <(jq -r '[
        ([.[] | select(.priority == 300 and (.flow | test("tp_dst=81"))) | .n_packets] | add // 0),
        ([.[] | select(.table >= 250 and (.flow | test("actions=drop$"))) | .n_packets] | add // 0),
        ([.[] | select(.priority == 250) | .n_packets] | add // 0)] | @tsv' "$s/af.json") || return 1
    ct=$(jq 'length' "$s/ct.json") || return 1
    S_L2B=$l2b S_L2P=$l2p S_NATB=$natb S_NATP=$natp S_VXB=$vxb S_VXP=$vxp
    S_AB=$((ab + xb)) S_BB=$bb
    S_FLOWDROP_A0=$afd S_ACL=$acl S_NATDROP=$natdrop S_FILLER=$filler S_CT=$ct
    # Flow drops on A's br0 that neither the ACL's drop rule nor NAT's drop
    # flows counted.
    S_UNEXPL=$((afd - acl - natdrop))
    # Errors: drops other than flow drops, tx drops, lost links on every
    # bridge; flow drops where no drop flow exists (A's br1, B's br0) or
    # that no drop flow counted (A's br0); and what NAT's drop flows refused.
    S_ERR=$((aerr + a1err + berr + a1fd + bfd + natdrop + S_UNEXPL))
    return 0
}

# Sums the events of (FROM, TO] by key into the associative array E.
declare -A E
sum_events() {
    E=()
    local k v
    while read -r k v; do E[$k]=$v; done < <(cat "$EVDIR"/*.log 2>/dev/null |
        awk -v a="$1" -v b="$2" '$1 > a && $1 <= b {s[$3] += $4} END {for (k in s) printf "%s %d\n", k, s[k]}')
}
ev_get() { echo "${E[$1]:-0}"; }
tool_failures() {
    echo $(($(ev_get run_fail) + $(ev_get http_fail) + $(ev_get acl_leak) + $(ev_get nat_wrong_src) + $(ev_get vsctl_fail)))
}

CSV_HEADER="time_s,epoch,l2_mbps,l2_kpps,nat_mbps,nat_kpps,vxlan_mbps,vxlan_kpps,a_mbps,b_mbps,rss_a_kb,rss_b_kb,alive_a,alive_b,conntrack,acl_deny,nat_drop,sw_err,tool_fail,ping_sent,ping_lost,udp_pkts,udp_lost,http_ok,http_fail,flow_unexplained,heap_a_kb,heap_b_kb,buffers_a_kb,buffers_b_kb"
echo "$CSV_HEADER" >"$OUT" || die "cannot write $OUT"

TABLE_FMT='%6s %8s %7s %8s %7s %8s %7s %7s %8s %8s %9s %7s %7s %6s %6s %9s %8s %5s\n'
table_header() {
    printf "$TABLE_FMT" time l2_Mb/s l2_kpps nat_Mb/s nat_kpps vx_Mb/s vx_kpps http_ok rssA_MB rssB_MB heapA_MB conntr acl_dn sw_err tool_f ping_lost udp_loss alive
}

prev_t=""
prev_ev=0
P_L2B=0 P_L2P=0 P_NATB=0 P_NATP=0 P_VXB=0 P_VXP=0 P_AB=0 P_BB=0 P_ERR=0 P_ACL=0 P_NATDROP=0 P_UNEXPL=0
CTL_FAIL=0
CHURN_K=0
take_sample() { # ELAPSED
    local now=$EPOCHREALTIME t=$1 ctl_fail=0
    read_counters || {
        ctl_fail=1
        CTL_FAIL=$((CTL_FAIL + 1))
        failmsg vsctl "reading counters failed: $(tail -n 3 "$TMP/s/err" | tr '\n' ' ')"
    }
    local rss_a rss_b alive_a=0 alive_b=0 heap_a=0 heap_b=0 buf_a=0 buf_b=0
    rss_a=$(daemon_kb a VmRSS) rss_b=$(daemon_kb b VmRSS)
    if ! read -r heap_a buf_a < <(daemon_memory a) || ! read -r heap_b buf_b < <(daemon_memory b); then
        ctl_fail=1
        CTL_FAIL=$((CTL_FAIL + 1))
        failmsg vsctl "memory-show failed: $(tail -n 1 "$TMP/s/err")"
    fi
    daemon_alive a && alive_a=1
    daemon_alive b && alive_b=1
    sum_events "$prev_ev" "$EPOCHSECONDS"
    prev_ev=$EPOCHSECONDS
    local tool_fail ping_sent ping_lost udp_pkts udp_lost http_ok http_fail
    tool_fail=$(($(tool_failures) + ctl_fail))
    ping_sent=$(ev_get ping_sent) ping_lost=$(ev_get ping_lost)
    udp_pkts=$(ev_get udp_pkts) udp_lost=$(ev_get udp_lost)
    http_ok=$(ev_get http_ok) http_fail=$(ev_get http_fail)
    local dt rates
    if [ -z "$prev_t" ]; then dt=0; else dt=$(awk -v a="$prev_t" -v b="$now" 'BEGIN {print b - a}'); fi
    # Deltas: l2 bytes, pkts, nat bytes, pkts, vxlan bytes, pkts, A bytes, B bytes.
    rates=$(awk -v dt="$dt" -v d="$((S_L2B - P_L2B)) $((S_L2P - P_L2P)) $((S_NATB - P_NATB)) $((S_NATP - P_NATP)) $((S_VXB - P_VXB)) $((S_VXP - P_VXP)) $((S_AB - P_AB)) $((S_BB - P_BB))" \
        'BEGIN {
            n = split(d, x, " "); out = "";
            for (i = 1; i <= n; i++) {
                bytes = (i % 2 == 1 || i == 8);
                if (dt <= 0) v = 0; else if (bytes) v = x[i] * 8 / dt / 1e6; else v = x[i] / dt / 1e3;
                out = out (i > 1 ? "," : "") sprintf(bytes ? "%.1f" : "%.2f", v);
            }
            print out }')
    # The t=0 row holds what happened before the traffic (set-up, preflight).
    local err_delta=$((S_ERR - P_ERR)) acl_delta=$((S_ACL - P_ACL)) natdrop_delta=$((S_NATDROP - P_NATDROP))
    local unexpl_delta=$((S_UNEXPL - P_UNEXPL))
    echo "$t,${now%.*},$rates,$rss_a,$rss_b,$alive_a,$alive_b,$S_CT,$acl_delta,$natdrop_delta,$err_delta,$tool_fail,$ping_sent,$ping_lost,$udp_pkts,$udp_lost,$http_ok,$http_fail,$unexpl_delta,${heap_a:-0},${heap_b:-0},${buf_a:-0},${buf_b:-0}" >>"$OUT"
    tail -n 1 "$OUT" | print_row
    prev_t=$now
    P_L2B=$S_L2B P_L2P=$S_L2P P_NATB=$S_NATB P_NATP=$S_NATP P_VXB=$S_VXB P_VXP=$S_VXP P_AB=$S_AB P_BB=$S_BB
    P_ERR=$S_ERR P_ACL=$S_ACL P_NATDROP=$S_NATDROP P_UNEXPL=$S_UNEXPL
}

print_row() {
    awk -F, -v fmt="$TABLE_FMT" '{
        loss = ($22 > 0) ? sprintf("%.2f%%", 100 * $23 / $22) : "-";
        printf fmt, $1 "s", $3, $4, $5, $6, $7, $8, $24, sprintf("%.1f", $11 / 1024), sprintf("%.1f", $12 / 1024),
               sprintf("%.1f", $27 / 1024), $15, $16, $18, $19, $21 "/" $20, loss, ($13 == 1 && $14 == 1) ? "yes" : "NO" }'
}

# Flow churn: a rule added (and the previous one deleted) per sample, so
# the caches are flushed under load; a failure is a tool failure.
churn() {
    local out
    CHURN_K=$((CHURN_K % 250 + 1))
    out=$(vsctl_of a del-flows br0 "cookie=0x50a4/0xffffffffffffffff" 2>&1 &&
        vsctl_of a add-flow br0 "cookie=0x50a4,priority=260,ip,nw_src=198.18.127.$CHURN_K,actions=drop" 2>&1) || {
        ev churn vsctl_fail 1
        failmsg churn "$out"
    }
}

echo "== traffic starts: l2 TCP $L2_TCP_RATE + UDP $L2_UDP_RATE, nat TCP $NAT_TCP_RATE + UDP $NAT_UDP_RATE + HTTP, vxlan TCP $VX_TCP_RATE, pings"
table_header
T0=$EPOCHSECONDS
END=$((T0 + DURATION))
take_sample 0
ERR0=$S_ERR ACL0=$S_ACL NATDROP0=$S_NATDROP UNEXPL0=$S_UNEXPL

worker_iperf l2-tcp tcp "$C2" 198.18.0.12 5201 "$C1" "" -b "$L2_TCP_RATE" &
WORKER_PIDS+=($!)
sleep 0.3
worker_iperf l2-udp udp "$C1" 198.18.0.11 5202 "$C2" "" -u -b "$L2_UDP_RATE" &
WORKER_PIDS+=($!)
sleep 0.3
worker_iperf nat-tcp tcp "$EXT" 198.19.10.254 5203 "$N1" 198.19.10.1 -b "$NAT_TCP_RATE" &
WORKER_PIDS+=($!)
sleep 0.3
worker_iperf nat-udp udp "$EXT" 198.19.10.254 5204 "$N1" "" -u -b "$NAT_UDP_RATE" &
WORKER_PIDS+=($!)
sleep 0.3
worker_iperf vxlan-tcp tcp "$T2" 198.18.1.2 5205 "$T1" "" -b "$VX_TCP_RATE" &
WORKER_PIDS+=($!)
worker_ping &
WORKER_PIDS+=($!)
worker_http &
WORKER_PIDS+=($!)

k=0
while :; do
    k=$((k + 1))
    t=$((k * INTERVAL))
    [ $t -le "$DURATION" ] || t=$DURATION
    wait_s=$((T0 + t - EPOCHSECONDS))
    if [ $wait_s -gt 0 ]; then
        sleep "$wait_s" &
        SLEEP_PID=$!
        wait $SLEEP_PID
        SLEEP_PID=""
    fi
    churn
    take_sample "$t"
    [ $t -lt "$DURATION" ] || break
done

# ---------------------------------------------------------------- the end

echo "== traffic stops; waiting for the last runs"
for _ in $(seq 90); do
    alive=0
    for pid in "${WORKER_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 1
done
for pid in "${WORKER_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null
        failmsg worker "a traffic worker (pid $pid) still ran 90 s after the end; stopped"
    fi
done
wait "${WORKER_PIDS[@]}" 2>/dev/null
WORKER_PIDS=()
sleep 2

# The counters once the traffic is over (drops after the last sample too).
FINAL_OK=1
read_counters || FINAL_OK=0
DROP_DETAIL=""
if [ $FINAL_OK = 1 ]; then
    # Port names with the namespace each serves, for the report.
    NAMES=$( (vsctl_of a --format json show; vsctl_of b --format json show) 2>/dev/null |
        jq -s --arg p "$P-" '[.[][] | .ports[] | {(.name): ((.external_ids.container_netns // "") | ltrimstr($p))}] | add // {}')
    [ -n "$NAMES" ] || NAMES='{}'
    DROP_DETAIL=$(for f in a0:A/br0 a1:A/br1 b0:B/br0; do
        jq -r --arg br "${f#*:}" --argjson names "$NAMES" '.[]
            | select(.tx_dropped > 0 or (.link_lost // 0) > 0 or ((.drop_reasons | length) > 0 and ([.drop_reasons[]] | add) > 0))
            | "   \($br) port \(.port)" + (if ($names[.port] // "") != "" then " (\($names[.port]))" else "" end)
              + ": tx_dropped=\(.tx_dropped)"
              + ([.drop_reasons | to_entries[] | select(.value > 0) | " \(.key)=\(.value)"] | join(""))
              + (if (.link_lost // 0) > 0 then " link_lost=\(.link_lost)" else "" end)' "$TMP/s/${f%%:*}.json"
    done)
    DROP_FLOWS=$(jq -r '.[] | select((.flow | test("actions=drop$")) and .n_packets > 0)
        | "   A/br0 flow table=\(.table) priority=\(.priority) n_packets=\(.n_packets): \(.flow)"' "$TMP/s/af.json")
    [ -z "$DROP_FLOWS" ] || DROP_DETAIL+=$'\n'"$DROP_FLOWS"
fi

# Still forwarding after the soak?
POST_FAIL=0
post() { # DESCRIPTION COMMAND...
    if ! "${@:2}" >/dev/null 2>&1; then
        POST_FAIL=$((POST_FAIL + 1))
        failmsg post-check "$1 failed after the soak"
    fi
}
post "c1 pings c2" pings "$C1" 198.18.0.12
post "n1 pings the outside" pings "$N1" 198.19.10.254
post "outside fetches through the port mapping" fetch "$EXT" http://198.19.10.1:8080/
post "t1 pings t2 over VXLAN" pings "$T1" 198.18.1.2

HWM_A=$(daemon_kb a VmHWM) HWM_B=$(daemon_kb b VmHWM)
ALIVE_A=0 ALIVE_B=0
daemon_alive a && ALIVE_A=1
daemon_alive b && ALIVE_B=1

LOG_ERRORS=0 LOG_WARNS=0
for who in a b; do
    LOG_ERRORS=$((LOG_ERRORS + $(grep -cE '\bERROR\b|panicked' "$TMP/$who/vswitchd.log")))
    LOG_WARNS=$((LOG_WARNS + $(grep -cE '\bWARN\b' "$TMP/$who/vswitchd.log")))
done

echo
echo "== samples ($OUT)"
table_header
tail -n +2 "$OUT" | while IFS= read -r line; do print_row <<<"$line"; done

echo
echo "== traffic tools, whole run"
sum_events 0 $((EPOCHSECONDS + 1)) # E: the whole run, runs that ended after the last sample included
TOT_TOOL=$(($(tool_failures) + CTL_FAIL))
TOT_PING_SENT=$(ev_get ping_sent) TOT_PING_LOST=$(ev_get ping_lost)
printf '   %-13s %-11s %9s %10s %10s %14s\n' class tool "runs ok" "runs fail" "Mbit/s" "retr/lost"
for f in "$EVDIR"/*.log; do
    [ -e "$f" ] || continue
    awk -v class="$(basename "$f" .log)" '
        { s[$3] += $4 }
        END {
            if (s["run_ok"] + s["run_fail"] > 0) {
                tool = ("udp_pkts" in s) ? "iperf3 UDP" : "iperf3 TCP";
                mbps = (s["secs"] > 0) ? sprintf("%.1f", s["bytes"] * 8 / s["secs"] / 1e6) : "-";
                extra = ("udp_pkts" in s) ? sprintf("%d/%d lost", s["udp_lost"], s["udp_pkts"]) : sprintf("%d retr", s["retrans"]);
                printf "   %-13s %-11s %9d %10d %10s %14s\n", class, tool, s["run_ok"], s["run_fail"], mbps, extra;
            } else if ("ping_sent" in s) {
                printf "   %-13s %-11s %9s %10s %10s %14s\n", class, "ping", "", "", "", sprintf("%d/%d lost", s["ping_lost"], s["ping_sent"]);
            } else if ("http_ok" in s) {
                printf "   %-13s %-11s %9d %10d %10s %14s\n", class, "curl conns", s["http_ok"], s["http_fail"], "", "";
            } else if ("probes" in s) {
                printf "   %-13s %-11s %9d %10d %10s %14s\n", class, "curl :81", s["probes"] - s["acl_leak"], s["acl_leak"], "", "must fail";
            } else if ("vsctl_fail" in s) {
                printf "   %-13s %-11s %9s %10d %10s %14s\n", class, "vsctl", "", s["vsctl_fail"], "", "";
            }
        }' "$f"
done

# UDP loss per class over the run, against the limit.
UDP_OVER=0
UDP_REPORT=""
for class in l2-udp nat-udp; do
    [ -e "$EVDIR/$class.log" ] || continue
    read -r pk lo < <(awk '$3 == "udp_pkts" {p += $4} $3 == "udp_lost" {l += $4} END {printf "%d %d\n", p, l}' "$EVDIR/$class.log")
    pct=$(awk -v p="$pk" -v l="$lo" 'BEGIN {printf "%.3f", (p > 0) ? 100 * l / p : 0}')
    UDP_REPORT+=" $class ${pct}%"
    if awk -v x="$pct" -v m="$UDP_LOSS_MAX" 'BEGIN {exit !(x > m)}'; then UDP_OVER=$((UDP_OVER + 1)); fi
done

# Switch errors since the traffic started: the counters after the traffic
# less those at t=0; the sum of the samples if they could not be read.
read -r TOT_SW TOT_ACL TOT_NATDROP TOT_UNEXPL < <(tail -n +3 "$OUT" |
    awk -F, '{sw += $18; acl += $16; nd += $17; u += $26} END {printf "%d %d %d %d\n", sw, acl, nd, u}')
if [ $FINAL_OK = 1 ]; then
    TOT_SW=$((S_ERR - ERR0)) TOT_ACL=$((S_ACL - ACL0)) TOT_NATDROP=$((S_NATDROP - NATDROP0))
    TOT_UNEXPL=$((S_UNEXPL - UNEXPL0))
else
    TOT_TOOL=$((TOT_TOOL + 1))
fi

# Memory: the samples from the warm-up on, in thirds; the mean of the
# last third against the first third's, for RSS and heap of each daemon.
# Columns: 11/12 RSS A/B, 27/28 heap A/B, 29/30 buffers A/B (KiB).
thirds() { # COLUMN -> "FIRST_MEAN LAST_MEAN FIRST_PEAK LAST_PEAK N FROM_T TO_T"
    tail -n +2 "$OUT" | awk -F, -v w="$WARMUP" -v c="$1" '
        $1 >= w && $1 > 0 {n++; t[n] = $1; v[n] = $c}
        END {
            k = int(n / 3); if (k < 1) k = 1
            for (i = 1; i <= k && i <= n; i++) {fs += v[i]; if (v[i] > fp) fp = v[i]}
            for (i = n - k + 1; i <= n; i++) if (i >= 1) {ls += v[i]; if (v[i] > lp) lp = v[i]}
            printf "%.0f %.0f %d %d %d %d %d\n", fs / k, ls / k, fp, lp, n, t[1], t[n]
        }'
}
growth() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.1f", (a > 0) ? 100 * (b - a) / a : 0}'; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
over() { awk -v g="$1" -v m="$RSS_MAX_PCT" 'BEGIN {exit !(g > m)}'; }
FIRST_A=$(awk -F, 'NR == 2 {print $11}' "$OUT") FIRST_B=$(awk -F, 'NR == 2 {print $12}' "$OUT")
declare -A MEM_GROWTH
echo
echo "== memory (means of the first and last third of the samples from t=${WARMUP}s on)"
for who in A:11:27:29 B:12:28:30; do
    IFS=: read -r name rss_col heap_col buf_col <<<"$who"
    read -r r1 r2 rp1 rp2 n from to < <(thirds "$rss_col")
    read -r h1 h2 _ _ _ _ _ < <(thirds "$heap_col")
    read -r _ b2 _ bp2 _ _ _ < <(thirds "$buf_col")
    MEM_GROWTH[$name-rss]=$(growth "$r1" "$r2") MEM_GROWTH[$name-heap]=$(growth "$h1" "$h2")
    printf '   vswitchd %s: RSS %s -> %s MB (%s%%; peaks %s, %s MB), heap in use %s -> %s MB (%s%%), packet buffers %s MB (peak %s MB); %s samples, t=%ss..%ss\n' \
        "$name" "$(mb "$r1")" "$(mb "$r2")" "${MEM_GROWTH[$name-rss]}" "$(mb "$rp1")" "$(mb "$rp2")" \
        "$(mb "$h1")" "$(mb "$h2")" "${MEM_GROWTH[$name-heap]}" "$(mb "$b2")" "$(mb "$bp2")" "$n" "$from" "$to"
done
printf '   RSS at t=0 (before the traffic): A %s MB, B %s MB; VmHWM: A %s MB, B %s MB\n' \
    "$(mb "$FIRST_A")" "$(mb "$FIRST_B")" "$(mb "$HWM_A")" "$(mb "$HWM_B")"
for who in a b; do
    vsctl_of "$who" memory-show 2>/dev/null | sed "s/^/   [${who^^}] /"
done

echo
echo "== errors"
echo "   switch, during the traffic: $TOT_SW (drops other than flow drops, tx drops, lost links; NAT drop flows: $TOT_NATDROP;" \
    "flow drops no drop flow counted: $TOT_UNEXPL); the ACL dropped $TOT_ACL probe packets (expected)"
[ "$ERR0" = 0 ] || echo "   before the traffic (set-up, preflight; not counted): $ERR0, of which flow drops no drop flow counted: $UNEXPL0"
[ -z "$DROP_DETAIL" ] || { echo "   counters after the run (since the ports were made):"; echo "$DROP_DETAIL"; }
[ "$S_FILLER" = 0 ] || echo "   the 200 never-matching ACL rules matched $S_FILLER packets"
echo "   traffic tools: $TOT_TOOL failed (iperf3 runs, HTTP connections, ACL leaks, wrong NAT source, vsctl);" \
    "preflight: $PREFLIGHT_FAIL failed; after the soak: $POST_FAIL failed"
echo "   pings: $TOT_PING_LOST of $TOT_PING_SENT lost (limit $PING_LOSS_MAX);" \
    "UDP loss:${UDP_REPORT:- none} (limit $UDP_LOSS_MAX%)"
echo "   daemon logs: $LOG_ERRORS ERROR/panic lines, $LOG_WARNS WARN lines"
for who in a b; do
    grep -E '\bERROR\b|panicked|\bWARN\b' "$TMP/$who/vswitchd.log" | head -n 5 | sed "s/^/   [$who] /"
done
if [ -s "$TMP/failures.log" ]; then
    echo "   first failures ($(wc -l <"$TMP/failures.log") in all):"
    head -n 15 "$TMP/failures.log" | sed 's/^/     /'
fi

REASONS=()
[ $ALIVE_A = 1 ] || REASONS+=("vswitchd A died")
[ $ALIVE_B = 1 ] || REASONS+=("vswitchd B died")
for key in A-rss A-heap B-rss B-heap; do
    over "${MEM_GROWTH[$key]}" && REASONS+=("vswitchd ${key%-*} ${key#*-} grew ${MEM_GROWTH[$key]}%")
done
ERRORS=$((TOT_SW + TOT_TOOL + PREFLIGHT_FAIL + POST_FAIL + LOG_ERRORS))
[ $ERRORS = 0 ] || REASONS+=("$ERRORS errors")
[ "$TOT_PING_LOST" -le "$PING_LOSS_MAX" ] || REASONS+=("$TOT_PING_LOST pings lost")
[ $UDP_OVER = 0 ] || REASONS+=("UDP loss over $UDP_LOSS_MAX%")

echo
VERDICT="memory, last third against first: A RSS ${MEM_GROWTH[A-rss]}% heap ${MEM_GROWTH[A-heap]}%, B RSS ${MEM_GROWTH[B-rss]}% heap ${MEM_GROWTH[B-heap]}% (limit ${RSS_MAX_PCT}%), errors $ERRORS, pings lost $TOT_PING_LOST, daemons alive: A $([ $ALIVE_A = 1 ] && echo yes || echo NO), B $([ $ALIVE_B = 1 ] && echo yes || echo NO)"
if [ ${#REASONS[@]} -eq 0 ]; then
    echo "VERDICT: PASS - $VERDICT"
    exit 0
fi
for who in a b; do cp "$TMP/$who/vswitchd.log" "${OUT%.csv}-vswitchd-$who.log" 2>/dev/null; done
echo "(daemon logs kept: ${OUT%.csv}-vswitchd-a.log, ${OUT%.csv}-vswitchd-b.log)"
echo "VERDICT: FAIL ($(IFS=';'; echo "${REASONS[*]}" | sed 's/;/; /g')) - $VERDICT"
exit 1
