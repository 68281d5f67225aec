"""Talks to AllSource's PostgreSQL port with psycopg 3 and prints what it
saw as JSON, for tests/it/pg.rs to check.

Usage: pg_client.py HOST PORT ACME_READER_TOKEN OTHER_READER_TOKEN
"""

import datetime
import json
import sys
import threading
import time

import psycopg

host, port, acme, other = sys.argv[1:5]


def connect(token, dbname, **kw):
    return psycopg.connect(
        host=host, port=port, user="tester", password=token, dbname=dbname, **kw
    )


def sqlstate(f):
    try:
        f()
    except psycopg.Error as e:
        return [e.sqlstate, str(e)]
    return None


out = {}
query = "SELECT entity_id, amount FROM orders WHERE amount > %s ORDER BY entity_id"
with connect(acme, "acme", autocommit=True) as conn:
    # psycopg prepares a statement on the server once it has run it 5
    # times (prepare_threshold), then binds and executes it by name.
    out["auto"] = [
        [list(r) for r in conn.execute(query, (i * 10,)).fetchall()] for i in range(8)
    ]
    out["auto_prepared"] = len(conn._prepared._names)
    # Prepared from the first run.
    with conn.cursor() as cur:
        out["prepared"] = [
            [list(r) for r in cur.execute(query, (i * 10,), prepare=True).fetchall()]
            for i in range(8)
        ]
    out["typed"] = conn.execute(
        "SELECT count(*), sum(amount) FROM orders "
        "WHERE entity_id <> %s AND amount >= %s AND timestamp < %s AND event_type = %s",
        (
            "u0",
            15.5,
            datetime.datetime(2030, 1, 1, tzinfo=datetime.timezone.utc),
            "order",
        ),
    ).fetchone()
    out["write"] = sqlstate(lambda: conn.execute("INSERT INTO orders (event_type) VALUES ('x')"))
    out["show"] = conn.execute("SHOW transaction_read_only").fetchone()[0]
    out["tables"] = sorted(
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public'"
        ).fetchall()
    )

# A cancel request (psql's Ctrl-C) stops a long query; the connection
# goes on.
with connect(acme, "acme", autocommit=True) as conn:
    timer = threading.Timer(1.0, conn.cancel_safe)
    timer.start()
    started = time.monotonic()
    out["cancel"] = sqlstate(
        lambda: conn.execute(
            "SELECT count(*) FROM generate_series(1, 1000000000000)"
        ).fetchone()
    )
    out["cancel_seconds"] = time.monotonic() - started
    timer.join()
    out["after_cancel"] = conn.execute("SELECT 1").fetchone()[0]

# A transaction: a failed statement makes the rest fail until ROLLBACK.
with connect(acme, "acme") as conn:
    conn.execute("SELECT 1")
    out["in_tx_error"] = sqlstate(lambda: conn.execute("SELECT nosuch FROM orders"))
    out["after_error"] = sqlstate(lambda: conn.execute("SELECT 1"))
    conn.rollback()
    out["after_rollback"] = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    conn.commit()

out["bad_password"] = sqlstate(lambda: connect(acme + "x", "acme"))
out["other_tenant"] = sqlstate(lambda: connect(acme, "other"))
with connect(other, "other") as conn:
    out["other_count"] = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
    out["other_tables"] = sorted(
        r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables "
                                   "WHERE table_schema = 'public'").fetchall()
    )
# The server takes 2 connections per tenant (--pg-max-connections 2).
# A closed connection is given back as soon as the server sees it close.
def connect_soon(token, dbname):
    for _ in range(100):
        try:
            return connect(token, dbname)
        except psycopg.OperationalError as e:
            # libpq reports a refused login without its SQLSTATE.
            if "--pg-max-connections" not in str(e):
                raise
            time.sleep(0.05)
    return connect(token, dbname)


first, second = connect_soon(other, "other"), connect_soon(other, "other")
out["third_connection"] = sqlstate(lambda: connect(other, "other").close())
first.close()
connect_soon(other, "other").close()
second.close()
print(json.dumps(out, default=str))
