"""Reads an AllSource table with the independent `deltalake` Python package
and prints its rows as JSON lines, sorted by event_id: proof that the
tables are plain Delta Lake that other engines read."""

import json
import os
import sys

import pyarrow

from deltalake import DeltaTable


def main(path: str) -> None:
    table = DeltaTable(path)
    data = table.to_pyarrow_table() if hasattr(table, "to_pyarrow_table") else table.to_pyarrow()
    rows = data.to_pylist()
    rows.sort(key=lambda r: r["event_id"])
    adds = pyarrow.table(table.get_add_actions(flatten=True)).to_pylist()
    meta = {
        "partition_columns": table.metadata().partition_columns,
        "version": table.version(),
        "files": [
            {
                "path": a["path"],
                "event_date": str(a["partition.event_date"]),
                "num_records": a["num_records"],
                "min_timestamp": str(a["min.timestamp"]),
                "max_timestamp": str(a["max.timestamp"]),
            }
            for a in adds
        ],
    }
    print(json.dumps(meta))
    for row in rows:
        print(json.dumps(row, default=str, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
    # Skip interpreter teardown: with some package combinations (numpy
    # beside deltalake's native threads) it aborts after the work is done.
    sys.stdout.flush()
    os._exit(0)
