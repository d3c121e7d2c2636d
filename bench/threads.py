"""Throughput of concurrent calls on one model: requests per second from 1, 2 and 8 Python threads.

    python bench/threads.py [--processes 3] [--seconds 1.0] [--batches 1 4 16] [--call predict]

The serving case: one ``medium`` model ([784, 256, 128, 10], float32), every thread calling
``net.predict(x)`` (or ``net.loss_and_grad(x, y)``) on its own small batch for a fixed time.
Each process warms up (compile excluded), then measures every thread count in turn, twice, in
the order 1, 2, 8, 8, 2, 1 so that drift of the machine cancels; a figure is the better of its
two windows.  Reported: medians over the processes of requests per second, with min-max, and
of the ratio to one thread.  Correctness of concurrent calls is tested in tests/test_threads.py.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import threading
import time

import numpy as np

from fastbp.benchmark import in_fresh_process

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

THREADS = (1, 2, 8)


def _measure(net, x, y, call: str, n_threads: int, seconds: float) -> float:
    counts = [0] * n_threads
    stop = threading.Event()
    barrier = threading.Barrier(n_threads + 1)

    def worker(i):
        xi = x[i]
        yi = y[i]
        barrier.wait()
        c = 0
        if call == "predict":
            while not stop.is_set():
                net.predict(xi)
                c += 1
        else:
            g = np.empty_like(net.params)
            while not stop.is_set():
                net.loss_and_grad(xi, yi, out=g)
                c += 1
        counts[i] = c

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def child(batch: int, call: str, seconds: float) -> dict:
    import fastbp

    fastbp.config.PARALLEL_COMPILE_AFTER = 0.0  # steady state: parallel twins where they pay, from the warm-up on
    from fastbp.benchmark.configs import CONFIGS

    sizes, _, acts, loss = CONFIGS["medium"]
    net = fastbp.MLP(sizes, acts, loss, dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    x = [rng.standard_normal((batch, sizes[0])).astype(np.float32) for _ in range(max(THREADS))]
    y = [rng.integers(0, sizes[-1], batch) for _ in range(max(THREADS))]
    for i in range(max(THREADS)):  # compile and fill each thread's caches
        net.predict(x[i])
        net.loss_and_grad(x[i], y[i])
    _measure(net, x, y, call, 2, 0.2)
    best = {t: 0.0 for t in THREADS}
    for t in THREADS + THREADS[::-1]:
        best[t] = max(best[t], _measure(net, x, y, call, t, seconds))
    return {str(t): v for t, v in best.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--call", choices=["predict", "loss_and_grad"], default="predict")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.call, args.seconds)))
        return 0

    import numba

    print(f"medium [784, 256, 128, 10] float32, {args.call}, {args.processes} processes x "
          f"{args.seconds:g} s windows, NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS}")
    print()
    head = " | ".join(f"{t} thread{'s' if t > 1 else ''} (req/s)" for t in THREADS)
    print(f"| batch | {head} | 2 threads / 1 | 8 threads / 1 |")
    print("|---|" + "---|" * (len(THREADS) + 2))
    for batch in args.batches:
        runs = []
        for _ in range(args.processes):
            out = in_fresh_process(
                [sys.executable, __file__, "--child", str(batch), "--call", args.call, "--seconds", str(args.seconds)])
            runs.append({int(k): v for k, v in out.items()})

        def fmt(values, digits=0):
            v = np.array(values)
            return f"{np.median(v):.{digits}f} ({v.min():.{digits}f}-{v.max():.{digits}f})"

        cells = [fmt([r[t] for r in runs]) for t in THREADS]
        ratios = [fmt([r[t] / r[1] for r in runs], 2) for t in (2, 8)]
        print(f"| {batch} | " + " | ".join(cells + ratios) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
