#!/usr/bin/env python3
"""Attribute a perf profile of `weatherflow run` to the stages of the job.

    perf record -F 2500 --call-graph dwarf,16384 -o prof.data weatherflow run -w 1 ...
    perf script -i prof.data -F comm,tid,ip,sym > prof.txt
    scripts/profile-stages.py prof.txt

Each sample of a worker thread is charged to the *operator* on its stack: the outermost
frame (walking from the root towards the leaf) that names one of the job's operators,
so a memmove inside the pane arrangement counts for that arrangement. Within the
sources, samples under the JSON parser are split out as "parse + validate". Samples with
no operator frame (timely's scheduler, progress tracking) are "timely runtime"; samples
of other threads (librdkafka, the API, the reporter) are listed by thread name.

Operators are recognised by substrings of the demangled symbols, which carry each
operator's closure type in their generic arguments. Only the standard library is used.
"""

import collections
import sys

# (stage, test on one frame), in priority order for that frame.
OPERATORS = [
    ("panes: exchange + dedup + moments", lambda f: "build_panes" in f),
    ("arrange panes (merge batcher, spine)", lambda f: "arrange_named" in f and "pane::Pane" in f),
    ("trend: delay + arrange means + join", lambda f: "join_core" in f or "Means" in f or "dataflow::trends" in f),
    ("window reduce (incl. its output arrangement)", lambda f: "reduce_abelian" in f or "reduce_core" in f),
    ("emit windows (upsert view)", lambda f: "emit_windows" in f),
    ("ML: forecast + anomaly", lambda f: "dataflow::predict" in f),
    ("sink: JSONL", lambda f: "jsonl_sink" in f or "jsonl_predictions_sink" in f),
    ("sink: kafka", lambda f: "kafka_features_sink" in f or "kafka_predictions_sink" in f),
    ("sink: API store", lambda f: "store_features_sink" in f or "store_predictions_sink" in f),
    ("source: file", lambda f: "file_source" in f or "sources::file::" in f),
    ("source: generator", lambda f: "sources::generator::" in f),
    ("source: kafka", lambda f: "kafka_source" in f or "sources::kafka::" in f),
]
PARSE = ("parse_json", "schema::json::", "RawReading", "csv::")


def stage_of(frames):
    for frame in reversed(frames):  # root first
        for stage, test in OPERATORS:
            if test(frame):
                if stage.startswith("source") and any(m in f for f in frames for m in PARSE):
                    return stage + ": parse + validate"
                return stage
    return None


def samples(lines):
    """Yields (thread name, [symbols leaf first]) per sample of `perf script` output."""
    head, frames = None, []
    for line in lines:
        if not line.strip():
            if head is not None:
                yield head, frames
            head, frames = None, []
        elif not line[0].isspace():
            head = line.split()[0]
        else:
            parts = line.strip().split(None, 1)
            frames.append(parts[1] if len(parts) > 1 else "")
    if head is not None:
        yield head, frames


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    counts = collections.Counter()
    total = 0
    with open(sys.argv[1], errors="replace") as f:
        for thread, frames in samples(f):
            total += 1
            if thread.startswith("timely:work"):
                counts[stage_of(frames) or "timely runtime (scheduling, progress, exchange)"] += 1
            else:
                counts["other thread: " + thread] += 1
    if total == 0:
        sys.exit("no samples")
    print(f"| stage | share of samples ({total} samples) |")
    print("|---|---|")
    for stage, n in counts.most_common():
        print(f"| {stage} | {100.0 * n / total:.1f} % |")


if __name__ == "__main__":
    main()
