#!/usr/bin/env python3
"""Apache Flink SQL (PyFlink Table API, streaming mode): the weatherflow window job.

    python flink_job.py INPUT OUTDIR      -> OUTDIR/windows/part-* (JSON lines)

How: a 'filesystem' source table over INPUT with format 'json' (flink-json ships in
pyflink/lib), the timestamp read as TIMESTAMP_LTZ(3) and declared the rowtime with
WATERMARK FOR ts AS ts - INTERVAL '10' SECOND (weatherflow's default lateness); the
window table-valued function HOP(TABLE raw_readings, DESCRIPTOR(ts), INTERVAL '1' MINUTE,
INTERVAL '5' MINUTES); GROUP BY station_id, window_start, window_end with COUNT/AVG/
STDDEV_SAMP/MIN/MAX; INSERT INTO a 'filesystem' sink table with format 'json'. The job
is pure SQL: no Python UDFs, so no Python worker processes, everything runs in the JVM.

End of input: the filesystem source is bounded (no 'source.monitor-interval'), and a
bounded source emits a final MAX watermark when it finishes, so every open window,
including the partial ones in the last five minutes, fires; HOP windows are
[start, start + 5 min) with starts on whole minutes, the same set as weatherflow's.

Settings (all in this file)
- Local execution: PyFlink starts one JVM (the py4j gateway) that runs a MiniCluster
  with the job manager and one task manager in-process.
- JVM_ARGS=-Xmx4g (unless JVM_ARGS is set in the environment): a 4 GiB heap for
  that JVM (the same as Spark's driver);
  window state lives on the heap (the default 'hashmap' state backend).
- parallelism.default 2: two slots, the machine's 2 vCPUs (weatherflow -w 2). The
  planner splits the window aggregation into a local (pre-aggregating, chained to the
  source) and a global phase exchanged by station_id (table.optimizer.agg-phase-strategy
  AUTO, the default).
- execution.runtime-mode streaming: event-time windows with watermarks, as a stream
  processor; (batch mode would sort instead).
- table.local-time-zone UTC: windows are aligned in the session zone; UTC minutes.
- pipeline.object-reuse true: the usual setting for SQL pipelines (operators do not
  keep references to records), saves a copy per record between chained operators.
- Checkpointing off: nothing to recover in a benchmark (Spark checkpoints once per
  micro-batch because its state store needs it; Flink does not). The filesystem sink
  commits its files when the bounded input ends.
- json.timestamp-format.standard ISO-8601: accepts "…T00:00:00Z" and "…T00:00:00.100Z".
- Source split: the JSON file source reads a file as one split ("Finished reading from
  splits [0000000001]" in the log; the other source subtask gets none and finishes at
  once), so one thread parses the whole file while the window aggregation runs on two.
  This is how Flink reads one file; splitting the input into several files would help
  it but changes the input, so the benchmark does not.
- Logs: the JVM writes its log4j file to OUTDIR/_log (FLINK_LOG_DIR).
"""

import os

from common import VARS, Stopwatch, parse_args


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    os.makedirs(args.outdir, exist_ok=True)
    # The gateway JVM is launched from os.environ when the TableEnvironment is created.
    os.environ.setdefault("JVM_ARGS", "-Xmx4g")
    # The JVM's log4j file goes here instead of into the venv's pyflink/log.
    os.environ.setdefault("FLINK_LOG_DIR", os.path.join(args.outdir, "_log"))

    from pyflink.common import Configuration
    from pyflink.table import EnvironmentSettings, TableEnvironment

    conf = Configuration()
    conf.set_string("execution.runtime-mode", "streaming")
    conf.set_string("parallelism.default", "2")
    conf.set_string("table.local-time-zone", "UTC")
    conf.set_string("pipeline.object-reuse", "true")
    settings = EnvironmentSettings.new_instance().in_streaming_mode().with_configuration(conf).build()
    t_env = TableEnvironment.create(settings)

    def q(s: str) -> str:
        return s.replace("'", "''")

    var_cols = ",\n  ".join(f"{v} DOUBLE" for v in VARS)
    t_env.execute_sql(f"""
CREATE TABLE raw_readings (
  station_id STRING,
  `timestamp` TIMESTAMP_LTZ(3),
  {var_cols},
  ts AS `timestamp`,
  WATERMARK FOR ts AS ts - INTERVAL '10' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = 'file://{q(args.input)}',
  'format' = 'json',
  'json.timestamp-format.standard' = 'ISO-8601',
  'json.fail-on-missing-field' = 'false',
  'json.ignore-parse-errors' = 'false'
)""")
    stat_cols = ",\n  ".join(
        f"{v}_count BIGINT, {v}_mean DOUBLE, {v}_std DOUBLE, {v}_min DOUBLE, {v}_max DOUBLE"
        for v in VARS
    )
    t_env.execute_sql(f"""
CREATE TABLE window_stats (
  station_id STRING,
  window_end TIMESTAMP(3),
  `count` BIGINT,
  {stat_cols}
) WITH (
  'connector' = 'filesystem',
  'path' = 'file://{q(os.path.join(args.outdir, "windows"))}',
  'format' = 'json',
  'json.timestamp-format.standard' = 'ISO-8601'
)""")
    aggs = ",\n  ".join(
        f"COUNT({v}), AVG({v}), STDDEV_SAMP({v}), MIN({v}), MAX({v})" for v in VARS
    )
    clock = Stopwatch()
    result = t_env.execute_sql(f"""
INSERT INTO window_stats
SELECT station_id, window_end, COUNT(*),
  {aggs}
FROM TABLE(HOP(TABLE raw_readings, DESCRIPTOR(ts), INTERVAL '1' MINUTE, INTERVAL '5' MINUTES))
GROUP BY station_id, window_start, window_end""")
    result.wait()
    # The job's net runtime (submission to finish, as the job manager counts it):
    # excludes the JVM start, planning and code generation before submission.
    net_ms = result.get_job_client().get_job_execution_result().result().get_net_runtime()
    print(f"flink job net runtime: {net_ms / 1000:.2f} s")
    clock.report(net_ms / 1000)


if __name__ == "__main__":
    main()
