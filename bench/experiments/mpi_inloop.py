"""Issue #12, item 2: the per-step ``Allreduce`` from a Python loop, or from inside the compiled loop.

    python bench/experiments/mpi_inloop.py [--configs digits medium large] [--dtype float32] [--epochs 5]
                               [--steps 64] [--rounds 3] [--ranks 2]

Two step loops over the same global minibatches, each rank taking its rows of each as
``fit(comm=...)`` does, both running the same compiled kernel on them
(:func:`fastbp.cpu.loss_and_grad`, its serial twin), then one in-place ``Allreduce`` of
[(k_r / B) ∂C_r/∂θ, (k_r / B) C_r] and an SGD step on θ:

- ``python``: a Python loop per step -- gather this rank's rows (``np.take``), the kernel,
  ``comm.Allreduce(MPI.IN_PLACE, buf)`` through mpi4py, the update -- as ``fit(comm=...)`` runs;
- ``compiled``: the whole epoch in one ``@njit`` function that calls ``MPI_Allreduce``, the MPI
  library's C function as mpi4py loaded it, through its address (MPICH's integer handles).

Both end with bitwise the same θ on every rank (checked), so the difference is the Python per
step and mpi4py's call.  Each contender runs in its own ``mpiexec`` launch, one thread per rank,
interleaved over ``--rounds`` rounds; a step's time is the best epoch's over its steps, after one
warm-up epoch.  Each launch also times the ``Allreduce`` alone, 30 times, from Python and from
compiled code.  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time
import zlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE.parent))

from fastbp.benchmark.configs import CONFIGS  # noqa: E402

EXTRA = {"digits": ([64, 128, 10], 32, ["relu", "softmax"], "cross_entropy")}


def _kernels():
    """The compiled epoch loop and a compiled Allreduce alone (built on first use, not cached:
    the function address is an argument, but a benchmark compiles them once per launch)."""
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic

    from fastbp import cpu

    @intrinsic
    def allreduce_sum(typingctx, fn, inplace, buf, count, datatype, op, comm):
        """MPI_Allreduce(MPI_IN_PLACE, buf, count, datatype, MPI_SUM, comm) through the C
        function at address ``fn`` (MPICH: every handle an int)."""
        sig = types.int32(fn, inplace, buf, count, datatype, op, comm)

        def codegen(context, builder, signature, args):
            fn_, inplace_, buf_, count_, dt_, op_, comm_ = args
            i32, vp = ir.IntType(32), ir.IntType(8).as_pointer()
            fnty = ir.FunctionType(i32, [vp, vp, i32, i32, i32, i32])
            data = context.make_array(signature.args[2])(context, builder, buf_).data
            return builder.call(builder.inttoptr(fn_, fnty.as_pointer()),
                                [builder.inttoptr(inplace_, vp), builder.bitcast(data, vp),
                                 *(builder.trunc(v, i32) for v in (count_, dt_, op_, comm_))])

        return sig, codegen

    @njit(nogil=True)
    def compiled_epoch(params, sizes, acts, loss, x, y, perm, lo, hi, batch, shares, lr, buf, work, xb, yb, mpi):
        P = params.shape[0]
        grad = buf[:P]
        n = perm.shape[0]
        b = 0
        for start in range(0, n, batch):
            k = 0
            for i in range(start, min(start + batch, n)):
                g = perm[i]
                if lo <= g < hi:
                    xb[k, :] = x[g - lo]
                    yb[k] = y[g - lo]
                    k += 1
            if k > 0:
                c = cpu.loss_and_grad(params, sizes, acts, loss, xb[:k], yb[:k], grad, work)
                s = shares[b]
                for j in range(P):
                    grad[j] *= s
                buf[P] = c * s
            else:
                buf[:] = 0
            allreduce_sum(mpi[0], mpi[1], buf, P + 1, mpi[2], mpi[3], mpi[4])
            for j in range(P):
                params[j] -= lr * grad[j]
            b += 1

    @njit(nogil=True)
    def compiled_allreduce(buf, mpi, repeats):
        for _ in range(repeats):
            allreduce_sum(mpi[0], mpi[1], buf, buf.shape[0], mpi[2], mpi[3], mpi[4])

    return compiled_epoch, compiled_allreduce


def worker(name: str, dtype: str, mode: str, epochs: int, steps: int) -> None:
    import ctypes

    from mpi4py import MPI

    import fastbp
    from fastbp import cpu

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    sizes, batch, acts, loss = EXTRA[name] if name in EXTRA else CONFIGS[name]
    dt = np.dtype(dtype)
    net = fastbp.MLP(sizes, acts, loss, dtype=dt, seed=0)
    spec = net.spec
    n = steps * batch
    rng = np.random.default_rng(0)
    x_all = rng.standard_normal((n, sizes[0])).astype(dt)
    y_all = rng.integers(0, sizes[-1], n) if spec.loss_name == "cross_entropy" else \
        rng.standard_normal((n, sizes[-1])).astype(dt)
    lo, hi = n * rank // size, n * (rank + 1) // size
    x, y = x_all[lo:hi], y_all[lo:hi]
    P = spec.n_params
    params = net.params
    buf = np.zeros(P + 1, dt)
    grad = buf[:P]
    work = np.empty(fastbp.workspace_size(sizes, batch), dt)
    xb = np.empty((batch, sizes[0]), dt)
    yb = np.empty((batch,) + y.shape[1:], y.dtype)
    lr = dt.type(1e-3)
    mpi_type = {np.float32: MPI.FLOAT, np.float64: MPI.DOUBLE}[dt.type]
    handles = np.array([ctypes.cast(ctypes.CDLL(MPI.__file__).MPI_Allreduce, ctypes.c_void_p).value,
                        int(MPI.IN_PLACE), MPI._handleof(mpi_type), MPI._handleof(MPI.SUM),
                        MPI._handleof(comm)], np.int64)
    compiled_epoch, compiled_allreduce = _kernels()

    def shares_of(perm):
        starts = np.arange(0, n, batch)
        mine = ((perm >= lo) & (perm < hi)).astype(np.float64)
        return (np.add.reduceat(mine, starts) / np.diff(np.append(starts, n))).astype(dt)

    def python_epoch(perm, shares):
        for b, start in enumerate(range(0, n, batch)):
            rows = perm[start : start + batch]
            mine = rows[(rows >= lo) & (rows < hi)] - lo
            k = mine.shape[0]
            if k:
                c = cpu.loss_and_grad(params, spec.sizes, spec.activations, spec.loss,
                                      np.take(x, mine, axis=0, out=xb[:k]), y[mine], grad, work)
                np.multiply(grad, shares[b], out=grad)
                buf[P] = c * shares[b]
            else:
                buf[:] = 0
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            np.subtract(params, lr * grad, out=params)

    def compiled(perm, shares):
        compiled_epoch(params, spec.sizes, spec.activations, spec.loss, x, y, perm, lo, hi, batch, shares, lr, buf,
                       work, xb, yb, handles)

    run = python_epoch if mode == "python" else compiled
    perm_rng = np.random.default_rng(1)
    times = []
    for _ in range(epochs + 1):
        perm = perm_rng.permutation(n)
        comm.Bcast(perm, root=0)  # rank 0's permutation everywhere
        shares = shares_of(perm)
        comm.Barrier()
        t = time.perf_counter()
        run(perm, shares)
        times.append(time.perf_counter() - t)
    red = np.zeros(P + 1, dt)
    comm.Barrier()
    t = time.perf_counter()
    for _ in range(30):
        comm.Allreduce(MPI.IN_PLACE, red, op=MPI.SUM)
    py_red = (time.perf_counter() - t) / 30
    compiled_allreduce(red, handles, 1)  # compile
    comm.Barrier()
    t = time.perf_counter()
    compiled_allreduce(red, handles, 30)
    c_red = (time.perf_counter() - t) / 30
    steps = -(-n // batch)
    crcs = comm.allgather(zlib.crc32(params.tobytes()))
    if rank == 0:
        print(json.dumps({"step": min(times[1:]) / steps, "py_allreduce": py_red, "c_allreduce": c_red,
                          "theta": crcs[0], "same_on_ranks": len(set(crcs)) == 1}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["digits", "medium"])
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--steps", type=int, default=64, help="steps per epoch")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, args.epochs, args.steps)
        return 0
    mpiexec = str(pathlib.Path(sys.executable).with_name("mpiexec"))
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    print(f"{args.ranks} ranks x 1 thread, {args.dtype}, medians of {args.rounds} launches (min-max), "
          "µs per step")
    print()
    print("| config | python loop (mpi4py) | compiled loop (C MPI_Allreduce) | python / compiled "
          "| Allreduce alone, mpi4py / from @njit | θ equal |")
    print("|---|---|---|---|---|---|")
    for name in args.configs:
        res = {"python": [], "compiled": []}
        for _ in range(args.rounds):
            for mode in res:
                out = subprocess.run([mpiexec, "-n", str(args.ranks), sys.executable, __file__, "--epochs",
                                      str(args.epochs), "--steps", str(args.steps), "--worker", name,
                                      args.dtype, mode],
                                     capture_output=True, text=True, env=env, timeout=900, check=True)
                res[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))

        def cell(mode, key="step", res=res):
            v = [r[key] * 1e6 for r in res[mode]]
            return statistics.median(v), f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})"

        (p, ps), (c, cs) = cell("python"), cell("compiled")
        pr, cr = cell("python", "py_allreduce")[0], cell("compiled", "c_allreduce")[0]
        same = all(r["same_on_ranks"] for m in res for r in res[m]) and \
            len({r["theta"] for m in res for r in res[m]}) == 1
        print(f"| {name} | {ps} | {cs} | {p / c:.2f} | {pr:.1f} / {cr:.1f} | {'yes' if same else 'NO'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
