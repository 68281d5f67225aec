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
import sys

from chdb_bench import close, fill, insert_rate, open_db, timed_rate

KINDS = ["page_view", "click", "signup", "purchase", "search", "logout"]


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


def ingest(views, batches, batch):
    s, path = open_db()
    for i in range(views):
        s.query(out_table(f"out{i}"))
        s.query(f"CREATE MATERIALIZED VIEW b.v{i} TO b.out{i} AS {view_select(i)}")
    out = {"rate": insert_rate(s, batches, batch, KINDS)}
    close(s, path)
    return out


def backfill(n):
    s, path = open_db()
    fill(s, n, KINDS)
    s.query(out_table("out"))
    out = {"rate": timed_rate(s, f"INSERT INTO b.out {view_select(0)}", n)}
    close(s, path)
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
