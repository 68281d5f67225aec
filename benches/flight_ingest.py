"""ADBC bulk ingest for the flight_compare bench.

Usage: flight_ingest.py <grpc uri> <table> <events> <batch rows> [days]

Builds the events first (not timed): 6 event types, 200,000 entities,
timestamps over `days` days (30 by default; 1 is what live ingest looks
like), an amount and a page. Then times
cursor.adbc_ingest of all of them (it returns once the server has
acknowledged every row, i.e. after the WAL fsyncs) and prints one JSON
line: {"rows": ..., "seconds": ...}.
"""

import json
import sys
import time

import adbc_driver_flightsql.dbapi as flightsql
import numpy as np
import pyarrow as pa

uri, table, events, batch_rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
days = int(sys.argv[5]) if len(sys.argv) > 5 else 30
rng = np.random.default_rng(42)
types = pa.array(["page_view", "click", "signup", "add_to_cart", "checkout", "purchase"])
pages = pa.array([f"/p/{i}" for i in range(50)])
start_us = 1_767_225_600_000_000
batches = []
for first in range(0, events, batch_rows):
    n = min(batch_rows, events - first)
    entity = rng.integers(0, 200_000, n)
    batches.append(
        pa.record_batch(
            {
                "event_type": types.take(pa.array(rng.integers(0, 6, n))),
                "entity_id": pa.array(np.char.add("u", entity.astype(str))),
                "timestamp": pa.array(
                    start_us + rng.integers(0, days * 86_400_000_000, n),
                    type=pa.timestamp("us", tz="UTC"),
                ),
                "amount": pa.array(rng.integers(0, 100_000, n) / 100.0),
                "page": pages.take(pa.array(rng.integers(0, 50, n))),
            }
        )
    )
schema = batches[0].schema
with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
    reader = pa.RecordBatchReader.from_batches(schema, iter(batches))
    started = time.perf_counter()
    stored = cur.adbc_ingest(table, reader, mode="create_append")
    seconds = time.perf_counter() - started
print(json.dumps({"rows": stored, "seconds": seconds}))
