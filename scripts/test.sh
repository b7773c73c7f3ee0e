#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property, golden and
# end-to-end tests, and a build of the benches. Exits non-zero on any failure.
#
# As root on Debian it first installs what the end-to-end tests use; as root
# the namespace tests run, never skip. Without root they skip, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    packages=(iproute2 iputils-ping iperf3 tcpdump procps ethtool podman runc containernetworking-plugins busybox-static etcd-server etcd-client protobuf-compiler libprotobuf-dev)
    missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
# fuzz/ is a workspace of its own: --all does not reach it.
(cd fuzz && cargo fmt -- --check)
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== supply chain (cargo deny, cargo audit)"
./scripts/audit.sh
echo "== benches build"
cargo bench --workspace --no-run -q
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --profile "${NEXTEST_PROFILE:-ci}"
else
    cargo test --workspace
fi

# A short run of every fuzz target (fuzz/; cargo-fuzz on the nightly
# toolchain, with AddressSanitizer), seeded from the golden captures and
# ../shared/pcaps. Without a nightly toolchain it says so and stops here.
echo "== fuzz smoke (${FUZZ_SECS:=15} s per target)"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz smoke NOT RUN: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
command -v cargo-fuzz >/dev/null || cargo install -q --locked cargo-fuzz
python3 fuzz/seed.py
(
    cd fuzz
    cargo +nightly fuzz build -a 2>&1 | tail -1
    for target in $(cargo +nightly fuzz list); do
        log="target/fuzz-$target.log"
        if ! cargo +nightly fuzz run -a "$target" "corpus/$target" -- \
            -max_total_time="$FUZZ_SECS" -rss_limit_mb=2048 >"$log" 2>&1; then
            tail -40 "$log" >&2
            echo "fuzz target $target failed (artifacts: $(ls "artifacts/$target" 2>/dev/null))" >&2
            exit 1
        fi
        echo "-- $target: $(grep -E '^Done' "$log")"
    done
)
