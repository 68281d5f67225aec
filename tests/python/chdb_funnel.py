"""Runs ClickHouse queries (through chDB) over a CSV of (u, t, e) and
prints {name: {u: result}} as JSON: the reference that the udfs
cross-check compares AllSource's functions against.

Usage: python chdb_funnel.py CSV QUERIES_JSON
QUERIES_JSON maps a name to a query over the table `{table}` that returns
columns u and r."""

import json
import sys

import chdb


def main() -> None:
    path, queries = sys.argv[1], json.loads(sys.argv[2])
    table = f"file('{path}', CSV, 'u UInt32, t UInt64, e UInt8')"
    out = {}
    for name, sql in queries.items():
        rows = chdb.query(sql.replace("{table}", table), "JSONEachRow").data().splitlines()
        out[name] = {str(json.loads(r)["u"]): json.loads(r)["r"] for r in rows}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
