"""Times ClickHouse queries (chDB) over an AllSource table's Parquet files.

Usage: python chdb_queries.py TABLE_DIR QUERIES_JSON REPEATS
QUERIES_JSON maps a name to SQL with `{table}` for the table. Prints
{name: {"seconds": median, "rows": [...]}} as JSON."""

import json
import statistics
import sys
import time

import chdb


def main() -> None:
    table_dir, queries, repeats = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    table = f"file('{table_dir}/*/*.parquet', Parquet)"
    out = {}
    for name, sql in queries.items():
        sql = sql.replace("{table}", table)
        result = chdb.query(sql, "JSONEachRow").data()  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            chdb.query(sql, "JSONEachRow")
            times.append(time.perf_counter() - t)
        rows = [json.loads(line) for line in result.splitlines()]
        out[name] = {"seconds": statistics.median(times), "rows": rows}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
