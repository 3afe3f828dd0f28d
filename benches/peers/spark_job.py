#!/usr/bin/env python3
"""Spark Structured Streaming: the weatherflow window job, event time, append mode.

    python spark_job.py INPUT OUTDIR      -> OUTDIR/windows/part-*.json (JSON lines)

How: a file-source stream over a directory OUTDIR/_source holding a symlink to INPUT and a
one-line end-of-input marker (see below), an explicit schema, withWatermark("ts",
"10 seconds") (weatherflow's default lateness), groupBy(station_id, window(ts, "5 minutes",
"1 minute")) with count/avg/stddev_samp/min/max, output mode append into a JSON file sink,
Trigger.AvailableNow so the query processes everything there is and stops.

End of input. Spark has no end-of-stream watermark: in append mode a window is emitted
only once the watermark (max event time seen - 10 s) passes its end, so without more data
the windows ending in the last ~5 minutes of the file would never be emitted (Flink sends a
MAX watermark at the end of a bounded source; weatherflow closes all windows when a replay
ends). The job therefore puts one marker reading of station "__eof__" at 2999-01-01 next
to the data: it lifts the watermark past every real window, the no-data micro-batch that
AvailableNow runs after the data emits them, and the marker's own windows are filtered out
after the aggregation (they never close anyway; see the comment at the filter for why it
must stay above the aggregation). The marker is 1 of N+1 input lines.

Settings (all set in this file; nothing comes from spark-defaults)
- master local[2]: 2 task threads, the machine's 2 vCPUs (weatherflow -w 2).
- spark.driver.memory 4g: the driver JVM (which runs the tasks in local mode) gets a 4 GiB
  heap (-Xmx4g), the same as Flink's JVM. Must be set before the JVM starts: the builder passes it to spark-submit. Override
  with the environment variable SPARK_DRIVER_MEMORY.
  With a single input file everything is one micro-batch, and nothing is evicted
  before the batch ends (the watermark only moves between batches), so at the end of
  batch 0 the state holds every window of the file (1.44 M for the 24 h file), and
  the HDFS-backed provider keeps the previous version's map too.
- spark.sql.shuffle.partitions 2: one per core. Each shuffle partition is also one state
  store instance that is loaded, updated and checkpointed (delta file) every micro-batch;
  more partitions add that fixed cost per batch and give no parallelism on 2 cores, and
  1000 station keys hash evenly over 2. (The default, 200, would mean 200 state stores,
  each loaded and committed every batch, for 2 threads.)
- spark.sql.session.timeZone UTC: windows are aligned to UTC minutes (and timestamps in
  the file are UTC anyway).
- State store: the default HDFSBackedStateStoreProvider (state in JVM heap, delta files
  in OUTDIR/_checkpoint on local disk). RocksDB is for state larger than the heap.
- spark.ui.enabled false, spark.ui.showConsoleProgress false: no web UI and no progress
  bar (nothing to look at in a benchmark).
- Input splits: Spark splits the file into pieces of min(128 MB, max(4 MB, size / 2
  cores)) (spark.sql.files.maxPartitionBytes, defaults), so both cores parse: 2 tasks for
  the 10 MB file, ~9 for the 1.2 GB file.
- JSON sink with ignoreNullFields=false so a null std stays visible as null.
"""

import json
import os
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType, TimestampType

from common import VARS, Stopwatch, parse_args

EOF_STATION = "__eof__"
EOF_LINE = (
    '{"station_id":"%s","timestamp":"2999-01-01T00:00:00Z","temperature":0.0,'
    '"humidity":0.0,"pressure":1000.0,"wind_speed":0.0}\n' % EOF_STATION
)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    src = os.path.join(args.outdir, "_source")
    os.makedirs(src)
    os.symlink(args.input, os.path.join(src, "data.jsonl"))
    with open(os.path.join(src, "zz-end-of-input.jsonl"), "w") as f:
        f.write(EOF_LINE)

    t_start = time.perf_counter()
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("weatherflow-peer")
        .config("spark.driver.memory", os.environ.get("SPARK_DRIVER_MEMORY", "4g"))
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    t_up = time.perf_counter()

    schema = StructType(
        [StructField("station_id", StringType()), StructField("timestamp", TimestampType())]
        + [StructField(v, DoubleType()) for v in VARS]
    )
    raw = spark.readStream.schema(schema).json(src)
    aggs = [F.count(F.lit(1)).alias("count")]
    for v in VARS:
        aggs += [
            F.count(v).alias(f"{v}_count"),
            F.avg(v).alias(f"{v}_mean"),
            F.stddev_samp(v).alias(f"{v}_std"),
            F.min(v).alias(f"{v}_min"),
            F.max(v).alias(f"{v}_max"),
        ]
    windows = (
        raw.withColumnRenamed("timestamp", "ts")
        .withWatermark("ts", "10 seconds")
        .groupBy(F.col("station_id"), F.window("ts", "5 minutes", "1 minute"))
        .agg(*aggs)
        # Drop the marker's windows. The predicate also names an aggregate result
        # (count, never null) so that Catalyst cannot push it below the aggregation and
        # the watermark into the JSON reader: a plain station_id filter would be pushed
        # down and drop the marker before it can move the watermark.
        .where((F.col("station_id") != EOF_STATION) | F.col("count").isNull())
        .select(
            "station_id",
            F.unix_millis(F.col("window.end")).alias("window_end"),
            *[a for a in ["count"] + [f"{v}_{s}" for v in VARS for s in ("count", "mean", "std", "min", "max")]],
        )
    )
    clock = Stopwatch()
    query = (
        windows.writeStream.outputMode("append")
        .format("json")
        .option("ignoreNullFields", "false")
        .option("path", os.path.join(args.outdir, "windows"))
        .option("checkpointLocation", os.path.join(args.outdir, "_checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    progress = query.recentProgress
    # PySpark 4 returns StreamingQueryProgress objects; .json gives the plain dict.
    progress = [p if isinstance(p, dict) else json.loads(p.json) for p in progress]
    for p in progress:
        state = p.get("stateOperators") or [{}]
        print(
            f"batch {p['batchId']}: {p['numInputRows']} rows in, "
            f"watermark {p.get('eventTime', {}).get('watermark', '-')}, "
            f"state rows {state[0].get('numRowsTotal', '-')} "
            f"(emitted and removed {state[0].get('numRowsRemoved', '-')}), "
            f"{p['durationMs'].get('triggerExecution', 0)} ms"
        )
    print(f"spark session start: {t_up - t_start:.2f} s")
    # The engine's own account: the micro-batches' durations (planning each batch, the
    # tasks, the state store commit, the sink), without query start-up and shutdown.
    batch_ms = sum(p["durationMs"].get("triggerExecution", 0) for p in progress)
    clock.report(batch_ms / 1000)
    spark.stop()


if __name__ == "__main__":
    main()
