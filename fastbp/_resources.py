"""Memory checks made before fastbp allocates anything large.

A model whose parameters, or a batch whose workspace, would not fit in the memory that the
machine has available gets a :class:`ResourceError` naming the sizes and the bytes needed,
before anything is allocated; allocating first would either raise a bare ``MemoryError`` after
a long wait or get the process killed by the kernel's out-of-memory killer.
"""

from __future__ import annotations

import os

__all__ = ["ResourceError", "available_memory", "check_fits"]

#: Requests below this many bytes are not checked (reading /proc/meminfo costs microseconds).
CHECK_FROM_BYTES = 64 << 20


class ResourceError(ValueError, MemoryError):
    """A model or batch needs more memory than is available.

    Both a ``ValueError`` (the sizes asked for cannot be served) and a ``MemoryError``, so
    that handlers of either catch it.
    """


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (MemAvailable on Linux), or None if unknown."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits(what: str, nbytes: int) -> None:
    """Raise :class:`ResourceError` if ``nbytes`` would not fit in the available memory.

    Parameters
    ----------
    what : str
        What needs the memory, with the argument it comes from (starts the message).
    nbytes : int
        Bytes about to be allocated.
    """
    if nbytes < CHECK_FROM_BYTES:
        return
    avail = available_memory()
    if avail is not None and nbytes > avail:
        raise ResourceError(
            f"{what}: {nbytes:,} bytes ({nbytes / 2**30:.2f} GiB) needed, more than the "
            f"{avail:,} bytes ({avail / 2**30:.2f} GiB) of memory available"
        )
