"""Reads an AllSource table through its Delta log with engines other than
AllSource: Polars (`read_delta`) and DuckDB (its `delta` extension's
`delta_scan`, the extension binary from the `duckdb-extension-delta`
package). Neither lists the Parquet files itself, so a file the log has
removed (replaced by compaction, not yet vacuumed) is not read.

Usage: python external_readers.py TABLE_DIR
Prints one JSON object: {"polars": rows, "duckdb": rows}, each row
[event_id, entity_id, amount, event_date] sorted by event_id."""

import json
import os
import sys

import duckdb
import duckdb_extension_delta
import polars as pl


def delta_extension() -> str:
    version = "v" + duckdb.__version__
    return os.path.join(
        os.path.dirname(duckdb_extension_delta.__file__), "extensions", version, "delta.duckdb_extension"
    )


def main(table_dir: str) -> None:
    frame = pl.read_delta(table_dir).sort("event_id")
    theirs_polars = [
        [r["event_id"], r["entity_id"], r["amount"], str(r["event_date"])]
        for r in frame.select("event_id", "entity_id", "amount", "event_date").to_dicts()
    ]
    con = duckdb.connect()
    con.execute(f"LOAD '{delta_extension()}'")
    rows = con.execute(
        "SELECT event_id, entity_id, amount, CAST(event_date AS VARCHAR) "
        f"FROM delta_scan('{table_dir}') ORDER BY event_id"
    ).fetchall()
    theirs_duckdb = [list(r) for r in rows]
    print(json.dumps({"polars": theirs_polars, "duckdb": theirs_duckdb}))


if __name__ == "__main__":
    main(sys.argv[1])
    sys.stdout.flush()
    os._exit(0)
