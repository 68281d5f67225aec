"""The ClickHouse (chDB) side of benches/projections.rs: materialized
views into AggregatingMergeTree tables, ClickHouse's way to keep an
aggregate up to date as rows are inserted.

Usage:
  python chdb_views.py ingest VIEWS BATCHES BATCH
      an `events` MergeTree table with VIEWS materialized views (each a
      per-entity count, sum, max and exact distinct count, with its own
      filter); inserts BATCHES batches of BATCH rows one after another.
      Prints {"rate": rows/s, "lookup_p50", "lookup_p99": seconds for
      reading one entity's row from the first view (when VIEWS > 0)}.
  python chdb_views.py rebuild ROWS
      fills `events` with ROWS rows, then builds one view's table from them
      (INSERT ... SELECT ...State() GROUP BY entity_id). Prints {"rate":
      rows/s of the build}.
"""

import json
import random
import sys
import time

from chdb_bench import ENTITIES, close, fill, insert_rate, open_db, timed_rate

KINDS = ["page_view", "click", "signup", "purchase", "noise"]


def view_select(i):
    return f"""SELECT entity_id, countState() AS events, sumState(amount) AS total,
          maxState(amount) AS top, uniqExactState(event_type) AS kinds
          FROM b.events WHERE event_type != 'x{i}' GROUP BY entity_id"""


def pct(values, p):
    values = sorted(values)
    return values[round((len(values) - 1) * p)]


def ingest(views, batches, batch):
    s, path = open_db()
    for i in range(views):
        s.query(
            f"CREATE MATERIALIZED VIEW b.v{i} ENGINE = AggregatingMergeTree "
            f"ORDER BY entity_id AS {view_select(i)}"
        )
    out = {"rate": insert_rate(s, batches, batch, KINDS)}
    if views:
        rng = random.Random(7)
        times = []
        for _ in range(1000):
            key = f"u{rng.randrange(ENTITIES)}"
            t = time.perf_counter()
            s.query(
                "SELECT entity_id, countMerge(events), sumMerge(total), maxMerge(top), "
                f"uniqExactMerge(kinds) FROM b.v0 WHERE entity_id = '{key}' GROUP BY entity_id",
                "JSONEachRow",
            ).data()
            times.append(time.perf_counter() - t)
        out["lookup_p50"] = pct(times, 0.5)
        out["lookup_p99"] = pct(times, 0.99)
    close(s, path)
    return out


def rebuild(n):
    s, path = open_db()
    fill(s, n, KINDS)
    s.query(
        "CREATE TABLE b.state (entity_id String, events AggregateFunction(count), "
        "total AggregateFunction(sum, Float64), top AggregateFunction(max, Float64), "
        "kinds AggregateFunction(uniqExact, String)) ENGINE = AggregatingMergeTree ORDER BY entity_id"
    )
    out = {"rate": timed_rate(s, f"INSERT INTO b.state {view_select(0)}", n)}
    close(s, path)
    return out


def main():
    if sys.argv[1] == "ingest":
        out = ingest(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "rebuild":
        out = rebuild(int(sys.argv[2]))
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
