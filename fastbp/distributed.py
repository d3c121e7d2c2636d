"""Data-parallel training over MPI (``MLP.fit(..., comm=comm)``), through mpi4py.

Each rank holds a shard of the samples; the shards concatenated in rank order are the training
set.  Every epoch's permutation of the global sample index is drawn on rank 0 (from ``seed``,
as a one-process ``fit`` draws it) and broadcast; for each global minibatch every rank computes
the loss and gradient *sums* over the samples of it that it holds (``DistributedTrainer``),
one ``Allreduce`` sums them with the loss, the weight total, the prediction counts and an
interrupt flag, and every rank applies the same optimizer step to the same θ.  So the
parameters after ``fit`` equal those of a one-process ``fit`` on the concatenated data with the
same seed and batch size, to rounding (the sums are added in another order).

Nothing here runs a collective before every rank has checked its arguments: :meth:`Group.agree`
gathers each rank's outcome, and if any rank failed every rank raises that rank's exception (the
first failing rank's, with a note naming it), before θ changes anywhere.

mpi4py is imported only when a communicator is given; ``import fastbp`` never loads MPI.
"""

from __future__ import annotations

import os
import zlib
from functools import partial
from typing import Any

import numpy as np

from . import _validation as V
from . import reference as _ref
from .backends._host import HostBackend, HostTrainer, host_step, stats

__all__ = ["Group", "LocalGroup", "check_shard", "group_of", "mpi_info"]

#: Debug mode: compare θ across ranks (a CRC32 of its bytes) after every epoch and at the end of
#: fit, and raise if they differ (set ``FASTBP_MPI_CHECK=1``).
CHECK_EVERY_EPOCH = os.environ.get("FASTBP_MPI_CHECK", "") not in ("", "0")

# extra slots of the reduced step buffer, after the P gradient entries
_LOSS, _CORRECT, _COUNTED, _INTERRUPT = range(4)
_EXTRA = 4


def mpi_info() -> str:
    """One line: mpi4py's version and the MPI library's, or why there is none."""
    try:
        import mpi4py
        from mpi4py import MPI
    except Exception as e:  # noqa: BLE001 - not installed, or the MPI library failed to load
        return f"not available ({type(e).__name__}: {e})"
    lib = " ".join(MPI.Get_library_version().strip().splitlines()[0].split())
    return f"mpi4py {mpi4py.__version__}, {lib}, MPI {'.'.join(map(str, MPI.Get_version()))}"


def _y_name(x_name: str) -> str:
    """The name of the targets that go with the samples named ``x_name`` (in error messages)."""
    return {"x": "y", "validation_data[0]": "validation_data[1]"}.get(x_name, "y")


def _weight_total(x, sw) -> float:
    """This process's weight total: its rows, or the sum of their sample weights."""
    return float(x.shape[0]) if sw is None else float(np.sum(sw, dtype=np.float64))


def group_of(comm) -> Group | LocalGroup:
    """The group ``fit`` trains over: the ranks of ``comm``, or this process alone (None)."""
    return LocalGroup() if comm is None else Group(comm)


class LocalGroup:
    """One process training alone: the interface of :class:`Group`, with no communication.

    ``fit`` runs the same driver for both, so that every step of it that involves the other
    ranks is one method call here and a no-op (or the local computation) in a single process.
    """

    rank, size = 0, 1

    def agree(self, fn, *args):
        return fn(*args)

    def allgather(self, value) -> list:
        return [value]

    def bcast(self, value):
        return value

    def broadcast_array(self, arr: np.ndarray) -> None:
        pass

    def sum_in_place(self, buf: np.ndarray) -> None:
        pass

    def finish(self, params: np.ndarray) -> None:
        pass

    def end_epoch(self, params: np.ndarray, epoch: int) -> None:
        pass

    def check_data(self, backend, x, y, sample_weight, name: str = "x"):
        """(x, y, sample_weight, None) checked by the backend, in its own form."""
        xa, _ = backend.check_x(x, name)
        ya = backend.check_y(y, xa.shape[0], _y_name(name))
        return xa, ya, backend.check_sample_weight(sample_weight, xa.shape[0]), None

    def agree_on_fit(self, backend, a, settings: dict):
        a.n_total = a.x.shape[0]
        return a, 0

    def trainer(self, backend, params, x, y, sample_weight, opt, state, batch_size, clip, alpha, offset):
        return backend.trainer(params, x, y, sample_weight, opt, state, batch_size, clip, alpha)

    def run_callback(self, trainer, callback, epoch: int, logs: dict, net) -> bool:
        """Whether the callback asks to stop; θ is the trainer's during the call, and changes it
        makes are kept."""
        if callback is None:
            return False
        trainer.pull()
        stop = bool(callback(epoch, logs, net))
        trainer.push()
        return stop

    def evaluate(self, backend, params, x, y):
        return backend.evaluate(params, x, y)

    def weight_total(self, x, sw) -> float:
        return _weight_total(x, sw)

    def loss_and_grad_sum(self, backend, params, x, y, sw, grad) -> tuple[float, float]:
        return backend.loss_and_grad(params, x, y, sw, grad), _weight_total(x, sw)


class Group:
    """The ranks of one communicator, with the few collectives ``fit`` uses."""

    def __init__(self, comm):
        for attr in ("Get_rank", "Get_size", "Allreduce", "Bcast", "allgather", "bcast"):
            if not callable(getattr(comm, attr, None)):
                raise TypeError(f"comm: expected an mpi4py communicator (such as MPI.COMM_WORLD), got {comm!r}")
        from mpi4py import MPI

        self.comm, self.MPI = comm, MPI
        self.rank, self.size = comm.Get_rank(), comm.Get_size()

    # -- agreement --------------------------------------------------------------------------

    def agree(self, fn, *args):
        """``fn(*args)`` on every rank; if it raised on any rank, every rank raises the first
        failing rank's exception (a copy of it elsewhere), so no rank is left waiting in a
        collective.  Returns this rank's result."""
        try:
            result, err = fn(*args), None
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            result, err = None, e
        errors = self.comm.allgather(_portable(err))
        for r, e in enumerate(errors):
            if e is not None:
                if r == self.rank and err is not None:
                    err.add_note(f"(raised on rank {r} of {self.size}; every rank raises it)")
                    raise err
                e.add_note(f"(raised on rank {r} of {self.size}; every rank raises it)")
                raise e
        return result

    # -- data movement ------------------------------------------------------------------------

    def allgather(self, value) -> list:
        return self.comm.allgather(value)

    def bcast(self, value):
        return self.comm.bcast(value, root=0)

    def broadcast_array(self, arr: np.ndarray) -> None:
        """Rank 0's contents of ``arr``, in place, on every rank."""
        self.comm.Bcast(arr, root=0)

    def sum_in_place(self, buf: np.ndarray) -> None:
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=self.MPI.SUM)

    def check_identical(self, params: np.ndarray, when: str) -> None:
        """A RuntimeError on every rank if θ is not bitwise the same on all of them."""
        crcs = self.comm.allgather(zlib.crc32(np.ascontiguousarray(params).view(np.uint8)))
        if len(set(crcs)) > 1:
            raise RuntimeError(f"fit: θ differs between ranks {when} (CRC32 {crcs}); this is a bug in fastbp "
                               "or a callback that changed params on one rank only")


    def finish(self, params: np.ndarray) -> None:
        """The end of a fit: θ checked identical in debug mode (``FASTBP_MPI_CHECK=1``), then rank
        0's θ on every rank (ranks on different CPUs may round a reduction differently)."""
        if CHECK_EVERY_EPOCH:
            self.check_identical(params, "at the end of fit")
        self.broadcast_array(params)

    # -- the steps of fit ---------------------------------------------------------------------

    def end_epoch(self, params: np.ndarray, epoch: int) -> None:
        """θ checked identical on every rank in debug mode (``FASTBP_MPI_CHECK=1``)."""
        if CHECK_EVERY_EPOCH:
            self.check_identical(params, f"after epoch {epoch}")

    def check_data(self, backend, x, y, sample_weight, name: str = "x"):
        """(x, y, sample_weight, kind) of this rank's shard: :func:`check_shard`."""
        return check_shard(backend, x, y, sample_weight, name)

    def agree_on_fit(self, backend, a, settings: dict):
        return agree_on_fit(self, backend, a, settings)

    def trainer(self, backend, params, x, y, sample_weight, opt, state, batch_size, clip, alpha, offset):
        return DistributedTrainer(self, backend, params, x, y, sample_weight, opt, state, batch_size, clip, alpha,
                                  offset)

    def run_callback(self, trainer, callback, epoch: int, logs: dict, net) -> bool:
        """Whether to stop: every rank runs its own callback; if one raises every rank raises it,
        and if one asks to stop every rank stops.  Rank 0's θ is every rank's afterwards."""
        trainer.pull()

        def run():
            return callback is not None and bool(callback(epoch, logs, net))

        stop = any(self.allgather(self.agree(run)))
        trainer.push()
        return stop

    def evaluate(self, backend, params, x, y):
        return evaluate(self, backend, params, x, y)

    def weight_total(self, x, sw) -> float:
        """The weight total (rows, or the sum of the sample weights) of every rank's shard."""
        buf = np.array([_weight_total(x, sw)])
        self.sum_in_place(buf)
        return float(buf[0])

    def loss_and_grad_sum(self, backend, params, x, y, sw, grad) -> tuple[float, float]:
        return loss_and_grad_sum(self, backend, params, x, y, sw, grad)


def _portable(err):
    """An exception that survives pickling (its type and message), or None."""
    if err is None:
        return None
    import pickle

    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(err).__name__}: {err}")


def check_shard(backend, x, y, sample_weight, name: str = "x") -> tuple[Any, Any, Any, Any]:
    """(x, y, sample_weight, kind) of one rank's shard, checked as ``fit`` checks its data; a
    shard of no samples is allowed (shape (0, n0)).  ``kind`` is "labels", "targets" or None
    (an empty shard: the other ranks decide), so the ranks can agree on it."""
    spec = backend.spec
    yname = _y_name(name)
    arr = V.as_array(name, x)
    if arr.ndim == 2 and arr.shape[0] == 0:
        if arr.shape[1] != spec.n_inputs:
            raise ValueError(V.msg_batch_shape(name, spec.n_inputs, arr.shape))
        yarr = V.as_array(yname, y)
        if yarr.shape[0] != 0:
            raise ValueError(f"{yname}: has {yarr.shape[0]} samples but {name} has 0")
        if sample_weight is not None and np.shape(sample_weight) != (0,):
            raise ValueError(f"sample_weight: expected shape (0,) to match x, got {np.shape(sample_weight)}")
        xa = np.empty((0, spec.n_inputs), spec.dtype)
        sw = None if sample_weight is None else np.empty(0, spec.dtype)
        return xa, yarr, sw, None
    if hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: training over MPI takes host (NumPy) arrays; copy the shard to the host")
    xa, _ = V.check_x(spec, x, name)  # host arrays for every backend (see to_backend)
    ya = V.check_y(spec, y, xa.shape[0], yname)
    sw = None
    if sample_weight is not None:
        sw = V.as_array("sample_weight", sample_weight)
        if sw.shape != (xa.shape[0],):
            raise ValueError(f"sample_weight: expected shape ({xa.shape[0]},) to match x, got {sw.shape}")
        sw = np.ascontiguousarray(sw, dtype=spec.dtype)
        if not np.all(np.isfinite(sw)):
            raise ValueError(V.msg_not_finite("sample_weight"))
        if sw.min() < 0:
            raise ValueError("sample_weight: weights must be non-negative")
    return xa, ya, sw, ("labels" if ya.ndim == 1 else "targets")


def agree_on_fit(group: Group, backend, a, settings: dict) -> tuple[Any, int]:
    """Check that every rank passed the same ``settings`` and shards that fit together; returns
    (``a`` completed: the empty shards' y in the others' form, ``n_total``), this rank's offset.

    ``a`` holds the checked arguments of ``fit`` (``x``, ``y``, ``sw``, ``kind``, ``val``,
    ``val_kind``).  One ``allgather``, then checks of the gathered values only, so every rank
    reaches the same verdict (run it under :meth:`Group.agree` all the same)."""
    spec = backend.spec
    val = a.val
    mine = (settings, a.x.shape[0], a.kind, None if val is None else val[0].shape[0], a.val_kind,
            None if a.sw is None or a.sw.shape[0] == 0 else float(a.sw.max()))
    every = group.allgather(mine)
    for key in settings:
        for r, other in enumerate(every):
            if other[0][key] != every[0][0][key]:
                raise ValueError(f"comm: {key} differs between ranks: {every[0][0][key]!r} on rank 0, "
                                 f"{other[0][key]!r} on rank {r}; every rank must pass the same")
    ns = [e[1] for e in every]
    if sum(ns) == 0:
        raise ValueError("x: every rank's shard is empty; expected at least one sample in all")
    for i, name in ((2, "y"), (4, "validation_data[1]")):
        kinds = {(r, e[i]) for r, e in enumerate(every) if e[i] is not None}
        if len({k for _, k in kinds}) > 1:
            raise ValueError(f"{name}: class labels on some ranks and targets on others ({sorted(kinds)}); "
                             "every rank must pass the same kind")
    kind = next(e[2] for e in every if e[2] is not None)
    if a.kind is None:
        a.y = empty_targets(spec, kind)
    if val is not None:
        if sum(e[3] for e in every) == 0:
            raise ValueError("validation_data: every rank's shard is empty; expected at least one sample in all")
        vkind = next(e[4] for e in every if e[4] is not None)
        if a.val_kind is None:
            a.val = (val[0], empty_targets(spec, vkind))
    if a.sw is not None and not max((e[5] or 0.0) for e in every) > 0:
        raise ValueError("sample_weight: every weight of every rank is zero; expected at least one positive")
    a.n_total = sum(ns)
    return a, sum(ns[: group.rank])


def to_backend(backend, x, y, sw):
    """Checked host (x, y, sample_weight) in the form the backend's methods take (the cuda
    backend's device copies and label flags; the host backends' arrays as they are)."""
    if isinstance(backend, HostBackend):
        return x, y, sw
    n = x.shape[0]
    return backend.check_x(x)[0], backend.check_y(y, n), backend.check_sample_weight(sw, n)


def empty_targets(spec, kind: str):
    """The y of an empty shard, in the form the other ranks' y take."""
    if kind == "labels":
        return np.empty(0, np.int64)
    return np.empty((0, spec.n_outputs), spec.dtype)


def _counted(spec, n: int) -> int:
    """Predictions a batch of n counts (softmax: one per row; sigmoid: one per output)."""
    return n if spec.activation_names[-1] == "softmax" else n * spec.n_outputs


class DistributedTrainer(HostTrainer):
    """The :class:`fastbp.backends.Trainer` of ``fit(comm=...)``: host θ and optimizer state,
    one Python step per global minibatch around one in-place ``Allreduce`` of
    [(W_r / W) ∂C_r/∂θ, (W_r / W) C_r, correct, counted, interrupt], where C_r is the weighted
    mean loss of this rank's rows of the minibatch, W_r their weight total and W the
    minibatch's (all reduced once per epoch): the sum is the global mean gradient itself."""

    def __init__(self, group: Group, backend, params, x, y, sample_weight, opt, state, batch_size, clip, alpha,
                 offset: int):
        super().__init__(backend, params, opt, state)
        self.group = group
        self.x, self.y, self.sw = x, y, sample_weight
        self.B, self.clip, self.alpha = batch_size, clip, alpha
        self.lo, self.hi = offset, offset + x.shape[0]
        P = params.shape[0]
        self.buf = np.empty(P + _EXTRA, params.dtype)
        self.grad = self.buf[:P]  # the kernels write the local gradient into the reduced buffer
        self.xb = np.empty((min(batch_size, x.shape[0]), x.shape[1]), x.dtype)
        self.spec = backend.spec
        # the backend's compiled update (the cpu epoch loop's), else the NumPy one
        self.stepper = getattr(backend, "step", None) or partial(host_step, backend.spec)

    # -- one step ---------------------------------------------------------------------------

    def _batch_weights(self, perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(this rank's, every rank's) weight total of each minibatch of the epoch (rows, or the
        sum of their sample weights): one small Allreduce per epoch."""
        mine = (perm >= self.lo) & (perm < self.hi)
        if self.sw is None:
            w = mine.astype(np.float64)
        else:
            w = np.zeros(perm.shape[0])
            w[mine] = self.sw[perm[mine] - self.lo]
        starts = np.arange(0, perm.shape[0], self.B)
        local = np.add.reduceat(w, starts) if perm.shape[0] else np.zeros(0)
        total = local.copy()
        self.group.sum_in_place(total)
        return local, total

    def _local_sums(self, rows: np.ndarray, share: float) -> None:
        """buf = this rank's part of the minibatch's mean gradient and loss (``share`` = W_r / W),
        and its prediction counts."""
        buf, P, spec = self.buf, self.params.shape[0], self.spec
        buf[P:] = 0
        mine = rows[(rows >= self.lo) & (rows < self.hi)] - self.lo
        if mine.shape[0] == 0 or share == 0:  # no weight here: no loss and no gradient
            self.grad[...] = 0
            return
        k = mine.shape[0]
        xb = np.take(self.x, mine, axis=0, out=self.xb[:k])
        yb = self.y[mine]
        swb = None if self.sw is None else self.sw[mine]
        c = self.backend.loss_and_grad(self.params, *to_backend(self.backend, xb, yb, swb), self.grad)
        if share != 1.0:
            self.grad *= self.grad.dtype.type(share)
        buf[P + _LOSS] = c * share
        if spec.is_classifier:
            counter = getattr(self.backend, "count_last_output", None)
            if counter is not None:  # the cpu backend: a^L is still in its workspace
                right, n = counter(k, yb)
            else:
                out = self.backend.forward(self.params, xb)
                right, n = _ref.count_correct(spec.activations[-1], np.asarray(out), yb)
            buf[P + _CORRECT] = right
            buf[P + _COUNTED] = n

    def run_epoch(self, perm, lr, check_interrupt):
        P, buf, grad = self.params.shape[0], self.buf, self.grad
        loss_sum, seen, correct, counted, steps, penalty_sum = 0.0, 0, 0, 0, 0, 0.0
        local, total = self._batch_weights(perm)
        for b, start in enumerate(range(0, perm.shape[0], self.B)):
            rows = perm[start : start + self.B]
            wsum = float(total[b])
            self._local_sums(rows, local[b] / wsum if wsum > 0 else 0.0)
            try:
                check_interrupt()
            except KeyboardInterrupt:
                buf[P + _INTERRUPT] = 1
            self.group.sum_in_place(buf)
            if buf[P + _INTERRUPT]:  # on any rank: every rank stops before this step
                raise KeyboardInterrupt
            c = float(buf[P + _LOSS])
            pen = self.stepper(self.params, grad, c, wsum, self.opt, self.state, lr, self.clip, self.alpha)
            if not np.isfinite(pen):
                return stats(loss_sum, seen, correct, counted, steps, True, penalty_sum)
            m = rows.shape[0]
            loss_sum += c * m
            penalty_sum += pen * m
            seen += m
            correct += int(round(float(buf[P + _CORRECT])))
            counted += int(round(float(buf[P + _COUNTED])))
            steps += 1
        return stats(loss_sum, seen, correct, counted, steps, False, penalty_sum)

    # -- the rest of the protocol -------------------------------------------------------------

    def evaluate(self, x, y):
        return evaluate(self.group, self.backend, self.params, x, y)

    def push(self):
        # a callback may have changed θ: rank 0's θ is every rank's
        self.group.broadcast_array(self.params)


def evaluate(group: Group, backend, params, x, y) -> tuple[float, float | None]:
    """(loss, accuracy or None) over the shards of every rank: the mean over all their samples."""
    spec = backend.spec
    n = x.shape[0]
    part = np.zeros(4)
    if n:
        bx, by, _ = to_backend(backend, x, y, None)
        c, acc = backend.evaluate(params, bx, by)
        part[0], part[1] = c * n, n
        if acc is not None:
            k = _counted(spec, n)
            part[2], part[3] = round(acc * k), k
    group.sum_in_place(part)
    loss = part[0] / part[1] if part[1] else float("nan")
    if not spec.is_classifier:
        return float(loss), None
    return float(loss), (float(part[2] / part[3]) if part[3] else float("nan"))


def loss_and_grad_sum(group: Group, backend, params, x, y, sw, grad) -> tuple[float, float]:
    """(C, Σw) of the whole sharded set: the weighted mean loss, ``grad`` its gradient (L-BFGS)."""
    P = params.shape[0]
    buf = np.zeros(P + 2)
    n = x.shape[0]
    wl = _weight_total(x, sw)
    if n and wl > 0:
        c = backend.loss_and_grad(params, *to_backend(backend, x, y, sw), grad)
        buf[:P] = grad.astype(np.float64) * wl
        buf[P], buf[P + 1] = c * wl, wl
    group.sum_in_place(buf)
    wsum = buf[P + 1]
    if wsum > 0:
        grad[...] = buf[:P] / wsum
        return float(buf[P] / wsum), float(wsum)
    grad[...] = 0
    return 0.0, 0.0
