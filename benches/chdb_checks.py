"""The ClickHouse (chDB) side of benches/governance.rs: CHECK constraints
on a MergeTree table, ClickHouse's way to refuse rows that break a rule.

Usage:
  python chdb_checks.py CONSTRAINTS BATCHES BATCH
      an `events` MergeTree table with the first CONSTRAINTS of the 20
      checks below; inserts BATCHES batches of BATCH rows (all passing)
      one after another. Prints {"rate": rows/s}.
"""

import json
import shutil
import sys
import tempfile
import time

from chdb import session

KINDS = ["page_view", "click", "signup", "add_to_cart", "checkout", "purchase"]

# The same kinds of rules as the AllSource side: the allowed types,
# presence and type (as far as a typed column leaves anything to check),
# bounds, a pattern, a length, and expressions over the row.
CHECKS = [
    "event_type IN ('page_view', 'click', 'signup', 'add_to_cart', 'checkout', 'purchase')",
    "isNotNull(amount)",
    "isFinite(amount)",
    "amount >= 0",
    "amount <= 1000",
    "isNotNull(page)",
    "page != ''",
    "match(page, '^/p/\\\\d+$')",
    "length(page) <= 16",
    "isNotNull(seq)",
    "seq = floor(seq)",
    "seq >= 0",
    "entity_id != ''",
    "amount >= 0 OR isNull(amount)",
    "length(page) > 2",
    "seq < 1e15",
    "amount * 2 >= amount",
    "startsWith(page, '/p/')",
    "event_type != 'bogus'",
    "toDate(ts) >= toDate('2000-01-01')",
]


def rows(first, n):
    names = ", ".join(f"'{k}'" for k in KINDS)
    return f"""SELECT [{names}][number % {len(KINDS)} + 1] AS event_type,
          concat('u', toString(cityHash64(number) % 200000)) AS entity_id,
          toDateTime64('2026-01-01 00:00:00', 3) + number AS ts,
          (cityHash64(number, 1) % 100000) / 100 AS amount,
          concat('/p/', toString(number % 50)) AS page, number AS seq
          FROM numbers({first}, {n})"""


def main():
    constraints, batches, batch = (int(a) for a in sys.argv[1:4])
    path = tempfile.mkdtemp()
    s = session.Session(path)
    s.query("CREATE DATABASE IF NOT EXISTS b")
    checks = "".join(
        f", CONSTRAINT c{i} CHECK {c}" for i, c in enumerate(CHECKS[:constraints])
    )
    s.query(
        "CREATE TABLE b.events (event_type String, entity_id String, ts DateTime64(3), "
        f"amount Float64, page String, seq UInt64{checks}) "
        "ENGINE = MergeTree ORDER BY (entity_id, ts)"
    )
    t = time.perf_counter()
    for i in range(batches):
        s.query(f"INSERT INTO b.events {rows(i * batch, batch)}")
    rate = batches * batch / (time.perf_counter() - t)
    s.close()
    shutil.rmtree(path, ignore_errors=True)
    print(json.dumps({"rate": rate}))


if __name__ == "__main__":
    main()
