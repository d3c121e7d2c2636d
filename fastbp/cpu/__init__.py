"""Numba ``@njit`` kernels for the CPU.

Everything here takes only arrays and integers and can be called from Python
or from a user's own ``@njit`` function.  The map from the equations to the
names:

- forward product + activation: :func:`linear_forward`
- BP1 δ^L = ∇_a C ⊙ σ'(z^L): :func:`output_delta`
- BP2 δ^l = ((W^{l+1})^T δ^{l+1}) ⊙ σ'(z^l): :func:`backprop_delta`
- BP3 ∂C/∂w^l_jk = Σ_n a^{l-1}_nk δ^l_nj: :func:`weight_grad`
- BP4 ∂C/∂b^l_j = Σ_n δ^l_nj: :func:`bias_grad` (fused with BP3: :func:`weight_bias_grad`)
- whole network: :func:`forward`, :func:`loss_and_grad`
"""

import numba as _numba

# Launch Numba's threading layer now.  The cached parallel twins link against its scheduling
# symbols (allocate_sched, numba_parallel_for, ...), which exist only once a layer is launched;
# a user's @njit function that calls a kernel whose parallel twin comes from the disk cache
# aborted the process with "LLVM ERROR: Symbol not found: allocate_sched" before this.
_numba.get_num_threads()

from .kernels import (  # noqa: E402
    backprop_delta,
    bias_grad,
    linear_forward,
    output_delta,
    weight_bias_grad,
    weight_grad,
)
from .network import forward, loss_and_grad  # noqa: E402

__all__ = [
    "backprop_delta",
    "bias_grad",
    "forward",
    "linear_forward",
    "loss_and_grad",
    "output_delta",
    "weight_bias_grad",
    "weight_grad",
]
