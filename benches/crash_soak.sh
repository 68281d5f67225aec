#!/usr/bin/env bash
# The crash test, longer: N kill -9 / restart cycles (default 200) under
# concurrent ingest; every acknowledged event must be present exactly once.
# Usage: bash benches/crash_soak.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/allsource-target}"
ALLSOURCE_CRASH_ITERATIONS="${1:-200}" cargo test --features failpoints --test it crash -- --nocapture
