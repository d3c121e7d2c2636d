"""``python -m fastbp``: the demo and a report of the machine and the build."""

from __future__ import annotations

import argparse
import platform
import sys
import time

import numpy as np


def _timed(fn, repeats: int = 20) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def gradient_demo(dtype=np.float32) -> int:
    """Build a network, take its gradient with each backend, print agreement and time."""
    import fastbp

    sizes = [64, 128, 128, 10]
    print(f"fastbp {fastbp.__version__}: gradient of {sizes} relu/relu/softmax + cross-entropy, batch 64, {np.dtype(dtype).name}")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], 64)
    nets = {b: fastbp.MLP(sizes, ["relu", "relu", "softmax"], "cross_entropy", dtype=dtype, seed=0, backend=b)
            for b in ("numpy", "cpu")}
    t = time.perf_counter()
    nets["cpu"].loss_and_grad(x, y)
    compile_s = time.perf_counter() - t
    ref_loss, ref_grad = nets["numpy"].loss_and_grad(x, y)
    scale = np.abs(ref_grad).max()
    t_ref = None
    for name, net in nets.items():
        g = np.empty(net.n_params, dtype)
        loss, grad = net.loss_and_grad(x, y, out=g)
        t_call = _timed(lambda net=net, g=g: net.loss_and_grad(x, y, out=g))
        t_ref = t_ref or t_call
        err = np.abs(grad - ref_grad).max() / scale
        print(f"  {name:>6}: loss {loss:.6f}  max |grad - numpy| / max|grad| = {err:.1e}  "
              f"time {t_call * 1e6:8.1f} us  ({t_ref / t_call:.1f}x numpy)")
    print(f"  first-call compile time of the cpu kernels: {compile_s:.2f} s (cached on disk after the first run)")
    return 0


def info() -> int:
    """Print versions, the threading layer and the CPU."""
    import numba

    import fastbp

    print(f"fastbp {fastbp.__version__}, numba {numba.__version__}, numpy {np.__version__}, python {platform.python_version()}")
    print(f"threads: {numba.get_num_threads()}, threading layer preference: {list(fastbp.config.THREADING_LAYER_PRIORITY)}")
    print(f"machine: {platform.machine()} {platform.processor() or ''}".rstrip())
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastbp", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="compute a gradient with each backend; print agreement and time")
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    sub.add_parser("info", help="versions, threads and machine")
    args = parser.parse_args(argv)
    if args.command == "info":
        return info()
    dtype = np.float64 if getattr(args, "dtype", "float32") == "float64" else np.float32
    return gradient_demo(dtype)


if __name__ == "__main__":
    sys.exit(main())
