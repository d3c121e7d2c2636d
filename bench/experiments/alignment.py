"""The training step's time against where its buffers fall: the workspace and the gradient
shifted by whole cache lines relative to 4 KiB pages.

    python bench/experiments/alignment.py [--configs large] [--dtype float32] [--processes 3] [--steps 10]

At widths whose rows are whole 4 KiB pages (``large``: 1024 in float32) every row of every
buffer starts at the same address modulo 4 KiB, and a kernel that adds into the rows of its
output pass after pass slows down when those rows sit a little past the rows it reads (a load
is taken to depend on an earlier store with the same low 12 bits).  Each process times the
whole-network parallel twin (``fastbp.cpu`` kernels, no Python between steps) with the
workspace and the gradient buffer shifted by (0, 0), (64 B, 0), (0, 64 B) and (1088 B, 2176 B)
from a page boundary, twice in that order; a cell is the median over processes of the better
of the two, with min-max.  θ and x stay where NumPy put them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE.parent))

#: (workspace shift, gradient shift) in elements of the dtype's 4-byte or 8-byte words: 64 B is 16
#: float32 or 8 float64 words (set per dtype in child()).
SHIFTS_BYTES = [(0, 0), (64, 0), (0, 64), (1088, 2176)]


def _shifted(size: int, dtype, shift_bytes: int) -> np.ndarray:
    item = np.dtype(dtype).itemsize
    raw = np.empty(size + 8192 // item, dtype)
    start = (-(raw.ctypes.data // item)) % (4096 // item) + shift_bytes // item
    return raw[start : start + size]


def child(config: str, dtype_name: str, steps: int) -> dict:
    import fastbp
    from fastbp.benchmark.configs import problem
    from fastbp.cpu import network

    dtype = np.dtype(dtype_name).type
    kw, x, y = problem(config, dtype)
    net = fastbp.MLP(**kw)
    s = net.spec
    yk, lab, sw = net._backend.kernel_targets(net._backend.check_y(y, x.shape[0]))
    size = fastbp.workspace_size(net.sizes, x.shape[0])
    out = {}
    for _ in range(2):
        for ws, gs in SHIFTS_BYTES:
            work = _shifted(size, dtype, ws)
            g = _shifted(net.n_params, dtype, gs)

            def step(g=g, work=work):
                network.loss_and_grad_parallel(net.params, s.sizes, s.activations, s.loss, x, yk, lab, g, work, sw)

            step()
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            t = (time.perf_counter() - t0) / steps
            key = f"{ws}/{gs}"
            out[key] = min(out.get(key, np.inf), t)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["large"])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], int(a.child[2]))))
        return
    print(f"`python bench/experiments/alignment.py --configs {' '.join(a.configs)} --dtype {a.dtype} "
          f"--processes {a.processes}`\n")
    print("| configuration | " + " | ".join(f"workspace +{w} B, gradient +{g} B" for w, g in SHIFTS_BYTES) + " |")
    print("|---|" + "---|" * len(SHIFTS_BYTES))
    for config in a.configs:
        runs = []
        for _ in range(a.processes):
            r = subprocess.run([sys.executable, __file__, "--child", config, a.dtype, str(a.steps)],
                               check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(r.strip().splitlines()[-1]))
        cells = []
        for w, g in SHIFTS_BYTES:
            v = [r[f"{w}/{g}"] * 1e3 for r in runs]
            cells.append(f"{np.median(v):.1f} ms ({min(v):.1f}-{max(v):.1f})")
        print(f"| {config} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
