#!/usr/bin/env bash
# Runs the benches (release build) with a virtualenv holding DuckDB.
# Usage: bash scripts/bench.sh [ingest_load|distributed|writers|query_compare|analytics_compare|dsl_compare|compaction_compare|flight_compare|event_store|live|projections|pipelines|governance|policies] [-- bench args]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/allsource-target}"
VENV="${ALLSOURCE_VENV:-$HOME/.cache/allsource-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import duckdb, chdb, adbc_driver_flightsql, deltalake" 2>/dev/null || "$VENV/bin/pip" install --quiet duckdb chdb adbc-driver-flightsql adbc-driver-manager pyarrow numpy deltalake
export ALLSOURCE_BENCH_PYTHON="$VENV/bin/python"
bench="${1:-ingest_load}"; shift || true
cargo bench --bench "$bench" "$@"
