"""Data-parallel training over MPI: time per step for 1 and 2 ranks, and the reduction's share.

    python bench/scaling.py [--configs medium large digits] [--dtype float32] [--steps 12]
                            [--rounds 3] [--ranks 2]

Contenders, each in its own processes, interleaved over ``--rounds`` rounds (medians, with
min-max):

- ``1 rank x 1 thread``: ``fit`` in one process, ``NUMBA_NUM_THREADS=1`` (the compiled loop);
- ``1 rank x all threads``: the same with every core;
- ``comm, 1 rank``: ``fit(comm=MPI.COMM_WORLD)`` under ``mpiexec -n 1`` (the Python step loop
  around ``Allreduce``, on one rank: its overhead against the compiled loop);
- ``K ranks x 1 thread``: ``mpiexec -n K``, one thread per rank, the global minibatch of the
  configuration split over the ranks.

A step's time is an epoch's time (``history["time"]``, rank 0's) over its steps, the best of the
timed epochs after one warm-up epoch (compilation and cache loads excluded).  Under MPI each rank
also times ``Allreduce`` of the step's buffer (θ's size + 4 entries, in place) alone, 30 times:
its median is the reduction's time per step.  The model for more ranks: a ring ``Allreduce``
moves 2 (K−1)/K · P · bytes per rank and step, so T(K) ≈ T_compute(1)/K + α log2 K +
2 (K−1)/K · P · bytes / β, with β from the measured reduction (shared memory here) and from an
assumed 100 Gb/s network.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fastbp.benchmark.configs import CONFIGS  # noqa: E402

#: The digits demo's network and batch (python -m fastbp demo).
EXTRA = {"digits": ([64, 128, 10], 32, ["relu", "softmax"], "cross_entropy")}


def _config(name):
    return EXTRA[name] if name in EXTRA else CONFIGS[name]


def worker(name: str, dtype: str, steps: int, use_comm: bool) -> dict:
    import fastbp

    fastbp.config.PARALLEL_COMPILE_AFTER = 0.0  # the parallel twin where it pays, from the warm-up on
    sizes, batch, acts, loss = _config(name)
    comm = None
    rank, size = 0, 1
    if use_comm:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        rank, size = comm.Get_rank(), comm.Get_size()
    rng = np.random.default_rng(0)
    n = steps * batch
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n) if loss == "cross_entropy" else rng.standard_normal((n, sizes[-1])).astype(
        dtype)
    lo, hi = n * rank // size, n * (rank + 1) // size
    net = fastbp.MLP(sizes, acts, loss, dtype=np.dtype(dtype), seed=0)
    kw = dict(batch_size=batch, optimizer="adam", lr=1e-4, verbose=False, seed=0)
    if comm is not None:
        kw["comm"] = comm
    net.fit(x[lo:hi], y[lo:hi], epochs=1, **kw)  # warm-up: compiles or loads, first touches
    h = net.fit(x[lo:hi], y[lo:hi], epochs=3, **kw)
    out = {"step_s": min(h["time"]) / steps, "n_params": net.n_params}
    if comm is not None:
        buf = np.zeros(net.n_params + 4, dtype=np.dtype(dtype))
        times = []
        for _ in range(30):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf)
            times.append(time.perf_counter() - t0)
        out["allreduce_s"] = statistics.median(times)
        out["ranks"] = size
    if rank == 0:
        print("RESULT " + json.dumps(out), flush=True)
    return out


def _run(cmd, env) -> dict:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, cwd=HERE.parent)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{cmd}: no result\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _mpiexec():
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["digits", "medium", "large"])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--steps", type=int, default=12, help="minibatch steps per epoch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--worker", nargs=2, metavar=("CONFIG", "COMM"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], args.dtype, args.steps, args.worker[1] == "comm")
        return 0
    mpiexec = _mpiexec()
    if mpiexec is None:
        print("no mpiexec: install the mpi extra (pip install 'fastbp[mpi]')")
        return 1
    cores = os.cpu_count() or 1
    py = [sys.executable, str(pathlib.Path(__file__).resolve())]
    base = dict(os.environ)
    contenders = {
        "1 rank x 1 thread": (py, {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}, "plain"),
        f"1 rank x {cores} threads": (py, {}, "plain"),
        "comm, 1 rank x 1 thread": ([mpiexec, "-n", "1", *py], {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
                                    "comm"),
        f"{args.ranks} ranks x 1 thread": ([mpiexec, "-n", str(args.ranks), *py],
                                           {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}, "comm"),
    }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE.parent).stdout.strip()
    print(f"# bench/scaling.py {' '.join(argv or sys.argv[1:])}")
    print(f"commit {commit}, {platform.machine()}, {cores} cores, {time.strftime('%Y-%m-%d')}, {args.dtype}, "
          f"{args.steps} steps an epoch, {args.rounds} rounds\n")
    for name in args.configs:
        sizes, batch, _, _ = _config(name)
        results = {k: [] for k in contenders}
        for _ in range(args.rounds):
            for label, (cmd, extra, mode) in contenders.items():
                env = dict(base, **extra)
                results[label].append(_run([*cmd, "--dtype", args.dtype, "--steps", str(args.steps), "--worker",
                                            name, mode], env))
        one = statistics.median(r["step_s"] for r in results["1 rank x 1 thread"])
        P = results["1 rank x 1 thread"][0]["n_params"]
        print(f"## {name}: {sizes}, batch {batch}, {P:,} parameters\n")
        print("| contender | ms per step (median, min-max) | speed-up over 1 rank x 1 thread | Allreduce per step |")
        print("|---|---|---|---|")
        for label, rs in results.items():
            t = [r["step_s"] * 1e3 for r in rs]
            med = statistics.median(t)
            red = ""
            if "allreduce_s" in rs[0]:
                a = statistics.median(r["allreduce_s"] for r in rs) * 1e3
                red = f"{a:.3f} ms ({100 * a / med:.0f}% of the step)"
            print(f"| {label} | {med:.2f} ({min(t):.2f}-{max(t):.2f}) | {one * 1e3 / med:.2f}x | {red} |")
        k = args.ranks
        red_k = statistics.median(r["allreduce_s"] for r in results[f"{k} ranks x 1 thread"])
        nbytes = P * np.dtype(args.dtype).itemsize
        beta_here = 2 * (k - 1) / k * nbytes / red_k
        print(f"\nModel: {2 * (k - 1) / k * nbytes / 1e6:.1f} MB moved per rank and step at {k} ranks; measured "
              f"β = {beta_here / 1e9:.1f} GB/s (shared memory).")
        for K in (8, 64):
            vol = 2 * (K - 1) / K * nbytes
            for beta, what in ((beta_here, "this β"), (12.5e9, "100 Gb/s network")):
                t_red = 2e-6 * np.log2(K) + vol / beta
                t = one / K + t_red
                print(f"- {K} ranks, {what}: predicted {t * 1e3:.2f} ms per step ({one / t:.1f}x, "
                      f"reduction {100 * t_red / t:.0f}% of the step)")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
