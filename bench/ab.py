"""Two versions of fastbp side by side: the training step of each, in fresh processes, interleaved.

    python bench/ab.py --base REV --configs 30-100-1:200:relu,sigmoid:binary_cross_entropy ...
                       [--dtypes float32 float64] [--processes 5] [--repeats 30] [--threads N]

Checks ``--base`` (a commit) out into a temporary git worktree and times, for every configuration
and dtype, the step that ``bench/run.py`` times for fastbp (``MLP.loss_and_grad(out=g)``, then
``params -= lr * g``) in the base tree and in this working tree: one fresh process each per round,
``--processes`` rounds, the order alternating from round to round.  Prints the medians (min-max)
over the processes and the median (min-max) of the per-round ratios base / this tree (above 1:
this tree is faster).  Each tree's kernels are compiled into the disk cache by a first process
that is not counted, and parallel twins run where they pay from the first call
(``config.PARALLEL_COMPILE_AFTER = 0``, as in ``bench/run.py``).  ``--threads 1`` sets
``NUMBA_NUM_THREADS=1`` (the serial twins).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def worker(tree: str, config: str, dtype_name: str, repeats: int) -> dict:
    sys.path.insert(0, str(HERE.parent))
    from bench.configs import problem
    from bench.run import DTYPES, _median_time

    sys.path.insert(0, tree)  # this version's fastbp, ahead of the installed one
    import fastbp

    assert pathlib.Path(fastbp.__file__).resolve().is_relative_to(pathlib.Path(tree).resolve()), fastbp.__file__
    fastbp.config.PARALLEL_COMPILE_AFTER = 0.0  # as bench/run.py: the parallel twin where it pays, at once
    kw, x, y = problem(config, DTYPES[dtype_name])
    net = fastbp.MLP(**kw)
    g = np.empty_like(net.params)
    lr = net.dtype.type(1e-3)

    def step():
        net.loss_and_grad(x, y, out=g)
        net.params -= lr * g

    return {"time": _median_time(step, repeats)}


def _run(tree, config, dtype_name, repeats, threads):
    env = dict(os.environ)
    if threads:
        env["NUMBA_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, __file__, "--worker", tree, config, dtype_name, str(repeats)],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["time"]


def _cell(v):
    return f"{np.median(v) * 1e6:.1f} ({min(v) * 1e6:.1f}-{max(v) * 1e6:.1f}) µs"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", help="the commit to compare this working tree with")
    p.add_argument("--configs", nargs="+", default=["small", "medium"])
    p.add_argument("--dtypes", nargs="+", default=["float32"])
    p.add_argument("--processes", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        tree, config, dtype_name, repeats = a.worker
        print(json.dumps(worker(tree, config, dtype_name, int(repeats))))
        return 0
    if not a.base:
        p.error("--base is required")
    root = str(HERE.parent)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                           text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = os.path.join(tmp, "base")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", base_tree, a.base], cwd=root, check=True)
        try:
            trees = {"base": base_tree, "this": root}
            print(f"`python bench/ab.py {' '.join(sys.argv[1:])}`: base {a.base}, this tree {head}"
                  f"{' with uncommitted changes' if dirty else ''}; {a.processes} processes each, interleaved"
                  f"{f', NUMBA_NUM_THREADS={a.threads}' if a.threads else ''}.\n")
            print("| config | dtype | base | this tree | base / this tree |")
            print("|---|---|---|---|---|")
            for config in a.configs:
                for dt in a.dtypes:
                    for t in trees.values():  # compile or load into the cache: not counted
                        _run(t, config, dt, 3, a.threads)
                    res = {k: [] for k in trees}
                    for r in range(a.processes):
                        for k in (("base", "this") if r % 2 == 0 else ("this", "base")):
                            res[k].append(_run(trees[k], config, dt, a.repeats, a.threads))
                    ratios = sorted(b / t for b, t in zip(res["base"], res["this"], strict=True))
                    print(f"| {config} | {dt} | {_cell(res['base'])} | {_cell(res['this'])} "
                          f"| {np.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f}) |", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", base_tree], cwd=root, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
