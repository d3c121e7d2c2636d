"""Concurrent calls on one model from several Python threads give the single-thread answers.

The shapes straddle ``fastbp.config.PARALLEL_MIN_WORK``: alone, the large batch runs the
``parallel=True`` twins; beside other threads every call runs the serial twins.  So these tests
also check that the twins agree bitwise, through the public dispatcher and directly.
"""

from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest
from numba import get_num_threads

import fastbp
from fastbp import config
from fastbp._threads import Gate
from fastbp.cpu import network

from .conftest import DTYPES, assert_close

SIZES = [13, 65, 7]
N_PAR = 200  # N * n_params = 200 * 1372 > PARALLEL_MIN_WORK: the parallel twin when alone
N_SER = 3
THREADS = 8


def _model(dtype):
    return fastbp.MLP(SIZES, ["tanh", "softmax"], "cross_entropy", dtype=dtype, seed=3)


def _data(n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, SIZES[0])).astype(dtype), rng.integers(0, SIZES[-1], n)


def _run_threads(target, n_threads=THREADS):
    errors = []
    barrier = threading.Barrier(n_threads)

    def wrapped(i):
        try:
            barrier.wait()
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_shapes_straddle_the_parallel_threshold():
    n_params = fastbp.n_params(SIZES)
    assert N_PAR * n_params >= config.PARALLEL_MIN_WORK > N_SER * n_params
    assert network.parallel_pays(N_PAR, n_params, True)
    assert not network.parallel_pays(N_SER, n_params)


@pytest.mark.parametrize("dtype", DTYPES)
def test_serial_and_parallel_twins_agree_bitwise(dtype):
    net = _model(dtype)
    x, y = _data(N_PAR, dtype)
    args = (net.params, net.spec.sizes, net.spec.activations)
    work = np.empty(fastbp.workspace_size(SIZES, N_PAR), dtype)
    outs, grads, losses = [], [], []
    for fwd, lg in (
        (network.forward_serial, network.loss_and_grad_serial),
        (network.forward_parallel, network.loss_and_grad_parallel),
    ):
        out = np.empty((N_PAR, SIZES[-1]), dtype)
        fwd(*args, x, out, work)
        g = np.empty_like(net.params)
        yk, lab, sw = net._backend.kernel_targets(y)
        losses.append(lg(*args, net.spec.loss, x, yk, lab, g, work, sw))
        outs.append(out)
        grads.append(g)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(grads[0], grads[1])
    assert losses[0] == losses[1]
    # and both equal the NumPy reference (the twins are compiled for the model's read-only
    # sizes and activations only: a writeable copy would be another specialisation to compile)
    assert_close(outs[0], fastbp.reference.forward(*args, x), dtype, factor=20)
    C_ref, g_ref = fastbp.reference.loss_and_grad(*args, "cross_entropy", x, y)
    assert_close(losses[0], C_ref, dtype, factor=20)
    assert_close(grads[0], g_ref, dtype, factor=20)
    # and through the public dispatcher, twice: bitwise deterministic
    for _ in range(2):
        out = np.empty((N_PAR, SIZES[-1]), dtype)
        fastbp.cpu.forward(*args, x, out, work)
        np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [N_SER, N_PAR])
def test_concurrent_calls_match_single_thread(dtype, n):
    net = _model(dtype)
    x, y = _data(n, dtype)
    loss0, g0 = net.loss_and_grad(x, y)
    g0 = g0.copy()
    p0 = net.predict(x)
    e0 = net.evaluate(x, y)
    theta = net.params.copy()
    bad = []

    def work(i):
        out = np.empty_like(net.params)
        for k in range(6):
            if (i + k) % 3 == 0:
                loss, g = net.loss_and_grad(x, y, out=out)
                if loss != loss0 or not np.array_equal(g, g0):
                    bad.append(("loss_and_grad", i, k))
            elif (i + k) % 3 == 1:
                if not np.array_equal(net.predict(x), p0):
                    bad.append(("predict", i, k))
            elif net.evaluate(x, y) != e0:
                bad.append(("evaluate", i, k))

    _run_threads(work)
    assert bad == []
    np.testing.assert_array_equal(net.params, theta)


def test_concurrent_calls_with_different_batch_sizes():
    net = _model(np.float32)
    batches = [_data(n, np.float32, seed=n) for n in (1, N_SER, 7, N_PAR)]
    expected = [net.predict(x) for x, _ in batches]
    bad = []

    def work(i):
        for k in range(8):
            j = (i + k) % len(batches)
            if not np.array_equal(net.predict(batches[j][0]), expected[j]):
                bad.append((i, k, j))

    _run_threads(work)
    assert bad == []


def test_two_fits_on_one_model_run_one_after_the_other():
    x, y = _data(40, np.float32)
    a = _model(np.float32)
    b = _model(np.float32)
    kw = dict(epochs=2, batch_size=8, seed=0, verbose=False)
    _run_threads(lambda i: a.fit(x, y, **kw), n_threads=2)
    b.fit(x, y, **kw)
    b.fit(x, y, **kw)
    np.testing.assert_array_equal(a.params, b.params)


def test_kernels_release_the_gil():
    for f in (
        network.forward_serial,
        network.forward_parallel,
        network.loss_and_grad_serial,
        network.loss_and_grad_parallel,
        fastbp.cpu.forward,
        fastbp.cpu.loss_and_grad,
    ):
        assert f.targetoptions.get("nogil") is True, f


def test_gate_counts_threads_not_nested_calls():
    gate = Gate()
    assert gate.enter()  # alone
    assert gate.enter()  # the same thread again: still alone
    seen = []

    def other():
        seen.append(gate.enter())
        gate.leave()

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [False]
    gate.leave()
    assert gate.alone()
    gate.leave()
    assert gate.active == 0


def test_model_pickles_and_copies_after_use():
    net = _model(np.float64)
    x, y = _data(N_SER, np.float64)
    p = net.predict(x)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        np.testing.assert_array_equal(clone.predict(x), p)
        clone.params[0] += 1.0
        assert net.params[0] != clone.params[0]


def test_worker_threads_need_more_work_to_go_parallel():
    from fastbp._threads import NEVER, min_parallel_work

    many = get_num_threads() > 1
    # pytest runs tests in the main thread
    assert min_parallel_work(True) == (config.PARALLEL_MIN_WORK if many else NEVER)
    assert min_parallel_work(False) == NEVER
    seen = []
    t = threading.Thread(target=lambda: seen.append((min_parallel_work(True), min_parallel_work(False))))
    t.start()
    t.join()
    assert seen == [(config.PARALLEL_MIN_WORK_THREAD if many else NEVER, NEVER)]
    assert config.PARALLEL_MIN_WORK_THREAD > config.PARALLEL_MIN_WORK
