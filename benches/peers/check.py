#!/usr/bin/env python3
"""Compares a peer engine's window results with weatherflow's, window for window.

    python check.py OURS THEIRS [--quiet]

OURS is weatherflow's weather-features output (JSON lines, nested per variable). THEIRS is
a peer's output: a file or a directory of part files, in JSON lines, Parquet or CSV, flat
(columns station_id, window_end, count, <var>_count/_mean/_std/_min/_max; see common.py).
window_end may be epoch milliseconds or an RFC 3339 / ISO 8601 string (naive = UTC).
THEIRS may also be another weatherflow output (nested), e.g. -w 1 against -w 2.

It checks that both have the same set of (station_id, window_end) keys, each once, and for
every window: count and the per-variable counts equal; mean, min and max equal within
|a - b| <= max(1e-6, 1e-9 * |ours|); std within |a - b| <= max(1e-6, 1e-6 * |ours|);
nulls (a variable with no values, std of fewer than two values) only where ours has them.

Why tolerances: weatherflow computes from exact integer moments of the milli-unit values
and rounds once; the peers add doubles in an order that depends on their partitioning,
so their means differ in the last bits (relative 1e-15 or so), and std, a difference of
large sums, loses more (for pressure ~1000 hPa with a spread of 0.05 the naive
sum-of-squares formula keeps about 8 significant digits of the variance). min and max are
copies of input values, so those only differ if parsing differs.

Prints the number of windows, missing (ours only), extra (theirs only), duplicated and
mismatched windows with examples, and a final line starting with ``CHECK ok`` or
``CHECK FAIL``. Exit status 0 only if there is no difference.
"""

import argparse
import datetime as dt
import os
import sys

import polars as pl

VARS = ("temperature", "humidity", "pressure", "wind_speed")
STATS = ("mean", "std", "min", "max")
TOL = {  # stat -> (absolute, relative)
    "mean": (1e-6, 1e-9),
    "min": (1e-6, 1e-9),
    "max": (1e-6, 1e-9),
    "std": (1e-6, 1e-6),
}
EXAMPLES = 5


def list_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    out = []
    for root, dirs, files in os.walk(path):
        # Spark's _spark_metadata / checkpoints, Flink's hidden in-progress files.
        dirs[:] = [d for d in dirs if not d.startswith((".", "_"))]
        for f in files:
            if f.startswith((".", "_")) or f.endswith((".crc", ".log")):
                continue
            full = os.path.join(root, f)
            if os.path.getsize(full) > 0:
                out.append(full)
    return sorted(out)


def read_any(path: str) -> pl.DataFrame:
    files = list_files(path)
    if not files:
        sys.exit(f"no output files under {path}")
    frames = []
    for f in files:
        if f.endswith(".parquet"):
            frames.append(pl.read_parquet(f))
        elif f.endswith(".csv"):
            frames.append(pl.read_csv(f, infer_schema_length=None))
        else:
            frames.append(pl.read_ndjson(f, infer_schema_length=None))
    frames = [normalise(d) for d in frames]
    return pl.concat(frames, how="vertical")


def normalise(d: pl.DataFrame) -> pl.DataFrame:
    """One flat layout with float statistics and window_end as epoch ms (Int64)."""
    nested = d.schema.get("temperature") is not None and isinstance(
        d.schema["temperature"], pl.Struct
    )
    cols = [pl.col("station_id").cast(pl.String), pl.col("count").cast(pl.Int64)]
    for v in VARS:
        for s in ("count",) + STATS:
            name = f"{v}_{s}"
            if nested:
                fields = [f.name for f in d.schema[v].fields]
                e = pl.col(v).struct.field(s) if s in fields else pl.lit(None)
            else:
                e = pl.col(name) if name in d.columns else pl.lit(None)
            cols.append(e.cast(pl.Int64 if s == "count" else pl.Float64).alias(name))
    out = d.select(cols + [pl.col("window_end")])
    return out.with_columns(window_end=window_end_ms(out["window_end"]))


def window_end_ms(s: pl.Series) -> pl.Series:
    if s.dtype.is_integer():
        return s.cast(pl.Int64)
    if isinstance(s.dtype, pl.Datetime):
        return s.dt.epoch("ms")
    # Strings: few distinct values (one per minute), so parse those in Python.
    def parse(x: str) -> int:
        t = dt.datetime.fromisoformat(x.replace(" ", "T"))
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return round(t.timestamp() * 1000)

    distinct = s.unique().drop_nulls().to_list()
    mapping = {x: parse(x) for x in distinct}
    return s.replace_strict(mapping, return_dtype=pl.Int64, default=None)


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def main() -> int:
    p = argparse.ArgumentParser(description="compare a peer's windows with weatherflow's")
    p.add_argument("ours")
    p.add_argument("theirs")
    args = p.parse_args()

    ours = read_any(args.ours)
    theirs = read_any(args.theirs)
    key = ["station_id", "window_end"]
    print(f"ours:   {ours.height} windows ({args.ours})")
    print(f"theirs: {theirs.height} windows ({args.theirs})")

    problems = 0
    for name, d in (("ours", ours), ("theirs", theirs)):
        dup = d.group_by(key).len().filter(pl.col("len") > 1)
        if dup.height:
            problems += dup.height
            print(f"DUPLICATED in {name}: {dup.height} keys, e.g.")
            for r in dup.head(EXAMPLES).iter_rows(named=True):
                print(f"  {r['station_id']} {iso(r['window_end'])} x{r['len']}")

    j = ours.join(theirs, on=key, how="full", suffix="_t", coalesce=True)
    present_o = pl.col("count").is_not_null()
    present_t = pl.col("count_t").is_not_null()
    missing = j.filter(present_o & ~present_t)
    extra = j.filter(~present_o & present_t)
    both = j.filter(present_o & present_t)
    for label, d in (("MISSING (ours only)", missing), ("EXTRA (theirs only)", extra)):
        if d.height:
            problems += d.height
            print(f"{label}: {d.height}, e.g.")
            for r in d.sort(key).head(EXAMPLES).iter_rows(named=True):
                print(f"  {r['station_id']} {iso(r['window_end'])}")

    # Per-field mismatch masks.
    masks = {}
    for f in ["count"] + [f"{v}_count" for v in VARS]:
        masks[f] = ~pl.col(f).eq_missing(pl.col(f + "_t"))
    for v in VARS:
        for s in STATS:
            f = f"{v}_{s}"
            a, b = pl.col(f), pl.col(f + "_t")
            abs_tol, rel_tol = TOL[s]
            tol = pl.max_horizontal(pl.lit(abs_tol), rel_tol * a.abs())
            close = (a - b).abs() <= tol
            ok = (a.is_null() & b.is_null()) | (a.is_nan() & b.is_nan()).fill_null(False) | close.fill_null(False)
            masks[f] = ~ok
    flagged = both.with_columns(**{f"bad_{f}": m for f, m in masks.items()})
    bad_cols = [f"bad_{f}" for f in masks]
    bad = flagged.filter(pl.any_horizontal(bad_cols))
    if bad.height:
        problems += bad.height
        counts = bad.select(pl.col(bad_cols).sum()).row(0, named=True)
        per_field = ", ".join(f"{k[4:]} {n}" for k, n in counts.items() if n)
        print(f"MISMATCHED: {bad.height} windows ({per_field}), e.g.")
        for r in bad.sort(key).head(EXAMPLES).iter_rows(named=True):
            fields = [f for f in masks if r[f"bad_{f}"]]
            diffs = "; ".join(f"{f} ours={r[f]!r} theirs={r[f + '_t']!r}" for f in fields[:4])
            print(f"  {r['station_id']} {iso(r['window_end'])}: {diffs}")

    # Largest deviations seen, for the record even when all pass.
    dev = both.select(
        **{
            f"{s}": pl.max_horizontal([(pl.col(f"{v}_{s}") - pl.col(f"{v}_{s}_t")).abs().max() for v in VARS])
            for s in STATS
        }
    ).row(0, named=True)
    print("max |ours - theirs|: " + ", ".join(f"{s} {x:.3g}" if x is not None else f"{s} -" for s, x in dev.items()))

    summary = (
        f"windows={ours.height} theirs={theirs.height} missing={missing.height} "
        f"extra={extra.height} mismatched={bad.height}"
    )
    if problems:
        print(f"CHECK FAIL {summary}")
        return 1
    print(f"CHECK ok {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
