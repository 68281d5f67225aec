#!/usr/bin/env bash
# The power-loss simulation, longer: N kill -9 / drop-unsynced-writes /
# restart runs (default 500) under concurrent ingest; every acknowledged
# event must be present exactly once. Needs the test build (failpoints
# feature), which logs every completed sync.
# Usage: bash benches/power_loss.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/allsource-target}"
ALLSOURCE_POWER_LOSS_RUNS="${1:-500}" cargo test --features failpoints --test it power_loss -- --nocapture
