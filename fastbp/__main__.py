"""``python -m fastbp``: the demo, the benchmark suite, and a report of the machine and the build."""

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
    print(f"fastbp {fastbp.__version__}: gradient of {sizes} relu/relu/softmax + cross-entropy, batch 64, "
          f"{np.dtype(dtype).name}")
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


def numpy_adam_training(sizes, acts, loss, params, x, y, epochs, batch_size, lr, seed,
                        beta1=0.9, beta2=0.999, eps=1e-8):
    """The same minibatch Adam training written with the NumPy reference (the baseline)."""
    from fastbp import reference

    params = params.copy()
    m = np.zeros_like(params)
    v = np.zeros_like(params)
    rng = np.random.default_rng(seed)
    t = 0
    for _ in range(epochs):
        perm = rng.permutation(x.shape[0])
        for s in range(0, x.shape[0], batch_size):
            idx = perm[s : s + batch_size]
            _, g = reference.loss_and_grad(params, sizes, acts, loss, x[idx], y[idx])
            t += 1
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            params -= (lr / (1 - beta1**t)) * m / (np.sqrt(v / (1 - beta2**t)) + eps)
    return params


def digits_demo(epochs: int = 30, dtype=np.float32) -> int:
    """Train [64, 128, 64, 10] on scikit-learn's digits; report accuracy and time against NumPy."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        print("the digits demo needs scikit-learn: pip install 'fastbp[demo]'", file=sys.stderr)
        return 1
    import fastbp

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    xtr, xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    sizes, acts = [64, 128, 64, 10], ["relu", "relu", "softmax"]
    print(f"fastbp {fastbp.__version__}: scikit-learn digits, {len(xtr)} train / {len(xte)} test, "
          f"{sizes} relu/relu/softmax, cross-entropy, Adam lr 1e-3, batch 32, {epochs} epochs, {np.dtype(dtype).name}")

    # Compile (or load from the cache) once on a throw-away model, with the shapes of the timed
    # run (batch 32, the whole test set), so that the timed run measures training only and the
    # process compiles one twin of each kernel.
    t = time.perf_counter()
    fastbp.MLP(sizes, acts, "cross_entropy", dtype=dtype, seed=1).fit(xtr[:64], ytr[:64], epochs=1, batch_size=32,
                                                                     verbose=False, validation_data=(xte, yte))
    compile_s = time.perf_counter() - t

    net = fastbp.MLP(sizes, acts, "cross_entropy", dtype=dtype, init="he", seed=0)
    p0 = net.params.copy()
    t = time.perf_counter()
    history = net.fit(xtr, ytr, epochs=epochs, batch_size=32, optimizer="adam", lr=1e-3, seed=0,
                      validation_data=(xte, yte), verbose=True)
    fit_s = time.perf_counter() - t
    test = net.evaluate(xte, yte)

    t = time.perf_counter()
    ref_params = numpy_adam_training(net.sizes, net.spec.activations, "cross_entropy", p0, xtr, ytr, epochs, 32,
                                     1e-3, 0)
    ref_s = time.perf_counter() - t
    ref_net = fastbp.MLP(sizes, acts, "cross_entropy", dtype=dtype, backend="numpy")
    ref_net.params[...] = ref_params

    ref_acc = ref_net.evaluate(xte, yte)["accuracy"]
    print(f"test accuracy: {test['accuracy']:.4f} (NumPy reference training: {ref_acc:.4f})")
    print(f"time per epoch: {np.median(history['time']) * 1e3:.2f} ms (median; fit {fit_s:.2f} s in all, "
          f"validation included)")
    print(f"compile time (first call, excluded above; a disk-cache load on later runs): {compile_s:.2f} s")
    print(f"NumPy reference, same training: {ref_s:.2f} s, {ref_s / fit_s:.1f}x the time of fastbp's fit")
    return 0


# -- python -m fastbp compile -------------------------------------------------------------------

#: What ``compile`` fills, per dtype: (task, label kind, sample weights); each task compiles the
#: specialisations that ``MLP`` runs for it (both twins of the step and of the forward pass).  The
#: kernels take labels, targets and weights in one form (one signature per dtype), so one label
#: kind compiles what every kind runs; the validation scans still differ by label kind.
_COMPILE_TASKS = [
    ("forward", None, False),
    ("loss_and_grad", "labels", False),
    ("loss_and_grad", "targets", True),
    ("train_epoch", "labels", False),
    ("evaluate", "targets", False),
    ("per-layer kernels", None, False),
]


def _compile_task(dtype_name: str, task: str, ykind: str | None, weights: bool) -> tuple[str, float]:
    """Compile (or load) the kernels of one task in this process; (description, seconds)."""
    t0 = time.perf_counter()
    import fastbp
    from fastbp import _validation
    from fastbp.cpu import _layers, network, train
    from fastbp.optim import Adam, hyper_vector

    dtype = np.dtype(dtype_name)
    sizes, N = [3, 5, 2], 4
    net = fastbp.MLP(sizes, ["tanh", "softmax"], "cross_entropy", dtype=dtype, seed=0)
    x = np.ones((N, sizes[0]), dtype)
    y = np.zeros(N, np.int64) if ykind == "labels" else np.full((N, sizes[-1]), 0.5, dtype)
    sw = np.ones(N, dtype) if weights else None
    args = (net.params, net.spec.sizes, net.spec.activations)
    work = np.empty(fastbp.workspace_size(sizes, N), dtype)
    grad = np.empty_like(net.params)
    _validation.all_finite(x)
    _validation.all_finite(net.params)
    if task == "forward":
        out = np.empty((N, sizes[-1]), dtype)
        for twin, _ in network.VARIANTS.values():
            twin(*args, x, out, work)
    elif task == "loss_and_grad":
        yk, lab, swk = net.backend_object.kernel_targets(y, sw)
        for _, twin in network.VARIANTS.values():
            twin(*args, net.spec.loss, x, yk, lab, grad, work, swk)
        (_validation.label_bounds if ykind == "labels" else _validation.value_bounds)(y)
    elif task == "train_epoch":
        net.fit(x, y, epochs=1, batch_size=N, verbose=False, sample_weight=sw)
        state = np.zeros(2 * net.n_params, dtype)
        yk, lab, sw = net.backend_object.kernel_targets(y, sw)
        xb, yb, lb, swb = np.empty_like(x), np.empty_like(yk), np.empty_like(lab), np.empty_like(sw)
        hp = hyper_vector(Adam(), 1e-3, 0.0)
        for run in train.EPOCH_VARIANTS.values():  # what fit runs, every variant
            run(*args, net.spec.loss, x, yk, lab, np.arange(N), N, 1, hp, state, 0, grad, work, xb, yb, lb,
                np.zeros(6), sw, swb, 0)
    elif task == "per-layer kernels":  # fastbp.cpu's public per-layer kernels, both twins each
        from fastbp import cpu

        W, b = net.weights[0], net.biases[0]
        z, a, d = (np.zeros((N, sizes[1]), dtype) for _ in range(3))
        dn = np.zeros((N, sizes[2]), dtype)
        cpu.linear_forward(W, b, x, 1, z, a)
        cpu.backprop_delta(net.weights[1], dn, z, 1, d)
        cpu.weight_grad(d, x, np.empty_like(W))
        cpu.bias_grad(d, np.empty_like(b))
        cpu.weight_bias_grad(d, x, np.empty_like(W), np.empty_like(b))
        cpu.output_delta(net.spec.loss, net.spec.activations[-1], dn, dn.copy(), np.zeros(N, np.int64), dn.copy())
    else:  # evaluate
        net.evaluate(x, y)
        zL = np.empty((N, sizes[-1]), dtype)
        yk, lab, swk = net.backend_object.kernel_targets(y)
        _layers.loss_body(net.spec.loss, zL, zL.copy(), yk, lab, swk)
    what = f"{dtype_name} {task}" + (f", {ykind}" if ykind else "") + (", sample_weight" if weights else "")
    return what, time.perf_counter() - t0


def _compile_dtype(dtype_name: str) -> list[tuple[str, float]]:
    """Every task of one dtype, in order, in this process (they share the compiled per-layer
    products: run concurrently, two tasks would compile the same ones twice)."""
    done = []
    for task in _COMPILE_TASKS:
        what, seconds = _compile_task(dtype_name, *task)
        print(f"  {what}: {seconds:.1f} s", flush=True)
        done.append((what, seconds))
    return done


def compile_cache(dtypes: list[str], backends: list[str], jobs: int) -> int:
    """Fill the kernel cache ahead of time (container images, cluster nodes); print what and how long.

    One process per dtype (at most ``jobs`` at once) runs that dtype's tasks in order.
    """
    from concurrent.futures import ProcessPoolExecutor

    from fastbp import _cache

    if "cuda" in backends:
        print("cuda: the CUDA kernels are generated per network shape and compiled by the driver at first "
              "use; they are not in Numba's disk cache, so there is nothing to compile ahead of time")
    if "cpu" not in backends:
        return 0
    jobs = max(1, min(jobs, len(dtypes)))
    print(f"compiling the cpu kernels for {', '.join(dtypes)} into {_cache.cache_dir()} "
          f"({len(_COMPILE_TASKS)} tasks per dtype, {jobs} processes)", flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(_compile_dtype, dtypes))
    for dtype_name, done in zip(dtypes, results, strict=True):
        print(f"{dtype_name}: {sum(sec for _, sec in done):.1f} s")
    size, files = _cache_size(_cache.cache_dir())
    print(f"done in {time.perf_counter() - t0:.1f} s; the cache holds {files} files, {size / 2**20:.1f} MiB")
    return 0


def _cache_size(path: str) -> tuple[int, int]:
    import os

    size = files = 0
    for root, _, names in os.walk(path):
        for name in names:
            size += os.path.getsize(os.path.join(root, name))
            files += 1
    return size, files


def info() -> int:
    """Print versions, the threading layer, the CPU, the kernel cache, whether the cuda backend can
    run, and the MPI library that ``fit(comm=...)`` would use."""
    import numba

    import fastbp
    from fastbp import _cache

    print(f"fastbp {fastbp.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
          f"python {platform.python_version()}")
    print(f"threads: {numba.get_num_threads()}, threading layer preference: "
          f"{list(fastbp.config.THREADING_LAYER_PRIORITY)}")
    print(f"machine: {platform.machine()} {platform.processor() or ''}".rstrip())
    size, files = _cache_size(_cache.cache_dir())
    print(f"kernel cache: {_cache.cache_dir()} ({files} files, {size / 2**20:.1f} MiB; keyed by the package "
          f"hash {_cache.package_hash()}; fill it with 'python -m fastbp compile')")
    from fastbp.cuda import unavailable_reason

    why = unavailable_reason()
    if why is None:
        from numba import cuda

        dev = cuda.get_current_device()
        print(f"cuda backend: available on {getattr(dev, 'name', 'the CUDA simulator')}")
    else:
        print(f"cuda backend: unavailable: {why}")
    from fastbp.distributed import mpi_info

    print(f"mpi (fit(comm=...)): {mpi_info()}")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        from fastbp.benchmark.suite import main as bench

        return bench(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m fastbp", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("bench", help="the benchmark suite: a training step against NumPy, PyTorch and JAX "
                                 "(python -m fastbp bench --help)")
    demo = sub.add_parser("demo", help="train on scikit-learn's digits; accuracy and time against NumPy")
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    grad = sub.add_parser("gradient", help="compute a gradient with each backend; print agreement and time")
    grad.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    sub.add_parser("info", help="versions, threads, machine and where the kernel cache is")
    comp = sub.add_parser("compile", help="fill the kernel cache ahead of time (container images, cluster nodes)")
    comp.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], default=["float32", "float64"])
    comp.add_argument("--backends", nargs="+", choices=["cpu", "cuda"], default=["cpu"])
    comp.add_argument("--jobs", type=int, default=None, help="processes compiling at once (default: CPUs)")
    args = parser.parse_args(argv)
    if args.command == "info":
        return info()
    if args.command == "compile":
        import os

        return compile_cache(args.dtypes, args.backends, max(1, args.jobs or os.cpu_count() or 1))
    dtype = np.float64 if getattr(args, "dtype", "float32") == "float64" else np.float32
    if args.command == "gradient":
        return gradient_demo(dtype)
    return digits_demo(getattr(args, "epochs", 30), dtype)


if __name__ == "__main__":
    sys.exit(main())
