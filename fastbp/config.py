"""Tunables of fastbp's compiled kernels, in one place: the cpu backend's, then the cuda one's.

Every kernel takes its compilation flags, size thresholds and launch shapes from here, so
that they can be tuned without touching the kernels.  Values that compiled
code reads are frozen into it when it compiles (and are part of the disk cache's key, see
``fastbp._cache``); the others are read at each call.

The CPU's register tile comes from the instruction set (``VECTOR_BYTES``, ``VECTOR_REGISTERS``);
seven CPU values are chosen by measurement (``PARALLEL_TASKS``, ``PARALLEL_MIN_WORK``,
``PARALLEL_COMPILE_AFTER``, ``PARALLEL_MIN_WORK_THREAD``, ``TILE_VECTORS``, ``PARALLEL_MIN_PARAMS``,
``THREADING_LAYER_PRIORITY``), each with its reason below; ``bench/RESULTS.md`` has the
measurements behind them.
"""

from __future__ import annotations

import os

import numba

#: LLVM fast-math flags for every CPU kernel: none.  ``reassoc`` would let LLVM choose the order
#: of a sum by the vector width, and ``contract`` where to fuse a multiply with an add, by whether
#: the target has FMA; either makes the bits depend on the instruction set and on what a compiled
#: copy inlines.  The products vectorise without them (``fastbp.cpu._tile``: explicit FMA, lanes
#: across independent outputs), and so do elementwise loops.  (``nnan``/``ninf`` would also let
#: LLVM delete finiteness checks: numba #2919, #6217.)
FASTMATH: set[str] = set()

#: Tasks a product is split into (panels of the output's columns times chunks of its rows): enough
#: to keep a few threads busy, few enough that each task reuses its panel over many rows.  The
#: split decides which thread computes an element, never how.
PARALLEL_TASKS = 8

#: Work (multiply-adds of one kernel call) from which the ``parallel=True`` twin of a kernel is
#: used instead of its serial twin: a parallel region costs microseconds to open and sleeping
#: threads tens of microseconds to wake, so small calls stay serial.
PARALLEL_MIN_WORK = 1 << 18

#: Seconds the serial twin of a whole-network kernel runs, in ``MLP`` calls where its parallel
#: twin would pay, before a process compiles that parallel twin (``fastbp._tiers``).  A
#: parallel twin already compiled or in the disk cache runs at once.  About what compiling the
#: parallel training step costs: a short script never pays for it, a long run switches after at
#: most this much slower work.  0 compiles it at the first call that pays.
PARALLEL_COMPILE_AFTER = 10.0

#: The same cut-over for calls from any thread but the main one: under the OpenMP threading layer
#: a parallel region opened from another thread costs tens of microseconds more (numbagg makes
#: the same choice, numba #9288).
PARALLEL_MIN_WORK_THREAD = 1 << 24

#: CPU names (LLVM's) whose own features include AVX-512 or AVX2, for a ``NUMBA_CPU_NAME`` compiled
#: with its own features (``NUMBA_CPU_FEATURES=""``); any other name is taken for SSE only.
_AVX512_CPUS = ("x86-64-v4", "skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake",
                "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids",
                "diamondrapids", "znver4", "znver5", "knl", "knm")
_AVX2_CPUS = ("x86-64-v3", "haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake",
              "arrowlake", "lunarlake", "gracemont", "znver1", "znver2", "znver3", "bdver4")


def _vector_bytes() -> int:
    """Width in bytes of the widest vector register Numba compiles for: 64 with AVX-512, 32 with
    AVX2, 16 otherwise.  Numba compiles for ``NUMBA_CPU_NAME`` (default: the host) with the
    features in ``NUMBA_CPU_FEATURES``, or the host's when that is unset; an empty one means the
    named CPU's own."""
    import llvmlite.binding as ll

    name = numba.config.CPU_NAME or ll.get_host_cpu_name()
    feats = numba.config.CPU_FEATURES
    if feats is None:
        feats = ll.get_host_cpu_features().flatten()
    if feats:
        on = {f[1:] for f in feats.split(",") if f.startswith("+")}
        return 64 if "avx512f" in on else 32 if "avx2" in on else 16
    return 64 if name.startswith(_AVX512_CPUS) else 32 if name.startswith(_AVX2_CPUS) else 16


#: Bytes per vector register of the machine the kernels are compiled for (from the target's CPU name and features).
VECTOR_BYTES = _vector_bytes()

#: Vector registers of that target: 32 with AVX-512, 16 with AVX2 or SSE.
VECTOR_REGISTERS = 32 if VECTOR_BYTES == 64 else 16

#: The micro-kernel's register tile (fastbp.cpu._tile): TILE_VECTORS vectors of B per row of the
#: tile, and as many rows as leave a register for each of B's vectors and one for a broadcast, at
#: most 8: the tile reads its rows of A side by side, and rows 4 KiB apart share one set of an
#: 8-way L1 cache.  6 x 2 on AVX2 (BLIS's Haswell tile), 8 x 2 on AVX-512.  The tile changes the
#: speed, not the bits.
TILE_VECTORS = 2
TILE_ROWS = min(8, (VECTOR_REGISTERS - TILE_VECTORS - 1) // TILE_VECTORS)

#: Length of the parameter vector from which the optimizer update runs in parallel: below it the
#: update is shorter than waking the other threads.
PARALLEL_MIN_PARAMS = 1 << 13

#: Largest workspace (bytes) that ``MLP.predict`` and ``MLP.evaluate`` allocate for one batch.
#: A larger batch runs in chunks (every row is computed alike wherever it falls, so the result is
#: bitwise the one of a single call), and memory stays bounded whatever N is.
MAX_WORKSPACE_BYTES = 64 << 20

#: Multiply-adds of forward work (batch rows x parameters) per call of the compiled training
#: loop from ``MLP.fit``: an epoch runs in slices of whole minibatches of about this much work
#: (a tenth of a second or so), and a Ctrl-C is honoured between two slices, at a step boundary.
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


#: Threading layers in order of preference: OpenMP opens a parallel region fastest,
#: then TBB, and workqueue an order of magnitude slower; Numba would silently prefer
#: TBB when it is installed.  A user's
#: ``NUMBA_THREADING_LAYER`` or ``NUMBA_THREADING_LAYER_PRIORITY`` wins.
THREADING_LAYER_PRIORITY = ("omp", "tbb", "workqueue")


def _apply_threading_preference() -> None:
    if "NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ:
        return
    numba.config.THREADING_LAYER_PRIORITY = list(THREADING_LAYER_PRIORITY)


_apply_threading_preference()
