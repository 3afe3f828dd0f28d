"""Shared bits of the peer jobs: the argument parser, the variables and timing output.

Every job is run as ``python <engine>_job.py INPUT OUTDIR``: it reads the weather-raw
JSON lines in INPUT and writes one row per (station_id, window_end) into the directory
OUTDIR (created; must not exist or be empty), with the columns

    station_id, window_end (epoch milliseconds, the window's exclusive end), count,
    <var>_count, <var>_mean, <var>_std, <var>_min, <var>_max   for each of VARS.

A window ends at every whole UTC minute E and covers [E - 5 min, E); a reading at t
belongs to the five windows whose end lies in (t, t + 5 min]. std is the sample standard
deviation (n - 1), null for fewer than two values, as in weatherflow's output.

At the end each job prints ``SCRIPT_SECONDS=<s>``, the time from after the engine (JVM,
session) is up to the end of the job as measured by the script, and ``ENGINE_SECONDS=<s>``,
the engine's own account of the job where it gives one (Flink: the job's net runtime;
Spark: the sum of the micro-batches' durations), else the same as SCRIPT_SECONDS.
run.sh records ENGINE_SECONDS next to the externally measured wall time.
"""

import argparse
import os
import sys
import time

VARS = ("temperature", "humidity", "pressure", "wind_speed")


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("input", help="weather-raw JSON lines file")
    p.add_argument("outdir", help="output directory (created)")
    args = p.parse_args()
    args.input = os.path.abspath(args.input)
    args.outdir = os.path.abspath(args.outdir)
    if os.path.exists(args.outdir) and os.listdir(args.outdir):
        sys.exit(f"{args.outdir} exists and is not empty")
    return args


class Stopwatch:
    """Times the job inside the script; prints SCRIPT_SECONDS and ENGINE_SECONDS."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def restart(self) -> None:
        self.t0 = time.perf_counter()

    def report(self, engine_seconds: float | None = None) -> float:
        s = time.perf_counter() - self.t0
        print(f"SCRIPT_SECONDS={s:.3f}", flush=True)
        print(f"ENGINE_SECONDS={s if engine_seconds is None else engine_seconds:.3f}", flush=True)
        return s
