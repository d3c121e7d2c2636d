"""One thread or two: the training step with the caller's update, with and without the race of
:class:`fastbp._tiers.Race`, and what moving data between the cores costs in the same process.

    python bench/race.py [--configs medium "w784-300-100-10 b100"] [--processes 8] [--seconds 2]

Each process (the settings interleaved, ``--processes`` of each) first times a 1 MB float32
vector that the main thread modifies and both threads then read (a parallel region of Numba's
pool, minus the same read with nothing modified: the cost of moving the vector to the other
core), then runs ``net.loss_and_grad(x, y, out=g); net.params -= lr * g`` for ``--seconds`` in
windows of 0.25 s.  It reports the median window and the slowest one, and where the race ended
(every thread, or one).  A table per configuration: for each setting, the median over the
processes of the median window with min-max, and the same for the slowest window.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _move_cost_us() -> float:
    from numba import njit, prange

    @njit(parallel=True, fastmath=True)
    def both_read(a, out):
        for t in prange(2):
            s = 0.0
            for i in range(a.shape[0]):
                s += a[i]
            out[t] = s

    a = np.ones(1 << 18, np.float32)
    out = np.zeros(2)
    one = np.float32(1.0)

    def period(f, n=300):
        f()
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        return (time.perf_counter() - t0) / n

    read = period(lambda: both_read(a, out))
    write = period(lambda: a.__imul__(one))
    both = period(lambda: (a.__imul__(one), both_read(a, out)))
    return (both - write - read) * 1e6


def child(config: str, race: bool, seconds: float) -> dict:
    import fastbp
    from bench.configs import problem

    fastbp.config.PARALLEL_COMPILE_AFTER = 0.0
    fastbp.config.TWIN_RACE = race
    move = _move_cost_us()
    kw, x, y = problem(config, np.float32)
    net = fastbp.MLP(**kw)
    g = np.empty_like(net.params)
    lr = np.float32(1e-3)

    def step():
        net.loss_and_grad(x, y, out=g)
        net.params -= lr * g

    for _ in range(20):
        step()
    windows = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < 0.25:
            step()
            n += 1
        windows.append((time.perf_counter() - t0) / n * 1e6)
    from fastbp._tiers import RACE

    table = getattr(RACE._local, "table", {})
    ended = "-" if not table else ("two" if all(s.parallel for s in table.values()) else "one")
    return {"move": move, "median": float(np.median(windows)), "worst": float(np.max(windows)), "ended": ended}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["medium", "w784-300-100-10 b100"])
    ap.add_argument("--processes", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1] == "on", float(a.child[2]))))
        return
    for config in a.configs:
        rows = {"on": [], "off": []}
        for _ in range(a.processes):
            for setting in ("off", "on"):
                out = subprocess.run([sys.executable, __file__, "--child", config, setting, str(a.seconds)],
                                     check=True, capture_output=True, text=True).stdout
                r = json.loads(out.strip().splitlines()[-1])
                rows[setting].append(r)
                print(f"  {config} race {setting}: move 1 MB {r['move']:.0f} us, step median {r['median']:.0f} us, "
                      f"slowest window {r['worst']:.0f} us, ended on {r['ended']}", file=sys.stderr)
        print(f"\n{config}, float32, {a.processes} processes per setting, {a.seconds} s each:\n")
        print("| race | step, median window (µs) | step, slowest window (µs) | processes ending on one thread |")
        print("|---|---|---|---|")
        for setting in ("off", "on"):
            med = [r["median"] for r in rows[setting]]
            worst = [r["worst"] for r in rows[setting]]
            one = sum(r["ended"] == "one" for r in rows[setting])
            print(f"| {setting} | {np.median(med):.0f} ({min(med):.0f}-{max(med):.0f}) | "
                  f"{np.median(worst):.0f} ({min(worst):.0f}-{max(worst):.0f}) | {one} of {len(med)} |")
        moves = [r["move"] for s in rows.values() for r in s]
        print(f"\n1 MB moved between the cores: median {np.median(moves):.0f} µs ({min(moves):.0f}-{max(moves):.0f}).")


if __name__ == "__main__":
    main()
