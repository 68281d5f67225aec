#!/usr/bin/env bash
# The fuzz harnesses (src/fuzz_tests), longer: TOTAL cases (default
# 1,000,000) shared equally by the ingest decoder, the DSL compiler and the
# SQL differential (the plainest plan, one partition and no dynamic
# filters, vs the server's), in a release build. Each
# prints a line "fuzz <harness>: <cases> cases, <inputs> inputs in <t> s:
# <outcome> <count>, ..."; any panic, internal error, 5xx or difference
# fails the run with the shrunk input. PROPTEST_RNG_SEED=<n> fixes the seed.
# Usage: bash benches/fuzz.sh [TOTAL]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/allsource-target}"
total="${1:-1000000}"
per=$(((total + 2) / 3))
# One harness at a time: each already keeps the cores busy.
ALLSOURCE_FUZZ_CASES="$per" cargo test --release --lib fuzz_tests:: \
    -- --nocapture --test-threads 1 2>&1 | grep -E '^fuzz |^test |test result|panicked|failed|minimal'
