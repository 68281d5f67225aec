"""The ClickHouse (chDB) side of benches/pipelines.rs: materialized views
that write a filtered and mapped copy of each inserted block into a
MergeTree table of their own, ClickHouse's way to run a stateless
pipeline.

Usage:
  python chdb_pipes.py ingest VIEWS BATCHES BATCH
      an `events` MergeTree table with VIEWS views into tables; inserts
      BATCHES batches of BATCH rows one after another. Prints
      {"rate": rows/s}.
  python chdb_pipes.py backfill ROWS
      fills `events` with ROWS rows, then fills a table from them with
      the view's query (INSERT ... SELECT). Prints {"rate": rows/s}.
"""

import json
import shutil
import sys
import tempfile
import time

from chdb import session

ENTITIES = 10_000


def rows(first, n):
    return f"""SELECT ['page_view', 'click', 'signup', 'purchase', 'search', 'logout'][number % 6 + 1] AS event_type,
          concat('u', toString(cityHash64(number) % {ENTITIES})) AS entity_id,
          toDateTime64('2026-01-01 00:00:00', 3) + number AS ts,
          (cityHash64(number, 1) % 100000) / 100 AS amount, number AS seq
          FROM numbers({first}, {n})"""


def view_select(i):
    return f"""SELECT event_type, entity_id, ts, amount, seq, amount * 100 AS cents,
          upper(event_type) AS kind FROM b.events
          WHERE event_type != 'x{i}' AND amount >= 1"""


def out_table(name):
    return (
        f"CREATE TABLE b.{name} (event_type String, entity_id String, ts DateTime64(3), "
        "amount Float64, seq UInt64, cents Float64, kind String) "
        "ENGINE = MergeTree ORDER BY (entity_id, ts)"
    )


def open_db():
    path = tempfile.mkdtemp()
    s = session.Session(path)
    s.query("CREATE DATABASE IF NOT EXISTS b")
    s.query(
        "CREATE TABLE b.events (event_type String, entity_id String, ts DateTime64(3), "
        "amount Float64, seq UInt64) ENGINE = MergeTree ORDER BY (entity_id, ts)"
    )
    return s, path


def ingest(views, batches, batch):
    s, path = open_db()
    for i in range(views):
        s.query(out_table(f"out{i}"))
        s.query(f"CREATE MATERIALIZED VIEW b.v{i} TO b.out{i} AS {view_select(i)}")
    t = time.perf_counter()
    for i in range(batches):
        s.query(f"INSERT INTO b.events {rows(i * batch, batch)}")
    out = {"rate": batches * batch / (time.perf_counter() - t)}
    s.close()
    shutil.rmtree(path, ignore_errors=True)
    return out


def backfill(n):
    s, path = open_db()
    step = 1_000_000
    for first in range(0, n, step):
        s.query(f"INSERT INTO b.events {rows(first, min(step, n - first))}")
    s.query(out_table("out"))
    t = time.perf_counter()
    s.query(f"INSERT INTO b.out {view_select(0)}")
    out = {"rate": n / (time.perf_counter() - t)}
    s.close()
    shutil.rmtree(path, ignore_errors=True)
    return out


def main():
    if sys.argv[1] == "ingest":
        out = ingest(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "backfill":
        out = backfill(int(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
