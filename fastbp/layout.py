"""The flat parameter layout θ = [W^1.ravel(), b^1, W^2.ravel(), b^2, ...].

W^l has shape (n_l, n_{l-1}) and is stored row-major, b^l has shape (n_l,).
The gradient uses the same layout, and so do optimizer states.

The workspace of the whole-network kernels holds, for every layer l, the
weighted inputs z^l and the activations a^l of the minibatch, each (N, n_l)
row-major, one after the other: [z^1, a^1, z^2, a^2, ...].  The backward pass
reuses them for δ, so no other buffer is needed.

:class:`NetworkSpec` bundles what the kernels need to know of a network besides θ: its widths,
activation codes, loss code and dtype, with the offsets of the θ layout.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic

from . import activations as _A
from . import losses as _L
from ._cache import cached_njit
from ._validation import check_activations, check_dtype, check_loss, check_sizes

__all__ = [
    "NetworkSpec",
    "n_params",
    "split_params",
    "weight_offset",
    "workspace_size",
]


@cached_njit()
def weight_offset(sizes, layer):
    """Offset of W^{layer+1} (0-based ``layer``) in θ."""
    off = 0
    for i in range(layer):
        off += sizes[i + 1] * sizes[i] + sizes[i + 1]
    return off


@cached_njit()
def activation_offset(sizes, layer, n_samples):
    """Offset of z^{layer+1} in the workspace; a^{layer+1} follows it."""
    off = 0
    for i in range(layer):
        off += 2 * n_samples * sizes[i + 1]
    return off


@intrinsic
def view2d(typingctx, buf, offset, rows, cols):
    """``buf[offset : offset + rows * cols].reshape((rows, cols))`` for compiled code, without
    the cost of ``reshape``.

    Numba's ``reshape`` calls a C helper to check that the new shape fits; the whole-network
    kernels take some 30 such views of θ, the gradient and the workspace per step, and the
    checks would be a visible part of a small network's step.  This view trusts its
    arguments: ``buf`` is 1-D and C-contiguous and holds ``offset + rows * cols`` elements.
    """
    if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C"):
        return None
    ret = types.Array(buf.dtype, 2, "C")

    def codegen(context, builder, sig, args):
        # imported when a kernel compiles (or a cached one's environment names it), not with
        # ``import fastbp``: numba.np.arrayobj brings some ten thousand objects
        from numba.np.arrayobj import make_array, populate_array

        src = make_array(sig.args[0])(context, builder, value=args[0])
        dst = make_array(ret)(context, builder)
        off, nr, nc = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:], strict=True))
        itemsize = src.itemsize
        populate_array(dst, data=builder.gep(src.data, [off]), shape=cgutils.pack_array(builder, [nr, nc]),
                       strides=cgutils.pack_array(builder, [builder.mul(nc, itemsize), itemsize]),
                       itemsize=itemsize, meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, ret, dst._getvalue())

    return ret(buf, offset, rows, cols), codegen


def n_params(sizes) -> int:
    """Length of θ for layer widths ``sizes`` = [n0, n1, ..., nL]."""
    s = [int(v) for v in sizes]
    return sum(s[i + 1] * s[i] + s[i + 1] for i in range(len(s) - 1))


def workspace_size(sizes, n_samples: int) -> int:
    """Length of the workspace the whole-network kernels need for a batch of ``n_samples``.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths [n0, ..., nL].
    n_samples : int
        Batch size N.

    Returns
    -------
    int
        2 · N · (n1 + ... + nL).
    """
    return 2 * int(n_samples) * sum(int(v) for v in list(sizes)[1:])


def split_params(params: np.ndarray, sizes) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Views (W^1..W^L, b^1..b^L) into a flat θ (no copy).

    Parameters
    ----------
    params : 1-D ndarray
        θ, of length ``n_params(sizes)``.
    sizes : sequence of int
        Layer widths.

    Returns
    -------
    weights, biases : tuples of ndarray views
    """
    s = [int(v) for v in sizes]
    ws, bs = [], []
    off = 0
    for i in range(len(s) - 1):
        n_out, n_in = s[i + 1], s[i]
        ws.append(params[off : off + n_out * n_in].reshape(n_out, n_in))
        off += n_out * n_in
        bs.append(params[off : off + n_out])
        off += n_out
    return tuple(ws), tuple(bs)


def _frozen(values) -> np.ndarray:
    a = np.array(values, dtype=np.int64)
    a.flags.writeable = False
    return a


class NetworkSpec:
    """What the kernels need to know of a network besides θ: immutable, hashable.

    ``net.spec`` gives a model's.  Its arrays are the arguments of the whole-network kernels::

        spec = net.spec
        fastbp.cpu.loss_and_grad(params, spec.sizes, spec.activations, spec.loss, x, y, grad, work)
        fastbp.cpu.forward(params, spec.sizes, spec.activations, x, out, work)

    Parameters
    ----------
    sizes : sequence of int
        Layer widths [n0, ..., nL].
    activations : str or sequence of str
        One activation name for every layer, or one per layer.
    loss : str
        Loss name (``fastbp.losses.NAMES``); it must suit the output activation.
    dtype : np.float32 or np.float64

    Attributes
    ----------
    sizes : read-only int64 ndarray
        [n0, ..., nL].
    activations : read-only int64 ndarray
        Activation code of each of the L layers (``fastbp.activations.CODES``).
    loss : int
        Loss code (``fastbp.losses.CODES``).
    dtype : numpy.dtype
    activation_names : tuple of str
    loss_name : str
    n_layers : int
        L.
    n_params : int
        Length of θ.
    n_inputs, n_outputs : int
        n0 and nL.
    weight_offsets, bias_offsets : tuple of int
        Where W^l and b^l start in θ (0-based layer index).
    """

    # Plain slots (C-level attribute reads: the model reads them on every call), set once here;
    # __setattr__ refuses any later change.
    __slots__ = ("sizes", "activations", "loss", "dtype", "activation_names", "loss_name", "weight_offsets",
                 "bias_offsets", "n_params", "n_inputs", "n_outputs", "_widths")

    def __init__(self, sizes, activations, loss, dtype):
        widths = check_sizes(sizes)
        names = check_activations(activations, len(widths) - 1)
        loss_name = check_loss(loss, names[-1])
        wo, bo, off = [], [], 0
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
            wo.append(off)
            bo.append(off + n_out * n_in)
            off += n_out * n_in + n_out
        values = {
            "sizes": _frozen(widths),
            "activations": _frozen([_A.CODES[a] for a in names]),
            "loss": _L.CODES[loss_name],
            "dtype": check_dtype(dtype),
            "activation_names": names,
            "loss_name": loss_name,
            "weight_offsets": tuple(wo),
            "bias_offsets": tuple(bo),
            "n_params": off,
            "n_inputs": widths[0],
            "n_outputs": widths[-1],
            "_widths": widths,
        }
        for k, v in values.items():
            object.__setattr__(self, k, v)

    def __setattr__(self, name, value):
        raise AttributeError(f"NetworkSpec is immutable (cannot set {name!r})")

    def __delattr__(self, name):
        raise AttributeError(f"NetworkSpec is immutable (cannot delete {name!r})")

    @property
    def n_layers(self) -> int:
        """L, the number of layers with parameters."""
        return len(self.activation_names)

    @property
    def is_classifier(self) -> bool:
        """Softmax + cross-entropy or sigmoid + binary cross-entropy: ``evaluate`` reports accuracy."""
        return self.activation_names[-1] in ("softmax", "sigmoid") and self.loss_name in (
            "cross_entropy", "binary_cross_entropy")

    @property
    def widths(self) -> tuple[int, ...]:
        """``sizes`` as a tuple of Python ints."""
        return self._widths

    def workspace_size(self, n_samples: int) -> int:
        """Elements of the workspace the whole-network kernels need for a batch of ``n_samples``."""
        return workspace_size(self._widths, n_samples)

    def split(self, params: np.ndarray) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """Views (W^1..W^L, b^1..b^L) into θ."""
        return split_params(params, self._widths)

    def _key(self):
        return (self._widths, self.activation_names, self.loss_name, self.dtype.name)

    def __eq__(self, other):
        return isinstance(other, NetworkSpec) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __reduce__(self):
        return (NetworkSpec, (self._widths, self.activation_names, self.loss_name, self.dtype))

    def __repr__(self) -> str:
        return (f"NetworkSpec(sizes={list(self._widths)}, activations={list(self.activation_names)}, "
                f"loss={self.loss_name!r}, dtype=np.{self.dtype.name})")
