"""One engine per backend behind one protocol.

:class:`Backend` is what :class:`fastbp.MLP` and the one ``fit`` driver
(:mod:`fastbp.training`) call; :func:`get_backend` is the one place that maps a backend's
name to its class.  The implementations:

- ``numpy`` (:mod:`fastbp.backends.numpy`): the NumPy reference, written for clarity;
- ``cpu`` (:mod:`fastbp.backends.cpu`): the Numba kernels of :mod:`fastbp.cpu`;
- ``cuda`` (:mod:`fastbp.backends.cuda`): the CUDA kernels of :mod:`fastbp.cuda`.

Each module is imported only when a model asks for its backend, so ``import fastbp`` loads
neither the compiled kernels nor numba-cuda.  docs/architecture.md describes how to add one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    import numpy as np

    from ..layout import NetworkSpec
    from ..optim import OptimizerState

__all__ = ["BACKENDS", "Backend", "EpochStats", "Trainer", "get_backend"]

#: Backend names, and the module and class of each.
_REGISTRY = {
    "cpu": ("fastbp.backends.cpu", "CpuBackend"),
    "numpy": ("fastbp.backends.numpy", "NumpyBackend"),
    "cuda": ("fastbp.backends.cuda", "CudaBackend"),
}
#: The names ``MLP(backend=...)`` takes.
BACKENDS = tuple(_REGISTRY)


class EpochStats(NamedTuple):
    """What one training epoch reports: sums over the minibatch steps it completed."""

    loss_sum: float  # Σ over steps of (batch loss × batch rows), without the penalty
    n_seen: int  # rows of the completed steps
    n_correct: int  # correct predictions (classifiers)
    n_counted: int  # predictions counted
    steps: int  # completed steps
    diverged: bool  # a step's loss or gradient was not finite: it was not applied, the epoch stopped
    penalty_sum: float = 0.0  # Σ over steps of (batch penalty α/(2m) Σ‖W‖² × batch rows)

    @property
    def loss(self) -> float:
        """The mean over the epoch's rows of the batch objective (loss plus penalty)."""
        return (self.loss_sum + self.penalty_sum) / self.n_seen if self.n_seen else float("nan")

    @property
    def accuracy(self) -> float:
        return self.n_correct / self.n_counted if self.n_counted else float("nan")


class Trainer(Protocol):
    """One ``fit`` call's training state on a backend (a context manager).

    Entering it takes what the backend needs for training (the cpu backend's thread gate, the
    cuda backend's lock and device copies); leaving it, however the block ends, leaves θ, the
    optimizer state and its step count on the host at the end of the last completed step.
    """

    def __enter__(self) -> Trainer: ...

    def __exit__(self, *exc) -> None: ...

    def run_epoch(self, perm: np.ndarray, lr: float, check_interrupt: Callable[[], None]) -> EpochStats:
        """The minibatch steps of one epoch in the order ``perm``; ``check_interrupt()`` runs at
        step boundaries (it raises KeyboardInterrupt).  Stops at the first non-finite step."""

    def evaluate(self, x: Any, y: Any) -> tuple[float, float | None]:
        """(loss, accuracy or None) of checked data at the current θ."""

    def pull(self) -> None:
        """Bring θ, the optimizer state and the step count to the host (before a callback)."""

    def push(self) -> None:
        """Take θ from the host again (after a callback, which may have changed it)."""

    def scale_velocity(self, factor: float) -> None:
        """Multiply the optimizer's first buffer (SGD's velocity, Adam's m) by ``factor``."""

    def snapshot(self) -> Any:
        """A copy of the current θ (early stopping's best epoch)."""

    def restore(self, snapshot: Any) -> None:
        """Set θ to a snapshot."""


class Backend(Protocol):
    """The computations of one kind of hardware, for one network (its :class:`fastbp.NetworkSpec`).

    The ``check_*`` methods run the boundary checks of ``fastbp._validation`` (the same
    messages on every backend) and return the data in the form the other methods take.  No
    method changes ``params`` except through a :class:`Trainer`.
    """

    name: str
    spec: NetworkSpec

    def check_x(self, x: Any, name: str = "x") -> tuple[Any, bool]:
        """(checked x, whether it was one 1-D sample)."""

    def check_y(self, y: Any, n: int, name: str = "y") -> Any: ...

    def check_sample_weight(self, sample_weight: Any, n: int) -> Any: ...

    def check_out(self, out: Any, params: np.ndarray) -> Any: ...

    def forward(self, params: np.ndarray, x: Any) -> Any:
        """a^L of checked x (on the host for host input)."""

    def evaluate(self, params: np.ndarray, x: Any, y: Any) -> tuple[float, float | None]:
        """(C, accuracy or None): the forward pass and the loss, no gradient."""

    def loss_and_grad(self, params: np.ndarray, x: Any, y: Any, sample_weight: Any, grad: Any) -> float:
        """C, with ∂C/∂θ written into ``grad``."""

    def trainer(self, params: np.ndarray, x: Any, y: Any, sample_weight: Any, opt: Any, state: OptimizerState,
                batch_size: int, clip: float, alpha: float = 0.0) -> Trainer:
        """A :class:`Trainer` for minibatch training of ``params`` in place with ``opt``: gradient
        clipping to norm ``clip`` (0: none) and the weights' L2 penalty ``alpha`` (see
        :data:`fastbp.optim.HP_ALPHA`)."""


def check_backend_name(backend) -> str:
    """``backend`` if it names a backend that can run here; else a ValueError or RuntimeError."""
    if not isinstance(backend, str) or backend not in _REGISTRY:
        raise ValueError(f"backend: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "cuda":  # the one name-specific check: whether numba-cuda can run here
        from ..cuda import unavailable_reason

        why = unavailable_reason()
        if why is not None:
            raise RuntimeError(f"backend: 'cuda' cannot run here: {why}")
    return backend


def get_backend(name: str, spec: NetworkSpec) -> Backend:
    """A new backend ``name`` for the network ``spec`` (its module imported on first use)."""
    module, cls = _REGISTRY[check_backend_name(name)]
    return getattr(importlib.import_module(module), cls)(spec)
