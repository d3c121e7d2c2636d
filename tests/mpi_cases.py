"""The cases of tests/test_mpi.py: what each rank of ``mpiexec -n K python tests/mpi_cases.py OUT``
trains, and how the shards are cut; the test fits the same cases in one process and compares.

Run under MPI, each rank fits every case on its shard with ``comm=MPI.COMM_WORLD`` and writes
``OUT/<case>.rank<r>.npz`` (θ, the history, the error message of the bad-input case); with a
second argument ``cuda``, the one cuda case (``CUDA_CASE``) on the cuda backend instead.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

N, N_VAL = 37, 11

# name -> network, data and fit arguments (the optimizer by name, or "lbfgs")
CASES = {
    "sgd-labels-val": dict(sizes=[5, 7, 3], acts=["tanh", "softmax"], loss="cross_entropy", labels=True,
                           dtype="float64", fit=dict(optimizer="sgd", lr=0.2, epochs=4, batch_size=8), val=True),
    "momentum-weights": dict(sizes=[5, 7, 2], acts=["sigmoid", "identity"], loss="mse", labels=False,
                             dtype="float64", weights=True,
                             fit=dict(optimizer="nesterov", lr=0.05, epochs=3, batch_size=5, clip_norm=0.5)),
    "adam-everything": dict(sizes=[5, 9, 3], acts=["relu", "softmax"], loss="cross_entropy", labels=True,
                            dtype="float64", weights=True, val=True,
                            fit=dict(optimizer="adam", lr=0.01, epochs=6, batch_size=7, alpha=0.1,
                                     schedule="cosine", patience=2, clip_norm=1.0)),
    "lbfgs": dict(sizes=[5, 4, 1], acts=["tanh", "sigmoid"], loss="binary_cross_entropy", labels=False,
                  dtype="float64", weights=True, val=True, fit=dict(optimizer="lbfgs", epochs=8)),
    "adam-float32": dict(sizes=[5, 7, 3], acts=["tanh", "softmax"], loss="cross_entropy", labels=True,
                         dtype="float32", val=True, fit=dict(optimizer="adam", lr=0.01, epochs=3, batch_size=6)),
}


def data(case: dict, seed: int = 0):
    """(x, y, sample_weight, x_val, y_val) of the whole set, in the case's dtype."""
    rng = np.random.default_rng(seed)
    dt = np.dtype(case["dtype"])
    n0, nL = case["sizes"][0], case["sizes"][-1]

    def targets(n):
        if case["labels"]:
            return rng.integers(0, nL, n)
        if case["loss"] == "binary_cross_entropy":
            return (rng.random((n, nL)) > 0.5).astype(dt)
        return rng.standard_normal((n, nL)).astype(dt)

    x = rng.standard_normal((N, n0)).astype(dt)
    y = targets(N)
    sw = rng.random(N).astype(dt) if case.get("weights") else None
    xv = rng.standard_normal((N_VAL, n0)).astype(dt)
    yv = targets(N_VAL)
    return x, y, sw, xv, yv


def bounds(n: int, size: int) -> list[int]:
    """Uneven shard boundaries of n samples over ``size`` ranks (rank 1 of 3 gets none)."""
    if size == 1:
        return [0, n]
    if size == 2:
        return [0, n * 2 // 3, n]
    cuts = [0, n // 2, n // 2] + [n // 2 + (n - n // 2) * k // (size - 2) for k in range(1, size - 1)]
    return cuts[: size] + [n]


def shard(arr, rank: int, size: int):
    if arr is None:
        return None
    b = bounds(arr.shape[0], size)
    return arr[b[rank] : b[rank + 1]]


def one_process(name: str):
    """(θ, history) of the case's fit in one process on the whole set (the cpu backend)."""
    import fastbp

    case = CUDA if name == CUDA_CASE else CASES[name]
    x, y, sw, xv, yv = data(case)
    net = fastbp.MLP(case["sizes"], case["acts"], case["loss"], dtype=np.dtype(case["dtype"]), seed=1)
    h = net.fit(x, y, sample_weight=sw, validation_data=(xv, yv) if case.get("val") else None, verbose=False,
                **case["fit"])
    return net.params, h


#: The case the cuda backend runs (on the simulator in CI: few steps).
CUDA_CASE = "cuda-adam"
CUDA = dict(sizes=[5, 4, 3], acts=["tanh", "softmax"], loss="cross_entropy", labels=True, dtype="float64",
            weights=True, val=True, fit=dict(optimizer="adam", lr=0.01, epochs=1, batch_size=13, clip_norm=1.0))


def main(out: str, backend: str = "cpu") -> None:
    from mpi4py import MPI

    import fastbp

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    out_dir = pathlib.Path(out)
    cases = CASES if backend == "cpu" else {CUDA_CASE: CUDA}
    for name, case in cases.items():
        x, y, sw, xv, yv = data(case)
        # every rank starts from another θ: fit must broadcast rank 0's
        net = fastbp.MLP(case["sizes"], case["acts"], case["loss"], dtype=np.dtype(case["dtype"]),
                         seed=1 if rank == 0 else 100 + rank, backend=backend)
        val = (shard(xv, rank, size), shard(yv, rank, size)) if case.get("val") else None
        h = net.fit(shard(x, rank, size), shard(y, rank, size), sample_weight=shard(sw, rank, size),
                    validation_data=val, verbose=False, comm=comm, **case["fit"])
        h.pop("time")  # rank 0's, broadcast: equal too, but not comparable with one process
        np.savez(out_dir / f"{name}.rank{rank}.npz", params=net.params, history=json.dumps(h))
    if backend != "cpu":
        return
    # bad input on the last rank only: every rank raises the same error, θ unchanged everywhere
    case = CASES["sgd-labels-val"]
    x, y, _, _, _ = data(case)
    xs, ys = shard(x, rank, size), shard(y, rank, size).copy()
    if rank == size - 1:
        ys[0] = 99  # a label out of range
    net = fastbp.MLP(case["sizes"], case["acts"], case["loss"], seed=2 + rank)
    before = net.params.copy()
    try:
        net.fit(xs, ys, epochs=1, comm=comm, verbose=False)
        message = None
    except ValueError as e:
        message = str(e)
    np.savez(out_dir / f"bad-input.rank{rank}.npz", unchanged=np.array_equal(before, net.params),
             message=json.dumps(message))
    # a callback that raises on the last rank only, after the first epoch: every rank raises it,
    # with θ at the end of that epoch (the same on every rank)
    x, y, _, _, _ = data(case)

    def callback(epoch, logs, net):
        if rank == size - 1 and epoch == 0:
            raise RuntimeError("the callback of the last rank")

    net = fastbp.MLP(case["sizes"], case["acts"], case["loss"], seed=2)
    try:
        net.fit(shard(x, rank, size), shard(y, rank, size), epochs=3, batch_size=8, comm=comm, verbose=False,
                callback=callback)
        message = None
    except RuntimeError as e:
        message = str(e)
    np.savez(out_dir / f"callback-raises.rank{rank}.npz", params=net.params, message=json.dumps(message))


if __name__ == "__main__":
    main(*sys.argv[1:])
