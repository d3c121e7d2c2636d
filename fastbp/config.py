"""Tunables of fastbp's compiled kernels, in one place: the cpu backend's, then the cuda one's.

Every kernel takes its compilation flags, size thresholds and launch shapes from here, so
that they can be measured and changed without touching the kernels.  Values that compiled
code reads are frozen into it when it compiles (and are part of the disk cache's key, see
:mod:`fastbp._cache`); the others are read at each call.
"""

from __future__ import annotations

import os

import numba

#: LLVM fast-math flags for every CPU kernel.  ``reassoc`` lets reductions
#: (dot products, column sums) vectorise; ``contract`` allows FMA.  ``nnan``
#: and ``ninf`` are deliberately absent: they would let LLVM delete the
#: finiteness checks (numba #2919, #6217).  ``afn`` is absent so that exp,
#: log and erf keep libm accuracy.
FASTMATH = {"nsz", "arcp", "contract", "reassoc"}

#: Work (multiply-adds of one kernel call) from which the ``parallel=True``
#: twin of a kernel is used instead of its serial twin.  A parallel region
#: costs a few microseconds to open here, and threads that slept take tens of
#: microseconds to wake, so small calls stay serial.
PARALLEL_MIN_WORK = 1 << 18

#: Seconds the serial twin of a whole-network kernel runs, in ``MLP`` calls where its parallel
#: twin would pay, before a process compiles that parallel twin (:mod:`fastbp._tiers`).  A
#: parallel twin already compiled or in the disk cache runs at once.  About what compiling the
#: parallel training step costs here (12-16 s): a short script never pays for it, a long run
#: switches after at most this much slower work.  0 compiles it at the first call that pays.
PARALLEL_COMPILE_AFTER = 10.0

#: Whether ``MLP`` runs the copies of the training step's twins that have only the paths a call
#: takes (``fastbp.cpu.network.paths_used``: the blocked products, the small-input kernels, the
#: others), so that a cold start compiles only the kernels its shape uses (some 5 s less on
#: [64, 128, 10]); they take the same paths as the full twins.  False: always the full twins.
PRUNED_TWINS = True

#: Whether ``MLP`` calls that may run a whole-network kernel's parallel twin measure which twin
#: comes round faster and run that one (:class:`fastbp._tiers.Race`); False: always the parallel one.
TWIN_RACE = True

#: Calls of the other twin in one probe of the race (the first is not counted: it pays for
#: moving the vectors between the cores).
TWIN_PROBE_CALLS = 4

#: Calls of the twin in use between two probes: the first value, and the largest, reached by
#: doubling while the probes confirm the choice.
TWIN_PROBE_GAP = (16, 1024)

#: The other twin takes over when its median period is under this fraction of the median period
#: of the one in use.
TWIN_SWITCH_RATIO = 0.9

#: The same cut-over for calls from any thread but the main one.  Under the OpenMP threading
#: layer a parallel region opened from another thread costs some 50-100 us more (measured
#: here: a medium-network training step at batch 32 took 0.38 ms serial, 0.21 ms parallel from
#: the main thread and 0.53 ms parallel from a worker thread); parallel pays again from about
#: 2^24 multiply-adds per call (bench/RESULTS.md, "Threads").  numbagg makes the same choice
#: (numba #9288).
PARALLEL_MIN_WORK_THREAD = 1 << 24

#: Widest layer input (n_{l-1}) for which the training step computes the forward product and
#: BP3 vectorised along the layer's outputs, from a transposed copy of W^l (kept in the gradient
#: buffer until BP3 overwrites it) and a transposed ∂C/∂W^l (accumulated in the free z^l
#: buffer).  The blocked kernels vectorise along n_{l-1}, which leaves 4 of 16 lanes busy at the
#: tiny configuration's n0 = 4.
SMALL_INPUT = 8


def _vector_bytes() -> int:
    """Width in bytes of the widest vector register Numba compiles for: 64 with AVX-512, 32 with
    AVX2, 16 otherwise (also for a ``NUMBA_CPU_NAME`` other than the host without such features
    named in ``NUMBA_CPU_FEATURES``)."""
    name = numba.config.CPU_NAME
    if name and name != "host":
        feats = (numba.config.CPU_FEATURES or "").split(",")
    else:
        import llvmlite.binding as ll

        host = ll.get_host_cpu_features()
        feats = [f"+{k}" for k, on in host.items() if on]
    return 64 if "+avx512f" in feats else 32 if "+avx2" in feats else 16


#: Bytes per vector register of the machine the kernels are compiled for (:func:`_vector_bytes`).
VECTOR_BYTES = _vector_bytes()

#: The training step computes a layer's forward product and BP3 along its outputs (n_l, the
#: inner loop) instead of its inputs (n_{l-1}), from transposed copies of W^l and ∂C/∂W^l, when
#: the batch has at least ``OUTPUTS_INNER_MIN_ROWS`` rows and the loop along n_l keeps at least
#: ``OUTPUTS_INNER_GAIN`` times as large a share of the vector lanes busy as the loop along
#: n_{l-1}: a loop of m iterations on v lanes runs m // v full vectors, then its last m % v
#: iterations one at a time, so it keeps (m / v) / (m // v + m % v) of the lanes busy.  At a
#: narrow input such as n_{l-1} = 10 or 30 (tabular data) and n_l = 100, the loop along n_{l-1}
#: ran mostly or wholly one element at a time (bench/RESULTS.md).  The transpositions cost
#: O(n_{l-1} n_l) each, paid back from about 64 rows.
OUTPUTS_INNER_MIN_ROWS = 64
OUTPUTS_INNER_GAIN = 1.5
#: ... and only from this many inputs n_{l-1} on: at 2 inputs (float32 and float64) and 4
#: (float64) the loop along n_{l-1} is short enough that the transposed form's passes over
#: (N, n_l) cost more than its lanes save (forward product 0.8x at 2 -> 100, N = 200, float64).
OUTPUTS_INNER_MIN_INPUTS = 8
#: ... and where the loop along n_l keeps at least this share of the lanes busy itself: the
#: transposed form adds passes over the (N, n_l) product (bias, activation, a scale by ones), which
#: a short n_l does not pay back ([13, 37, 37, 1] at N = 1024: 0.96x for the whole step in float32,
#: where 37 keeps 0.33 of the lanes busy, 0.95x in float64, 0.51).
OUTPUTS_INNER_MIN_SHARE = 0.6

#: BP2 on a batch of at least this many rows, where a row of δ^{l-1} or of W^l is a whole number
#: of 4 KiB pages (widths 1024, 2048, ... in float32, 512, 1024, ... in float64), runs from a
#: transposed copy of W^l (in the gradient's slot of W^l, which BP3 overwrites next) with the
#: forward product's loop: each δ^{l-1}_rk is summed in registers and stored once.  The blocked
#: BP2 adds into rows of δ^{l-1} pass after pass, and at such widths every row of δ^{l-1} and of
#: W^l starts at the same address modulo 4 KiB, so its time depends on where the buffers fall
#: relative to each other: 6.9-16.4 ms at 512 x 1024 x 1024 in float32, for 64-byte shifts of
#: one buffer, against 6.2-7.2 ms with the transposition (0.9 ms of it).  At other widths the
#: transposition costs more than it saves (bench/RESULTS.md).
BP2_TRANSPOSED_MIN_ROWS = 64

#: BP3 in float32 on a batch of at least this many rows, where a row of a^{l-1} is a whole number
#: of 4 KiB pages (widths 1024, 2048, ...), adds up each 4-row block of ∂C/∂W^l in a private tile
#: that lies half a page from a^{l-1}'s rows, then copies it out.  At such widths every row of
#: a^{l-1} and of ∂C/∂W^l starts at the same address modulo 4 KiB as the others, and when the
#: gradient buffer sits a little past a^{l-1} the adds into ∂C/∂W^l delay the next loads of
#: a^{l-1} (the processor takes them to depend on the stores): 7.2 ms with the tile against
#: 14-21 ms without, at 512 x 1024 x 1024.  At other widths, and in float64, the tile measured
#: no faster or slower (bench/RESULTS.md), so they add into the gradient's rows directly.
BP3_TILE_MIN_ROWS = 64

#: Length of the parameter vector from which the optimizer update runs in parallel.
PARALLEL_MIN_PARAMS = 1 << 13

#: Largest workspace (bytes) that ``MLP.predict`` and ``MLP.evaluate`` allocate for one batch.
#: A larger batch runs in chunks of whole 4-row blocks, so the result is bitwise the one of a
#: single call, and memory stays bounded whatever N is.
MAX_WORKSPACE_BYTES = 64 << 20

#: Multiply-adds of forward work (batch rows x parameters) per call of the compiled training
#: loop from ``MLP.fit``: an epoch runs in slices of whole minibatches of about this much work
#: (some 0.1 s here), and a Ctrl-C is honoured between two slices, at a step boundary.
INTERRUPT_WORK = 1 << 28

# -- the cuda backend ------------------------------------------------------------------------------

#: Whether CUDA code runs on Numba's simulator (every GPU thread a Python thread): the launch
#: shapes below shrink there so that tests stay fast; the code is the same.
CUDA_SIMULATOR = bool(getattr(numba.config, "ENABLE_CUDASIM", 0))

#: Tile shape (BM, BN, BK, TM, TN) of the tiled product of the layered path (read per call).
CUDA_GEMM_TILE = (16, 16, 8, 4, 4) if CUDA_SIMULATOR else (64, 64, 16, 4, 4)

#: Blocks a BP3 product should fill before it is split along k (None: two per multiprocessor;
#: read per call).
CUDA_SPLIT_K_TARGET_BLOCKS = None

#: Blocks per multiprocessor of the fused kernel's grid (read per call).
CUDA_FUSED_BLOCKS_PER_SM = 4

#: Widest layer that the fully fused one-launch kernel serves, its threads per block and the
#: shared memory (bytes) it may use per block (frozen into the generated kernels).
CUDA_FUSED_MAX_WIDTH = 64
CUDA_FUSED_THREADS = 128
CUDA_FUSED_SHARED_BYTES = 46 * 1024

#: Threads per block of the per-sample (BP1) kernel (a power of two) and of elementwise kernels
#: (frozen into the kernels).
CUDA_ROW_THREADS = 8 if CUDA_SIMULATOR else 64
CUDA_ELEMENT_THREADS = 32 if CUDA_SIMULATOR else 256


#: Threading layers in order of preference.  OpenMP opens a parallel region in
#: about 2 us on the reference machine, TBB in about 5 us and workqueue in
#: 80-90 us; Numba would silently prefer TBB when it is installed.  A user's
#: ``NUMBA_THREADING_LAYER`` or ``NUMBA_THREADING_LAYER_PRIORITY`` wins.
THREADING_LAYER_PRIORITY = ("omp", "tbb", "workqueue")


def _apply_threading_preference() -> None:
    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return
    numba.config.THREADING_LAYER_PRIORITY = list(THREADING_LAYER_PRIORITY)


_apply_threading_preference()
