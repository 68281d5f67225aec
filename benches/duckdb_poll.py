"""The DuckDB side of benches/live.rs. DuckDB has no live subscriptions,
so its users poll: this is that, in one process, with the GIL released
while DuckDB works.

Usage:
  python duckdb_poll.py latency RATE BATCH SECONDS
      a writer inserts batches of BATCH rows at RATE rows/s into a table
      (position, entity_id, event_type, payload); a reader in another
      connection polls every 10 ms for rows past the last position it saw.
      Prints {"p50", "p99"}: seconds from a batch's insert returning to
      the poll that saw its last row.
  python duckdb_poll.py backlog N
      reads a table of N rows by pages of 1,000 (WHERE position > ? ORDER
      BY position LIMIT 1000); prints {"rate": rows per second}.
"""

import json
import sys
import threading
import time

import duckdb

def rows(first, stop):
    return f"""SELECT p AS position, 'u' || (p % 10000) AS entity_id,
          'page_view' AS event_type, '{{"amount": ' || (p % 1000) || '}}' AS payload
          FROM range({int(first)}, {int(stop)}) t(p)"""


def pct(values, p):
    values = sorted(values)
    return values[round((len(values) - 1) * p)]


def latency(rate, batch, seconds):
    con = duckdb.connect()
    con.execute("CREATE TABLE events AS " + rows(0, 0))
    requests = int(rate * seconds / batch)
    interval = batch / rate
    acks = []
    seen = []
    done = threading.Event()

    def poll():
        cur = con.cursor()
        last = 0
        while not done.is_set():
            new = cur.execute(
                "SELECT position FROM events WHERE position > ? ORDER BY position", [last]
            ).fetchall()
            now = time.perf_counter()
            if new:
                last = new[-1][0]
                seen.append((last, now))
            time.sleep(0.01)

    reader = threading.Thread(target=poll)
    reader.start()
    writer = con.cursor()
    start = time.perf_counter()
    for i in range(requests):
        due = start + i * interval
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        first = 1 + i * batch
        writer.execute("INSERT INTO events " + rows(first, first + batch))
        acks.append((first + batch - 1, time.perf_counter()))
    time.sleep(0.2)
    done.set()
    reader.join()
    latencies = []
    j = 0
    for last, acked in acks:
        while j < len(seen) and seen[j][0] < last:
            j += 1
        if j < len(seen):
            latencies.append(max(0.0, seen[j][1] - acked))
    print(json.dumps({"p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99)}))


def backlog(n):
    con = duckdb.connect()
    con.execute("CREATE TABLE events AS " + rows(1, n + 1))
    start = time.perf_counter()
    last, got = 0, 0
    while True:
        page = con.execute(
            "SELECT * FROM events WHERE position > ? ORDER BY position LIMIT 1000", [last]
        ).fetchall()
        if not page:
            break
        got += len(page)
        last = page[-1][0]
    print(json.dumps({"rate": got / (time.perf_counter() - start)}))


def main():
    if sys.argv[1] == "latency":
        latency(float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        backlog(int(sys.argv[2]))


main()
