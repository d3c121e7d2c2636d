"""The flat parameter layout θ = [W^1.ravel(), b^1, W^2.ravel(), b^2, ...].

W^l has shape (n_l, n_{l-1}) and is stored row-major, b^l has shape (n_l,).
The gradient uses the same layout, and so do optimizer states.

The workspace of the whole-network kernels holds, for every layer l, the
weighted inputs z^l and the activations a^l of the minibatch, each (N, n_l)
row-major, one after the other: [z^1, a^1, z^2, a^2, ...].  The backward pass
reuses them for δ, so no other buffer is needed.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

__all__ = [
    "bias_offset",
    "n_params",
    "split_params",
    "weight_offset",
    "workspace_size",
]


@njit(cache=True)
def weight_offset(sizes, layer):
    """Offset of W^{layer+1} (0-based ``layer``) in θ."""
    off = 0
    for i in range(layer):
        off += sizes[i + 1] * sizes[i] + sizes[i + 1]
    return off


@njit(cache=True)
def bias_offset(sizes, layer):
    """Offset of b^{layer+1} (0-based ``layer``) in θ."""
    return weight_offset(sizes, layer) + sizes[layer + 1] * sizes[layer]


@njit(cache=True)
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

    Numba's ``reshape`` calls a C helper to check that the new shape fits (about 17 ns); the
    whole-network kernels take some 30 such views of θ, the gradient and the workspace per
    step, which is several percent of a small network's step.  This view trusts its
    arguments: ``buf`` is 1-D and C-contiguous and holds ``offset + rows * cols`` elements.
    """
    if not (isinstance(buf, types.Array) and buf.ndim == 1 and buf.layout == "C"):
        return None
    ret = types.Array(buf.dtype, 2, "C")

    def codegen(context, builder, sig, args):
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
