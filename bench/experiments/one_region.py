"""One parallel region per training step against the twins' per-product regions (#14, item 2).

    python bench/experiments/one_region.py --configs small medium 4-32-32-1:512:sigmoid:mse ...
                               [--dtypes float32 float64] [--processes 5] [--repeats 30] [--parts 2]

The design that issue #14 names as the target for small and medium problems: the minibatch split
into ``--parts`` contiguous parts (one per thread), each carried through every layer forward and
back by the serial training-step twin with a private gradient and workspace, in one ``prange``,
then the parts' gradients reduced in a fixed order (scaled by their share of the rows: each part's
step returns the mean over its own rows).  It is timed against what ``MLP`` runs today, the parallel
twin (a region per product and layer), and the serial twin, each the step ``bench/run.py`` times
(the step, then ``params -= lr * g``), each contender in its own fresh process, interleaved,
``--processes`` rounds.  Prints medians (min-max) over the processes and the median (min-max) of
the per-round ratios per-product / one-region (above 1: one region is faster).

The one-region step here is a prototype: unweighted losses, no dispatch, not cached.  It checks its
gradient against the serial twin's on every start (within 1e-4 relative to the largest entry).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent.parent
CONTENDERS = ("per-product", "one-region", "serial")


def _one_region_step():
    from numba import njit, prange

    from fastbp.config import FASTMATH

    @njit(parallel=True, nogil=True, fastmath=FASTMATH)
    def step(serial, params, sizes, acts, loss, x, Y, lab, grad, sw, G, WS):
        P = G.shape[0]
        N = x.shape[0]
        per = (N + P - 1) // P
        losses = np.zeros(P)
        for p in prange(P):
            r0 = min(p * per, N)
            r1 = min(r0 + per, N)
            if r1 > r0:
                Yp = Y[r0:r1] if Y.shape[0] else Y
                labp = lab[r0:r1] if lab.shape[0] else lab
                losses[p] = serial(params, sizes, acts, loss, x[r0:r1], Yp, labp, G[p], WS[p], sw)
        f = np.zeros(P, params.dtype)
        total = 0.0
        for p in range(P):
            r0 = min(p * per, N)
            rows = min(r0 + per, N) - r0
            f[p] = rows / N
            total += losses[p] * rows
        n = params.shape[0]
        for ib in prange((n + 1023) // 1024):  # the fixed-order reduction, in blocks of θ
            i0 = ib * 1024
            i1 = min(i0 + 1024, n)
            g = grad[i0:i1]
            G0 = G[0, i0:i1]
            for i in range(i1 - i0):
                g[i] = G0[i] * f[0]
            for p in range(1, P):
                Gp = G[p, i0:i1]
                for i in range(i1 - i0):
                    g[i] += Gp[i] * f[p]
        return total / N

    return step


def worker(kind: str, config: str, dtype_name: str, repeats: int, parts: int) -> dict:
    sys.path.insert(0, str(HERE.parent))
    import fastbp
    from fastbp.benchmark import median_time as _median_time
    from fastbp.benchmark.configs import problem
    DTYPES = {"float32": np.float32, "float64": np.float64}
    from fastbp.cpu import network
    from fastbp.layout import workspace_size

    kw, x, y = problem(config, DTYPES[dtype_name])
    net = fastbp.MLP(**kw)
    s, dt = net.spec, net.dtype
    N = x.shape[0]
    if y.ndim == 1:
        Y, lab = np.empty((0, int(s.sizes[-1])), dt), y.astype(np.int64)
    else:
        Y, lab = y, np.empty(0, np.int64)
    sw = np.empty(0, dt)
    g = np.empty_like(net.params)
    work = np.empty(workspace_size(s.sizes, N), dt)
    per = -(-N // parts)
    serial_all, parallel = network.VARIANTS["serial"][1], network.VARIANTS["parallel"][1]
    serial_part = serial_all
    G = np.empty((parts, net.params.shape[0]), dt)
    WS = np.empty((parts, workspace_size(s.sizes, per)), dt)
    lr = dt.type(1e-3)
    args = (s.sizes, s.activations, s.loss, x, Y, lab, g)
    if kind == "one-region":
        split = _one_region_step()
        c1 = serial_all(net.params, *args, work, sw)
        g1 = g.copy()
        c2 = split(serial_part, net.params, *args, sw, G, WS)
        err = float(np.abs(g - g1).max() / max(np.abs(g1).max(), 1e-30))
        assert err < 1e-4 and abs(c1 - c2) <= 1e-4 * abs(c1), (err, c1, c2)

        def step():
            split(serial_part, net.params, *args, sw, G, WS)
            net.params -= lr * g
    else:
        twin = parallel if kind == "per-product" else serial_all

        def step():
            twin(net.params, *args, work, sw)
            net.params -= lr * g

    return {"time": _median_time(step, repeats)}


def _run(kind, config, dtype_name, repeats, parts):
    out = subprocess.run([sys.executable, __file__, "--worker", kind, config, dtype_name, str(repeats), str(parts)],
                         check=True, capture_output=True, text=True, env=dict(os.environ)).stdout
    return json.loads(out.strip().splitlines()[-1])["time"]


def _cell(v):
    return f"{np.median(v) * 1e6:.1f} ({min(v) * 1e6:.1f}-{max(v) * 1e6:.1f}) µs"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", default=["small", "medium"])
    p.add_argument("--dtypes", nargs="+", default=["float32"])
    p.add_argument("--processes", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--parts", type=int, default=2, help="parts of the batch (one per thread)")
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        kind, config, dtype_name, repeats, parts = a.worker
        print(json.dumps(worker(kind, config, dtype_name, int(repeats), int(parts))))
        return 0
    root = str(HERE.parent)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                          text=True).stdout.strip()
    print(f"`python bench/experiments/one_region.py {shlex.join(sys.argv[1:])}` at {head}; {a.processes} processes per "
          "contender, interleaved.\n")
    print("| config | dtype | per-product regions (MLP's twin) | one region | serial twin | per-product / one region |")
    print("|---|---|---|---|---|---|")
    for config in a.configs:
        for dt in a.dtypes:
            for kind in CONTENDERS:  # compile or load into the cache: not counted
                _run(kind, config, dt, 3, a.parts)
            res = {k: [] for k in CONTENDERS}
            for r in range(a.processes):
                for k in CONTENDERS[r % 3:] + CONTENDERS[: r % 3]:
                    res[k].append(_run(k, config, dt, a.repeats, a.parts))
            ratios = sorted(b / t for b, t in zip(res["per-product"], res["one-region"], strict=True))
            print(f"| {config} | {dt} | {_cell(res['per-product'])} | {_cell(res['one-region'])} "
                  f"| {_cell(res['serial'])} | {np.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f}) |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
