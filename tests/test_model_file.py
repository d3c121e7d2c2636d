"""``MLP.load`` treats a model file as untrusted input.

Every mutated file (truncated, bits flipped, entries swapped, missing or added, descriptions
edited to huge sizes) must give a ``ValueError`` naming the path, or (for a change the format
does not see, in a zip timestamp say) a model equal to the original, and never allocate what
the file merely claims.  ``save`` is atomic: an interrupted write leaves the old file in place.
"""

from __future__ import annotations

import io
import os
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastbp

from .conftest import DTYPES

SIZES = [5, 7, 3]


def _net(dtype=np.float32):
    return fastbp.MLP(SIZES, ["tanh", "softmax"], "cross_entropy", dtype=dtype, seed=1)


def _bytes(net) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **_entries(net))
    return buf.getvalue()


def _entries(net) -> dict:
    return dict(
        format=np.array("fastbp-mlp"),
        version=np.array(1),
        sizes=np.array(net.sizes, dtype=np.int64),
        activations=np.array(net.activations),
        loss=np.array(net.loss),
        dtype=np.array(net.dtype.name),
        init=np.array(net.init),
        params=net.params,
    )


def _same(a, b) -> bool:
    return (
        a.sizes == b.sizes
        and a.activations == b.activations
        and a.loss == b.loss
        and a.dtype == b.dtype
        and a.params.dtype == b.params.dtype
        and np.array_equal(a.params, b.params)
    )


def _load_or_value_error(path, original):
    """Load ``path``: a ValueError naming it, or a model equal to ``original``; nothing else."""
    try:
        back = fastbp.MLP.load(path)
    except ValueError as e:
        assert repr(os.fspath(path)) in str(e), str(e)
        return False
    assert _same(back, original)
    return True


@pytest.fixture(scope="module")
def good():
    net = _net()
    return net, _bytes(net)


def test_saved_file_is_what_the_fuzz_tests_mutate(tmp_path, good):
    net, raw = good
    net.save(tmp_path / "saved.npz")
    assert _same(fastbp.MLP.load(tmp_path / "saved.npz"), net)
    path = tmp_path / "m.npz"
    path.write_bytes(raw)
    assert _same(fastbp.MLP.load(path), net)


@pytest.mark.parametrize("tenth", range(10))
def test_truncated_files_are_rejected(tmp_path, good, tenth):
    net, raw = good
    path = tmp_path / "t.npz"
    path.write_bytes(raw[: len(raw) * tenth // 10])
    assert not _load_or_value_error(path, net)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), min_size=1, max_size=3))
def test_bit_flipped_files_load_equal_or_are_rejected(tmp_path, good, flips):
    net, raw = good
    b = bytearray(raw)
    for where, bit in flips:
        b[int(where * len(b))] ^= 1 << bit
    path = tmp_path / "f.npz"
    path.write_bytes(bytes(b))
    _load_or_value_error(path, net)


def _write(path, entries):
    with open(path, "wb") as f:
        np.savez(f, **entries)


@pytest.mark.parametrize(
    "change",
    [
        "swap_params_sizes",
        "swap_loss_dtype",
        "missing_params",
        "missing_sizes",
        "extra_entry",
        "sizes_float",
        "sizes_2d",
        "activations_too_few",
        "params_wrong_length",
        "params_other_dtype",
        "params_2d",
        "params_nan",
        "params_object",
        "version_2",
        "format_other",
        "loss_unknown",
        "dtype_int",
    ],
)
def test_rearranged_and_edited_files_are_rejected(tmp_path, good, change):
    net, _ = good
    e = _entries(net)
    if change == "swap_params_sizes":
        e["params"], e["sizes"] = e["sizes"], e["params"]
    elif change == "swap_loss_dtype":
        e["loss"], e["dtype"] = e["dtype"], e["loss"]
    elif change.startswith("missing_"):
        del e[change[len("missing_") :]]
    elif change == "extra_entry":
        e["payload"] = np.zeros(3)
    elif change == "sizes_float":
        e["sizes"] = e["sizes"].astype(np.float64)
    elif change == "sizes_2d":
        e["sizes"] = e["sizes"].reshape(1, -1)
    elif change == "activations_too_few":
        e["activations"] = e["activations"][:1]
    elif change == "params_wrong_length":
        e["params"] = e["params"][:-1]
    elif change == "params_other_dtype":
        e["params"] = e["params"].astype(np.float64)
    elif change == "params_2d":
        e["params"] = e["params"].reshape(2, -1)
    elif change == "params_nan":
        e["params"] = e["params"].copy()
        e["params"][3] = np.nan
    elif change == "params_object":
        e["params"] = np.array([None, 1.0], dtype=object)
    elif change == "version_2":
        e["version"] = np.array(2)
    elif change == "format_other":
        e["format"] = np.array("something-else")
    elif change == "loss_unknown":
        e["loss"] = np.array("hinge")
    elif change == "dtype_int":
        e["dtype"] = np.array("int32")
    path = tmp_path / f"{change}.npz"
    if change == "params_object":
        with zipfile.ZipFile(path, "w") as zf:  # np.savez would refuse nothing here: write it by hand
            for k, v in e.items():
                with zf.open(k + ".npy", "w") as f:
                    np.lib.format.write_array(f, v, allow_pickle=True)
    else:
        _write(path, e)
    assert not _load_or_value_error(path, net)


@pytest.mark.parametrize("sizes", [[300000, 300000, 1], [2**40, 2**40, 1], [4, 2**62, 3]])
def test_huge_sizes_are_rejected_without_allocating(tmp_path, good, sizes):
    net, _ = good
    e = _entries(net)
    e["sizes"] = np.array(sizes, dtype=np.int64)
    path = tmp_path / "huge.npz"
    _write(path, e)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="huge.npz"):
            fastbp.MLP.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_huge_params_claimed_by_a_consistent_file_are_a_resource_error(tmp_path, good, monkeypatch):
    """A file whose sizes and params header agree on more memory than there is: an error naming the bytes."""
    from fastbp import _resources

    net, _ = good
    path = tmp_path / "m.npz"
    net.save(path)
    monkeypatch.setattr(_resources, "CHECK_FROM_BYTES", 0)
    monkeypatch.setattr(_resources, "available_memory", lambda: 100)
    with pytest.raises(fastbp.ResourceError, match=r"m\.npz.*264 bytes") as info:
        fastbp.MLP.load(path)
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ValueError)


def test_compressed_and_byte_swapped_files_load(tmp_path, good):
    net, _ = good
    e = _entries(net)
    e["params"] = e["params"].astype(e["params"].dtype.newbyteorder(">"))
    path = tmp_path / "c.npz"
    with open(path, "wb") as f:
        np.savez_compressed(f, **e)
    back = fastbp.MLP.load(path)
    assert _same(back, net) and back.params.dtype.isnative


@pytest.mark.parametrize("dtype", DTYPES)
def test_decompression_bomb_is_bounded(tmp_path, dtype):
    """A compressed entry that claims more bytes than its header implies is refused before reading."""
    net = _net(dtype)
    e = _entries(net)
    e["loss"] = np.array("cross_entropy" + " " * 5_000_000)  # 20 MB of text, compresses to kilobytes
    path = tmp_path / "bomb.npz"
    with open(path, "wb") as f:
        np.savez_compressed(f, **e)
    assert path.stat().st_size < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="bomb.npz"):
            fastbp.MLP.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_missing_file_and_directory_raise_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastbp.MLP.load(tmp_path / "nope.npz")
    with pytest.raises(IsADirectoryError):
        fastbp.MLP.load(tmp_path)


def test_interrupted_save_leaves_the_old_file(tmp_path, good, monkeypatch):
    net, _ = good
    path = tmp_path / "m.npz"
    net.save(path)
    before = path.read_bytes()
    other = fastbp.MLP(SIZES, ["tanh", "softmax"], "cross_entropy", seed=9)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        other.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]
