#!/usr/bin/env python3
"""Polars (batch, lazy API on the streaming engine): the weatherflow window job.

    python polars_job.py INPUT OUTDIR [--method fanout|dynamic]   -> OUTDIR/windows.parquet

How (default, --method fanout): scan_ndjson with an explicit schema, the timestamp read as
a string and parsed with an explicit format (letting the JSON reader parse it as Datetime
is ~15x slower in Polars 2.1: it infers the format per value), the reading's minute
m = epoch_ms // 60000,
a cross join with the offsets 1..5 so every reading appears in the five windows ending at
(m + k) * 60000, one group_by(station_id, window_end), and sink_parquet, which runs the
whole plan on Polars' streaming engine (bounded memory, morsel-parallel).

--method dynamic uses group_by_dynamic(every=1m, period=5m, closed=left, label=right,
offset=-4m) per station instead. It needs the in-memory engine (and time sorted within
each station, which the generator's file is), so it is offered only for comparison.

Settings
- POLARS_MAX_THREADS = 2 (set before import unless already set): the machine's 2 vCPUs,
  the same budget as weatherflow -w 2.
- Statistics: len, count, mean, std (ddof=1, null for n < 2), min, max -- built-ins.
"""

import os

os.environ.setdefault("POLARS_MAX_THREADS", "2")

import argparse  # noqa: E402

import polars as pl  # noqa: E402

from common import VARS, Stopwatch  # noqa: E402

MINUTE_MS = 60_000
TS_FORMAT = "%Y-%m-%dT%H:%M:%S%.fZ"


def aggregations() -> list[pl.Expr]:
    aggs = [pl.len().cast(pl.Int64).alias("count")]
    for v in VARS:
        c = pl.col(v)
        aggs += [
            c.count().cast(pl.Int64).alias(f"{v}_count"),
            c.mean().alias(f"{v}_mean"),
            c.std(ddof=1).alias(f"{v}_std"),
            c.min().alias(f"{v}_min"),
            c.max().alias(f"{v}_max"),
        ]
    return aggs


def scan(path: str) -> pl.LazyFrame:
    schema = {"station_id": pl.String, "timestamp": pl.String}
    schema.update({v: pl.Float64 for v in VARS})
    # %.f accepts both "…:00Z" and "…:00.100Z" (the generator writes either).
    ts = pl.col("timestamp").str.to_datetime(TS_FORMAT, time_unit="ms", time_zone="UTC")
    return pl.scan_ndjson(path, schema=schema).with_columns(timestamp=ts)


def fanout(path: str) -> pl.LazyFrame:
    offsets = pl.LazyFrame({"k": pl.Series([1, 2, 3, 4, 5], dtype=pl.Int64)})
    minute = pl.col("timestamp").dt.epoch("ms") // MINUTE_MS  # floor division
    return (
        scan(path)
        .with_columns(minute=minute)
        .join(offsets, how="cross")
        .with_columns(window_end=(pl.col("minute") + pl.col("k")) * MINUTE_MS)
        .group_by("station_id", "window_end")
        .agg(aggregations())
    )


def dynamic(path: str) -> pl.LazyFrame:
    # Windows [start, start + 5m) starting every minute; offset -4m makes the first
    # window of a station end one minute after its first reading's minute, so the
    # partial windows at the start are included. Empty windows are not produced.
    return (
        scan(path)
        .sort("station_id", "timestamp")
        .group_by_dynamic(
            "timestamp",
            every="1m",
            period="5m",
            offset="-4m",
            closed="left",
            label="right",
            group_by="station_id",
            start_by="window",
        )
        .agg(aggregations())
        .with_columns(window_end=pl.col("timestamp").dt.epoch("ms"))
        .drop("timestamp")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input")
    p.add_argument("outdir")
    p.add_argument("--method", choices=("fanout", "dynamic"), default="fanout")
    args = p.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    out = os.path.join(args.outdir, "windows.parquet")
    clock = Stopwatch()
    if args.method == "fanout":
        fanout(args.input).sink_parquet(out)
    else:
        dynamic(args.input).collect().write_parquet(out)
    clock.report()


if __name__ == "__main__":
    main()
