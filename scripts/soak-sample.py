#!/usr/bin/env python3
"""Samples a running pipeline every 10 s for the soak: RSS (from /proc), and from its
/metrics the readings in, windows out, watermark lag and summed consumer lag. Standard
library only. Writes CSV and prints one line per sample, so progress is visible."""
import argparse, csv, re, sys, time, urllib.request

p = argparse.ArgumentParser()
p.add_argument("--pid", type=int, required=True)
p.add_argument("--producer-pid", type=int)
p.add_argument("--metrics", required=True)
p.add_argument("--seconds", type=float, required=True)
p.add_argument("--interval", type=float, default=10.0)
p.add_argument("--out", required=True)
a = p.parse_args()

def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None

def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100.0
    except OSError:
        return None

def scrape():
    try:
        text = urllib.request.urlopen(a.metrics, timeout=5).read().decode()
    except Exception as e:
        print(f"soak: metrics unavailable: {e}", file=sys.stderr)
        return {}
    out = {"consumer_lag": 0.0}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"([a-z_]+)(\{[^}]*\})?\s+(\S+)", line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name == "weatherflow_kafka_consumer_lag":
            out["consumer_lag"] += value
        elif name == "weatherflow_records_in_total":
            out["records_in"] = out.get("records_in", 0) + value
        elif name in ("weatherflow_windows_emitted_total", "weatherflow_watermark_lag_seconds",
                      "weatherflow_records_late_total", "weatherflow_predictions_total"):
            out[name.removeprefix("weatherflow_")] = value
    return out

fields = ["t_s", "rss_mib", "cpu_s", "producer_rss_mib", "records_in", "readings_per_s",
          "windows_emitted_total", "predictions_total", "records_late_total",
          "watermark_lag_seconds", "consumer_lag"]
start = time.time()
prev = None
with open(a.out, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    while time.time() - start < a.seconds:
        time.sleep(a.interval)  # the sampling period of a monitor, not a wait for an event
        t = time.time() - start
        m = scrape()
        row = {"t_s": round(t, 1), "rss_mib": rss_mib(a.pid), "cpu_s": cpu_s(a.pid),
               "producer_rss_mib": rss_mib(a.producer_pid) if a.producer_pid else None, **m}
        if prev and "records_in" in m and "records_in" in prev[1]:
            row["readings_per_s"] = round((m["records_in"] - prev[1]["records_in"]) / (t - prev[0]))
        prev = (t, m)
        w.writerow({k: row.get(k) for k in fields})
        f.flush()
        print("soak " + " ".join(f"{k}={row.get(k)}" for k in fields), file=sys.stderr, flush=True)
        if rss_mib(a.pid) is None:
            sys.exit("soak: the pipeline exited early")
