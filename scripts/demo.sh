#!/usr/bin/env bash
# The demo: two "containers" (network namespaces) attached to a vswitch
# bridge ping each other; then the bridge, its MAC table and its counters.
# Everything it makes (namespaces, the daemon, its files) is removed on
# exit, also when interrupted. Needs root and a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "demo: run as root (it creates network namespaces and veth pairs)" >&2
    exit 1
fi
# iproute2 and ping for the demo; protoc and protobuf's well-known types
# to build vswitchd (its etcd client is generated from .proto files).
if command -v apt-get >/dev/null; then
    missing=()
    for p in iproute2 iputils-ping protobuf-compiler libprotobuf-dev; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi
for tool in ip ping protoc; do
    command -v "$tool" >/dev/null || { echo "demo: $tool not found; install it (Debian: see above) and run again" >&2; exit 1; }
done
command -v cargo >/dev/null || { echo "demo: cargo not found; install Rust first (https://rustup.rs)" >&2; exit 1; }

echo "== building"
cargo build --release -q -p vswitchd -p vsctl
VSWITCHD=$PWD/target/release/vswitchd
VSCTL=$PWD/target/release/vsctl

P="vsdemo$$"
SW="$P-sw" WEB1="$P-web1" WEB2="$P-web2"
RUN=$(mktemp -d /tmp/vswitch-demo.XXXXXX)
cleanup() {
    trap - EXIT INT TERM
    if [ -s "$RUN/vswitchd.pid" ]; then kill "$(cat "$RUN/vswitchd.pid")" 2>/dev/null || true; fi
    for ns in "$WEB1" "$WEB2" "$SW"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

show() { echo; echo "\$ $*"; "$@"; }
vsctl() { "$VSCTL" --run-dir "$RUN" "$@"; }

echo "== the switch runs in a namespace of its own ($SW); the containers are $WEB1 and $WEB2"
for ns in "$SW" "$WEB1" "$WEB2"; do ip netns add "$ns"; done
ip netns exec "$SW" "$VSWITCHD" --detach --run-dir "$RUN" --db "$RUN/conf.db"

show vsctl add-br br0
show vsctl add-container-port br0 eth0 "$WEB1" --ip 198.18.0.2/24 --gateway 198.18.0.1
show vsctl add-container-port br0 eth0 "$WEB2" --ip 198.18.0.3/24 --gateway 198.18.0.1
show ip netns exec "$WEB1" ping -c 3 -i 0.2 -W 1 198.18.0.3
show vsctl show
show vsctl fdb-show br0
show vsctl dump-ports br0
echo
echo "== done; cleaning up"
