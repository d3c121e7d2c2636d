"""Python-side overhead of ``MLP.loss_and_grad(x, y, out=g)`` over the bare compiled kernel.

    python bench/experiments/overhead.py

Times, float32, medians of 7 x 3000 calls in one process (compile excluded): the kernel
``fastbp.cpu.loss_and_grad`` on already-checked arrays, the same step through the model, and
the model's three input checks on their own.  Then what ``evaluate`` costs against ``predict``
and ``loss_and_grad`` on a validation-sized set (1000 samples, each contender's median): the
forward pass and the loss, no backward pass.
"""

from __future__ import annotations

import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

import fastbp  # noqa: E402
from fastbp import cpu  # noqa: E402
from fastbp.benchmark.configs import problem  # noqa: E402

fastbp.config.PARALLEL_COMPILE_AFTER = 0.0  # steady state: parallel twins where they pay, from the warm-up on


def _median_us(f, n=3000, repeats=7) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        times.append((time.perf_counter() - t0) / n)
    return float(np.median(times)) * 1e6


def main() -> int:
    for cfg in ("tiny", "small"):
        kw, x, y = problem(cfg, np.float32)
        net = fastbp.MLP(**kw)
        g = np.empty_like(net.params)
        work = np.empty(net.spec.workspace_size(x.shape[0]), net.dtype)
        b = net._backend  # the boundary checks MLP runs, timed one by one
        ya = b.check_y(y, x.shape[0])
        args = (net.params, net.spec.sizes, net.spec.activations, net.spec.loss, x, ya, g, work)
        cpu.loss_and_grad(*args)
        net.loss_and_grad(x, y, out=g)
        tk = _median_us(lambda: cpu.loss_and_grad(*args))  # noqa: B023
        tm = _median_us(lambda: net.loss_and_grad(x, y, out=g))  # noqa: B023
        tcx = _median_us(lambda: b.check_x(x))  # noqa: B023
        tcy = _median_us(lambda: b.check_y(y, x.shape[0]))  # noqa: B023
        tco = _median_us(lambda: b.check_out(g, net.params))  # noqa: B023
        print(f"{cfg}: kernel {tk:.1f} µs, through MLP {tm:.1f} µs, overhead {tm - tk:.1f} µs "
              f"(check_x {tcx:.1f}, check_y {tcy:.1f}, check_out {tco:.1f})")
    print()
    print("| config, 1000 samples | predict | evaluate | loss_and_grad | evaluate / predict |")
    print("|---|---|---|---|---|")
    for cfg in ("tiny", "small", "medium"):
        kw, _, _ = problem(cfg, np.float32)
        net = fastbp.MLP(**kw)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1000, net.sizes[0])).astype(np.float32)
        y = rng.integers(0, net.sizes[-1], 1000) if net.loss == "cross_entropy" else (
            rng.standard_normal((1000, net.sizes[-1])).astype(np.float32))
        g = np.empty_like(net.params)
        n = 200 if cfg != "medium" else 30
        tp = _median_us(lambda: net.predict(x), n)  # noqa: B023
        te = _median_us(lambda: net.evaluate(x, y), n)  # noqa: B023
        tg = _median_us(lambda: net.loss_and_grad(x, y, out=g), n)  # noqa: B023
        print(f"| {cfg} | {tp:.0f} µs | {te:.0f} µs | {tg:.0f} µs | {te / tp:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
