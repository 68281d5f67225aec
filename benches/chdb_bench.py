"""What the chDB sides of the pipeline and projection benches share: a
session over a fresh directory with an `events` MergeTree table, rows
generated for it, and timed inserts."""

import shutil
import tempfile
import time

from chdb import session

ENTITIES = 10_000


def rows(first, n, kinds):
    """A SELECT of rows first..first+n: the event type cycles through
    `kinds`, the entity and amount are hashes of the row number."""
    names = ", ".join(f"'{k}'" for k in kinds)
    return f"""SELECT [{names}][number % {len(kinds)} + 1] AS event_type,
          concat('u', toString(cityHash64(number) % {ENTITIES})) AS entity_id,
          toDateTime64('2026-01-01 00:00:00', 3) + number AS ts,
          (cityHash64(number, 1) % 100000) / 100 AS amount, number AS seq
          FROM numbers({first}, {n})"""


def open_db():
    path = tempfile.mkdtemp()
    s = session.Session(path)
    s.query("CREATE DATABASE IF NOT EXISTS b")
    s.query(
        "CREATE TABLE b.events (event_type String, entity_id String, ts DateTime64(3), "
        "amount Float64, seq UInt64) ENGINE = MergeTree ORDER BY (entity_id, ts)"
    )
    return s, path


def close(s, path):
    s.close()
    shutil.rmtree(path, ignore_errors=True)


def insert_rate(s, batches, batch, kinds):
    """Rows/s of inserting `batches` batches of `batch` rows, one after
    another."""
    t = time.perf_counter()
    for i in range(batches):
        s.query(f"INSERT INTO b.events {rows(i * batch, batch, kinds)}")
    return batches * batch / (time.perf_counter() - t)


def fill(s, n, kinds):
    """`n` rows into `events`, a million at a time."""
    step = 1_000_000
    for first in range(0, n, step):
        s.query(f"INSERT INTO b.events {rows(first, min(step, n - first), kinds)}")


def timed_rate(s, sql, n):
    """Rows/s of running `sql` over `n` rows."""
    t = time.perf_counter()
    s.query(sql)
    return n / (time.perf_counter() - t)
