"""``@cuda.jit`` kernels (numba-cuda) with the names and roles of :mod:`fastbp.cpu`'s.

- forward product + activation: :func:`linear_forward`
- BP1 δ^L = ∇_a C ⊙ σ'(z^L): :func:`output_delta`
- BP2 δ^l = ((W^{l+1})^T δ^{l+1}) ⊙ σ'(z^l): :func:`backprop_delta`
- BP3 ∂C/∂w^l_jk = Σ_n a^{l-1}_nk δ^l_nj: :func:`weight_grad`
- BP4 ∂C/∂b^l_j = Σ_n δ^l_nj: :func:`bias_grad` (fused with BP3: :func:`weight_bias_grad`)
- whole network: :func:`forward`, :func:`loss_and_grad` (one fully fused launch for networks of
  widths up to 64, tiled products otherwise)
- optimizers: :func:`sgd_step`, :func:`adam_step`

All of them take device arrays and keep everything on the device.  Without a
GPU they run on Numba's CUDA simulator when ``NUMBA_ENABLE_CUDASIM=1`` is set
before numba is imported (slow: for tests only).
"""

from __future__ import annotations

__all__ = [
    "adam_step",
    "available",
    "backprop_delta",
    "bias_grad",
    "forward",
    "linear_forward",
    "loss_and_grad",
    "output_delta",
    "sgd_step",
    "unavailable_reason",
    "weight_bias_grad",
    "weight_grad",
]


def unavailable_reason() -> str | None:
    """None when CUDA kernels can run here (a GPU, or the simulator); else what is missing."""
    try:
        from numba import cuda
    except ImportError as e:  # pragma: no cover - numba-cuda missing
        return f"numba-cuda is not installed ({e}); install fastbp[cuda]"
    try:
        ok = cuda.is_available()
    except Exception as e:  # pragma: no cover - driver errors
        return f"the CUDA driver could not be initialised ({e})"
    if not ok:
        return (
            "no CUDA GPU was found (numba.cuda.is_available() is False); set NUMBA_ENABLE_CUDASIM=1 "
            "before importing numba to run on the simulator"
        )
    return None


def available() -> bool:
    """Whether the CUDA kernels can run here (a GPU, or the simulator)."""
    return unavailable_reason() is None


def __getattr__(name):
    if name in ("forward", "loss_and_grad"):
        from . import network

        return getattr(network, name)
    if name in (
        "adam_step",
        "backprop_delta",
        "bias_grad",
        "linear_forward",
        "output_delta",
        "sgd_step",
        "weight_bias_grad",
        "weight_grad",
    ):
        from . import kernels

        return getattr(kernels, name)
    raise AttributeError(f"module 'fastbp.cuda' has no attribute {name!r}")
