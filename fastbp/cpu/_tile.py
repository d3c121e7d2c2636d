"""The register-tile micro-kernel that every product of the CPU backend runs, and a scalar FMA.

:func:`tile_fma` computes one MR x NR tile of a product C = A B,

    C[i, j] = Σ_k A[i, k] B[k, j]        (0 <= i < mr <= MR, 0 <= j < nr <= NR)

in the outer-product form of BLIS micro-kernels: for each k, NR/V vectors of B's row k are
loaded once and each A[i, k] is broadcast and multiplied into them with a fused multiply-add
(``llvm.fma``).  Every element of C is therefore *one* chain of FMAs along k, in the order
k = 0, 1, ..., K-1, starting from 0: the vector lanes run across independent outputs, never
across one sum.  The result does not depend on the vector width V, on MR and NR, on which rows
or columns a tile covers, nor on the instruction set: ``llvm.fma`` rounds once on every target
(a target without FMA instructions computes it in software).

The operands are C-contiguous arrays addressed as flat ones, by an offset and strides (in
elements), so one kernel serves every product of the network and either orientation:

- A[i, k] at ``a[ao + i*ars + k*aks]`` (any strides: its elements are broadcast one by one);
- B[k, j] at ``b[bo + k*bks + j]`` (rows contiguous: each is read as vectors);
- C[i, j] at ``c[co + i*cis + j*cjs]`` (vector stores when ``cjs == 1``, lane by lane otherwise).

With ``scale`` the tile stores C[i, j] * Σ_k A[i, k] B[k, j]: the sum, rounded, times what C held
there (BP2 scales by σ'(z) in the buffer that held σ'(z)).

Rows i >= mr of A are read from row mr - 1 (nothing is read out of bounds, nothing is stored);
columns j >= nr are neither read nor stored (masked loads and stores).  MR and NR come from the
target (``config.TILE_ROWS``, ``config.TILE_VECTORS``), as the register tile of a BLIS kernel does.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ..config import TILE_ROWS, TILE_VECTORS, VECTOR_BYTES

__all__ = ["fma", "tile_dims", "tile_fma", "tile_shape"]


def tile_shape(dtype) -> tuple[int, int]:
    """(MR, NR) of the register tile for ``dtype`` (a NumPy or Numba float type) on this target."""
    itemsize = dtype.bitwidth // 8 if isinstance(dtype, types.Float) else dtype.itemsize
    return TILE_ROWS, TILE_VECTORS * (VECTOR_BYTES // itemsize)


def tile_dims(like):
    """(MR, NR) for the dtype of the array ``like``, as compile-time constants in compiled code."""
    return tile_shape(like.dtype)


@overload(tile_dims, inline="always")
def _tile_dims(like):
    mr, nr = tile_shape(like.dtype)
    return lambda like: (mr, nr)


def _fma_fn(builder, ty):
    lanes = f"v{ty.count}" if isinstance(ty, ir.VectorType) else ""
    name = f"llvm.fma.{lanes}{_suffix(ty)}"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty, ty, ty]), name)


def _suffix(ty):
    el = ty.element if isinstance(ty, ir.VectorType) else ty
    return "f32" if isinstance(el, ir.FloatType) else "f64"


@intrinsic
def fma(typingctx, x, y, z):
    """x*y + z rounded once (``llvm.fma``): the same bits on every target, with or without FMA
    instructions; LLVM vectorises a loop of them."""
    if not all(isinstance(t, types.Float) for t in (x, y, z)) or not x == y == z:
        return None

    def codegen(context, builder, sig, args):
        return builder.call(_fma_fn(builder, args[0].type), list(args))

    return x(x, y, z), codegen


def _int_args(*names):
    return all(isinstance(t, types.Integer) for t in names)


def _masked(builder, name, ty, args):
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [a.type for a in args]), name)
    return builder.call(fn, args)


@intrinsic
def tile_fma(typingctx, a, ao, ars, aks, b, bo, bks, K, c, co, cis, cjs, mr, nr, scale):
    """One MR x NR tile of C = A B (with ``scale``, C = (A B) ⊙ C); see the module docstring."""
    arrays = (a, b, c)
    if not all(isinstance(t, types.Array) and t.layout == "C" for t in arrays):
        return None
    if not (isinstance(a.dtype, types.Float) and a.dtype == b.dtype == c.dtype):
        return None
    if not _int_args(ao, ars, aks, bo, bks, K, co, cis, cjs, mr, nr):
        return None
    MR, NR = tile_shape(a.dtype)
    V = VECTOR_BYTES // (a.dtype.bitwidth // 8)
    NV = NR // V
    if not isinstance(scale, types.Boolean):
        return None
    sig = types.void(a, ao, ars, aks, b, bo, bks, K, c, co, cis, cjs, mr, nr, scale)

    def codegen(context, builder, signature, args):
        intp = context.get_value_type(types.intp)
        ints = [context.cast(builder, v, t, types.intp) for v, t in zip(args[:14], signature.args[:14], strict=True)]
        scaled = context.cast(builder, args[14], signature.args[14], types.boolean)
        a_data = context.make_array(signature.args[0])(context, builder, args[0]).data
        b_data = context.make_array(signature.args[4])(context, builder, args[4]).data
        c_data = context.make_array(signature.args[8])(context, builder, args[8]).data
        _, ao_, ars_, aks_, _, bo_, bks_, K_, _, co_, cis_, cjs_, mr_, nr_ = ints
        fty = context.get_value_type(signature.args[0].dtype)
        one_f = ir.Constant(fty, 1.0)
        vty = ir.VectorType(fty, V)
        one_v = ir.Constant(vty, [one_f] * V)
        vptr = vty.as_pointer()
        i32 = ir.IntType(32)
        fma_v = _fma_fn(builder, vty)
        zero_v = ir.Constant(vty, [ir.Constant(fty, 0.0)] * V)
        one = ir.Constant(intp, 1)
        align = ir.Constant(i32, signature.args[0].dtype.bitwidth // 8)
        vname = f"v{V}{_suffix(fty)}.p0"

        def const(v):
            return ir.Constant(intp, v)

        def smin(x, y):
            return builder.select(builder.icmp_signed("<", x, y), x, y)

        # A's row pointers (rows past mr read row mr - 1) and C's
        last = builder.sub(mr_, one)
        a_rows = [builder.gep(a_data, [builder.add(ao_, builder.mul(smin(const(i), last), ars_))])
                  for i in range(MR)]
        c_rows = [builder.gep(c_data, [builder.add(co_, builder.mul(const(i), cis_))]) for i in range(MR)]
        # lane masks of the NV vectors of a row: column v*V + lane < nr
        lanes = [ir.Constant(ir.VectorType(intp, V), [v * V + t for t in range(V)]) for v in range(NV)]
        nr_splat = builder.insert_element(ir.Constant(ir.VectorType(intp, V), ir.Undefined), nr_, ir.Constant(i32, 0))
        nr_splat = builder.shuffle_vector(nr_splat, ir.Constant(ir.VectorType(intp, V), ir.Undefined),
                                          ir.Constant(ir.VectorType(i32, V), [0] * V))
        masks = [builder.icmp_signed("<", lanes[v], nr_splat) for v in range(NV)]

        def vec_ptr(row_ptr, v):
            return builder.bitcast(builder.gep(row_ptr, [const(v * V)]), vptr)

        def load_b(row_ptr, v, full):
            if full:
                return builder.load(vec_ptr(row_ptr, v), align=align.constant)
            return _masked(builder, "llvm.masked.load." + vname, vty, [vec_ptr(row_ptr, v), align, masks[v], zero_v])

        # the accumulators live in stack slots that LLVM promotes to registers (SROA)
        acc = [[cgutils.alloca_once(builder, vty) for v in range(NV)] for i in range(MR)]
        bcast = ir.Constant(ir.VectorType(i32, V), [0] * V)

        def emit(full):
            # the k loop: whole rows of B, or the masked columns < nr of a last panel
            for i in range(MR):
                for v in range(NV):
                    builder.store(zero_v, acc[i][v])
            with cgutils.for_range(builder, K_) as loop:
                k = loop.index
                b_row = builder.gep(b_data, [builder.add(bo_, builder.mul(k, bks_))])
                bv = [load_b(b_row, v, full) for v in range(NV)]
                koff = builder.mul(k, aks_)
                for i in range(MR):
                    x = builder.load(builder.gep(a_rows[i], [koff]))
                    xv = builder.insert_element(ir.Constant(vty, ir.Undefined), x, ir.Constant(i32, 0))
                    xv = builder.shuffle_vector(xv, ir.Constant(vty, ir.Undefined), bcast)
                    for v in range(NV):
                        builder.store(builder.call(fma_v, [xv, bv[v], builder.load(acc[i][v])]), acc[i][v])

        with builder.if_else(builder.icmp_signed("==", nr_, const(NR))) as (whole, part):
            with whole:
                emit(True)
            with part:
                emit(False)

        def store_vector(i, v, masked):
            ptr = vec_ptr(c_rows[i], v)
            if masked:
                old = _masked(builder, "llvm.masked.load." + vname, vty, [ptr, align, masks[v], one_v])
            else:
                old = builder.load(ptr, align=align.constant)
            val = builder.load(acc[i][v])
            val = builder.select(scaled, builder.fmul(val, old), val)
            if masked:
                _masked(builder, "llvm.masked.store." + vname, ir.VoidType(), [val, ptr, align, masks[v]])
            else:
                builder.store(val, ptr, align=align.constant)

        # Row i is stored where i < mr, with ``scale`` times C's value there: masked vectors where
        # C's columns are contiguous; otherwise through a stack copy of the tile, element by element.
        with builder.if_else(builder.icmp_signed("==", cjs_, one)) as (vec, strided):
            with vec:
                # whole rows with plain vector moves (a masked store is microcoded on AMD's AVX2
                # cores), a last panel's with masked ones
                with builder.if_else(builder.icmp_signed("==", nr_, const(NR))) as (whole, part):
                    for masked, branch in ((False, whole), (True, part)):
                        with branch:
                            for i in range(MR):
                                with builder.if_then(builder.icmp_signed("<", const(i), mr_)):
                                    for v in range(NV):
                                        store_vector(i, v, masked)
            with strided:
                tile = cgutils.alloca_once(builder, fty, size=MR * NR)
                for i in range(MR):
                    for v in range(NV):
                        builder.store(builder.load(acc[i][v]), vec_ptr(builder.gep(tile, [const(i * NR)]), v),
                                      align=align.constant)
                with cgutils.for_range(builder, mr_) as rows:
                    i = rows.index
                    with cgutils.for_range(builder, nr_) as cols:
                        j = cols.index
                        x = builder.load(builder.gep(tile, [builder.add(builder.mul(i, const(NR)), j)]))
                        ptr = builder.gep(c_data, [builder.add(co_, builder.add(builder.mul(i, cis_),
                                                                                builder.mul(j, cjs_)))])
                        with builder.if_then(scaled):
                            builder.store(builder.fmul(x, builder.load(ptr)), ptr)
                        with builder.if_then(builder.not_(scaled)):
                            builder.store(x, ptr)
        return context.get_dummy_value()

    return sig, codegen
