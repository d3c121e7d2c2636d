"""Compatibility shims for numba-cuda, applied before any kernel is compiled.

numba-cuda 0.30.4 (the last release; the project is in maintenance mode)
registers an overload for ``np.row_stack`` unconditionally, and NumPy 2.5
removed that alias of ``np.vstack``: with NumPy >= 2.5 the first kernel
compilation fails with ``AttributeError: module 'numpy' has no attribute
'row_stack'`` (NVIDIA/numba-cuda#907).  Restoring the alias, which is exactly
``np.vstack``, lets numba-cuda load; nothing in fastbp uses it.
"""

from __future__ import annotations

import numpy as np

# Through the module's namespace (a string key), so that linters' NumPy-2 fixers leave it alone.
np.__dict__.setdefault("row_stack", np.vstack)
