"""Times SQL queries in DuckDB over an AllSource table's Parquet files.

Usage: python duckdb_queries.py TABLE_DIR QUERIES_JSON REPEATS
QUERIES_JSON is a JSON list of [name, sql] with the table called `events`.
Prints one JSON object: {name: median seconds}."""

import json
import statistics
import sys
import time

import duckdb


def main() -> None:
    table_dir, queries_json, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
    queries = json.loads(queries_json)
    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW events AS SELECT * FROM read_parquet('{table_dir}/event_date=*/*.parquet', hive_partitioning = true)"
    )
    out = {}
    for name, sql in queries:
        con.execute(sql).fetchall()  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            con.execute(sql).fetchall()
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
