"""The benchmark suite: one training step of fastbp against the step a user writes in NumPy,
PyTorch eager and ``jax.jit``, on the named configurations, a sweep, or any network.

Run it with ``python -m fastbp bench`` (``--quick`` for a one-minute run, ``--help`` for the
options); ``python -m fastbp bench --compare OLD.json NEW.json`` compares two runs.
"""

from .configs import CONFIGS, SWEEP, problem, spec_of, step_flops
from .contenders import CONTENDERS, NotInstalled, lean_numpy_step, make_step, median_time
from .suite import compare, fingerprint, in_fresh_process, markdown, run

__all__ = [
    "CONFIGS", "CONTENDERS", "SWEEP", "NotInstalled", "compare", "fingerprint", "in_fresh_process",
    "lean_numpy_step", "make_step", "markdown", "median_time", "problem", "run", "spec_of", "step_flops",
]
