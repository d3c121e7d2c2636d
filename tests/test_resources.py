"""Resource limits: sizes that cannot fit get a clear error before allocation; big batches run in chunks."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastbp
from fastbp import _resources, config

from .conftest import DTYPES


def test_a_network_too_large_for_memory_is_refused_before_allocation():
    tracemalloc.start()
    try:
        with pytest.raises(fastbp.ResourceError, match=r"^sizes: .*\[300000, 300000, 1\].* bytes .* needed") as info:
            fastbp.MLP([300000, 300000, 1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ValueError)


def test_a_batch_whose_workspace_does_not_fit_is_refused(monkeypatch):
    net = fastbp.MLP([4, 5, 3], ["tanh", "softmax"], "cross_entropy", seed=0)
    x = np.ones((11, 4), np.float32)
    y = np.zeros(11, np.int64)
    before = net.params.copy()
    monkeypatch.setattr(_resources, "CHECK_FROM_BYTES", 0)
    monkeypatch.setattr(_resources, "available_memory", lambda: 64)
    with pytest.raises(fastbp.ResourceError, match=r"^x: the workspace of a batch of 11 samples \(176 float32"):
        net.loss_and_grad(x, y)
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 13, 66])
def test_predict_and_evaluate_in_chunks_match_one_call(monkeypatch, dtype, n):
    net = fastbp.MLP([5, 6, 4], ["relu", "softmax"], "cross_entropy", dtype=dtype, seed=2)
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 5)).astype(dtype)
    y = rng.integers(0, 4, n)
    whole = net.predict(x)
    e_whole = net.evaluate(x, y)
    per_row = fastbp.workspace_size(net.sizes, 1) * np.dtype(dtype).itemsize
    monkeypatch.setattr(config, "MAX_WORKSPACE_BYTES", 5 * per_row)  # chunks of 4 rows
    assert net._backend.chunk_rows() == 4
    seen = []
    original = net._backend.workspace
    monkeypatch.setattr(net._backend, "workspace", lambda m: seen.append(m) or original(m))
    np.testing.assert_array_equal(net.predict(x), whole)
    assert max(seen) <= 4
    e = net.evaluate(x, y)
    assert e["accuracy"] == e_whole["accuracy"]
    assert e["loss"] == pytest.approx(e_whole["loss"], rel=1e-6 if dtype == np.float32 else 1e-13)
