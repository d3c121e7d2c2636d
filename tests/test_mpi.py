"""``fit(comm=...)``: data-parallel training over MPI gives the one-process result.

The ranks are real processes under ``mpiexec -n 2`` and ``-n 3`` (the ``mpi`` extra's MPICH),
each fitting every case of tests/mpi_cases.py on its shard (uneven; with 3 ranks the middle
one holds no sample); here each case is fitted again in one process on the whole set.  A hang
fails by the timeout instead of blocking CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from . import mpi_cases as M

MPI = pytest.importorskip("mpi4py.MPI", reason="the mpi extra (mpi4py) is not installed")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
TIMEOUT_S = 240


@pytest.fixture(scope="module")
def one_process():
    """Each case's θ and history in one process.  The fits with a one-rank communicator first
    fill the kernel cache with what the ranks run and a one-process fit does not (the compiled
    update and loss_and_grad, per dtype), so the ranks load it instead of each compiling it."""
    import fastbp

    for dt in (np.float32, np.float64):
        net = fastbp.MLP([2, 2], ["softmax"], "cross_entropy", dtype=dt)
        net.fit(np.ones((2, 2), dt), np.array([0, 1]), epochs=1, comm=MPI.COMM_SELF, verbose=False)
    return {name: M.one_process(name) for name in M.CASES}


def _launch(size: int, out, backend: str = "cpu", **env_extra) -> dict:
    if MPIEXEC is None:
        pytest.skip("no mpiexec on PATH or beside the interpreter")
    env = dict(os.environ, NUMBA_NUM_THREADS="1", FASTBP_MPI_CHECK="1", **env_extra)
    cmd = [MPIEXEC, "-n", str(size), sys.executable, "-m", "tests.mpi_cases", str(out), backend]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"mpiexec -n {size} did not finish in {TIMEOUT_S} s (a deadlock?): {e.stderr}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = {}
    for name in [*M.CASES, "bad-input", "callback-raises"] if backend == "cpu" else [M.CUDA_CASE]:
        results[name] = [dict(np.load(out / f"{name}.rank{r}.npz")) for r in range(size)]
    return results


@pytest.fixture(scope="module", params=[2, 3], ids=lambda k: f"{k}-ranks")
def ranks(request, tmp_path_factory, one_process):
    return request.param, _launch(request.param, tmp_path_factory.mktemp(f"mpi{request.param}"))


@pytest.mark.parametrize("name", list(M.CASES))
def test_every_rank_ends_with_the_one_process_parameters(ranks, one_process, name):
    size, results = ranks
    theta, history = one_process[name]
    got = results[name]
    for r in range(1, size):  # the same θ and history on every rank, bitwise
        np.testing.assert_array_equal(got[r]["params"], got[0]["params"])
        assert str(got[r]["history"]) == str(got[0]["history"])
    p = got[0]["params"]
    assert p.dtype == theta.dtype
    # to rounding: the sums are added in another order (and the step is NumPy's, not the compiled
    # loop's), a few ulps per step; float32 after 3 epochs of Adam: 1e-5 of the largest |θ|
    scale = float(np.abs(theta).max())
    atol = 1e-10 * scale if theta.dtype == np.float64 else 1e-5 * scale
    np.testing.assert_allclose(p, theta, rtol=0, atol=atol)
    h = json.loads(str(got[0]["history"]))
    assert sorted(h) == sorted(k for k in history if k != "time")
    for key in h:
        if key in ("message", "converged"):
            assert h[key] == history[key]
            continue
        a, b = np.array(h[key], float), np.array(history[key], float)
        assert a.shape == b.shape, (key, a, b)  # the same epochs (early stopping agrees)
        tol = 1e-12 if theta.dtype == np.float64 else 1e-5
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=key)


@pytest.mark.slow  # two ranks on the CUDA simulator: run on a GPU with --runslow
def test_cuda_backend_over_two_ranks(tmp_path):
    """One rank per GPU, the reduction staged through the host: on the CUDA simulator (where no
    GPU is present), two ranks give the cpu backend's one-process parameters."""
    from fastbp.cuda import unavailable_reason

    if unavailable_reason() is not None:
        pytest.skip(f"the cuda backend cannot run here: {unavailable_reason()}")
    got = _launch(2, tmp_path, "cuda")[M.CUDA_CASE]
    theta, history = M.one_process(M.CUDA_CASE)
    np.testing.assert_array_equal(got[1]["params"], got[0]["params"])
    np.testing.assert_allclose(got[0]["params"], theta, rtol=0, atol=1e-10 * np.abs(theta).max())
    h = json.loads(str(got[0]["history"]))
    np.testing.assert_allclose(h["val_loss"], history["val_loss"], rtol=1e-12)


def test_bad_input_on_one_rank_raises_on_every_rank(ranks):
    size, results = ranks
    got = results["bad-input"]
    messages = [json.loads(str(g["message"])) for g in got]
    assert all(m is not None and "y: class labels must lie in [0, 3)" in m for m in messages), messages
    assert len(set(messages)) == 1
    assert all(bool(g["unchanged"]) for g in got)


def test_a_callback_raising_on_one_rank_raises_on_every_rank(ranks):
    size, results = ranks
    got = results["callback-raises"]
    assert [json.loads(str(g["message"])) for g in got] == ["the callback of the last rank"] * size
    for g in got[1:]:
        np.testing.assert_array_equal(g["params"], got[0]["params"])


# ---- in one process: the communicator of one rank, and what fit refuses --------------------------


def test_one_rank_communicator_is_the_one_process_fit(one_process):
    import fastbp

    case = M.CASES["adam-everything"]
    x, y, sw, xv, yv = M.data(case)
    net = fastbp.MLP(case["sizes"], case["acts"], case["loss"], dtype=np.float64, seed=1)
    h = net.fit(x, y, sample_weight=sw, validation_data=(xv, yv), verbose=False, comm=MPI.COMM_SELF, **case["fit"])
    theta, history = one_process["adam-everything"]
    np.testing.assert_allclose(net.params, theta, rtol=0, atol=1e-10 * np.abs(theta).max())
    np.testing.assert_allclose(h["loss"], history["loss"], rtol=1e-12)


def test_comm_must_be_a_communicator():
    import fastbp

    net = fastbp.MLP([2, 1], ["identity"], "mse", seed=0)
    before = net.params.copy()
    with pytest.raises(TypeError, match="comm: expected an mpi4py communicator"):
        net.fit(np.ones((3, 2)), np.ones(3), comm="world", verbose=False)
    np.testing.assert_array_equal(net.params, before)


def test_an_empty_set_is_refused_on_one_rank():
    import fastbp

    net = fastbp.MLP([2, 1], ["identity"], "mse", seed=0)
    before = net.params.copy()
    with pytest.raises(ValueError, match="every rank's shard is empty"):
        net.fit(np.empty((0, 2)), np.empty(0), comm=MPI.COMM_SELF, verbose=False)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 2\)"):
        net.fit(np.empty((0, 3)), np.empty(0), comm=MPI.COMM_SELF, verbose=False)
    np.testing.assert_array_equal(net.params, before)
