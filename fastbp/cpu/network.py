"""Whole-network kernels: the forward pass and the fused loss-and-gradient step.

They take only arrays and integers (flat θ, layer widths, activation codes,
loss code, x, y, the gradient to write and a preallocated workspace), so a
user's own ``@njit`` training loop can call them.  They allocate nothing.

Layout: θ as in :mod:`fastbp.layout`; the workspace holds [z^1, a^1, z^2,
a^2, ...], each (N, n_l) row-major, ``fastbp.layout.workspace_size(sizes, N)``
elements in all.  In ``loss_and_grad`` the forward pass stores σ'(z^l) instead
of z^l for hidden layers; the backward pass keeps δ^L in the z^L buffer, and δ^l
(l < L) in the a^l buffer, which is free once ∂C/∂W^{l+1} has been formed, or,
where BP2 runs from a transposed W^{l+1} (``config.BP2_TRANSPOSED_MIN_ROWS``), in
the z^l buffer, in place of the σ'(z^l) it is scaled by.  a^L is left as it is.

Layers with a narrow input (``config.OUTPUTS_INNER_*``) run the training step's forward product
from W^T, kept in the gradient's slot of W^l until BP3 overwrites it, with ones as σ' in the a^l
buffer until the activation replaces them; below the parallel threshold their BP3 sums the
transposed ∂C/∂W^l in the layer's buffer that does not hold δ^l.

The training-step twins have copies with some paths pruned before typing (``_SMALL_PATHS``,
``_OTHER_PATHS``): the lean twins take the blocked products only, the small ones those and the
small-input kernels.  ``MLP`` runs the copies that :func:`paths_used` allows, so that a cold start
compiles only the kernels that the shape uses.
"""

from __future__ import annotations

from numba import njit

from .._cache import cached_njit
from .._math import _single
from ..activations import SOFTMAX
from ..config import (
    BP2_TRANSPOSED_MIN_ROWS,
    BP3_TILE_MIN_ROWS,
    FASTMATH,
    OUTPUTS_INNER_GAIN,
    OUTPUTS_INNER_MIN_INPUTS,
    OUTPUTS_INNER_MIN_ROWS,
    OUTPUTS_INNER_MIN_SHARE,
    PARALLEL_MIN_WORK,
    SMALL_INPUT,
    VECTOR_BYTES,
)
from ..layout import activation_offset, view2d, weight_offset
from ..losses import MSE
from . import _layers
from ._twins import calling_twins, inlined_copy, plain_python

__all__ = ["forward", "loss_and_grad"]

# The per-layer products the serial twins call; the parallel twins call the parallel ones
# (rebound at the end of this module).  Called, not inlined: each is compiled once per signature.
_linear_forward = _layers.linear_forward_serial
_weight_bias_grad = _layers.weight_bias_grad_serial
_weight_bias_grad_tiled = _layers.weight_bias_grad_tiled_serial
_backprop_delta = _layers.backprop_delta_serial
_backprop_delta_transposed = _layers.backprop_delta_transposed_serial
_transpose = _layers.transpose_serial
_bias_activate = _layers.bias_activate_serial


@njit(inline="always")
def _page_rows(width, like):
    # whether a row of ``width`` elements of like's dtype is a whole number of 4 KiB pages
    return width * like.itemsize % 4096 == 0


@njit(inline="always")
def _fill(A, v):
    one = A.dtype.type(v)
    for r in range(A.shape[0]):
        for j in range(A.shape[1]):
            A[r, j] = one


@njit(inline="always")
def _lane_share(m, lanes):
    # share of the vector lanes a loop of m iterations keeps busy: m // lanes full vectors, then
    # the last m % lanes iterations one at a time (config.OUTPUTS_INNER_GAIN)
    return m / lanes / (m // lanes + m % lanes)


@njit(inline="always")
def _outputs_inner(n_in, n_out, N, like):
    # whether the training step runs layer l's forward product and BP3 along n_l
    # (config.OUTPUTS_INNER_MIN_ROWS); n_in <= N: the transposed ∂C/∂W^l fits in a (N, n_l) buffer
    lanes = VECTOR_BYTES // like.itemsize
    if N < OUTPUTS_INNER_MIN_ROWS or not OUTPUTS_INNER_MIN_INPUTS <= n_in <= N:
        return False
    out_share = _lane_share(n_out, lanes)
    return out_share >= OUTPUTS_INNER_MIN_SHARE and out_share >= OUTPUTS_INNER_GAIN * _lane_share(n_in, lanes)


# The paths a layer's products can take in the training step (_forward_path, _backward_paths).
_BLOCKED, _SMALL, _ALONG_OUTPUTS, _TILED = 0, 1, 2, 3

# Whether the training step can take the small-input kernels (_SMALL), and the other paths than
# the blocked products (_ALONG_OUTPUTS, _TILED, BP2 from W^T).  False in the copies of the twins
# without them (paths_used): each branch into such a path tests its flag first, a branch that is
# pruned before typing there, so compiling those copies does not compile those paths' kernels.
_SMALL_PATHS = True
_OTHER_PATHS = True
# paths_used's bits
USES_SMALL, USES_OTHER = 1, 2


@njit(inline="always")
def _forward_path(n_in, n_out, N, like):
    # the path of layer l's forward product in the training step (not only below the parallel
    # threshold: the transposed forward's parallel twin paid in float32 at batch 200)
    if n_in <= SMALL_INPUT and N * n_in * n_out < PARALLEL_MIN_WORK:
        return _SMALL
    if _outputs_inner(n_in, n_out, N, like):
        return _ALONG_OUTPUTS
    return _BLOCKED


@njit(inline="always")
def _backward_paths(l, L, n_in, n_out, N, like):
    # (whether BP2 into δ^{l-1} runs from W^T, the path of BP3 + BP4) of layer l in the training step.
    # Below the parallel threshold, a layer whose loop along n_{l-1} would leave most lanes idle and
    # one along n_l would not (config.OUTPUTS_INNER_GAIN) runs BP2 and BP3 along n_l.  Not above
    # it: the parallel twin of that BP2 measured slower than the blocked one in float64 at such
    # widths, and a parallel BP3 along n_l would split the few n_{l-1} rows of its transposed
    # ∂C/∂W^l unevenly between the threads.
    below = N * like.shape[0] < PARALLEL_MIN_WORK  # the parallel threshold (like: θ)
    narrow = below and _outputs_inner(n_in, n_out, N, like)
    # BP2 from W^T there, and where rows of whole pages would slow the blocked BP2 down
    # (config.BP2_TRANSPOSED_MIN_ROWS).
    transposed = l > 0 and N >= BP2_TRANSPOSED_MIN_ROWS and (_page_rows(n_in, like) or narrow)
    if l < L - 1 and n_in <= SMALL_INPUT and n_in <= N and N * n_in * n_out < PARALLEL_MIN_WORK:
        return transposed, _SMALL
    if l < L - 1 and narrow:
        return transposed, _ALONG_OUTPUTS
    if _single(like[0]) and N >= BP3_TILE_MIN_ROWS and _page_rows(n_in, like):
        return transposed, _TILED
    return transposed, _BLOCKED


@njit(inline="always")
def _forward_body(params, sizes, acts, x, work, train, derive_out=False, grad=None):
    L = sizes.shape[0] - 1
    N = x.shape[0]
    for l in range(L):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        wo = weight_offset(sizes, l)
        bo = wo + n_out * n_in
        W = view2d(params, wo, n_out, n_in)
        b = params[bo : bo + n_out]
        zo = activation_offset(sizes, l, N)
        Z = view2d(work, zo, N, n_out)
        A = view2d(work, zo + N * n_out, N, n_out)
        # Training keeps σ'(z) instead of z for hidden layers (BP2 needs nothing else), and
        # for the output layer when BP1 needs nothing else (mse, elementwise activation).  bool():
        # a plain bool in the forward-only twins too, where train and derive_out are the constant
        # False, so that they call the specialisation of the layer kernels that the training step
        # compiled (a Literal[bool] would compile another, some 2 s per twin).
        derive = bool(train) and (l < L - 1 or bool(derive_out))
        # a^{l-1}: x, or the previous layer's activations.
        P = x if l == 0 else view2d(work, zo - N * n_in, N, n_in)
        # (Each path's flag first: a branch on it alone is pruned before typing in the copies
        # without that path, so its kernels are neither typed nor compiled there; where it is pruned,
        # the blocked product below runs.  grad is None, in the forward-only twins, likewise.)
        path = _forward_path(n_in, n_out, N, params) if grad is not None else _BLOCKED
        if _SMALL_PATHS and grad is not None and path == _SMALL:
            # W^T into the gradient's slot of W^l, which BP3 overwrites later.
            WT = view2d(grad, wo, n_in, n_out)
            _layers.transpose_serial(W, WT)
            _layers.linear_forward_small_in(WT, b, P, acts[l], Z, A, derive)
        elif _OTHER_PATHS and grad is not None and path == _ALONG_OUTPUTS:
            # Along n_l: Z = a^{l-1} (W^l)^T with BP2's loop, from W^T in the gradient's slot of
            # W^l (which BP3 overwrites later); then + b and σ.  BP2's loop scales by a given
            # σ'(z): ones here, in the a^l buffer.  (The same arguments' types as BP2's own call,
            # so the same compiled specialisation: another costs seconds of compilation per twin.)
            WT = view2d(grad, wo, n_in, n_out)
            _layers.transpose_serial(W, WT)
            _fill(A, 1.0)
            _backprop_delta(WT, P, A, acts[l], Z, True)
            _bias_activate(b, acts[l], Z, A, derive)
        else:
            _linear_forward(W, b, P, acts[l], Z, A, derive)


def _forward_impl(params, sizes, acts, x, out, work):
    _forward_body(params, sizes, acts, x, work, False)
    L = sizes.shape[0] - 1
    N = x.shape[0]
    n_out = sizes[L]
    ao = activation_offset(sizes, L - 1, N) + N * n_out
    A = view2d(work, ao, N, n_out)
    for r in range(N):
        for j in range(n_out):
            out[r, j] = A[r, j]


def _loss_and_grad_impl(params, sizes, acts, loss, x, y, labels, grad, work, sample_weight):
    L = sizes.shape[0] - 1
    N = x.shape[0]
    derive_out = loss == MSE and acts[L - 1] != SOFTMAX
    _forward_body(params, sizes, acts, x, work, True, derive_out, grad)

    # BP1 into the z^L buffer.
    nL = sizes[L]
    zo = activation_offset(sizes, L - 1, N)
    ZL = view2d(work, zo, N, nL)
    AL = view2d(work, zo + N * nL, N, nL)
    total = _layers.output_delta_body(loss, acts[L - 1], ZL, AL, y, labels, ZL, sample_weight, derive_out)

    # δ^l is kept in z^l's buffer (BP1's δ^L; BP2 from W^T, which scales in place of σ'(z^{l-1}))
    # or in a^l's (the blocked BP2, which runs after BP3 has read a^{l-1}).
    d_in_z = True
    for l in range(L - 1, -1, -1):
        n_in = sizes[l]
        n_out = sizes[l + 1]
        wo = weight_offset(sizes, l)
        bo = wo + n_out * n_in
        gW = view2d(grad, wo, n_out, n_in)
        gb = grad[bo : bo + n_out]
        zo = activation_offset(sizes, l, N)
        D = view2d(work, zo if d_in_z else zo + N * n_out, N, n_out)
        po = zo - N * n_in  # a^{l-1} (l > 0)
        P = x if l == 0 else view2d(work, po, N, n_in)
        W = view2d(params, wo, n_out, n_in)
        # BP2 from W^T, and the path of BP3 (_backward_paths; as in the forward pass, each branch
        # tests its path's flag first, and the blocked products run where it is pruned).
        transposed, bp3 = _backward_paths(l, L, n_in, n_out, N, params)
        transposed = _OTHER_PATHS and transposed  # its value is used below, not only its branch
        if _OTHER_PATHS and transposed:
            WT = view2d(grad, wo, n_in, n_out)
            _transpose(W, WT)
            S = view2d(work, po - N * n_in, N, n_in)  # σ'(z^{l-1}), overwritten by δ^{l-1}
            _backprop_delta_transposed(WT, D, S, S)
        # BP3 + BP4.  A narrow input accumulates the transposed ∂C/∂W^l in whichever of the
        # layer's two buffers does not hold δ^l (σ'(z^l) or a^l, both used up by now; a^L is kept).
        fo = zo + N * n_out if d_in_z else zo  # that buffer's offset
        if _SMALL_PATHS and bp3 == _SMALL:
            _layers.weight_bias_grad_small_in(D, P, gW, gb, view2d(work, fo, n_in, n_out))
        elif _OTHER_PATHS and bp3 == _ALONG_OUTPUTS:
            # Along n_l: (∂C/∂W^l)^T = (a^{l-1})^T δ^l with BP3's loop (the roles of the two
            # operands swapped; BP4 by bias_grad), then transposed into gW.  The sums of
            # a^{l-1}'s columns land in gW's first row until the transposition (with_bias=True:
            # the specialisation BP3's own call compiles).
            GT = view2d(work, fo, n_in, n_out)
            _weight_bias_grad(P, D, GT, gW[0], True)
            _layers.bias_grad_serial(D, gb)
            _layers.transpose_serial(GT, gW)
        elif _OTHER_PATHS and bp3 == _TILED:
            _weight_bias_grad_tiled(D, P, gW, gb, True)
        else:
            _weight_bias_grad(D, P, gW, gb, True)
        if l > 0 and not transposed:
            # BP2: δ^{l-1} into the a^{l-1} buffer.
            Zp = view2d(work, po - N * n_in, N, n_in)
            _backprop_delta(W, D, Zp, acts[l - 1], P, True)
        d_in_z = transposed
    return total


_PARALLEL_LAYERS = dict(
    _weight_bias_grad=_layers.weight_bias_grad_parallel,
    _weight_bias_grad_tiled=_layers.weight_bias_grad_tiled_parallel, _backprop_delta=_layers.backprop_delta_parallel,
    _backprop_delta_transposed=_layers.backprop_delta_transposed_parallel, _transpose=_layers.transpose_parallel)
_forward_body_parallel = inlined_copy(_forward_body, "_parallel", _linear_forward=_layers.linear_forward_parallel,
                                      _backprop_delta=_layers.backprop_delta_parallel,
                                      _bias_activate=_layers.bias_activate_parallel)
_forward_serial, _forward_parallel = calling_twins(_forward_impl, _forward_body=_forward_body_parallel)
_loss_and_grad_serial, _loss_and_grad_parallel = calling_twins(
    _loss_and_grad_impl, _forward_body=_forward_body_parallel, **_PARALLEL_LAYERS)


def _pruned_twins(suffix, **flags):
    # copies of the training-step twins with the paths in flags pruned (calling_twins)
    body, body_parallel = (inlined_copy(f, suffix, **flags) for f in (_forward_body, _forward_body_parallel))
    return calling_twins(_loss_and_grad_impl, suffix, {**flags, "_forward_body": body},
                         **{**_PARALLEL_LAYERS, "_forward_body": body_parallel})


# The blocked products only, and those and the small-input kernels.
_loss_and_grad_serial_lean, _loss_and_grad_parallel_lean = _pruned_twins("_lean", _SMALL_PATHS=False,
                                                                          _OTHER_PATHS=False)
_loss_and_grad_serial_small, _loss_and_grad_parallel_small = _pruned_twins("_small", _OTHER_PATHS=False)
#: (serial, parallel) training-step twins by paths_used: all that a call of that shape runs
STEP_TWINS = ((_loss_and_grad_serial_lean, _loss_and_grad_parallel_lean),
              (_loss_and_grad_serial_small, _loss_and_grad_parallel_small),
              (_loss_and_grad_serial, _loss_and_grad_parallel),
              (_loss_and_grad_serial, _loss_and_grad_parallel))


def paths_used(sizes, n_samples, params):
    """Which paths the training step takes on ``n_samples`` rows besides the blocked products:
    ``USES_SMALL`` (a layer input of at most ``config.SMALL_INPUT``), ``USES_OTHER`` (a layer along
    n_l, BP2 from W^T, the tiled BP3), or both, or 0.

    Numba compiles every kernel a function can call when it compiles that function, whichever the
    shape at hand uses, and the full twins of the training step can call every path's kernels.
    ``STEP_TWINS[paths_used(...)]`` are copies of them with the paths that the call does not take
    pruned before typing, so that their first compilation skips those kernels (some 5 s of a cold
    start for the lean twins).  They take the same paths as the full twins on such calls (the
    decision is made by the same inlined functions that the body branches on), so they give the same
    results, up to the last bits: a whole-network kernel compiled in another process, with some of
    its callees loaded from the disk cache instead of compiled alongside it, rounded a cross-entropy
    loss differently (BP1's sums, compiled in order since; bench/RESULTS.md, "Fourteenth session"),
    and no test covers every kernel in every compile order. On other calls they would still be
    correct (a pruned path falls back to the blocked product, correct for every shape), only
    slower.

    Plain Python (:func:`~fastbp.cpu._twins.plain_python`: the same functions, not compiled), so
    that the choice itself compiles nothing.
    """
    L = sizes.shape[0] - 1
    used = 0
    for l in range(L):
        path = _forward_path(sizes[l], sizes[l + 1], n_samples, params)
        transposed, bp3 = _backward_paths(l, L, sizes[l], sizes[l + 1], n_samples, params)
        for p in (path, bp3):
            if p == _SMALL:
                used |= USES_SMALL
            elif p != _BLOCKED:
                used |= USES_OTHER
        if transposed:
            used |= USES_OTHER
    return used


paths_used = plain_python(paths_used)


def parallel_pays(n_samples, n_params, forward_only=False, min_work=PARALLEL_MIN_WORK):
    """Whether a whole-network call on ``n_samples`` rows should run its ``parallel=True`` twin.

    It pays from ``min_work`` multiply-adds of forward work (N times the parameter count;
    ``config.PARALLEL_MIN_WORK`` from the main thread).  The forward pass splits the batch
    into blocks of 4 rows (one block per thread), so it only pays from 5 rows on; the training
    step also splits BP3 over output neurons.  Compiled for the dispatchers below, and called
    from Python by the model (:mod:`fastbp._threads` gives it ``min_work``, unreachable with
    one thread).  No thread count is read in compiled code: ``numba.get_num_threads`` goes
    through a ctypes pointer, which makes a function, and every function that calls it,
    uncachable; with one thread a parallel twin runs as a one-thread parallel region.
    """
    if forward_only and n_samples <= 4:
        return False
    return n_samples * n_params >= min_work


_parallel_pays = cached_njit(nogil=True)(parallel_pays)


@cached_njit(nogil=True, fastmath=FASTMATH)
def forward(params, sizes, acts, x, out, work):
    """Forward pass of the whole network: a^l = σ_l(W^l a^{l-1} + b^l), l = 1..L; out = a^L.

    Parameters
    ----------
    params : 1-D float array
        θ in the layout of :mod:`fastbp.layout`.
    sizes : 1-D int64 array
        Layer widths [n0, ..., nL].
    acts : 1-D int64 array
        Activation code of each of the L layers.
    x : (N, n0) float array
        Inputs, one sample per row.
    out : (N, nL) float array
        Output a^L.
    work : 1-D float array
        Workspace of at least ``fastbp.layout.workspace_size(sizes, N)`` elements.
    """
    if _parallel_pays(x.shape[0], params.shape[0], True):
        _forward_parallel(params, sizes, acts, x, out, work)
    else:
        _forward_serial(params, sizes, acts, x, out, work)


@cached_njit(nogil=True, fastmath=FASTMATH)
def loss_and_grad(params, sizes, acts, loss, x, y, grad, work, sample_weight=None):
    """Loss C and its gradient ∂C/∂θ for one minibatch, by backpropagation.

    Runs the forward pass, then BP1 δ^L = ∇_a C ⊙ σ'(z^L), and for l = L..1
    BP3 ∂C/∂w^l_jk = Σ_n a^{l-1}_nk δ^l_nj with BP4 ∂C/∂b^l_j = Σ_n δ^l_nj in
    the same sweep, and BP2 δ^{l-1} = ((W^l)^T δ^l) ⊙ σ'(z^{l-1}).

    Parameters
    ----------
    params : 1-D float array
        θ.
    sizes : 1-D int64 array
        Layer widths [n0, ..., nL].
    acts : 1-D int64 array
        Activation code of each layer.
    loss : int
        Loss code (``fastbp.losses.CODES``).
    x : (N, n0) float array
    y : (N, nL) float array, or (N,) int array of class labels
    grad : 1-D float array
        Output ∂C/∂θ, laid out like ``params``; overwritten.
    work : 1-D float array
        Workspace of at least ``fastbp.layout.workspace_size(sizes, N)`` elements.
    sample_weight : (N,) float array, optional
        Non-negative weights w_n; C becomes Σ_n w_n ℓ_n / Σ_n w_n.

    Returns
    -------
    float
        C, the (weighted) mean loss over the minibatch.
    """
    Y, lab, sw = _layers.normalised_targets(y, sample_weight, sizes[sizes.shape[0] - 1], params)
    if _parallel_pays(x.shape[0], params.shape[0]):
        return _loss_and_grad_parallel(params, sizes, acts, loss, x, Y, lab, grad, work, sw)
    return _loss_and_grad_serial(params, sizes, acts, loss, x, Y, lab, grad, work, sw)
