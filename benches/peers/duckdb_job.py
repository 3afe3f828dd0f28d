#!/usr/bin/env python3
"""DuckDB (batch): the weatherflow window job as one SQL statement.

    python duckdb_job.py INPUT OUTDIR        -> OUTDIR/windows.parquet

How: read_ndjson with an explicit column list (no schema sampling), a cross join of every
reading with the offsets 1..5 (the five windows whose end lies in (t, t + 5 min]: the
first is the next whole minute after t), one hash GROUP BY (station_id, window_end), and a
COPY to Parquet (DuckDB's fastest writer; JSON output costs more than the query).

Settings
- threads = 2: the machine has 2 vCPUs, the same budget as weatherflow -w 2.
- TimeZone = 'UTC': timestamps are read as TIMESTAMPTZ; minute truncation is done on
  epoch milliseconds, so the session zone does not change the result, but it is pinned.
- preserve_insertion_order = false: no ORDER BY is asked, and order-preserving is slower.
- memory_limit: DuckDB's default (80 % of RAM); the query needs a few hundred MB.
- Statistics: count, avg, stddev_samp (NULL for n < 2), min, max -- DuckDB's built-ins.
  stddev_samp is a streaming (Welford-style) algorithm, numerically stable.
"""

import os

import duckdb

from common import VARS, Stopwatch, parse_args


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    os.makedirs(args.outdir, exist_ok=True)
    clock = Stopwatch()
    con = duckdb.connect()
    con.execute("SET threads = 2")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")

    columns = {"station_id": "VARCHAR", "timestamp": "TIMESTAMPTZ"}
    columns.update({v: "DOUBLE" for v in VARS})
    cols_sql = ", ".join(f"'{k}': '{t}'" for k, t in columns.items())
    aggs = ",\n       ".join(
        f"count({v}) AS {v}_count, avg({v}) AS {v}_mean, stddev_samp({v}) AS {v}_std, "
        f"min({v}) AS {v}_min, max({v}) AS {v}_max"
        for v in VARS
    )
    path = args.input.replace("'", "''")
    out = os.path.join(args.outdir, "windows.parquet").replace("'", "''")
    # epoch_ms // 60000 is the reading's minute (floor for t >= 1970; the file's
    # timestamps are all after the epoch); + k for k in 1..5 are its five window ends.
    sql = f"""
COPY (
  SELECT station_id,
         (epoch_ms("timestamp") // 60000 + k) * 60000 AS window_end,
         count(*) AS count,
         {aggs}
  FROM read_ndjson('{path}', columns = {{{cols_sql}}}, format = 'newline_delimited')
       CROSS JOIN range(1, 6) AS offsets(k)
  GROUP BY station_id, window_end
) TO '{out}' (FORMAT parquet)
"""
    con.execute(sql)
    clock.report()


if __name__ == "__main__":
    main()
