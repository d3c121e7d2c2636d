"""fastbp: compiled backpropagation kernels for multilayer perceptrons.

``fastbp.MLP`` is the model; ``fastbp.cpu`` holds the Numba kernels (callable
from your own ``@njit`` code), ``fastbp.cuda`` their ``@cuda.jit`` counterparts
(``MLP(backend="cuda")``); ``fastbp.reference`` is the NumPy reference they are
checked against.
"""

from . import activations, config, layout, losses, reference
from ._resources import ResourceError
from .layout import n_params, split_params, workspace_size
from .model import MLP

__version__ = "0.1.0"

__all__ = [
    "MLP",
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
