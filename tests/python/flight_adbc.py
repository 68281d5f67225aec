"""AllSource through the ADBC Flight SQL driver, by DB-API.

Usage: flight_adbc.py http://127.0.0.1:<flight port> <writer token>

Connects twice (basic-auth handshake with the token as password, and a
bearer header), ingests with adbc_ingest, queries, fetches Arrow, runs a
prepared statement with parameters, browses with adbc_get_objects, and
checks that errors are raised with their messages. Prints "adbc: ok".
"""

import sys

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
from adbc_driver_flightsql import DatabaseOptions

uri = sys.argv[1].replace("http://", "grpc://")
token = sys.argv[2]


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


# Basic auth: any user name, the token as the password.
with flightsql.connect(
    uri, db_kwargs={"username": "analyst", "password": token}, autocommit=True
) as conn:
    n = 1000
    table = pa.table(
        {
            "event_type": pa.array(["buy" if i % 4 == 0 else "view" for i in range(n)]),
            "entity_id": pa.array([f"u{i % 10}" for i in range(n)]),
            "timestamp": pa.array(
                [1_767_225_600_000_000 + i * 1_000_000 for i in range(n)],
                type=pa.timestamp("us", tz="UTC"),
            ),
            "amount": pa.array([float(i) for i in range(n)]),
        }
    )
    with conn.cursor() as cur:
        stored = cur.adbc_ingest("adbc_events", table, mode="create")
        check(stored == n, f"adbc_ingest stored {stored}")
        try:
            cur.adbc_ingest("adbc_events", table.slice(0, 1), mode="create")
            check(False, "create over an existing table must fail")
        except adbc_driver_manager.Error as e:
            check("exists" in str(e), f"create error: {e}")

        cur.execute(
            "SELECT entity_id, count(*) AS n, sum(amount) AS total "
            "FROM adbc_events GROUP BY entity_id ORDER BY entity_id"
        )
        result = cur.fetch_arrow_table()
        check(result.num_rows == 10, f"grouped rows: {result.num_rows}")
        check(result.column("n").to_pylist() == [100] * 10, "counts per entity")
        check(
            sum(result.column("total").to_pylist()) == sum(range(n)),
            "sum of amounts",
        )
        check(result.schema.field("entity_id").type == pa.string(), "plain strings")

        # A prepared statement with parameters, executed twice.
        sql = "SELECT count(*) AS n FROM adbc_events WHERE entity_id = ? AND amount >= ?"
        cur.execute(sql, ("u3", 500.0))
        check(cur.fetchone()[0] == 50, "prepared, first binding")
        cur.execute(sql, ("u3", 0.0))
        check(cur.fetchone()[0] == 100, "prepared, second binding")

        try:
            cur.execute("SELECT * FROM nope")
            check(False, "an unknown table must fail")
        except adbc_driver_manager.Error as e:
            check("nope" in str(e), f"unknown table error: {e}")

    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    catalogs = {c["catalog_name"]: c for c in objects}
    check("allsource" in catalogs, f"catalogs: {list(catalogs)}")
    schemas = {s["db_schema_name"]: s for s in catalogs["allsource"]["catalog_db_schemas"]}
    check({"public", "system"} <= set(schemas), f"schemas: {list(schemas)}")
    tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
    check("adbc_events" in tables, f"tables: {list(tables)}")
    columns = [c["column_name"] for c in tables["adbc_events"]["table_columns"]]
    check("entity_id" in columns and "amount" in columns, f"columns: {columns}")
    schema = conn.adbc_get_table_schema("adbc_events")
    check(schema.field("amount").type == pa.float64(), f"table schema: {schema}")
    info = conn.adbc_get_info()
    check(info.get("vendor_name") == "AllSource", f"info: {info}")

# A bearer header works as well.
with flightsql.connect(
    uri,
    db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"},
    autocommit=True,
) as conn:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM adbc_events")
        check(cur.fetchone()[0] == 1000, "count over a bearer connection")

# A wrong token is refused.
try:
    with flightsql.connect(
        uri,
        db_kwargs={DatabaseOptions.AUTHORIZATION_HEADER.value: "Bearer nope"},
        autocommit=True,
    ) as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    check(False, "a bad token must be refused")
except adbc_driver_manager.Error as e:
    check("nauthenticated" in str(e) or "token" in str(e), f"bad token error: {e}")

print("adbc: ok")
