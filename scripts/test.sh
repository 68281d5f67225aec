#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the integration tests
# against the real binary, and the Python interoperability checks.
# Installs what it needs (a virtualenv with the Python packages) on first run.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/allsource-target}"
# Incremental builds keep gigabytes of their own and gain nothing on a
# fresh machine; set CARGO_INCREMENTAL=1 to keep them when iterating.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
VENV="${ALLSOURCE_VENV:-$HOME/.cache/allsource-venv}"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import deltalake, pyarrow, moto, chdb, numpy, jwt, cryptography, adbc_driver_flightsql.dbapi, websockets, mcp, psycopg, schemathesis, playwright" 2>/dev/null; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
export ALLSOURCE_TEST_PYTHON="$VENV/bin/python"
# Other engines reading the tables through their Delta log, in a
# virtualenv of their own (DuckDB's delta extension fixes DuckDB's version).
READERS="${ALLSOURCE_READERS_VENV:-$HOME/.cache/allsource-readers-venv}"
if [ ! -x "$READERS/bin/python" ]; then
    python3 -m venv "$READERS"
fi
if ! "$READERS/bin/python" -c "import duckdb_extension_delta, polars, deltalake" 2>/dev/null; then
    "$READERS/bin/pip" install --quiet --disable-pip-version-check -r tests/python/readers-requirements.txt
fi
export ALLSOURCE_READERS_PYTHON="$READERS/bin/python"
# promtool lints the /metrics output (Debian package prometheus); psql
# talks to the PostgreSQL port (postgresql-client); the shell is tested
# in a terminal (tmux); the web console in a headless browser (chromium,
# driven by Playwright with this executable: it downloads none).
missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v psql >/dev/null 2>&1 || missing="$missing postgresql-client"
command -v tmux >/dev/null 2>&1 || missing="$missing tmux"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium fonts-liberation"
if [ -n "$missing" ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings
# The server alone, with only its own dependencies' features (the tests
# build it with their dev-dependencies' features added), as the README's
# `cargo run` builds it.
echo "== cargo build --bin allsource"
cargo build --quiet --bin allsource
echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# failpoints: the binary the tests start can inject WAL errors (FAILPOINTS).
cargo test --workspace --features allsource/failpoints --lib --bins --tests 2>&1 | tee "$log"
# One closing line with the totals of every test binary above.
awk '/^test result:/ { p += $4; f += $6 } /^slt: / { p += $2; f += $4 }
     END { printf "total: %d passed, %d failed\n", p, f }' "$log"
