"""Benchmark runner: the training step, fastbp vs the NumPy reference (and PyTorch eager on the
CPU, where PyTorch is installed), on the named configurations, a sweep of the sizes users pick,
or any network.

Each contender runs in its own processes (Numba's and OpenBLAS's thread pools spin against each
other in one), ``--processes`` of them, interleaved round by round so that the machine's drift
hits every contender alike; a process reports the median over ``--repeats`` after a warm-up
call.  A cell is the median over the processes with their min-max; a speed-up is the median of
the per-round ratios with their min-max.  The first call (compilation, or the cache load when
the cache is warm) is timed separately in a fresh process.  The machine's peak is measured in
the same run as a large float32/float64 matrix product through NumPy.  Prints a Markdown table
headed by the command, the commit, the machine and the date; ``--write`` appends it to
bench/RESULTS.md.

    python bench/run.py [--configs tiny small medium large] [--dtypes float32 float64]
                        [--processes 3] [--repeats 30] [--contenders numpy fastbp njit torch]
                        [--write] [--chart PNG]
    python bench/run.py --sweep            # bench.configs.SWEEP: odd widths, batches 1-1024
    python bench/run.py --configs 50-100-10:16:relu,softmax:cross_entropy   # any network
    python bench/run.py --chart-from TABLE.md --chart bench/speedup.png
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.configs import CONFIGS, SWEEP, problem, spec_of, step_flops  # noqa: E402

DTYPES = {"float32": np.float32, "float64": np.float64}


def _median_time(fn, repeats: int, min_time: float = 0.2) -> float:
    fn()
    t0 = time.perf_counter()
    fn()
    one = time.perf_counter() - t0
    inner = max(1, int(min_time / max(one, 1e-7) / repeats))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t) / inner)
    return float(np.median(times))


def contender(kind: str, config: str, dtype_name: str, repeats: int) -> dict:
    import fastbp

    fastbp.config.PARALLEL_COMPILE_AFTER = 0.0  # steady state: parallel twins where they pay, from the warm-up on

    dtype = DTYPES[dtype_name]
    if kind == "peak":
        n = 2048
        a = np.random.default_rng(0).standard_normal((n, n)).astype(dtype)
        t = _median_time(lambda: a @ a, max(3, repeats // 5))
        return {"flops": 2.0 * n**3 / t}
    kw, x, y = problem(config, dtype)
    if kind in ("numpy", "torch"):
        # the model on the reference backend: the cpu one would launch Numba's thread pool, whose
        # threads then compete with OpenBLAS's (the reference's medium step measured 2.5 ms with
        # it launched, 1.0-2.1 ms without)
        kw = dict(kw, backend="numpy")
    net = fastbp.MLP(**kw)
    lr = dtype(1e-3)
    if kind == "compile":
        t = time.perf_counter()
        net.loss_and_grad(x, y)
        return {"time": time.perf_counter() - t}
    if kind == "lean":
        return {"time": _median_time(lean_numpy_step(kw, x, y), repeats)}
    if kind == "numpy":
        ref = fastbp.reference

        def step():
            _, g = ref.loss_and_grad(net.params, net.sizes, net.spec.activations, net.spec.loss, x, y)
            net.params -= lr * g

        return {"time": _median_time(step, repeats)}
    if kind == "fastbp":
        g = np.empty_like(net.params)

        def step():
            net.loss_and_grad(x, y, out=g)
            net.params -= lr * g

        return {"time": _median_time(step, repeats)}
    if kind == "njit":
        from numba import njit

        from fastbp import cpu
        from fastbp.cpu.optim import sgd_step

        @njit
        def loop(params, sizes, acts, loss, x, y, grad, work, velocity, steps):
            for _ in range(steps):
                cpu.loss_and_grad(params, sizes, acts, loss, x, y, grad, work)
                sgd_step(params, grad, velocity, 1e-3, 0.0, False, 0.0)

        g = np.empty_like(net.params)
        work = np.empty(fastbp.workspace_size(net.sizes, x.shape[0]), dtype)
        vel = np.zeros_like(net.params)
        spec = net.spec
        # steps per timed call: about 20 ms of them, at most 100 (a fixed 100 took 3.5 s per call,
        # some 2 minutes per process, at 900-900-900 in float64)
        loop(net.params, spec.sizes, spec.activations, spec.loss, x, y, g, work, vel, 1)  # compile
        t = time.perf_counter()
        loop(net.params, spec.sizes, spec.activations, spec.loss, x, y, g, work, vel, 1)
        steps = int(min(100, max(1, 0.02 / max(time.perf_counter() - t, 1e-9))))
        t = _median_time(lambda: loop(net.params, spec.sizes, spec.activations, spec.loss, x, y, g, work, vel,
                                      steps), repeats)
        return {"time": t / steps}
    if kind == "torch":
        try:
            import torch
        except ImportError:
            return {"time": None}
        torch.manual_seed(0)
        tdt = torch.float32 if dtype_name == "float32" else torch.float64
        layers = []
        sizes, acts = kw["sizes"], kw["activations"]
        bce = kw["loss"] == "binary_cross_entropy"  # as PyTorch users write it: logits into the fused loss
        for i in range(len(sizes) - 1):
            layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]).to(tdt))
            act = {"sigmoid": torch.nn.Sigmoid, "tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}.get(acts[i])
            if act is not None and not (bce and i == len(sizes) - 2):  # the sigmoid is in the loss
                layers.append(act())
        model = torch.nn.Sequential(*layers)
        tx = torch.from_numpy(x)
        ty = torch.from_numpy(y)
        ce = kw["loss"] == "cross_entropy"  # softmax is folded into cross_entropy: the model ends at the logits

        def step():
            model.zero_grad(set_to_none=True)
            out = model(tx)
            if ce:
                c = torch.nn.functional.cross_entropy(out, ty)
            elif bce:
                c = torch.nn.functional.binary_cross_entropy_with_logits(out, ty, reduction="sum") / tx.shape[0]
            else:
                c = 0.5 * ((out - ty) ** 2).sum() / tx.shape[0]
            c.backward()
            with torch.no_grad():
                for p in model.parameters():
                    p -= 1e-3 * p.grad

        return {"time": _median_time(step, repeats), "version": torch.__version__}
    raise ValueError(kind)


def lean_numpy_step(kw, x, y):
    """One SGD step of the network as a user writes it in NumPy: ``z = a @ W.T + b``, the
    activation, ``(d @ W) * σ'``, ``d.T @ a``, every buffer preallocated and written in place."""
    sizes, acts, loss = kw["sizes"], kw["activations"], kw["loss"]
    dtype = np.dtype(kw["dtype"])
    rng = np.random.default_rng(0)
    L = len(sizes) - 1
    W = [(rng.standard_normal((sizes[i + 1], sizes[i])) / np.sqrt(sizes[i])).astype(dtype) for i in range(L)]
    b = [np.zeros(sizes[i + 1], dtype) for i in range(L)]
    n = x.shape[0]
    Z = [np.empty((n, sizes[i + 1]), dtype) for i in range(L)]
    gW = [np.empty_like(w) for w in W]
    D = [np.empty((n, sizes[i + 1]), dtype) for i in range(L)]
    lr = dtype.type(1e-3)
    inv_n = dtype.type(1.0 / n)
    rows = np.arange(n)
    for a in acts:
        if a not in ("identity", "relu", "tanh", "sigmoid", "softmax"):
            raise ValueError(f"the lean NumPy step has no {a}")

    def step():
        a = x
        for i in range(L):
            z = Z[i]
            np.matmul(a, W[i].T, out=z)
            z += b[i]
            act = acts[i]
            if act == "relu":
                np.maximum(z, 0, out=z)
            elif act == "tanh":
                np.tanh(z, out=z)
            elif act == "sigmoid":
                np.negative(z, out=z)
                np.exp(z, out=z)
                z += 1
                np.reciprocal(z, out=z)
            elif act == "softmax":
                z -= z.max(axis=1, keepdims=True)
                np.exp(z, out=z)
                z /= z.sum(axis=1, keepdims=True)
            a = z
        d = D[L - 1]
        if loss == "cross_entropy":  # softmax output: δ = (a - onehot(y)) / N
            np.copyto(d, a)
            d[rows, y] -= 1
            d *= inv_n
        else:  # mse: δ = (a - y) σ'(z) / N
            np.subtract(a, y, out=d)
            d *= inv_n
            _times_derivative(acts[L - 1], d, a)
        for i in range(L - 1, -1, -1):
            a_prev = x if i == 0 else Z[i - 1]
            np.matmul(d.T, a_prev, out=gW[i])
            gb = d.sum(axis=0)
            if i > 0:
                np.matmul(d, W[i], out=D[i - 1])
                _times_derivative(acts[i - 1], D[i - 1], a_prev)
            W[i] -= lr * gW[i]
            b[i] -= lr * gb
            d = D[i - 1] if i > 0 else d

    return step


def _times_derivative(act, d, a):
    # d *= σ'(z), from a = σ(z)
    if act == "relu":
        d *= a > 0
    elif act == "tanh":
        d *= 1 - a * a
    elif act == "sigmoid":
        d *= a * (1 - a)


def _spawn(kind, config, dtype_name, repeats) -> dict:
    env = dict(os.environ)
    out = subprocess.run([sys.executable, __file__, "--contender", kind, config, dtype_name, str(repeats)],
                         check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in subprocess.run(
            ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name"))
    except (StopIteration, FileNotFoundError):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def chart(table: str, path) -> bool:
    """Bar chart of the float32 speed-ups over the lean NumPy step, per configuration, from the
    Markdown table this runner prints.  Returns False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 9 or cells[1] != "float32":
            continue
        ref = float(cells[2].split()[0])
        vals = []
        for c in (cells[3], cells[5], cells[7]):
            vals.append(ref / float(c.split()[0]) if c and c[0].isdigit() else 0.0)
        rows.append((cells[0].split()[0], vals))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.26
    labels = ["fastbp MLP.loss_and_grad(out=)", "fastbp in a user @njit loop", "PyTorch eager (CPU)"]
    for i, label in enumerate(labels):
        ax.bar([r + (i - 1) * width for r in range(len(rows))], [v[i] for _, v in rows], width, label=label)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)), [name for name, _ in rows])
    ax.set_ylabel("lean NumPy time / its time (medians)")
    isa = next((line.split("instruction set: ")[1].split(";")[0] for line in table.splitlines()
                if "instruction set: " in line), "")
    ax.set_title(f"Training step, float32, 2 cores, {isa} (higher is better)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def _isa() -> str:
    """The instruction set fastbp compiles for here (``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` apply)."""
    import fastbp

    vb = fastbp.config.VECTOR_BYTES
    return {64: "AVX-512", 32: "AVX2"}.get(vb, "SSE") + f" ({vb * 8}-bit vectors)"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=HERE).stdout.strip()
        return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except FileNotFoundError:
        return "unknown"


def _cell(values) -> str:
    v = [x * 1e6 for x in values]
    return f"{np.median(v):.1f} ({min(v):.1f}-{max(v):.1f}) µs"


def _ratio(num, den) -> str:
    r = [a / b for a, b in zip(num, den, strict=True)]
    return f"{np.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contender", nargs=4, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--processes", type=int, default=3, help="processes per contender and cell, interleaved")
    ap.add_argument("--configs", nargs="+", default=None,
                    help="named configurations, sweep names, or widths:batch:activations:loss")
    ap.add_argument("--sweep", action="store_true", help="the configurations of bench.configs.SWEEP")
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES))
    ap.add_argument("--contenders", nargs="+", default=["lean", "numpy", "fastbp", "njit", "torch"],
                    choices=["lean", "numpy", "fastbp", "njit", "torch"])
    ap.add_argument("--write", action="store_true", help="append the table to bench/RESULTS.md")
    ap.add_argument("--chart", metavar="PNG", help="also draw the float32 speed-ups (needs matplotlib)")
    ap.add_argument("--chart-from", metavar="TABLE", help="only draw the chart, from a table this runner printed")
    args = ap.parse_args()
    if args.chart_from:
        return 0 if chart(pathlib.Path(args.chart_from).read_text(), args.chart or HERE / "speedup.png") else 1
    if args.contender:
        kind, config, dtype_name, repeats = args.contender
        print(json.dumps(contender(kind, config, dtype_name, int(repeats))))
        return 0
    configs = args.configs or (list(SWEEP) if args.sweep else list(CONFIGS))
    for c in configs:
        spec_of(c)  # a bad name fails before anything runs
    kinds = [k for k in ("lean", "numpy", "fastbp", "njit", "torch") if k in args.contenders]
    command = "python bench/run.py " + " ".join(sys.argv[1:])
    lines = [
        f"Command: `{command.strip()}`; commit {_commit()}; machine: {machine()}; "
        f"instruction set: {_isa()}; date: {datetime.date.today().isoformat()}.",
        "",
        f"Training step = `loss_and_grad` + SGD update. Each contender in its own processes, {args.processes} "
        "per cell, interleaved; a time is the median over the processes (min-max) of each one's median; a "
        "speed-up is the other contender's time / fastbp's (higher is better), the median of the per-round "
        "ratios (min-max). Lean NumPy = `bench.run.lean_numpy_step` (what a user writes, in place); "
        "NumPy ref = `fastbp.reference` (the oracle, written for clarity); peak = NumPy matmul 2048² in the "
        "same run; first call = load (warm cache) or compile.",
        "",
        "| config | dtype | lean NumPy | fastbp `MLP.loss_and_grad(out=)` | vs lean NumPy | user `@njit` loop "
        "| `@njit` vs lean NumPy | PyTorch eager | fastbp vs PyTorch | vs NumPy ref | fastbp % of peak "
        "| first call |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    for dtype_name in args.dtypes:
        peak = _spawn("peak", "tiny", dtype_name, args.repeats)["flops"]
        for config in configs:
            sizes, batch = spec_of(config)[:2]
            big = step_flops(config) > 5e9
            reps = max(5, args.repeats // 6) if big else args.repeats
            runs = {k: [] for k in kinds}
            for _ in range(args.processes):
                for k in kinds:
                    if k == "njit" and big:
                        continue
                    runs[k].append(_spawn(k, config, dtype_name, reps)["time"])
            first = _spawn("compile", config, dtype_name, 1)["time"]
            ref, fb, lean = runs.get("numpy", []), runs.get("fastbp", []), runs.get("lean", [])
            nj, tt = runs.get("njit", []), [t for t in runs.get("torch", []) if t is not None]
            pct = f"{100 * step_flops(config) / np.median(fb) / peak:.0f}%" if fb else "–"
            cells = [
                _cell(lean) if lean else "–",
                _cell(fb) if fb else "–",
                _ratio(lean, fb) if lean and fb else "–",
                _cell(nj) if nj else "–",
                _ratio(lean, nj) if lean and nj else "–",
                _cell(tt) if tt else ("not installed" if "torch" in kinds else "–"),
                _ratio(tt, fb) if tt and fb else "–",
                _ratio(ref, fb) if ref and fb else "–",
                pct,
                f"{first:.2f} s",
            ]
            name = config if config in SWEEP else f"{config + ' ' if config in CONFIGS else ''}{sizes} b{batch}"
            lines.append(f"| {name} | {dtype_name} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
        lines.append(f"| peak ({dtype_name}) | | {peak / 1e9:.0f} GFLOP/s | | | | | | | | | |")
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    if args.write:
        with open(HERE / "RESULTS.md", "a") as f:
            f.write(f"\n## `bench/run.py` ({datetime.date.today().isoformat()}, commit {_commit()})\n\n{text}\n")
    if args.chart:
        chart(text, args.chart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
