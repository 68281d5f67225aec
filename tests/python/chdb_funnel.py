"""ClickHouse's own windowFunnel (through chDB) over a CSV of (u, t, e),
for each mode given; prints {mode: {u: level}} as JSON. The reference the
window_funnel cross-check compares against."""

import json
import sys

import chdb


def main() -> None:
    path, modes = sys.argv[1], json.loads(sys.argv[2])
    out = {}
    for mode in modes:
        params = "10" + "".join(f", '{m}'" for m in mode.split(",") if m)
        sql = (
            f"SELECT u, windowFunnel({params})(toUInt64(t), e = 1, e = 2, e = 3, e = 4) AS level "
            f"FROM file('{path}', CSV, 'u UInt32, t UInt64, e UInt8') GROUP BY u"
        )
        rows = chdb.query(sql, "JSONEachRow").data().splitlines()
        out[mode] = {str(json.loads(r)["u"]): json.loads(r)["level"] for r in rows}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
