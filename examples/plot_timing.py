"""
Timing a training step against NumPy
====================================

One training step — the loss, the gradient and an SGD update — of fastbp through ``MLP``, and
from a user's ``@njit`` loop, against the same step written in NumPy as a user would write it
(``fastbp.benchmark.lean_numpy_step``). The figures are from the machine that built this page,
in one process; ``python -m fastbp bench`` measures each contender in its own processes, with
the spread, which is what ``bench/RESULTS.md`` reports.

    python examples/plot_timing.py
"""

import os

import numpy as np

import fastbp
from fastbp.benchmark import make_step, median_time

small = bool(os.environ.get("FASTBP_DOCS_BUILD"))  # the documentation's build: shorter timings
configs = ["tiny", "small", "20-50-50-3:64:tanh,tanh,softmax:cross_entropy"]
repeats, min_time = (5, 0.02) if small else (20, 0.2)
rows = []
for config in configs:
    times = {}
    for kind in ("lean", "fastbp", "njit"):
        step, _ = make_step(kind, config, np.float32)
        step()  # compile, or load from the disk cache
        times[kind] = median_time(step, repeats, min_time) / getattr(step, "steps", 1)
    rows.append((config.split(":")[0], times))
    print(f"{config:>48}: lean NumPy {times['lean'] * 1e6:8.1f} µs, MLP {times['fastbp'] * 1e6:8.1f} µs, "
          f"@njit loop {times['njit'] * 1e6:8.1f} µs")

# %%
# Speed relative to the lean NumPy step (its time over fastbp's; above 1 is faster).

try:
    import matplotlib.pyplot as plt
except ImportError:
    print("matplotlib is not installed: no plot")
else:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    pos = np.arange(len(rows))
    ax.bar(pos - 0.2, [t["lean"] / t["fastbp"] for _, t in rows], 0.4, label="fastbp MLP")
    ax.bar(pos + 0.2, [t["lean"] / t["njit"] for _, t in rows], 0.4, label="fastbp in @njit loop")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(pos, [name for name, _ in rows])
    ax.set_ylabel("lean NumPy time / fastbp time")
    ax.set_title(f"float32, {os.cpu_count()} cores, {fastbp.config.VECTOR_BYTES * 8}-bit vectors", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.show()
