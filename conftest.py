"""Loaded by pytest before any test module: run CUDA code on Numba's simulator.

``NUMBA_ENABLE_CUDASIM`` is read once, when numba is first imported, so it has
to be set here, before the benchmark or test modules import fastbp.  On a
machine with a GPU, ``NUMBA_ENABLE_CUDASIM=0 python -m pytest`` runs the CUDA
tests on the GPU instead.
"""

import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
