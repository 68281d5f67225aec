"""The DuckDB side of benches/import_compare.rs: loads an NDJSON file of
events into a table of a DuckDB database file with read_json, the way a
DuckDB user imports such a file, and checkpoints it so the rows are on
disk when the call returns.

Usage: python duckdb_load.py FILE DATABASE
Prints {"rows": n, "seconds": s}.
"""

import json
import sys
import time

import duckdb

path, database = sys.argv[1], sys.argv[2]
con = duckdb.connect(database)
started = time.perf_counter()
con.execute(
    "CREATE TABLE events AS SELECT * FROM read_json(?, format = 'newline_delimited')",
    [path],
)
con.execute("CHECKPOINT")
seconds = time.perf_counter() - started
rows = con.execute("SELECT count(*) FROM events").fetchone()[0]
con.close()
print(json.dumps({"rows": rows, "seconds": seconds}))
