"""Loaded by pytest before any test module: run CUDA code on Numba's simulator.

``NUMBA_ENABLE_CUDASIM`` is read once, when numba is first imported, so it has
to be set here, before the benchmark or test modules import fastbp.  On a
machine with a GPU, ``NUMBA_ENABLE_CUDASIM=0 python -m pytest`` runs the CUDA
tests on the GPU instead.
"""

import os

import pytest

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

if os.environ["NUMBA_ENABLE_CUDASIM"] not in ("", "0"):
    import sys

    # The simulator runs each GPU thread as a Python thread while the launching thread polls them
    # in a loop that holds the GIL: a simulated thread that is ready to run waits for the next
    # forced switch (5 ms by default).  At 1 ms the CUDA tests run about 2.4x faster.
    sys.setswitchinterval(0.001)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run the tests marked slow: large shapes, and checks that repeat others at a cost")


#: Modules whose tests run long (fresh subprocesses that compile, or a user's @njit loop): run
#: first, so that pytest-xdist's workers do not end with one of them while the other is idle.
LONG_FIRST = ("test_same_bits", "test_tiers", "test_cache", "test_kernels", "test_model", "test_benchmark")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(LONG_FIRST)))
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="marked slow: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
