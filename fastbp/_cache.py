"""Where fastbp's compiled kernels are cached on disk, and why a cached kernel is never stale.

Numba stamps a cached function with a hash of *its own* source file only.  fastbp's kernels
inline and call functions of other files (activations, losses, ``_math``, ``config``): after
an upgrade, or an edit of one of those files, Numba would load machine code compiled from the
old callees.  So every fastbp kernel is cached by :class:`FastbpCacheLocator`:

- its *source stamp* is one hash of the whole package: every ``fastbp/**/*.py`` file, the
  fastbp, Numba and llvmlite versions.  Any change anywhere gives every kernel a new stamp, and
  Numba recompiles instead of loading (the target CPU is already part of Numba's own key);
- its *directory* is ``$NUMBA_CACHE_DIR/fastbp_<hash>`` when the user set ``NUMBA_CACHE_DIR``
  (always honoured); otherwise ``fastbp/__pycache__/numba_<hash>`` next to the code if that can
  be written; otherwise (a read-only install: another user's site-packages, a container
  image) the per-user cache directory, ``~/.cache/fastbp/<hash>`` on Linux.  The hash in the
  path keeps old builds from being overwritten in place by a concurrent process of another
  version.

The locator is registered with Numba when ``fastbp`` is imported, before any kernel is
decorated, and answers only for files inside the package.  A user's
``NUMBA_CACHE_LOCATOR_CLASSES`` replaces Numba's list and is left alone.

Every cached kernel is decorated with :func:`cached_njit`, whose disk cache is a
:class:`FastbpFunctionCache`: it loads machine code without first refreshing Numba's
compilation registries, which is most of the time a warm process spends in Numba otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import tempfile

import llvmlite
import numba
from numba.core import caching, config
from numba.core.runtime import rtsys
from numba.misc.appdirs import AppDirs

__all__ = ["FastbpCacheLocator", "FastbpFunctionCache", "cache_dir", "cached_njit", "package_hash"]

PACKAGE_DIR = pathlib.Path(__file__).resolve().parent


@functools.lru_cache(maxsize=1)
def package_hash() -> str:
    """Hash of every fastbp source file and of the versions that compile them (16 hex digits)."""
    h = hashlib.sha256()  # the fastbp version is in __init__.py, hashed with the rest
    h.update(f"numba {numba.__version__} llvmlite {llvmlite.__version__}".encode())
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(str(path.relative_to(PACKAGE_DIR)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


@functools.cache
def _base_dir(numba_cache_dir: str) -> str:
    tag = package_hash()
    if numba_cache_dir:
        return os.path.join(numba_cache_dir, f"fastbp_{tag}")
    in_tree = str(PACKAGE_DIR / "__pycache__" / f"numba_{tag}")
    if _writable(in_tree):
        return in_tree
    return os.path.join(AppDirs(appname="fastbp", appauthor=False).user_cache_dir, tag)


def cache_dir() -> str:
    """The directory that holds fastbp's compiled kernels in this process."""
    return _base_dir(config.CACHE_DIR or "")


class FastbpCacheLocator(caching._CacheLocator):
    """Numba cache locator for functions defined in the fastbp package (see the module docstring)."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        rel = pathlib.Path(py_file).resolve().parent.relative_to(PACKAGE_DIR)
        self._cache_path = os.path.join(cache_dir(), *rel.parts)

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        return package_hash()

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        try:
            pathlib.Path(py_file).resolve().relative_to(PACKAGE_DIR)
        except (ValueError, OSError):
            return None
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:
            return None  # Numba's own locators get their turn (and may cache nothing)
        return self


def register() -> None:
    """Put :class:`FastbpCacheLocator` first in Numba's list of cache locators (idempotent)."""
    classes = caching.CacheImpl._locator_classes
    if FastbpCacheLocator not in classes:
        classes.insert(0, FastbpCacheLocator)


class FastbpFunctionCache(caching.FunctionCache):
    """Numba's disk cache of a compiled function, except that a load does not refresh the contexts.

    ``numba.core.caching.Cache.load_overload`` starts with ``target_context.refresh()``.  In a
    process's first load that imports some forty Numba modules and installs every typing and
    lowering registry, and frees them again at interpreter exit: a noticeable part of a
    short process's start.  That is what *compiling* needs; rebuilding cached machine code needs only the
    NRT's symbols (:func:`rtsys.initialize`, which compiles nothing of ours) and the C helpers that
    Numba registers when it is imported.  The parallel twins' scheduling symbols come from the
    threading layer, which :mod:`fastbp.cpu` launches when it is imported, before any of them
    can load.  A cache miss compiles as always, and Numba's compiler refreshes both contexts
    itself first (``numba.core.compiler.CompilerBase``).  ``tests/test_cache.py`` checks that a
    warm process refreshes nothing and that every symbol the cached machine code imports exists
    in it (an unresolved one would abort the process in LLVM).
    """

    def load_overload(self, sig, target_context):
        load = getattr(self, "_load_overload", None)
        guard = getattr(self, "_guard_against_spurious_io_errors", None)
        if load is None or guard is None:  # a Numba without these internals: its own load
            return super().load_overload(sig, target_context)
        rtsys.initialize(target_context)
        with guard():
            return load(sig, target_context)
        return None  # the guard swallowed an I/O error: compile instead (as Numba does)


def cached_njit(**options):
    """``numba.njit(cache=True, **options)`` for a fastbp kernel: the decorator of every cached
    kernel in the package, its disk cache a :class:`FastbpFunctionCache` (located by
    :class:`FastbpCacheLocator`)."""

    def decorate(py_func):
        dispatcher = numba.njit(**options)(py_func)
        dispatcher._cache = FastbpFunctionCache(dispatcher.py_func)  # what Dispatcher.enable_caching does
        return dispatcher

    return decorate
