"""GPU benchmark: correctness and timings of fastbp.cuda on a real GPU, in one run.

For the four named configurations (:mod:`fastbp.benchmark.configs`) plus a wide-batch narrow network
([64, 64, 64, 64, 1], batch 65536, for the fully fused kernel), float32:

1. correctness: the loss and gradient of the fused and the layered path against the
   NumPy reference in float64 on the host (relative error), and against PyTorch;
2. timings (CUDA events, medians of repeats after a warm-up; compile time excluded and
   reported separately): the forward pass, each tiled product (forward, BP2, BP3+BP4) of
   the widest layer, BP1, the optimizer update, the whole training step (loss_and_grad +
   SGD update) and a training epoch through ``MLP.fit``; against the NumPy reference on the
   host and PyTorch eager on the same GPU (fp32, TF32 off) where it is importable;
3. achieved FLOP/s of the step, and the tile shape of the tiled product that is fastest for
   the large configuration (tried among a few).

    NUMBA_ENABLE_CUDASIM=0 python bench/gpu.py [--out DIR] [--quick]

Prints a Markdown table last and writes gpu_results.json and gpu_results.md to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time
import traceback

import numpy as np

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "0")
HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fastbp.benchmark.configs import CONFIGS  # noqa: E402

GPU_CONFIGS = dict(CONFIGS)
GPU_CONFIGS["narrow"] = ([64, 64, 64, 64, 1], 65536, ["relu", "relu", "relu", "identity"], "mse")
TILES = [(64, 64, 16, 4, 4), (32, 64, 16, 2, 4), (128, 64, 8, 8, 4), (64, 128, 8, 4, 8), (128, 128, 8, 8, 8)]


def step_flops(sizes, n):
    """Forward, BP3 and BP2 products (BP2 not for the first layer), 2 flops per multiply-add."""
    prods = [sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1)]
    return 2.0 * n * (2 * sum(prods) + sum(prods[1:]))


def problem(name, dtype=np.float32, seed=0):
    sizes, batch, acts, loss = GPU_CONFIGS[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, sizes[-1], batch)
    else:
        y = rng.standard_normal((batch, sizes[-1])).astype(dtype)
    return sizes, batch, acts, loss, x, y


def cuda_time(fn, repeats=20, inner=None, warmup=2):
    """Median seconds per call of fn (device work timed with CUDA events)."""
    from numba import cuda

    for _ in range(warmup):
        fn()
    cuda.synchronize()
    if inner is None:
        t0 = time.perf_counter()
        fn()
        cuda.synchronize()
        one = time.perf_counter() - t0
        inner = max(1, min(200, int(0.01 / max(one, 1e-6))))
    times = []
    for _ in range(repeats):
        e0, e1 = cuda.event(), cuda.event()
        e0.record()
        for _ in range(inner):
            fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) / 1e3 / inner)
    return float(np.median(times))


def torch_time(fn, repeats=20, inner=None, warmup=2):
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    if inner is None:
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        one = time.perf_counter() - t0
        inner = max(1, min(200, int(0.01 / max(one, 1e-6))))
    times = []
    for _ in range(repeats):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(inner):
            fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) / 1e3 / inner)
    return float(np.median(times))


def host_time(fn, repeats=5):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


class Torch:
    """The same network in PyTorch eager, fp32 with TF32 off."""

    def __init__(self, sizes, acts, loss, params, lr):
        import torch

        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.set_float32_matmul_precision("highest")
        self.torch = torch
        layers = []
        off = 0
        for i in range(len(sizes) - 1):
            lin = torch.nn.Linear(sizes[i], sizes[i + 1]).cuda()
            n = sizes[i] * sizes[i + 1]
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(params[off : off + n].reshape(sizes[i + 1], sizes[i])))
                lin.bias.copy_(torch.from_numpy(params[off + n : off + n + sizes[i + 1]]))
            off += n + sizes[i + 1]
            layers.append(lin)
            a = acts[i]
            if a == "sigmoid":
                layers.append(torch.nn.Sigmoid())
            elif a == "tanh":
                layers.append(torch.nn.Tanh())
            elif a == "relu":
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)
        self.loss = loss
        self.opt = torch.optim.SGD(self.net.parameters(), lr=lr)

    def loss_of(self, x, y):
        F = self.torch.nn.functional
        if self.loss == "cross_entropy":
            # the softmax output is folded into cross_entropy: Sequential ends at the logits
            return F.cross_entropy(self.net(x), y)
        out = self.net(x)
        return 0.5 * ((out - y) ** 2).sum() / x.shape[0]

    def grad(self, x, y):
        self.net.zero_grad(set_to_none=False)
        c = self.loss_of(x, y)
        c.backward()
        return float(c), np.concatenate(
            [
                t
                for m in self.net
                if hasattr(m, "weight")
                for t in (m.weight.grad.detach().cpu().numpy().ravel(), m.bias.grad.detach().cpu().numpy())
            ]
        )

    def step(self, x, y):
        self.opt.zero_grad(set_to_none=True)
        c = self.loss_of(x, y)
        c.backward()
        self.opt.step()


def run_config(name, args, results, lines):
    from numba import cuda

    import fastbp
    from fastbp import reference as ref
    from fastbp.cuda import _fused, _kernels
    from fastbp.cuda import network as cn

    sizes, N, acts, loss, x, y = problem(name)
    r = {"config": name, "sizes": sizes, "batch": N}
    results[name] = r
    net = fastbp.MLP(sizes, acts, loss, dtype=np.float32, seed=0, backend="cuda")
    P = net.n_params
    dt = "float32"
    acts_c = tuple(int(a) for a in net.spec.activations)
    labels = 1 if y.ndim == 1 else 0
    dp = cuda.to_device(net.params)
    dx = cuda.to_device(x)
    dy = cuda.to_device(y.reshape(-1, 1).astype(np.int64) if labels else y)
    g = cuda.device_array(P, np.float32)
    work = cuda.device_array(fastbp.workspace_size(sizes, N), np.float32)
    scratch = cuda.device_array(cn.SCRATCH_SIZE, np.float64)
    vel = cuda.to_device(np.zeros(P, np.float32))
    eligible = _fused.eligible(tuple(sizes), acts_c, dt)
    r["fused_eligible"] = eligible
    flops = step_flops(sizes, N)
    r["step_gflop"] = flops / 1e9

    # ---- correctness ----------------------------------------------------------------------
    p64 = net.params.astype(np.float64)
    Cr, gr = ref.loss_and_grad(
        p64, sizes, net.spec.activations, loss, x.astype(np.float64), y if labels else y.astype(np.float64)
    )
    paths = ["layered"] + (["fused"] if eligible else [])
    for path in paths:
        t0 = time.perf_counter()
        C = cn.loss_and_grad(
            dp,
            sizes,
            acts_c,
            net.spec.loss,
            dx,
            dy if not labels else dy,
            g,
            work,
            scratch=scratch,
            fused=(path == "fused"),
        )
        cuda.synchronize()
        r[f"compile_s_{path}"] = time.perf_counter() - t0
        gg = g.copy_to_host()
        r[f"rel_err_loss_{path}"] = abs(C - Cr) / max(abs(Cr), 1e-300)
        r[f"rel_err_grad_{path}"] = rel(gg, gr)
        r[f"finite_{path}"] = bool(np.all(np.isfinite(gg)))

    # ---- our timings ------------------------------------------------------------------------
    def our_step(fused):
        def f():
            if fused:
                pass  # the optimizer zeroes the gradient the fused kernel accumulates into
            cn.step_loss_and_grad(dp, sizes, acts_c, net.spec.loss, dx, dy, g, work, scratch, labels, None, 0.0, fused)
            cn.optimizer_step(0, dp, g, vel, vel, 1, [1e-6, 0.0, 0, 0, 0.0, 0.0], 1)

        return f

    def our_grad(fused):
        return lambda: cn.step_loss_and_grad(
            dp, sizes, acts_c, net.spec.loss, dx, dy, g, work, scratch, labels, None, 0.0, fused
        )

    dpar = cuda.to_device(net.params)
    for path in paths:
        fused = path == "fused"
        if fused:
            _kernels.elementwise_kernels(dt).fill[64, 256](g, 0.0)
        r[f"ours_step_{path}_s"] = cuda_time(our_step(fused), args.repeats)
        dp.copy_to_device(dpar)
        r[f"ours_grad_{path}_s"] = cuda_time(our_grad(fused), args.repeats)
        dp.copy_to_device(dpar)
    best_path = min(paths, key=lambda p: r[f"ours_step_{p}_s"])
    r["best_path"] = best_path
    out = cuda.device_array((N, sizes[-1]), np.float32)
    r["ours_forward_s"] = cuda_time(lambda: cn.forward(dp, sizes, acts_c, dx, out, work), args.repeats)
    ek = _kernels.elementwise_kernels(dt)
    r["ours_sgd_update_s"] = cuda_time(
        lambda: cn.optimizer_step(0, dp, g, vel, vel, 1, [0.0, 0.0, 0, 0, 0.0, 0.0], 0), args.repeats
    )
    # per-kernel: the products of the widest layer, and BP1
    wl = max(range(len(sizes) - 1), key=lambda i: sizes[i] * sizes[i + 1])
    n_in, n_out = sizes[wl], sizes[wl + 1]
    k = cn.gemm(dt)
    A = cuda.to_device(np.random.default_rng(1).standard_normal(N * max(n_in, n_out)).astype(np.float32))
    Z = cuda.device_array(2 * N * max(n_in, n_out) + n_in * n_out + n_out, np.float32)
    Wd = cuda.to_device(np.random.default_rng(2).standard_normal(n_in * n_out + n_out).astype(np.float32) * 0.05)
    G = cuda.device_array(n_in * n_out + n_out, np.float32)
    r["kernel_layer"] = [n_in, n_out]
    r["ours_kernel_forward_s"] = cuda_time(
        lambda: cn.launch_gemm(k, 0, A, 0, n_in, 1, Wd, 0, 1, n_in, N, n_out, n_in, Z, 0, n_in * n_out, acts_c[wl], 1),
        args.repeats,
    )
    r["ours_kernel_bp2_s"] = cuda_time(
        lambda: cn.launch_gemm(k, 1, A, 0, n_out, 1, Wd, 0, n_in, 1, N, n_in, n_out, Z, 0, 0, 0, 0), args.repeats
    )
    r["ours_kernel_bp3_s"] = cuda_time(
        lambda: cn.launch_gemm(k, 2, A, 0, 1, n_out, A, 0, n_in, 1, n_out, n_in + 1, N, G, 0, n_in * n_out, 0, 1),
        args.repeats,
    )
    nL = sizes[-1]
    zL = cn.layer_offset(sizes, len(sizes) - 2, N)
    rk = _kernels.row_kernels(dt)
    r["ours_kernel_bp1_s"] = cuda_time(
        lambda: rk.output_delta[N, _kernels.ROW_THREADS](
            work, zL, N, nL, acts_c[-1], net.spec.loss, dy, labels, cn.dummy(dt, 1), 0.0, scratch, 1
        ),
        args.repeats,
    )
    del ek

    # ---- an epoch through MLP.fit ---------------------------------------------------------------
    n_epoch = N * args.epoch_batches
    xe = np.tile(x, (args.epoch_batches, 1))
    ye = np.tile(y, args.epoch_batches) if labels else np.tile(y, (args.epoch_batches, 1))
    fit_net = fastbp.MLP(sizes, acts, loss, dtype=np.float32, seed=0, backend="cuda")
    dxe, dye = cuda.to_device(xe), cuda.to_device(ye.astype(np.int64) if labels else ye)
    fit_net.fit(dxe, dye, epochs=1, batch_size=N, optimizer="sgd", lr=1e-6, verbose=False)
    t = []
    for _ in range(3):
        t0 = time.perf_counter()
        fit_net.fit(dxe, dye, epochs=1, batch_size=N, optimizer="sgd", lr=1e-6, verbose=False)
        t.append(time.perf_counter() - t0)
    r["ours_epoch_s"] = float(np.median(t))
    # the public API with host arrays: uploads θ, x, y; downloads the gradient
    hg = np.empty(P, np.float32)
    r["ours_mlp_loss_and_grad_host_s"] = host_time(lambda: net.loss_and_grad(x, y, out=hg), 7)
    r["epoch_samples"] = n_epoch

    # ---- NumPy reference on the host ------------------------------------------------------------
    if not args.no_numpy:
        p32 = net.params.copy()

        def np_step():
            c, gg = ref.loss_and_grad(p32, sizes, net.spec.activations, loss, x, y)
            p32[...] -= np.float32(1e-6) * gg

        r["numpy_step_s"] = host_time(np_step, 3 if N * P > 1e8 else 7)
        r["numpy_forward_s"] = host_time(lambda: ref.forward(p32, sizes, net.spec.activations, x), 5)

    # ---- PyTorch ------------------------------------------------------------------------------
    try:
        import torch

        tm = Torch(sizes, acts, loss, net.params.copy(), 1e-6)
        tx = torch.from_numpy(x).cuda()
        ty = torch.from_numpy(y).cuda()
        Ct, gt = tm.grad(tx, ty)
        r["rel_err_grad_torch_vs_ref"] = rel(gt, gr)
        r["rel_err_loss_torch_vs_ref"] = abs(Ct - Cr) / max(abs(Cr), 1e-300)
        tm = Torch(sizes, acts, loss, net.params.copy(), 1e-6)
        r["torch_step_s"] = torch_time(lambda: tm.step(tx, ty), args.repeats)

        def t_fwd():
            with torch.no_grad():
                o = tm.net(tx)
                if loss == "cross_entropy":
                    o = torch.softmax(o, dim=1)
                return o

        r["torch_forward_s"] = torch_time(t_fwd, args.repeats)
        At = torch.randn(N, max(n_in, n_out), device="cuda")
        Wt = torch.randn(n_out, n_in, device="cuda") * 0.05
        bt = torch.randn(n_out, device="cuda")
        act_t = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}.get(acts[wl], lambda v: v)
        r["torch_kernel_forward_s"] = torch_time(lambda: act_t(torch.addmm(bt, At[:, :n_in], Wt.t())), args.repeats)
        r["torch_kernel_bp2_s"] = torch_time(lambda: At[:, :n_out] @ Wt, args.repeats)
        r["torch_kernel_bp3_s"] = torch_time(
            lambda: (At[:, :n_out].t() @ At[:, :n_in], At[:, :n_out].sum(0)), args.repeats
        )
        perm_n = n_epoch
        txe_all, tye_all = torch.from_numpy(xe).cuda(), torch.from_numpy(ye).cuda()

        def t_epoch():
            perm = torch.randperm(perm_n, device="cuda")
            txe = txe_all[perm]
            tye = tye_all[perm]
            for s in range(0, perm_n, N):
                tm.step(txe[s : s + N], tye[s : s + N])
            torch.cuda.synchronize()

        t_epoch()
        t = []
        for _ in range(3):
            t0 = time.perf_counter()
            t_epoch()
            t.append(time.perf_counter() - t0)
        r["torch_epoch_s"] = float(np.median(t))
        r["torch_version"] = torch.__version__
    except Exception as e:  # pragma: no cover - no torch
        r["torch_error"] = repr(e)

    best = r[f"ours_step_{best_path}_s"]
    r["ours_step_tflops"] = flops / best / 1e12
    nan = float("nan")
    t_step = r.get("torch_step_s", nan)
    n_step = r.get("numpy_step_s", nan)
    line = (
        f"| {name} | {sizes} x{N} | {best_path} | {best * 1e6:.1f} | {t_step * 1e6:.1f} | {n_step * 1e6:.1f} | "
        f"{t_step / best:.2f}x | {n_step / best:.1f}x | {r['ours_step_tflops']:.2f} | "
        f"{flops / t_step / 1e12:.2f} | {r[f'rel_err_grad_{best_path}']:.1e} |"
    )
    lines.append(line)
    print(json.dumps(r, default=float), flush=True)


def fused_sweep(args, results):
    """Step time of the narrow network's fused kernel with 1, 2, 4 and 8 blocks per multiprocessor."""
    from numba import cuda

    import fastbp
    from fastbp.cuda import network as cn

    sizes, N, acts, loss, x, y = problem("narrow")
    net = fastbp.MLP(sizes, acts, loss, dtype=np.float32, seed=0, backend="cuda")
    acts_c = tuple(int(a) for a in net.spec.activations)
    dp, dx, dy = cuda.to_device(net.params), cuda.to_device(x), cuda.to_device(y)
    g = cuda.device_array(net.n_params, np.float32)
    work = cuda.device_array(1, np.float32)
    scratch = cuda.device_array(cn.SCRATCH_SIZE, np.float64)
    sweep = {}
    for bps in (1, 2, 4, 8):
        cn.FUSED_BLOCKS_PER_SM = bps
        tt = cuda_time(
            lambda: cn.step_loss_and_grad(
                dp, sizes, acts_c, net.spec.loss, dx, dy, g, work, scratch, 0, None, 0.0, True
            ),
            args.repeats,
        )
        sweep[bps] = {"grad_s": tt, "tflops": step_flops(sizes, N) / tt / 1e12}
        print("fused blocks/SM", bps, sweep[bps], flush=True)
    best = min(sweep, key=lambda k: sweep[k]["grad_s"])
    cn.FUSED_BLOCKS_PER_SM = best
    results["fused_sweep"] = {str(k): v for k, v in sweep.items()}
    results["fused_best_blocks_per_sm"] = best


def tile_sweep(args, results):
    """Step time of the large configuration with each tile shape of the tiled product."""
    from numba import cuda

    import fastbp
    from fastbp.cuda import network as cn

    sizes, N, acts, loss, x, y = problem("large")
    net = fastbp.MLP(sizes, acts, loss, dtype=np.float32, seed=0, backend="cuda")
    acts_c = tuple(int(a) for a in net.spec.activations)
    dp, dx, dy = cuda.to_device(net.params), cuda.to_device(x), cuda.to_device(y)
    g = cuda.device_array(net.n_params, np.float32)
    work = cuda.device_array(fastbp.workspace_size(sizes, N), np.float32)
    scratch = cuda.device_array(cn.SCRATCH_SIZE, np.float64)
    sweep = {}
    for tile in TILES:
        try:
            fastbp.config.CUDA_GEMM_TILE = tile
            t0 = time.perf_counter()
            cn.step_loss_and_grad(dp, sizes, acts_c, net.spec.loss, dx, dy, g, work, scratch, 0, None, 0.0, False)
            cuda.synchronize()
            comp = time.perf_counter() - t0
            tt = cuda_time(
                lambda: cn.step_loss_and_grad(
                    dp, sizes, acts_c, net.spec.loss, dx, dy, g, work, scratch, 0, None, 0.0, False
                ),
                args.repeats,
            )
            k = cn.gemm("float32").kernel
            info = {}
            for meth in ("get_regs_per_thread", "get_local_mem_per_thread", "get_shared_mem_per_block"):
                try:
                    info[meth] = str(getattr(k, meth)())
                except Exception as e:  # noqa: BLE001
                    info[meth] = repr(e)[:80]
            sweep[str(tile)] = {"grad_s": tt, "compile_s": comp, "tflops": step_flops(sizes, N) / tt / 1e12, **info}
            print("tile", tile, sweep[str(tile)], flush=True)
        except Exception as e:  # noqa: BLE001
            sweep[str(tile)] = {"error": repr(e)[-600:]}
            print("tile", tile, "failed", repr(e)[-600:], flush=True)
    ok = {k: v for k, v in sweep.items() if "grad_s" in v}
    best = min(ok, key=lambda k: ok[k]["grad_s"]) if ok else str(TILES[0])
    fastbp.config.CUDA_GEMM_TILE = eval(best)  # noqa: S307 - our own tuple repr
    results["tile_sweep"] = sweep
    results["tile_best"] = best
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--epoch-batches", type=int, default=8)
    ap.add_argument("--configs", nargs="*", default=["tiny", "small", "medium", "large", "narrow"])
    ap.add_argument("--no-numpy", action="store_true")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--dry", action="store_true", help="shrunken configurations (a check of the script itself)")
    args = ap.parse_args(argv)
    if args.dry:
        for k, (sz, b, a, lo) in list(GPU_CONFIGS.items()):
            GPU_CONFIGS[k] = ([min(v, 9) for v in sz], min(b, 8), a, lo)
        args.repeats, args.epoch_batches = 2, 2

    from numba import cuda

    dev = cuda.get_current_device()
    results = {
        "date": datetime.date.today().isoformat(),
        "device": str(getattr(dev, "name", "simulator")),
        "cc": list(getattr(dev, "compute_capability", ())),
        "sms": getattr(dev, "MULTIPROCESSOR_COUNT", None),
        "host": platform.processor() or platform.machine(),
        "numba": __import__("numba").__version__,
    }
    try:
        results["numba_cuda"] = __import__("importlib.metadata").metadata.version("numba-cuda")
    except Exception:  # noqa: BLE001
        pass
    print(json.dumps(results), flush=True)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_sweep:
        for sweep in (tile_sweep, fused_sweep):
            try:
                sweep(args, results)
            except Exception:  # noqa: BLE001
                print("".join(traceback.format_exc().splitlines(True)[-8:]), flush=True)
    lines = [
        "| config | sizes x batch | path | fastbp step µs | PyTorch step µs | NumPy step µs | vs PyTorch | "
        "vs NumPy | fastbp TFLOP/s | PyTorch TFLOP/s | grad rel. err |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.configs:
        try:
            run_config(name, args, results, lines)
        except Exception:  # noqa: BLE001
            print("".join(traceback.format_exc().splitlines(True)[-8:]), flush=True)
            results.setdefault("errors", []).append(name)
        (out / "gpu_results.json").write_text(json.dumps(results, indent=1, default=float))
    table = "\n".join(lines)
    (out / "gpu_results.md").write_text(table + "\n")
    print(table, flush=True)


if __name__ == "__main__":
    main()
