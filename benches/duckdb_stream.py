"""Times one entity's stream read in DuckDB over an AllSource table's
Parquet files: SELECT * ... WHERE entity_id = ? ORDER BY version LIMIT 1000.
It reads the files of the table's current Delta version only (compaction
leaves the files it replaced until a vacuum).

Usage: python duckdb_stream.py TABLE_DIR ENTITIES_JSON
Prints {"p50": seconds, "p99": seconds} over the entities (the first read
warms up and is not counted)."""

import json
import sys
import time

import duckdb
from deltalake import DeltaTable


def main() -> None:
    table_dir, entities = sys.argv[1], json.loads(sys.argv[2])
    con = duckdb.connect()
    files = [f.removeprefix("file://") for f in DeltaTable(table_dir).file_uris()]
    con.execute(
        f"CREATE VIEW events AS SELECT * FROM read_parquet({files!r}, hive_partitioning = true)"
    )
    sql = "SELECT * FROM events WHERE entity_id = ? ORDER BY version LIMIT 1000"
    times = []
    for i, entity in enumerate(entities):
        t = time.perf_counter()
        con.execute(sql, [entity]).fetchall()
        if i > 0:
            times.append(time.perf_counter() - t)
    times.sort()

    def pct(p: float) -> float:
        return times[round((len(times) - 1) * p)]

    print(json.dumps({"p50": pct(0.5), "p99": pct(0.99)}))


if __name__ == "__main__":
    main()
