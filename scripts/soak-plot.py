#!/usr/bin/env python3
"""Plots a soak's samples.csv (scripts/soak-sample.py) into a PNG: RSS, watermark lag,
consumer lag and throughput against time. Needs matplotlib: when the running Python lacks
it, it re-runs itself in a venv under ~/.cache/weatherflow/plot-venv, installing it once."""
import csv, os, subprocess, sys, venv

def ensure_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    env = os.path.expanduser("~/.cache/weatherflow/plot-venv")
    py = os.path.join(env, "bin", "python")
    if os.environ.get("SOAK_PLOT_VENV") == "1":
        sys.exit("matplotlib missing even in the venv")
    if not os.path.exists(py):
        venv.create(env, with_pip=True)
        subprocess.check_call([py, "-m", "pip", "install", "-q", "matplotlib"])
    os.execve(py, [py, *sys.argv], {**os.environ, "SOAK_PLOT_VENV": "1"})

ensure_matplotlib()
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

src, dst = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(src)))
num = lambda k: [float(r[k]) if r.get(k) not in (None, "", "None") else float("nan") for r in rows]
t = [v / 60 for v in num("t_s")]
fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
ax[0].plot(t, num("rss_mib")); ax[0].set_ylabel("pipeline RSS (MiB)")
ax[1].plot(t, num("watermark_lag_seconds")); ax[1].set_ylabel("watermark lag (s)")
ax[2].plot(t, num("consumer_lag")); ax[2].set_ylabel("consumer lag (messages)")
ax[3].plot(t, num("readings_per_s")); ax[3].set_ylabel("readings/s in")
ax[3].set_xlabel("minutes")
for a in ax:
    a.grid(alpha=0.3)
    a.set_ylim(bottom=0)
fig.suptitle(os.environ.get("SOAK_TITLE", "weatherflow soak through Kafka"))
fig.tight_layout()
fig.savefig(dst, dpi=90)
print(f"soak: plot written to {dst}", file=sys.stderr)
