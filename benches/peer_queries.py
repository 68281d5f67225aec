"""The peers' side of peer_compare: loads an AllSource table into the
engines a user would pick instead, and times the same queries in each.

Usage: python peer_queries.py TABLE_DIR WORK_DIR QUERIES_JSON REPEATS

- chDB: a MergeTree table `events` sorted by (event_type, entity_id,
  timestamp), filled with INSERT ... SELECT from the table's Parquet files.
- DuckDB: every row in one Parquet file, read through a view `events`.

The files are the table's live ones, as its Delta log lists them (files
that compaction replaced but vacuum has not deleted yet are left out).

QUERIES_JSON is [[name, clickhouse_sql, duckdb_sql or null], ...]. Each
query runs once to warm up, then REPEATS times, its result fetched as
Arrow (what AllSource's side returns too). Prints one JSON object:
{"load": {"chdb": seconds, "duckdb": seconds, "rows": n},
 "queries": {name: {"chdb": {"seconds": median, "rows": [...]},
                    "duckdb": {...} or null}}}
where rows are objects, column name to value (DuckDB's as text)."""

import json
import os
import shutil
import statistics
import sys
import time

import duckdb
from chdb import session
from deltalake import DeltaTable

COLUMNS = "event_id, event_type, entity_id, timestamp, amount, page, seq"


def live_files(table_dir):
    paths = []
    for uri in DeltaTable(table_dir).file_uris():
        paths.append(uri[len("file://") :] if uri.startswith("file://") else uri)
    return paths


def median_seconds(run, repeats):
    run()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def load_chdb(files, work_dir):
    s = session.Session(os.path.join(work_dir, "chdb"))
    s.query(
        "CREATE TABLE events (event_id String, event_type LowCardinality(String), "
        "entity_id String, timestamp DateTime64(6, 'UTC'), amount Float64, "
        "page LowCardinality(String), seq UInt64) "
        "ENGINE = MergeTree ORDER BY (event_type, entity_id, timestamp)"
    )
    t = time.perf_counter()
    for path in files:
        s.query(f"INSERT INTO events SELECT {COLUMNS} FROM file('{path}', Parquet)")
    s.query("OPTIMIZE TABLE events FINAL")
    return s, time.perf_counter() - t


def load_duckdb(files, work_dir):
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    one = os.path.join(work_dir, "events.parquet")
    t = time.perf_counter()
    con.execute(
        f"COPY (SELECT {COLUMNS} FROM read_parquet({json.dumps(files)})) TO '{one}' (FORMAT parquet)"
    )
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet('{one}')")
    return con, time.perf_counter() - t


def main() -> None:
    table_dir, work_dir = sys.argv[1], sys.argv[2]
    queries, repeats = json.loads(sys.argv[3]), int(sys.argv[4])
    shutil.rmtree(work_dir, ignore_errors=True)
    os.makedirs(work_dir)
    files = live_files(table_dir)
    ch, ch_load = load_chdb(files, work_dir)
    duck, duck_load = load_duckdb(files, work_dir)
    rows = duck.execute("SELECT count(*) FROM events").fetchone()[0]
    out = {"load": {"chdb": ch_load, "duckdb": duck_load, "rows": rows}, "queries": {}}
    for name, ch_sql, duck_sql in queries:
        entry = {}
        answer = ch.query(ch_sql, "JSONEachRow").data()
        entry["chdb"] = {
            "seconds": median_seconds(lambda: ch.query(ch_sql, "ArrowStream"), repeats),
            "rows": [json.loads(line) for line in answer.splitlines() if line],
        }
        if duck_sql is None:
            entry["duckdb"] = None
        else:
            cursor = duck.execute(f"SELECT COLUMNS(*)::VARCHAR FROM ({duck_sql})")
            names = [d[0] for d in cursor.description]
            answer = [dict(zip(names, row)) for row in cursor.fetchall()]
            entry["duckdb"] = {
                "seconds": median_seconds(lambda: duck.sql(duck_sql).to_arrow_table(), repeats),
                "rows": answer,
            }
        out["queries"][name] = entry
    ch.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
