"""A user's ``@njit`` training loop around fastbp's kernels: the ``njit`` contender.

Its own module, imported only by that contender, so that the other contenders' processes do
not import :mod:`fastbp.cpu` (which starts Numba's thread pool).
"""

from fastbp import cpu
from fastbp._cache import cached_njit
from fastbp.cpu.optim import sgd_step

#: The SGD step's learning rate (as every contender's).
LR = 1e-3


@cached_njit()
def sgd_loop(params, sizes, acts, loss, x, y, grad, work, velocity, steps):
    """``steps`` SGD steps: the training step's kernel, then the update, with no Python between."""
    for _ in range(steps):
        cpu.loss_and_grad(params, sizes, acts, loss, x, y, grad, work)
        sgd_step(params, grad, velocity, LR, 0.0, False, 0.0)
