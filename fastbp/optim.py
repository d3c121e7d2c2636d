"""Optimizers and learning-rate schedules for :meth:`fastbp.MLP.fit`.

The update rules themselves are the ``@njit`` kernels of :mod:`fastbp.cpu.optim`
(see its docstring for the exact formulations); the classes here only hold and
check hyper-parameters.  ``fit`` also accepts the names "sgd", "momentum",
"nesterov", "adam", "adamw" and "lbfgs".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._validation import check_float

__all__ = ["HP_ALPHA", "HP_CLIP", "HP_EPS_HAT", "HP_FLAG", "HP_H1", "HP_H2", "HP_H3", "HP_LR", "HP_SIZE",
           "HP_WEIGHT_DECAY", "LBFGS", "SGD", "Adam", "AdamW", "ConstantLR", "CosineLR", "OptimizerState", "StepLR",
           "get_optimizer", "get_schedule", "hyper_vector"]

# Optimizer codes of the compiled training loop.
SGD_CODE = 0
ADAM_CODE = 1

#: Slots of the hyper-parameter vector ``hp`` that the compiled (and the device) training steps
#: take: for SGD, H1 = momentum and FLAG = nesterov; for Adam, H1, H2, H3 = beta1, beta2, eps
#: and FLAG = decoupled weight decay.  CLIP <= 0 disables gradient clipping.  ALPHA is the L2
#: penalty on the weights (not the biases) of each minibatch's loss, α/(2m) Σ_l ‖W^l‖² (m the
#: batch's rows, or the sum of its sample weights), scikit-learn's ``alpha``; a vector of the
#: first 7 slots only has none.  EPS_HAT != 0: Adam's ε is the ε̂ of Kingma & Ba §2, see :class:`Adam`.
HP_LR, HP_H1, HP_H2, HP_H3, HP_WEIGHT_DECAY, HP_FLAG, HP_CLIP, HP_ALPHA, HP_EPS_HAT = range(9)
#: Length of the hyper-parameter vector.
HP_SIZE = 9


def adam_eps(eps: float, beta2: float, t: int, eps_hat: bool) -> float:
    """The ε of step t in the form θ ← θ − η m̂ / (√v̂ + ε) that the kernels compute: ``eps``, or
    for ε̂ (added to √v before the bias correction) ε̂ / √(1 − β₂^t)."""
    return eps / (1.0 - beta2**t) ** 0.5 if eps_hat else eps


@dataclass(frozen=True)
class SGD:
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    PyTorch's formulation; see :mod:`fastbp.cpu.optim`.  ``lr=None`` takes ``fit``'s ``lr``.
    """

    lr: float | None = None
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.lr is not None:
            check_float("lr", self.lr)
        check_float("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        check_float("weight_decay", self.weight_decay)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0")

    code = SGD_CODE

    def hyper(self) -> tuple[float, float, float, float, bool]:
        return (self.momentum, 0.0, 0.0, self.weight_decay, self.nesterov)


@dataclass(frozen=True)
class Adam:
    """Adam with L2 weight decay (added to the gradient).  ``lr=None`` takes ``fit``'s ``lr``.

    ``eps_hat=True`` takes ``eps`` as the ε̂ of Kingma & Ba §2 (θ ← θ − η √(1−β₂^t)/(1−β₁^t) ·
    m / (√v + ε̂)), the form of scikit-learn and TensorFlow; the default is PyTorch's
    θ ← θ − η m̂ / (√v̂ + ε).  The two differ where ``|∇|`` is not much larger than ε.
    """

    lr: float | None = None
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    eps_hat: bool = False

    def __post_init__(self):
        if self.lr is not None:
            check_float("lr", self.lr)
        check_float("beta1", self.beta1, 0.0, 1.0, hi_open=True)
        check_float("beta2", self.beta2, 0.0, 1.0, hi_open=True)
        check_float("eps", self.eps, 0.0, lo_open=True)
        check_float("weight_decay", self.weight_decay)

    code = ADAM_CODE
    decoupled = False

    def hyper(self) -> tuple[float, float, float, float, bool]:
        return (self.beta1, self.beta2, self.eps, self.weight_decay, self.decoupled)


@dataclass(frozen=True)
class AdamW(Adam):
    """Adam with decoupled weight decay (θ ← θ − η λ θ), default λ = 0.01."""

    weight_decay: float = 0.01
    decoupled = True


@dataclass(frozen=True)
class LBFGS:
    """Full-batch L-BFGS through ``scipy.optimize.minimize(method="L-BFGS-B")``.

    Each epoch of ``fit`` is one L-BFGS iteration.  ``weight_decay`` adds λ/2 ‖θ‖².  ``gtol``
    and ``max_fun`` are SciPy's ``gtol`` (stop when the largest gradient component is below it)
    and ``maxfun`` (the most loss evaluations), with SciPy's defaults.
    """

    weight_decay: float = 0.0
    history_size: int = 10
    gtol: float = 1e-5
    max_fun: int = 15000

    def __post_init__(self):
        check_float("weight_decay", self.weight_decay)
        check_float("gtol", self.gtol)
        for name in ("history_size", "max_fun"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {v!r}")


def hyper_vector(opt, lr: float, clip: float, alpha: float = 0.0) -> np.ndarray:
    """The float64 ``hp`` vector of ``opt`` for the compiled training step (slots ``HP_*``)."""
    hp = np.zeros(HP_SIZE)
    hp[HP_ALPHA] = alpha
    hp[HP_EPS_HAT] = float(bool(getattr(opt, "eps_hat", False)))
    h1, h2, h3, wd, flag = opt.hyper()
    hp[HP_LR], hp[HP_H1], hp[HP_H2], hp[HP_H3] = lr, h1, h2, h3
    hp[HP_WEIGHT_DECAY], hp[HP_FLAG], hp[HP_CLIP] = wd, float(flag), clip
    return hp


@dataclass(eq=False)
class OptimizerState:
    """What an optimizer carries from step to step: a buffer of 2P numbers and the step count.

    ``buffer`` holds [velocity, unused] for SGD and [m, v] for Adam; ``t`` counts the steps
    taken.  A model keeps one and passes it on to the next ``fit`` with the same optimizer.
    """

    key: tuple
    buffer: np.ndarray
    t: int = 0

    @classmethod
    def for_optimizer(cls, opt, previous: OptimizerState | None, n_params: int, dtype) -> OptimizerState:
        """``previous`` if it belongs to ``opt`` (same class and settings), else a fresh state."""
        key = (type(opt), opt.hyper())
        if previous is not None and previous.key == key and previous.buffer.shape == (2 * n_params,):
            return previous
        return cls(key, np.zeros(2 * n_params, dtype=dtype), 0)

    @property
    def first(self) -> np.ndarray:
        return self.buffer[: self.buffer.shape[0] // 2]

    @property
    def second(self) -> np.ndarray:
        return self.buffer[self.buffer.shape[0] // 2 :]


def reference_step(opt, params: np.ndarray, grad: np.ndarray, state: OptimizerState, lr: float) -> None:
    """One optimizer step in NumPy, in place (the update rules of :mod:`fastbp.cpu.optim`)."""
    T = params.dtype.type
    state.t += 1
    h1, h2, h3, wd, flag = opt.hyper()
    m, v = state.first, state.second
    if opt.code == SGD_CODE:
        g = grad + T(wd) * params
        if h1 == 0:
            params -= T(lr) * g
            return
        m[...] = T(h1) * m + g
        params -= T(lr) * (g + T(h1) * m if flag else m)
        return
    t = state.t
    b1, b2, eps = T(h1), T(h2), T(adam_eps(h3, h2, t, opt.eps_hat))
    if flag:  # decoupled
        params *= T(1.0 - lr * wd)
        g = grad
    else:
        g = grad + T(wd) * params
    m[...] = b1 * m + (T(1) - b1) * g
    v[...] = b2 * v + (T(1) - b2) * g * g
    c1 = T(1.0 - h1**t)
    c2 = T(1.0 - h2**t)
    params -= (T(lr) / c1) * m / (np.sqrt(v) * T(1.0 / np.sqrt(float(c2))) + eps)


_NAMED = {
    "sgd": lambda: SGD(),
    "momentum": lambda: SGD(momentum=0.9),
    "nesterov": lambda: SGD(momentum=0.9, nesterov=True),
    "adam": lambda: Adam(),
    "adamw": lambda: AdamW(),
    "lbfgs": lambda: LBFGS(),
}


def get_optimizer(optimizer):
    """An optimizer object from a name or an object."""
    if isinstance(optimizer, str):
        if optimizer not in _NAMED:
            raise ValueError(f"optimizer: unknown optimizer {optimizer!r}; expected one of {', '.join(_NAMED)}")
        return _NAMED[optimizer]()
    if isinstance(optimizer, (SGD, Adam, LBFGS)):
        return optimizer
    raise TypeError(f"optimizer: expected a name or a fastbp.optim optimizer, got {optimizer!r}")


# -- learning-rate schedules ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConstantLR:
    """η_e = η."""

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return lr


@dataclass(frozen=True)
class StepLR:
    """η_e = η γ^⌊e / step_size⌋ (epochs counted from 0)."""

    step_size: int = 10
    gamma: float = 0.1

    def __post_init__(self):
        if not isinstance(self.step_size, int) or self.step_size < 1:
            raise ValueError(f"step_size: expected an integer >= 1, got {self.step_size!r}")
        check_float("gamma", self.gamma, 0.0, 1.0, lo_open=True)

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return lr * self.gamma ** (epoch // self.step_size)


@dataclass(frozen=True)
class CosineLR:
    """η_e = η_min + (η − η_min)(1 + cos(π e / epochs)) / 2."""

    min_lr: float = 0.0

    def __post_init__(self):
        check_float("min_lr", self.min_lr)

    def __call__(self, lr: float, epoch: int, epochs: int) -> float:
        return self.min_lr + (lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * epoch / epochs))


_SCHEDULES = {"constant": ConstantLR, "step": StepLR, "cosine": CosineLR}


def get_schedule(schedule):
    """A schedule object from a name, a schedule object, or a callable (lr, epoch, epochs) -> lr."""
    if isinstance(schedule, str):
        if schedule not in _SCHEDULES:
            raise ValueError(f"schedule: unknown schedule {schedule!r}; expected one of {', '.join(_SCHEDULES)}")
        return _SCHEDULES[schedule]()
    if callable(schedule):
        return schedule
    raise TypeError(f"schedule: expected a name or a callable (lr, epoch, epochs) -> lr, got {schedule!r}")
