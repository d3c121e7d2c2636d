"""fastbp: compiled backpropagation kernels for multilayer perceptrons.

``fastbp.MLP`` is the model; ``fastbp.cpu`` holds the Numba kernels (callable
from your own ``@njit`` code), ``fastbp.cuda`` their ``@cuda.jit`` counterparts
(``MLP(backend="cuda")``); ``fastbp.reference`` is the NumPy reference they are
checked against.
"""

from . import _cache

_cache.register()  # before any kernel is decorated: every fastbp kernel is cached by package hash

from . import activations, config, layout, losses, reference  # noqa: E402
from ._resources import ResourceError  # noqa: E402
from .layout import NetworkSpec, n_params, split_params, workspace_size  # noqa: E402
from .model import MLP  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "NetworkSpec",
    "ResourceError",
    "__version__",
    "activations",
    "config",
    "layout",
    "losses",
    "n_params",
    "reference",
    "split_params",
    "workspace_size",
]
